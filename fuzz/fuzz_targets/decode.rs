//! Feeds arbitrary bytes to the daemon protocol decoder, taking frames until it reports an
//! incomplete frame or an error, and checks each frame it returns: it must have consumed
//! exactly its own canonical encoding, decode again to itself, and pass `Frame::check`. The
//! blocking `read_frame` must read the same frames from the same bytes.
//!
//! `tests/protocol_fuzz.rs` checks the same property on stable Rust as part of the test suite.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use mod_wsgi::daemon::protocol::{Frame, HEADER_LEN, ProtocolError, read_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut frames = Vec::new();
    let end = loop {
        match Frame::decode(rest) {
            Ok(Some((frame, used))) => {
                assert!(used >= HEADER_LEN && used <= rest.len());
                let encoded = frame.encoded();
                assert_eq!(
                    encoded,
                    rest[..used],
                    "not the canonical encoding of {frame:?}"
                );
                assert_eq!(Frame::decode(&encoded), Ok(Some((frame.clone(), used))));
                assert_eq!(frame.check(), Ok(()));
                rest = &rest[used..];
                frames.push(frame);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };

    let mut cursor = Cursor::new(data);
    for frame in &frames {
        assert_eq!(read_frame(&mut cursor).as_ref(), Ok(frame));
    }
    match (end, read_frame(&mut cursor)) {
        (None, Err(ProtocolError::Closed)) => assert!(rest.is_empty()),
        (None, Err(ProtocolError::Io(_))) => assert!(!rest.is_empty()),
        (Some(decoded), read) => assert_eq!(read, Err(decoded)),
        (None, read) => panic!("decode wanted more bytes, read_frame gave {read:?}"),
    }
});
