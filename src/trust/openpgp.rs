//! OpenPGP keys and the signed messages of containers' simple signing, with rPGP (crate
//! `pgp`). The crate checks the cryptography; what makes a key fit to have signed is
//! checked here, at the signature's creation time: the issuing key is the primary key
//! or a subkey bound to it, it may sign (key flags), it had not expired, and it is not
//! revoked.

use pgp::composed::{Deserializable, Message, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Timestamp, VerifyingKey};
use std::path::{Path, PathBuf};

/// A key file that could not be read as OpenPGP public keys.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// Why a signature did not verify (or `Verified` with what it signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpgOutcome {
    /// The payload, signed by the key with this fingerprint.
    Verified { payload: Vec<u8>, signer: String },
    /// No configured key issued it.
    UnknownKey,
    /// The issuing key may not sign (no signing flag on it or its binding).
    NotSigningKey,
    /// Made after the issuing key expired.
    ExpiredKey,
    /// The issuing key (or its primary key) is revoked.
    RevokedKey,
    /// The bytes do not verify against the issuing key.
    BadSignature,
    /// Not a signed OpenPGP message rPGP reads (skipped, not fatal).
    Unreadable,
}

/// The OpenPGP public keys of a policy.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Reads each file (armored or binary, one or several keys each).
    pub fn from_files(paths: &[PathBuf]) -> Result<Keyring, KeyFileError> {
        let mut keys = Vec::new();
        for path in paths {
            keys.extend(read_keys(path)?);
        }
        Ok(Keyring { keys })
    }

    /// The keys, from bytes (armored or binary).
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, String> {
        Ok(Keyring {
            keys: parse_keys(bytes)?,
        })
    }

    /// Each primary key's fingerprint, upper-case hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| fingerprint(&k.primary_key)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a signed (not detached) OpenPGP message, decompressed first.
    pub fn verify(&self, message: &[u8]) -> GpgOutcome {
        let Ok(parsed) = Message::from_bytes(message) else {
            return GpgOutcome::Unreadable;
        };
        let Ok(mut msg) = parsed.decompress() else {
            return GpgOutcome::Unreadable;
        };
        if !msg.is_signed() {
            return GpgOutcome::Unreadable;
        }
        let Ok(payload) = msg.as_data_vec() else {
            return GpgOutcome::Unreadable;
        };
        let Message::Signed { reader, .. } = &msg else {
            return GpgOutcome::Unreadable;
        };
        let Some(signature) = reader.signature(0).cloned() else {
            return GpgOutcome::Unreadable;
        };
        let Some(signer) = self.issuer(&signature) else {
            return GpgOutcome::UnknownKey;
        };
        if msg.verify(signer.verifier()).is_err() {
            return GpgOutcome::BadSignature;
        }
        let Some(created) = signature.created() else {
            return GpgOutcome::BadSignature;
        };
        if let Err(outcome) = signer.fit_at(created) {
            return outcome;
        }
        GpgOutcome::Verified {
            payload,
            signer: signer.fingerprint(),
        }
    }

    /// The configured key (primary or subkey) the signature names as its issuer.
    fn issuer<'a>(&'a self, signature: &Signature) -> Option<Issuer<'a>> {
        let names = |k: &dyn KeyDetails| {
            signature.issuer_fingerprint().iter().any(|f| **f == k.fingerprint())
                || signature.issuer_key_id().iter().any(|id| **id == k.legacy_key_id())
        };
        for key in &self.keys {
            if names(&key.primary_key) {
                return Some(Issuer::Primary(key));
            }
            for sub in &key.public_subkeys {
                if names(&sub.key) {
                    return Some(Issuer::Subkey(key, sub));
                }
            }
        }
        None
    }
}

/// The key that issued a signature.
enum Issuer<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a SignedPublicKey, &'a SignedPublicSubKey),
}

impl Issuer<'_> {
    fn verifier(&self) -> &dyn VerifyingKey {
        match self {
            Issuer::Primary(k) => &k.primary_key,
            Issuer::Subkey(_, s) => &s.key,
        }
    }

    fn fingerprint(&self) -> String {
        match self {
            Issuer::Primary(k) => fingerprint(&k.primary_key),
            Issuer::Subkey(k, _) => fingerprint(&k.primary_key),
        }
    }

    /// Whether the key could sign at `at`: the primary key not revoked nor expired;
    /// for a subkey also a valid binding that allows signing, not expired, not revoked.
    fn fit_at(&self, at: Timestamp) -> Result<(), GpgOutcome> {
        let primary = match self {
            Issuer::Primary(k) | Issuer::Subkey(k, _) => *k,
        };
        if primary
            .details
            .revocation_signatures
            .iter()
            .any(|r| r.verify_key(&primary.primary_key).is_ok())
        {
            return Err(GpgOutcome::RevokedKey);
        }
        let self_signature = latest_self_signature(primary);
        if expired(
            primary.primary_key.created_at(),
            self_signature.and_then(Signature::key_expiration_time),
            at,
        ) {
            return Err(GpgOutcome::ExpiredKey);
        }
        match self {
            Issuer::Primary(_) => {
                // Without a key flags subpacket the primary key's use is not limited.
                if self_signature.and_then(flags).is_some_and(|f| !f.sign()) {
                    return Err(GpgOutcome::NotSigningKey);
                }
            }
            Issuer::Subkey(k, sub) => {
                let verified = |s: &&Signature| s.verify_subkey_binding(&k.primary_key, &sub.key).is_ok();
                if sub
                    .signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
                    .any(|s| s.verify_subkey_binding(&k.primary_key, &sub.key).is_ok())
                {
                    return Err(GpgOutcome::RevokedKey);
                }
                let binding = sub
                    .signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
                    .filter(verified)
                    .max_by_key(|s| s.created().map(Timestamp::as_secs))
                    .ok_or(GpgOutcome::NotSigningKey)?;
                if !flags(binding).is_some_and(|f| f.sign()) {
                    return Err(GpgOutcome::NotSigningKey);
                }
                if expired(sub.key.created_at(), binding.key_expiration_time(), at) {
                    return Err(GpgOutcome::ExpiredKey);
                }
            }
        }
        Ok(())
    }
}

/// The newest valid self-signature of the primary key (a direct-key signature or a user
/// ID certification): the one whose flags and expiry count.
fn latest_self_signature(key: &SignedPublicKey) -> Option<&Signature> {
    let direct = key.details.direct_signatures.iter();
    let certifications = key.details.users.iter().flat_map(|u| u.signatures.iter());
    direct
        .chain(certifications)
        .filter(|s| {
            s.issuer_fingerprint()
                .iter()
                .any(|f| **f == key.primary_key.fingerprint())
                || s.issuer_key_id()
                    .iter()
                    .any(|id| **id == key.primary_key.legacy_key_id())
        })
        .max_by_key(|s| s.created().map(Timestamp::as_secs))
}

/// A signature's key flags, when it carries them.
fn flags(s: &Signature) -> Option<pgp::packet::KeyFlags> {
    s.config()?.hashed_subpackets().find_map(|p| match &p.data {
        SubpacketData::KeyFlags(f) => Some(f.clone()),
        _ => None,
    })
}

/// Whether a key created at `created` with `lifetime` had expired by `at`.
fn expired(created: Timestamp, lifetime: Option<pgp::types::Duration>, at: Timestamp) -> bool {
    match lifetime {
        Some(l) if l.as_secs() > 0 => u64::from(at.as_secs()) > u64::from(created.as_secs()) + u64::from(l.as_secs()),
        _ => false,
    }
}

fn fingerprint(k: &dyn KeyDetails) -> String {
    hex::encode_upper(k.fingerprint().as_bytes())
}

fn parse_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let (keys, _) = SignedPublicKey::from_reader_many(bytes).map_err(|e| format!("not OpenPGP public keys: {e}"))?;
    let keys: Vec<SignedPublicKey> = keys
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not OpenPGP public keys: {e}"))?;
    if keys.is_empty() {
        return Err("no OpenPGP public key in it".into());
    }
    Ok(keys)
}

fn read_keys(path: &Path) -> Result<Vec<SignedPublicKey>, KeyFileError> {
    let error = |reason: String| KeyFileError {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    parse_keys(&bytes).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{KeyType, MessageBuilder, SecretKeyParamsBuilder};
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::types::{KeyVersion, Password};
    use rand::SeedableRng;

    /// A message signed (one-pass) by a key rPGP makes: (keyring, message).
    fn signed_by(version: KeyVersion, key_type: KeyType, hash: HashAlgorithm) -> (Keyring, Vec<u8>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let key = SecretKeyParamsBuilder::default()
            .version(version)
            .key_type(key_type)
            .can_sign(true)
            .primary_user_id("Signer <signer@example.invalid>".into())
            .passphrase(None)
            .build()
            .unwrap()
            .generate(&mut rng)
            .unwrap();
        let mut builder = MessageBuilder::from_bytes("", &b"{\"critical\":{}}"[..]);
        builder.sign(&*key, Password::empty(), hash);
        let message = builder.to_vec(&mut rng).unwrap();
        (
            Keyring {
                keys: vec![key.to_public_key()],
            },
            message,
        )
    }

    #[test]
    fn post_quantum_v6_signatures_verify() {
        let (ring, message) = signed_by(KeyVersion::V6, KeyType::MlDsa65Ed25519, HashAlgorithm::Sha3_512);
        match ring.verify(&message) {
            GpgOutcome::Verified { payload, signer } => {
                assert_eq!(payload, b"{\"critical\":{}}");
                assert_eq!(Some(&signer), ring.fingerprints().first());
            }
            other => panic!("a v6 ML-DSA-65+Ed25519 signature: {other:?}"),
        }
        let (other_ring, _) = signed_by(KeyVersion::V4, KeyType::Ed25519Legacy, HashAlgorithm::Sha256);
        assert_eq!(other_ring.verify(&message), GpgOutcome::UnknownKey);
    }

    #[test]
    fn a_flipped_byte_is_a_bad_signature_and_garbage_is_unreadable() {
        let (ring, mut message) = signed_by(KeyVersion::V4, KeyType::Ed25519Legacy, HashAlgorithm::Sha256);
        assert!(matches!(ring.verify(&message), GpgOutcome::Verified { .. }));
        let n = message.len();
        message[n - 5] ^= 0x40;
        assert_eq!(ring.verify(&message), GpgOutcome::BadSignature);
        assert_eq!(ring.verify(b"\x00\x01garbage"), GpgOutcome::Unreadable);
        assert_eq!(ring.verify(b""), GpgOutcome::Unreadable);
        assert!(Keyring::from_bytes(b"not a key").is_err());
    }
}
