//! Image signatures for interop tests: a throwaway GPG key (Debian's gpg) and
//! `skopeo standalone-sign`, producing the "simple signing" files that containers/image
//! verifies with a `signedBy` policy.
#![allow(dead_code)]

use super::registry::require_tool;
use std::path::PathBuf;
use std::process::Command;
use tempfile::TempDir;

pub struct GpgKey {
    home: TempDir,
    pub fingerprint: String,
    /// The armored public key, for `keyPath` in policy.json.
    pub public_key: PathBuf,
}

impl GpgKey {
    pub fn generate(name: &str) -> GpgKey {
        let gpg = require_tool("gpg");
        let home = tempfile::Builder::new()
            .prefix("pullgate-gpg-")
            .tempdir()
            .expect("GNUPGHOME");
        let run = |args: &[&str]| {
            let out = Command::new(&gpg)
                .env("GNUPGHOME", home.path())
                .args(args)
                .output()
                .expect("run gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{name}@example.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = String::from_utf8(run(&["--list-keys", "--with-colons"])).unwrap();
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_string()))
            .expect("a fingerprint");
        let public_key = home.path().join("public.asc");
        std::fs::write(&public_key, run(&["--export", "--armor", &fingerprint])).unwrap();
        GpgKey {
            home,
            fingerprint,
            public_key,
        }
    }

    /// Signs `manifest` for `reference` (the name clients use, e.g.
    /// `registry.redhat.io/ubi9/img:signed`) and returns the signature file's bytes.
    pub fn sign(&self, manifest: &[u8], reference: &str) -> Vec<u8> {
        let skopeo = require_tool("skopeo");
        let manifest_path = self.home.path().join("manifest.json");
        let sig_path = self.home.path().join("signature");
        std::fs::write(&manifest_path, manifest).unwrap();
        let out = Command::new(skopeo)
            .env("GNUPGHOME", self.home.path())
            .args(["standalone-sign", "--output"])
            .arg(&sig_path)
            .arg(&manifest_path)
            .arg(reference)
            .arg(&self.fingerprint)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run skopeo standalone-sign");
        assert!(
            out.status.success(),
            "standalone-sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&sig_path).unwrap()
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        // gpgme starts an agent for the key's home; stop it with the key.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
