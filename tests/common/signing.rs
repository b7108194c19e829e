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
        Self::generate_with(name, "sign", "never", None)
    }

    /// A key of `usage` (`sign`, `cert`) expiring after `expire` (`never`, `1d`), made
    /// at `faked_time` (gpg's `--faked-system-time`, e.g. `20200101T000000`) if given.
    pub fn generate_with(name: &str, usage: &str, expire: &str, faked_time: Option<&str>) -> GpgKey {
        let home = tempfile::Builder::new()
            .prefix("pullgate-gpg-")
            .tempdir()
            .expect("GNUPGHOME");
        let mut key = GpgKey {
            public_key: home.path().join("public.asc"),
            home,
            fingerprint: String::new(),
        };
        let uid = format!("{name} <{name}@example.invalid>");
        let mut args = vec![
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            &uid,
            "ed25519",
            usage,
            expire,
        ];
        let faked;
        if let Some(t) = faked_time {
            faked = format!("--faked-system-time={t}");
            args.insert(0, &faked);
        }
        key.gpg(&args);
        let listing = String::from_utf8(key.gpg(&["--list-keys", "--with-colons"])).unwrap();
        key.fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_string()))
            .expect("a fingerprint");
        key.export();
        key
    }

    /// Runs gpg on this key's home; panics on failure; returns stdout.
    pub fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(require_tool("gpg"))
            .env("GNUPGHOME", self.home.path())
            .args(args)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Writes the public key (with its subkeys, signatures and revocations) to
    /// `public_key` again and returns it.
    pub fn export(&self) -> Vec<u8> {
        let armored = self.gpg(&["--export", "--armor", &self.fingerprint]);
        std::fs::write(&self.public_key, &armored).unwrap();
        armored
    }

    /// `gpg --sign` of `payload` (a hand-made simple-signing JSON), by `signer` (a key
    /// or subkey id, `!`-suffixed to force it) or the primary key, at `faked_time`.
    /// Uncompressed (`-z 0`), so a flipped byte near the end lands in the signature
    /// itself; `skopeo standalone-sign` ([`GpgKey::sign`]) writes compressed messages.
    pub fn sign_payload(&self, payload: &[u8], signer: Option<&str>, faked_time: Option<&str>) -> Vec<u8> {
        let input = self.home.path().join("payload.json");
        let output = self.home.path().join("payload.sig");
        std::fs::write(&input, payload).unwrap();
        let _ = std::fs::remove_file(&output);
        let mut args: Vec<String> = vec!["--batch".into(), "--yes".into(), "-z".into(), "0".into()];
        if let Some(t) = faked_time {
            args.push(format!("--faked-system-time={t}"));
        }
        if let Some(s) = signer {
            args.extend(["-u".into(), s.into()]);
        }
        args.extend([
            "--sign".into(),
            "-o".into(),
            output.display().to_string(),
            input.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.gpg(&args);
        std::fs::read(&output).unwrap()
    }

    /// `skopeo standalone-verify` of `signature` for `manifest` and `reference`, with
    /// this key's keyring: whether containers/image accepts it.
    pub fn standalone_verify(&self, manifest: &[u8], reference: &str, signature: &[u8]) -> Result<(), String> {
        let m = self.home.path().join("verify-manifest.json");
        let s = self.home.path().join("verify-signature");
        std::fs::write(&m, manifest).unwrap();
        std::fs::write(&s, signature).unwrap();
        let out = Command::new(require_tool("skopeo"))
            .env("GNUPGHOME", self.home.path())
            .arg("standalone-verify")
            .arg(&m)
            .arg(reference)
            .arg(&self.fingerprint)
            .arg(&s)
            .output()
            .expect("run skopeo standalone-verify");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Revokes the key (imports its revocation certificate) and re-exports it.
    pub fn revoke(&self) {
        let cert = self
            .home
            .path()
            .join(format!("openpgp-revocs.d/{}.rev", self.fingerprint));
        // gpg keeps the certificate inert with a leading ':' on its armor line.
        let text = std::fs::read_to_string(&cert)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        let armed = self.home.path().join("revoke.asc");
        std::fs::write(&armed, text).unwrap();
        self.gpg(&["--batch", "--import", armed.to_str().unwrap()]);
        self.export();
    }

    /// Adds a signing subkey; returns its fingerprint.
    pub fn add_signing_subkey(&self) -> String {
        self.gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-add-key",
            &self.fingerprint,
            "ed25519",
            "sign",
            "never",
        ]);
        self.export();
        let listing = String::from_utf8(self.gpg(&["--list-keys", "--with-colons", &self.fingerprint])).unwrap();
        listing
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_string()))
            .expect("a subkey fingerprint")
    }

    /// Takes the signing flag off the first subkey (a new binding signature, made a
    /// second later than the old one so it is the latest).
    pub fn drop_subkey_signing(&self) {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut child = Command::new(require_tool("gpg"))
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--expert",
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
                "--command-fd",
                "0",
                "--edit-key",
                &self.fingerprint,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gpg --edit-key");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"key 1\nchange-usage\nS\nA\nQ\nsave\n")
            .unwrap();
        assert!(child.wait().unwrap().success(), "gpg change-usage");
        self.export();
    }

    /// Sets the key to expire `period` (`1d`) after `faked_time` (a new self-signature).
    pub fn set_expiry(&self, period: &str, faked_time: &str) {
        self.gpg(&[
            &format!("--faked-system-time={faked_time}"),
            "--batch",
            "--passphrase",
            "",
            "--quick-set-expire",
            &self.fingerprint,
            period,
        ]);
        self.export();
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
