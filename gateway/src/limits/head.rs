//! Reading a request head under the listener's limits, for both HTTP/1
//! engines: the wait for a request's first byte (idle or, on a new
//! connection, header timeout), the rest of the head under one deadline
//! and a size limit, and the raw answers to a head refused.
//!
//! The head read here is handed whole to Pingora's parser as a
//! "pipelined prefix", which it parses without reading the stream again,
//! so Pingora's own per-read timers never run for it.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Gatekeeper;

/// Pingora's initial request header buffer (`INIT_HEADER_BUF_SIZE`).
pub const HEADER_BUF: usize = 4096;
/// How long a refused client gets to take its answer and close
/// (NGINX's `lingering_timeout` idea, bounded small: refusals are cheap).
const LINGER: Duration = Duration::from_secs(1);
/// Bytes read and dropped after a refusal before closing: closing with
/// unread bytes makes the kernel send RST, which can destroy the answer
/// before the client reads it.
const LINGER_BYTES: usize = 256 * 1024;

const TIMEOUT_ANSWER: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";
const TOO_LARGE_ANSWER: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 25\r\nconnection: close\r\n\r\nrequest header too large\n";

/// Why a head was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The header timeout passed with part of a head read: 408.
    Timeout,
    /// The head is larger than the limit: 431.
    TooLarge,
    /// The client closed or the read failed midway: nothing to answer.
    Closed,
}

/// Waits up to `wait` for the first byte of the connection's next request,
/// holding no buffer meanwhile; `None` when the client closes, the time
/// passes or the server shuts down. The byte starts the header buffer.
pub async fn first_byte(
    stream: &mut Stream,
    wait: Duration,
    shutdown: &ShutdownWatch,
) -> Option<BytesMut> {
    let mut byte = [0u8; 1];
    let mut shutdown = shutdown.clone();
    let read = tokio::select! {
        biased;
        r = tokio::time::timeout(wait, stream.read(&mut byte)) => r,
        _ = shutdown.changed() => return None,
    };
    match read {
        Ok(Ok(1)) => {
            let mut head = BytesMut::with_capacity(HEADER_BUF);
            head.put_u8(byte[0]);
            Some(head)
        }
        _ => None,
    }
}

/// Reads until `buf` (what was read of the head so far) holds a complete
/// head, within the header timeout and size limit. Returns the buffer,
/// which may also hold body bytes or pipelined requests past the head.
pub async fn read_head(
    stream: &mut Stream,
    mut buf: BytesMut,
    gk: &Gatekeeper,
) -> Result<BytesMut, Refused> {
    let max = gk.limits.max_header_bytes;
    let mut scanned = 0;
    if let Some(end) = head_end(&buf, &mut scanned) {
        return if end > max {
            Err(Refused::TooLarge)
        } else {
            Ok(buf)
        };
    }
    let read = async {
        loop {
            if buf.len() > max {
                return Err(Refused::TooLarge);
            }
            if buf.capacity() - buf.len() < 1024 {
                // Grow by the initial size, never far past the limit.
                buf.reserve(HEADER_BUF.min(max + 1 - buf.len()).max(1024));
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(Refused::Closed),
                Ok(_) => {}
            }
            if let Some(end) = head_end(&buf, &mut scanned) {
                return if end > max {
                    Err(Refused::TooLarge)
                } else {
                    Ok(())
                };
            }
        }
    };
    match tokio::time::timeout(gk.limits.header_timeout, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(Refused::Timeout),
    }
}

/// [`read_head`], answering a refused head with [`refuse`]: the stream and
/// the head read, or `None` when the connection is done.
pub async fn head_or_refuse(
    mut stream: Stream,
    start: BytesMut,
    gk: &Gatekeeper,
) -> Option<(Stream, BytesMut)> {
    match read_head(&mut stream, start, gk).await {
        Ok(head) => Some((stream, head)),
        Err(why) => {
            refuse(stream, why, gk).await;
            None
        }
    }
}

/// The end of the head in `buf` (just past its blank line), scanning from
/// `*scanned` (0 at first) and leaving there where to go on once more
/// bytes arrive. Read as Pingora's parser (httparse) reads a head: bare-LF
/// line ends count, and empty lines before the request line are skipped
/// (RFC 9112 §2.2), so they neither end a head early nor let the rest of
/// it escape the header timeout. The fuzz target `head` holds it to
/// httparse's answer.
pub fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    *scanned = (*scanned).max(leading_empty_lines(buf));
    for i in memchr::memchr_iter(b'\n', &buf[*scanned..]).map(|i| i + *scanned) {
        match buf.get(i + 1) {
            None => {
                *scanned = i;
                return None;
            }
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') => match buf.get(i + 2) {
                None => {
                    *scanned = i;
                    return None;
                }
                Some(b'\n') => return Some(i + 3),
                Some(_) => {}
            },
            Some(_) => {}
        }
    }
    *scanned = buf.len();
    None
}

/// How many bytes of empty lines (`\r\n` or `\n`) `buf` starts with.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => i += 2,
            _ => return i,
        }
    }
}

/// Answers and counts a refused head (nothing for [`Refused::Closed`]),
/// then closes the connection gently: the write side first, then what the
/// client still sends is read and dropped for a moment, so that the
/// answer is not lost to a reset.
pub async fn refuse(mut stream: Stream, why: Refused, gk: &Gatekeeper) {
    let answer = match why {
        Refused::Closed => return,
        Refused::Timeout => {
            gk.refusals.header_timeout.inc();
            TIMEOUT_ANSWER
        }
        Refused::TooLarge => {
            gk.refusals.header_too_large.inc();
            TOO_LARGE_ANSWER
        }
    };
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(answer).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => dropped += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(chunks: &[&[u8]]) -> Option<usize> {
        let mut buf = Vec::new();
        let mut scanned = 0;
        for c in chunks {
            buf.extend_from_slice(c);
            if let Some(e) = head_end(&buf, &mut scanned) {
                return Some(e);
            }
        }
        None
    }

    #[test]
    fn the_head_ends_at_its_blank_line_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(end(&[head]), Some(head.len()));
        assert_eq!(
            end(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"]),
            Some(head.len())
        );
        // Split anywhere, the CRLF CRLF included.
        for cut in 1..head.len() {
            assert_eq!(
                end(&[&head[..cut], &head[cut..]]),
                Some(head.len()),
                "{cut}"
            );
        }
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(end(&bytes), Some(head.len()));
        // Bare LF, as httparse accepts.
        assert_eq!(end(&[b"GET / HTTP/1.1\nHost: x\n\n"]), Some(24));
        assert_eq!(end(&[b"GET / HTTP/1.1\nHost: x\n", b"\r\n"]), Some(25));
    }

    #[test]
    fn a_partial_head_has_no_end() {
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]), None);
        assert_eq!(end(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r"]), None);
        assert_eq!(end(&[b"GET / HTTP/1.1"]), None);
        assert_eq!(end(&[b""]), None);
    }

    /// Empty lines before a request are skipped as httparse skips them: they
    /// end no head, however they arrive.
    #[test]
    fn empty_lines_before_the_request_line_end_no_head() {
        let head = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(end(&[head]), Some(head.len()));
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(end(&bytes), Some(head.len()));
        assert_eq!(end(&[b"\r\n\r\n\r\n"]), None);
        assert_eq!(end(&[b"\n\n\n\n"]), None);
    }
}
