//! Request-head framing (`gateway::limits::head::head_end`), which decides
//! how many bytes both HTTP/1 engines hand to Pingora's parser as one head.
//!
//! Properties, on any bytes:
//! - never panics; an end is within the input and just past a line end;
//! - fed in pieces (cut at fuzzer-chosen points, resuming from the
//!   `scanned` mark it leaves) it finds the same end as on the whole input;
//! - differential against httparse (Pingora's parser), called as
//!   Pingora calls it: where httparse reads a complete head of `n` bytes, the end
//!   is `n`; where we find an end, httparse does not want more bytes (a head
//!   we cut short would be read on past our limits by Pingora itself).
#![no_main]

use gateway::limits::head::head_end;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte chooses the cut points; the rest is the stream.
    let Some((&cuts, data)) = input.split_first() else {
        return;
    };
    let mut scanned = 0;
    let whole = head_end(data, &mut scanned);
    if let Some(end) = whole {
        assert!(end <= data.len(), "end {end} past {} bytes", data.len());
        assert_eq!(data[end - 1], b'\n', "an end just past a line end");
    }
    assert!(scanned <= data.len());

    // Feed it in pieces of 1 to 8 bytes, chosen by `cuts`' bits.
    let mut scanned = 0;
    let mut at = 0;
    let mut round = 0u32;
    let mut pieces = None;
    while at < data.len() {
        let step = 1 + ((cuts.rotate_left(round) as usize) & 7);
        round += 3;
        at = (at + step).min(data.len());
        if let Some(end) = head_end(&data[..at], &mut scanned) {
            pieces = Some(end);
            break;
        }
        assert!(scanned <= at, "scanned {scanned} past {at}");
    }
    assert_eq!(pieces, whole, "pieces and the whole input disagree");

    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    // As Pingora's v1 server parses (`Request::parse`, 256 headers).
    let parsed = req.parse(data);
    match (parsed, whole) {
        (Ok(httparse::Status::Complete(n)), ours) => {
            assert_eq!(ours, Some(n), "httparse reads a {n}-byte head")
        }
        (Ok(httparse::Status::Partial), Some(end)) => {
            panic!("we end a head at {end}, httparse wants more bytes")
        }
        _ => {}
    }
});
