//! A short fuzz run of the daemon protocol decoder on stable Rust, part of the normal test suite.
//!
//! It checks the same property as the cargo-fuzz target `fuzz/fuzz_targets/decode.rs`, over
//! 200,000 inputs from a deterministic xorshift generator: mostly valid encodings of random
//! frames, one to three back to back, damaged by bit flips, byte edits, cuts, insertions and
//! edits of length fields; some wholly random bytes. For every input:
//! - `Frame::decode`, applied until it returns `Ok(None)` or an error, never panics;
//! - every frame it returns consumed exactly its canonical encoding (re-encoding gives the same
//!   bytes), decodes again to itself, and passes `Frame::check`;
//! - `read_frame` over the same bytes gives the same frames and then the matching end: `Closed`
//!   where the bytes ran out at a frame boundary, `Io` where they ran out inside a frame, and
//!   the decoder's error otherwise.
//!
//! The run also counts outcomes and fails if some error was never reached, so a generator that
//! stops exploring is noticed. A failure names the case number and prints the input in hex.

use std::collections::BTreeMap;
use std::io::Cursor;

use mod_wsgi::daemon::protocol::{
    Frame, HEADER_LEN, HeadFrame, MAX_PAYLOAD, ProtocolError, RequestFrame, SECRET_LEN, VERSION,
    read_frame,
};

const CASES: u64 = 200_000;
const SEED: u64 = 0x5eed_f00d_d00d_cafe;

#[test]
fn decoder_survives_random_and_mutated_input() {
    let mut rng = Rng(SEED);
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut frames = 0;

    for case in 0..CASES {
        let input = generate(&mut rng);
        match check_input(&input) {
            Ok((decoded, outcome)) => {
                frames += decoded;
                *outcomes.entry(outcome).or_default() += 1;
            }
            Err(message) => panic!("case {case}: {message}\ninput: {}", hex(&input)),
        }
    }

    eprintln!("{CASES} inputs, {frames} frames decoded; outcomes: {outcomes:?}");
    assert!(frames > CASES / 2, "too few valid frames: {frames}");
    for outcome in [
        "incomplete",
        "BadMagic",
        "UnsupportedVersion",
        "UnknownType",
        "TooLarge",
        "Truncated",
        "TrailingBytes",
        "InvalidUtf8",
        "InvalidValue",
    ] {
        assert!(
            outcomes.get(outcome).copied().unwrap_or(0) > 0,
            "never reached: {outcome}"
        );
    }
}

/// Runs the property on one input. Returns the number of frames decoded and how decoding
/// stopped, or a description of the violation.
fn check_input(input: &[u8]) -> Result<(u64, &'static str), String> {
    let mut rest = input;
    let mut decoded = Vec::new();
    let end = loop {
        match Frame::decode(rest) {
            Ok(Some((frame, used))) => {
                if used < HEADER_LEN || used > rest.len() {
                    return Err(format!("consumed {used} of {} bytes", rest.len()));
                }
                let encoded = frame.encoded();
                if encoded != rest[..used] {
                    return Err(format!("{frame:?} re-encodes to {}", hex(&encoded)));
                }
                let again = Frame::decode(&encoded);
                if again != Ok(Some((frame.clone(), used))) {
                    return Err(format!("{frame:?} decodes again to {again:?}"));
                }
                if let Err(e) = frame.check() {
                    return Err(format!("decoded {frame:?} fails check: {e}"));
                }
                rest = &rest[used..];
                decoded.push(frame);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };

    // The blocking reader must agree with the sans-I/O decoder.
    let mut cursor = Cursor::new(input);
    for frame in &decoded {
        let read = read_frame(&mut cursor);
        if read.as_ref() != Ok(frame) {
            return Err(format!("read_frame gave {read:?}, decode gave {frame:?}"));
        }
    }
    let read_end = read_frame(&mut cursor);
    let agrees = match (&end, &read_end) {
        (None, Err(ProtocolError::Closed)) => rest.is_empty(),
        (None, Err(ProtocolError::Io(_))) => !rest.is_empty(),
        (Some(e), Err(r)) => e == r,
        _ => false,
    };
    if !agrees {
        return Err(format!(
            "decode ended with {end:?} but read_frame with {read_end:?}"
        ));
    }

    let count = u64::try_from(decoded.len()).unwrap_or(u64::MAX);
    Ok((count, end.as_ref().map_or("incomplete", name)))
}

fn name(error: &ProtocolError) -> &'static str {
    match error {
        ProtocolError::BadMagic => "BadMagic",
        ProtocolError::UnsupportedVersion(_) => "UnsupportedVersion",
        ProtocolError::UnknownType(_) => "UnknownType",
        ProtocolError::TooLarge(_) => "TooLarge",
        ProtocolError::Truncated => "Truncated",
        ProtocolError::TrailingBytes(_) => "TrailingBytes",
        ProtocolError::InvalidUtf8 => "InvalidUtf8",
        ProtocolError::InvalidValue(_) => "InvalidValue",
        _ => "other",
    }
}

/// One fuzz input.
fn generate(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(10) {
        // Random bytes, half of them behind a plausible header start.
        let mut bytes = Vec::new();
        if rng.one_in(2) {
            bytes.extend_from_slice(&[b'W', b'S', VERSION, rng.below(14) as u8]);
        }
        bytes.extend(rng.bytes(40));
        return bytes;
    }

    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..1 + rng.below(3) {
        starts.push(bytes.len());
        random_frame(rng).encode(&mut bytes);
    }
    for _ in 0..rng.below(4) {
        mutate(rng, &mut bytes, &starts);
    }
    bytes
}

/// A valid frame of a random type.
fn random_frame(rng: &mut Rng) -> Frame {
    match rng.below(13) {
        0 => Frame::Request(Box::new(RequestFrame {
            secret: [rng.next() as u8; SECRET_LEN],
            script: rng.bytes(12),
            application_group: rng.text(8),
            callable: rng.text(4),
            request_id: rng.text(4),
            handler: rng.text(4),
            reloading: rng.one_in(2),
            header_only: rng.one_in(2),
            request_start_us: rng.next() as i64,
            env: (0..rng.below(5))
                .map(|_| (rng.bytes(6), rng.bytes(6)))
                .collect(),
        })),
        1 => Frame::ReadBody {
            max: 1 + rng.below(MAX_PAYLOAD) as u32,
        },
        2 => Frame::Body(nonempty(rng.bytes(16))),
        3 => Frame::BodyEnd,
        4 => Frame::BodyError,
        5 => Frame::Head(HeadFrame {
            status: 100 + rng.below(900) as u16,
            reason: rng.one_in(2).then(|| rng.text(6)),
            headers: (0..rng.below(4))
                .map(|_| (rng.text(5), rng.text(5)))
                .collect(),
        }),
        6 => Frame::Data(nonempty(rng.bytes(16))),
        7 => Frame::End,
        8 => Frame::Abort,
        9 => Frame::Retry,
        10 => Frame::Accepted,
        11 => {
            let offset = rng.next() >> (2 + rng.below(62));
            Frame::File {
                offset,
                len: 1 + (rng.next() >> 1).min(i64::MAX as u64 - 1 - offset),
            }
        }
        _ => Frame::Failure {
            status: 100 + rng.below(900) as u16,
        },
    }
}

fn nonempty(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.is_empty() {
        bytes.push(0);
    }
    bytes
}

/// Damages `bytes` once; `starts` are the offsets where frames began before any damage.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, starts: &[usize]) {
    if bytes.is_empty() {
        return;
    }
    let at = rng.below(bytes.len());
    match rng.below(8) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => bytes[at] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())],
        2 => bytes.truncate(at),
        3 => {
            let insert = rng.bytes(4);
            bytes.splice(at..at, insert);
        }
        4 => {
            let end = (at + 1 + rng.below(4)).min(bytes.len());
            bytes.drain(at..end);
        }
        5 => {
            // A frame header's payload length, nudged or replaced.
            let field = starts[rng.below(starts.len())] + 4;
            if let Some(slot) = bytes.get_mut(field..field + 4) {
                let old = u32::from_be_bytes([slot[0], slot[1], slot[2], slot[3]]);
                slot.copy_from_slice(&interesting_u32(rng, old).to_be_bytes());
            }
        }
        6 => {
            // Any four bytes read as a length or count inside a payload.
            if let Some(slot) = bytes.get_mut(at..at + 4) {
                let old = u32::from_be_bytes([slot[0], slot[1], slot[2], slot[3]]);
                slot.copy_from_slice(&interesting_u32(rng, old).to_be_bytes());
            }
        }
        _ => {
            // A frame type code.
            let field = starts[rng.below(starts.len())] + 3;
            if let Some(byte) = bytes.get_mut(field) {
                *byte = rng.below(15) as u8;
            }
        }
    }
}

const INTERESTING_BYTES: [u8; 10] = [0, 1, 2, 3, 0x7f, 0x80, 0xc3, 0xfe, 0xff, b'W'];

fn interesting_u32(rng: &mut Rng, old: u32) -> u32 {
    let max = MAX_PAYLOAD as u32;
    match rng.below(8) {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => old.wrapping_add(rng.below(16) as u32),
        3 => old.wrapping_sub(rng.below(16) as u32),
        4 => [0, 1, 2, 4, 8][rng.below(5)],
        5 => [max, max + 1, u32::MAX, u32::MAX / 2, 0x8000_0000][rng.below(5)],
        6 => old.swap_bytes(),
        _ => rng.next() as u32,
    }
}

/// xorshift64*: small, fast and the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        (0..self.below(max + 1))
            .map(|_| self.next() as u8)
            .collect()
    }

    /// Up to `max` characters, some of them outside ASCII, so that damage can break UTF-8.
    fn text(&mut self, max: usize) -> String {
        const CHARS: [char; 8] = ['a', 'Z', '0', ' ', '-', 'é', '€', '😀'];
        (0..self.below(max + 1))
            .map(|_| CHARS[self.below(CHARS.len())])
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
