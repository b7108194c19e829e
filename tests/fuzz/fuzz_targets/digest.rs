//! Fuzzes `pullgate::oci::Digest::parse`: never panics, and a parsed digest prints back
//! exactly as the input (`sha256:<64 lowercase hex>` is the only accepted form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::oci::Digest;

fuzz_target!(|s: &str| {
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s, "digest does not round-trip");
    }
});
