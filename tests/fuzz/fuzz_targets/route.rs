//! Fuzzes `pullgate::oci::route::Route::parse` on arbitrary UTF-8, as given and with a
//! "/v2/" prefix so the fuzzer reaches the manifest/blob/tag/upload branches quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::oci::route::Route;

fuzz_target!(|s: &str| {
    let _ = Route::parse(s);
    let _ = Route::parse(&format!("/v2/{s}"));
});
