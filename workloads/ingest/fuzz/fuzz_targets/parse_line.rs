//! Arbitrary bytes into every parser and both format detectors: none may panic, and every
//! accepted record must become an event with a timestamp that serialises.

#![no_main]

use kastell_ingest::{detect_format, detect_stream_format, parse_line, Format, ParseContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = ParseContext::new("fuzz");
    let _ = detect_format(data);
    let _ = detect_stream_format(data);
    for format in Format::ALL {
        match parse_line(format, data, &ctx) {
            Ok(event) => {
                assert!(event.timestamp().is_some(), "accepted without a timestamp");
                assert_eq!(event.sensor(), Some("fuzz"));
                serde_json::to_vec(&event).expect("an event serialises");
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
            }
        }
    }
});
