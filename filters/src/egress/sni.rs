//! The server name (SNI) of a TLS ClientHello, read from the first bytes a
//! caller sends into a CONNECT tunnel.
//!
//! With `sni_must_match_connect`, the gateway peeks at the tunnel's first
//! bytes, calls [`parse_client_hello_sni`] until it stops saying
//! [`SniResult::NeedMore`] (bounded by [`MAX_CLIENT_HELLO_BYTES`] and a
//! timeout), and compares the name with the CONNECT host using
//! [`sni_matches_host`]. This stops a caller allowed to `CONNECT
//! allowed.example:443` from speaking to another virtual host on the same
//! address (domain fronting through the allowed name). With Encrypted
//! Client Hello the visible name is the outer (public) one, which then has to
//! be the CONNECT host as well. A CONNECT to an IP literal normally carries
//! no server name (RFC 6066 forbids literal addresses in SNI), so
//! [`SniResult::NoSni`] is the expected answer there; whether to accept it is
//! the gateway's choice.
//!
//! The parser reads whole TLS records only, reassembles a ClientHello
//! fragmented over several handshake records, checks every length against
//! its container and never panics.

use super::host::same_host;

/// Most bytes (records with their headers) a ClientHello may take; longer
/// ones are [`SniResult::Malformed`]. Real ones are well below: about 500
/// bytes, 1.8 KiB with a post-quantum key share.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Largest plaintext record payload (2^14, RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 16 * 1024;

/// What the first bytes of a tunnel say about its TLS server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SniResult {
    /// The ClientHello is incomplete: wait until the buffer holds at least
    /// `at_least` bytes (a lower bound; more may be asked for then).
    NeedMore {
        /// The buffer length needed for progress.
        at_least: usize,
    },
    /// The bytes do not start a TLS handshake record.
    NotTls,
    /// A well-formed ClientHello without a `server_name` host name.
    NoSni,
    /// The host name, lower-cased (as sent, otherwise; a trailing dot is
    /// kept).
    Sni(String),
    /// A TLS handshake that is not a well-formed ClientHello, or one larger
    /// than [`MAX_CLIENT_HELLO_BYTES`].
    Malformed(&'static str),
}

/// Whether the ClientHello's server name names the CONNECT host (ignoring
/// case and a trailing dot).
pub fn sni_matches_host(sni: &str, connect_host: &str) -> bool {
    same_host(sni, connect_host)
}

/// Reads the server name from a buffer holding the start of a TLS
/// connection (see [`SniResult`]).
pub fn parse_client_hello_sni(buf: &[u8]) -> SniResult {
    match buf {
        [] => return SniResult::NeedMore { at_least: 1 },
        [t, ..] if *t != CONTENT_HANDSHAKE => return SniResult::NotTls,
        [_, major, ..] if *major != 3 => return SniResult::NotTls,
        [_, _, minor, ..] if *minor > 4 => return SniResult::NotTls,
        _ => {}
    }
    let hello = match reassemble(buf) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match parse_hello(&hello) {
        Ok(Some(name)) => SniResult::Sni(name),
        Ok(None) => SniResult::NoSni,
        Err(e) => SniResult::Malformed(e),
    }
}

/// The ClientHello body (after the 4-byte handshake header), joined from as
/// many handshake records as it spans.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>, SniResult> {
    let need = |at_least: usize| {
        if at_least > MAX_CLIENT_HELLO_BYTES {
            SniResult::Malformed("ClientHello larger than 16 KiB")
        } else {
            SniResult::NeedMore { at_least }
        }
    };
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            // A lower bound: this header, plus the rest of the message.
            let rest = expected_len(&message).map_or(1, |n| n - message.len());
            return Err(need(pos + RECORD_HEADER + rest));
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(SniResult::Malformed(
                "ClientHello interrupted by another record type",
            ));
        }
        if header[1] != 3 {
            return Err(SniResult::Malformed("bad record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniResult::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(SniResult::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER;
        let Some(payload) = buf.get(start..start + len) else {
            return Err(need(start + len));
        };
        message.extend_from_slice(payload);
        pos = start + len;
        if let Some(&kind) = message.first() {
            if kind != HANDSHAKE_CLIENT_HELLO {
                return Err(SniResult::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
        }
        if let Some(total) = expected_len(&message) {
            if total + RECORD_HEADER > MAX_CLIENT_HELLO_BYTES {
                return Err(SniResult::Malformed("ClientHello larger than 16 KiB"));
            }
            if message.len() >= total {
                message.truncate(total);
                message.drain(..4);
                return Ok(message);
            }
        }
    }
}

/// Length of the handshake message (header included) once its header is in.
fn expected_len(message: &[u8]) -> Option<usize> {
    match message {
        [_, a, b, c, ..] => {
            Some(4 + (usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)))
        }
        _ => None,
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err(what);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<Reader<'a>, &'static str> {
        let n = self.u16(what)?;
        Ok(Reader {
            buf: self.take(usize::from(n), what)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The host name of a ClientHello body, `None` without one.
fn parse_hello(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { buf: body };
    let version = r.u16("truncated ClientHello")?;
    if version >> 8 != 3 {
        return Err("bad ClientHello version");
    }
    r.take(32, "truncated random")?;
    if r.vec8("truncated session id")?.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return Err("bad cipher suites length");
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err("no compression methods");
    }
    if r.is_empty() {
        return Ok(None);
    }
    let mut exts = r.vec16("truncated extensions")?;
    if !r.is_empty() {
        return Err("bytes after the extensions");
    }
    let mut name = None;
    let mut seen = false;
    while !exts.is_empty() {
        let kind = exts.u16("truncated extension")?;
        let data = exts.vec16("truncated extension")?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        if seen {
            return Err("duplicate server_name extension");
        }
        seen = true;
        name = parse_server_name(data)?;
    }
    Ok(name)
}

/// The `host_name` of a `server_name` extension (RFC 6066 §3).
fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, &'static str> {
    let mut list = data.vec16("truncated server_name list")?;
    if !data.is_empty() {
        return Err("bytes after the server_name list");
    }
    if list.is_empty() {
        return Err("empty server_name list");
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("truncated server name")?;
        let n = list.u16("truncated server name")?;
        let value = list.take(usize::from(n), "truncated server name")?;
        if kind != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err("two host names in server_name");
        }
        let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if value.is_empty() || value.len() > 254 || !value.iter().all(valid) {
            return Err("invalid host name in server_name");
        }
        let text: String = value
            .iter()
            .map(|&b| char::from(b.to_ascii_lowercase()))
            .collect();
        host = Some(text);
    }
    Ok(host)
}

#[cfg(test)]
#[path = "sni_tests.rs"]
mod tests;
