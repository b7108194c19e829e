//! Signature parsing: `trust::Keyring::verify` on the input as a signed OpenPGP
//! message (with a fixed ed25519 key, so messages by it reach verification), the input
//! as a key file (`Keyring::from_bytes`), and as a simple-signing and a cosign payload
//! for a request by tag and by digest. Never panics; a message that verifies names
//! the fixed key's fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::trust::{GpgOutcome, Keyring, Requested, payload};
use std::sync::LazyLock;

static KEYRING: LazyLock<Keyring> =
    LazyLock::new(|| Keyring::from_bytes(include_bytes!("signature-key.asc")).expect("the fuzz key parses"));

fuzz_target!(|data: &[u8]| {
    if let GpgOutcome::Verified { signer, .. } = KEYRING.verify(data) {
        assert_eq!(Some(&signer), KEYRING.fingerprints().first());
    }
    let _ = Keyring::from_bytes(data);
    let ids = vec!["registry.redhat.io".to_string()];
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    for tag in [Some("latest"), None] {
        let requested = Requested { repo: "ubi9/ubi", tag, digest };
        let _ = payload::check_simple_signing(data, &requested, &ids);
        let _ = payload::check_cosign(data, &requested, &ids);
    }
});
