//! Fuzzes `pullgate::oci::Reference::parse` and `pullgate::oci::RepoName::parse`: never
//! panic, and an accepted repository name never contains ".." nor starts with '/'.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::oci::{Reference, RepoName};

fuzz_target!(|s: &str| {
    let _ = Reference::parse(s);
    if let Ok(name) = RepoName::parse(s) {
        let n = name.as_str();
        assert!(!n.contains(".."), "accepted name with '..': {n:?}");
        assert!(!n.starts_with('/'), "accepted name starting with '/': {n:?}");
    }
});
