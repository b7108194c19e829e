//! Fuzzes `pullgate::config::parse_duration`, `parse_size` and `Config::from_toml_str`
//! on arbitrary UTF-8: none may panic (errors are fine).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::config::{Config, parse_duration, parse_size};

fuzz_target!(|s: &str| {
    let _ = parse_duration(s);
    let _ = parse_size(s);
    let _ = Config::from_toml_str(s);
});
