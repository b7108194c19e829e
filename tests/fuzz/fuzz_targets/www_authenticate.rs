//! Fuzzes `pullgate::oci::challenge::parse` (the `WWW-Authenticate` header parser) on
//! arbitrary UTF-8: it must never panic nor loop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = pullgate::oci::challenge::parse(s);
});
