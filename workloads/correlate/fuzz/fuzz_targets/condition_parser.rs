//! Arbitrary text as a detection condition: the parser may refuse it, never panic, and a
//! refusal must point inside (or just past) the text.

#![no_main]

use kastell_correlate::condition;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = condition::parse(text) {
        assert!(error.position <= text.len());
        assert!(!error.message.is_empty());
    }
});
