//! Arbitrary bytes into the parser and checker: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promql::Features;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        for features in [Features::none(), Features::all()] {
            if let Err(e) = promql::parse_with(query, features) {
                // Rendering the error must not panic either (carets, multi-byte text).
                let _ = format!("{e:#}");
            }
        }
    }
});
