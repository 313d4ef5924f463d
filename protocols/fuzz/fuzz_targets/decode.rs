//! Feeds arbitrary bytes to `wire::Decoder`, whole and in a chunking chosen by the input, and checks
//! that decoding never panics, that both chunkings give the same messages and error, and that every
//! decoded message re-encodes to something that decodes to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::Message;
use shoal_protocols::wire::{self, Decoder, DecoderLimits, WireError};

/// Bytes at the start of the input that steer the fuzzing rather than being decoded.
const CONTROL: usize = 8;

fuzz_target!(|data: &[u8]| {
    let (control, stream) = data.split_at(data.len().min(CONTROL));
    let limits = DecoderLimits {
        // Sometimes a tiny piece limit, to reach the bitfield-size checks.
        max_pieces: if control.first().is_some_and(|b| b & 1 == 1) { 64 } else { wire::DEFAULT_MAX_PIECES },
        accept_tagged: control.first().is_none_or(|b| b & 2 == 0),
        ..DecoderLimits::default()
    };
    let whole = decode(&limits, [stream]);
    let chunked = decode(&limits, chunks(stream, control));
    assert_eq!(whole, chunked, "the chunking changed the result");
    for msg in whole.iter().filter_map(|r| r.as_ref().ok()) {
        // Anything decoded is in range and under the frame limit, so it must re-encode.
        let bytes = wire::encode_to_vec(msg).expect("a decoded message re-encodes");
        assert_eq!(wire::encoded_len(msg), bytes.len() as u64);
        let again = decode(&limits, [bytes.as_slice()]);
        assert_eq!(again, vec![Ok(msg.clone())], "re-encoding changed the message");
    }
});

/// Splits `stream` into chunks of 1 to 64 bytes, sizes cycling through the control bytes.
fn chunks<'a>(mut stream: &'a [u8], control: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut sizes = control.iter().map(|b| usize::from(b >> 2) + 1).cycle();
    while !stream.is_empty() {
        // `cycle` over an empty control yields nothing: then feed the rest at once.
        let n = sizes.next().unwrap_or(stream.len()).min(stream.len());
        let (chunk, rest) = stream.split_at(n);
        out.push(chunk);
        stream = rest;
    }
    out
}

/// Messages and the first error, pulling after every chunk.
fn decode<'a>(
    limits: &DecoderLimits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Result<Message, WireError>> {
    let mut d = Decoder::new(limits.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}
