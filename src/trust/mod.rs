//! Signature policy, as pure functions: whether the signatures found for a manifest
//! verify it for a request, with OpenPGP keys (containers' simple signing, `openpgp`)
//! and cosign public keys (`cosign`), the payload and identity rules (`payload`), and
//! the verdict with what was read. The proxy fetches signatures and keeps verdicts; this
//! module only decides.

pub mod cosign;
pub mod openpgp;
pub mod payload;

use bytes::Bytes;
pub use cosign::CosignKeys;
pub use openpgp::{GpgOutcome, KeyFileError, Keyring};
pub use payload::{Mismatch, Requested};
use sha2::Digest as _;

/// What a policy does with a manifest no signature verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse it (403 `DENIED`).
    #[default]
    Enforce,
    /// Serve it and log the verdict.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// The verdict on one manifest, as metrics, logs and the access line name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Verified,
    Unsigned,
    UntrustedKey,
    BadSignature,
    WrongIdentity,
    WrongDigest,
    ExpiredKey,
    RevokedKey,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Verified,
        Verdict::Unsigned,
        Verdict::UntrustedKey,
        Verdict::BadSignature,
        Verdict::WrongIdentity,
        Verdict::WrongDigest,
        Verdict::ExpiredKey,
        Verdict::RevokedKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Unsigned => "unsigned",
            Verdict::UntrustedKey => "untrusted_key",
            Verdict::BadSignature => "bad_signature",
            Verdict::WrongIdentity => "wrong_identity",
            Verdict::WrongDigest => "wrong_digest",
            Verdict::ExpiredKey => "expired_key",
            Verdict::RevokedKey => "revoked_key",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// How one signature failed, as the refusal message counts it.
    fn phrase(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Unsigned => "unreadable",
            Verdict::UntrustedKey => "by an unknown key",
            Verdict::BadSignature => "bad",
            Verdict::WrongIdentity => "for another identity",
            Verdict::WrongDigest => "for another manifest",
            Verdict::ExpiredKey => "by an expired key",
            Verdict::RevokedKey => "by a revoked key",
        }
    }

    /// Which failure says most when several signatures fail: the one that came closest
    /// to verifying (a trusted key signing the wrong thing says more than a stranger's).
    fn weight(self) -> u8 {
        match self {
            Verdict::Verified => 9,
            Verdict::WrongDigest => 8,
            Verdict::WrongIdentity => 7,
            Verdict::RevokedKey => 6,
            Verdict::ExpiredKey => 5,
            Verdict::BadSignature => 4,
            Verdict::UntrustedKey => 3,
            Verdict::Unsigned => 0,
        }
    }
}

/// A cosign signature: a simple-signing layer's bytes and its signature annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignSignature {
    pub payload: Bytes,
    pub signature: String,
}

/// The verdict on a manifest and what each signature read came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One entry per signature read, in order (`Unsigned` for one that could not be read).
    pub outcomes: Vec<Verdict>,
}

impl Judgement {
    /// `2 read: 1 by an unknown key, 1 for another identity`, or `unsigned`.
    pub fn explain(&self) -> String {
        if self.outcomes.is_empty() {
            return "unsigned".into();
        }
        let mut counts: Vec<(Verdict, usize)> = Vec::new();
        for o in &self.outcomes {
            match counts.iter_mut().find(|(v, _)| v == o) {
                Some((_, n)) => *n += 1,
                None => counts.push((*o, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {}", v.phrase())).collect();
        format!("{} read: {}", self.outcomes.len(), parts.join(", "))
    }
}

/// One upstream's policy: its keys, the identities signatures may carry, the mode.
#[derive(Debug, Clone)]
pub struct Policy {
    keyring: Keyring,
    cosign: CosignKeys,
    identities: Vec<String>,
    mode: Mode,
    fingerprint: String,
}

impl Policy {
    pub fn new(keyring: Keyring, cosign: CosignKeys, identities: Vec<String>, mode: Mode) -> Policy {
        let mut parts: Vec<String> = keyring.fingerprints();
        parts.extend(cosign.fingerprints().into_iter().map(|f| format!("cosign:{f}")));
        parts.sort();
        let mut ids = identities.clone();
        ids.sort();
        let text = format!("{}\n{}\n{:?}", parts.join(","), ids.join(","), mode);
        let fingerprint = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8]);
        Policy {
            keyring,
            cosign,
            identities,
            mode,
            fingerprint,
        }
    }

    /// A hash of the keys, identities and mode: verdicts are kept under it, so a changed
    /// policy decides everything anew.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// The OpenPGP and cosign key fingerprints (for `check-config`).
    pub fn key_fingerprints(&self) -> (Vec<String>, Vec<String>) {
        (self.keyring.fingerprints(), self.cosign.fingerprints())
    }

    /// Whether cosign signatures are worth fetching.
    pub fn has_cosign_keys(&self) -> bool {
        !self.cosign.is_empty()
    }

    /// Judges a manifest (`requested.digest`) by its simple-signing signatures (the
    /// lookaside's bytes) and its cosign signatures.
    pub fn judge(&self, requested: &Requested<'_>, gpg: &[Bytes], cosign: &[CosignSignature]) -> Judgement {
        let mut outcomes = Vec::new();
        for message in gpg {
            outcomes.push(self.judge_gpg(requested, message));
        }
        for sig in cosign {
            outcomes.push(self.judge_cosign(requested, sig));
        }
        let verdict = outcomes
            .iter()
            .copied()
            .max_by_key(|v| v.weight())
            .filter(|v| *v != Verdict::Unsigned)
            .unwrap_or(Verdict::Unsigned);
        Judgement { verdict, outcomes }
    }

    fn judge_gpg(&self, requested: &Requested<'_>, message: &[u8]) -> Verdict {
        match self.keyring.verify(message) {
            GpgOutcome::Verified { payload, .. } => {
                match payload::check_simple_signing(&payload, requested, &self.identities) {
                    Ok(()) => Verdict::Verified,
                    Err(m) => mismatch(m),
                }
            }
            GpgOutcome::UnknownKey | GpgOutcome::NotSigningKey => Verdict::UntrustedKey,
            GpgOutcome::ExpiredKey => Verdict::ExpiredKey,
            GpgOutcome::RevokedKey => Verdict::RevokedKey,
            GpgOutcome::BadSignature => Verdict::BadSignature,
            GpgOutcome::Unreadable => Verdict::Unsigned,
        }
    }

    fn judge_cosign(&self, requested: &Requested<'_>, sig: &CosignSignature) -> Verdict {
        if !self.cosign.verifies(&sig.payload, &sig.signature) {
            return if self.cosign.is_empty() {
                Verdict::UntrustedKey
            } else {
                Verdict::BadSignature
            };
        }
        match payload::check_cosign(&sig.payload, requested, &self.identities) {
            Ok(()) => Verdict::Verified,
            Err(m) => mismatch(m),
        }
    }
}

fn mismatch(m: Mismatch) -> Verdict {
    match m {
        Mismatch::Malformed => Verdict::BadSignature,
        Mismatch::WrongDigest => Verdict::WrongDigest,
        Mismatch::WrongIdentity => Verdict::WrongIdentity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_and_explain() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
        }
        let j = Judgement {
            verdict: Verdict::WrongIdentity,
            outcomes: vec![Verdict::UntrustedKey, Verdict::WrongIdentity],
        };
        assert_eq!(j.explain(), "2 read: 1 by an unknown key, 1 for another identity");
        let none = Judgement {
            verdict: Verdict::Unsigned,
            outcomes: vec![],
        };
        assert_eq!(none.explain(), "unsigned");
    }

    #[test]
    fn nothing_readable_is_unsigned_and_one_good_signature_wins() {
        let policy = Policy::new(
            Keyring::default(),
            CosignKeys::default(),
            vec!["r".into()],
            Mode::Enforce,
        );
        let req = Requested {
            repo: "a",
            tag: None,
            digest: "sha256:00",
        };
        let j = policy.judge(&req, &[Bytes::from_static(b"garbage")], &[]);
        assert_eq!(j.verdict, Verdict::Unsigned);
        assert_eq!(j.explain(), "1 read: 1 unreadable");
        let fp = policy.fingerprint().to_string();
        let audit = Policy::new(Keyring::default(), CosignKeys::default(), vec!["r".into()], Mode::Audit);
        assert_ne!(audit.fingerprint(), fp, "the mode is part of the fingerprint");
    }
}
