//! Arbitrary bytes through a Decoder of one format, as a stream of lines: no panic, and
//! every accepted record an event with a timestamp that serialises.

#![no_main]

use kastell_ingest::{decode_reader, Decoder, Format, ParseContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(Format::Syslog, ParseContext::new("fuzz"));
    decode_reader(data, &mut decoder, |decoded| match decoded.result {
        Ok(event) => {
            assert!(event.timestamp().is_some(), "accepted without a timestamp");
            serde_json::to_vec(&event).expect("an event serialises");
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    })
    .expect("reading a slice cannot fail");
});
