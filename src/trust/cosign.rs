//! cosign's key-based signatures: ECDSA P-256 public keys (PEM, as `cosign
//! generate-key-pair` writes them) and the base64 signature of a simple-signing layer's
//! bytes. Keyless signing (Fulcio certificates, Rekor entries) is not supported.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;
use std::path::PathBuf;

pub use crate::oci::media::{
    COSIGN_SIGNATURE_ANNOTATION as SIGNATURE_ANNOTATION, COSIGN_SIMPLE_SIGNING as SIMPLE_SIGNING_LAYER,
};

/// cosign public keys of a policy.
#[derive(Debug, Clone, Default)]
pub struct CosignKeys {
    keys: Vec<VerifyingKey>,
}

impl CosignKeys {
    /// Reads each PEM file (`-----BEGIN PUBLIC KEY-----`, P-256).
    pub fn from_files(paths: &[PathBuf]) -> Result<CosignKeys, super::openpgp::KeyFileError> {
        let mut keys = Vec::new();
        for path in paths {
            let error = |reason: String| super::openpgp::KeyFileError {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
            keys.push(Self::parse(&text).map_err(error)?);
        }
        Ok(CosignKeys { keys })
    }

    fn parse(pem: &str) -> Result<VerifyingKey, String> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| format!("not an ECDSA P-256 public key in PEM (as cosign writes cosign.pub): {e}"))
    }

    /// The keys, from PEM text (tests, one key).
    pub fn from_pem(pem: &str) -> Result<CosignKeys, String> {
        Ok(CosignKeys {
            keys: vec![Self::parse(pem)?],
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key's fingerprint: the SHA-256 of its SubjectPublicKeyInfo, hex.
    pub fn fingerprints(&self) -> Vec<String> {
        use p256::pkcs8::EncodePublicKey as _;
        self.keys
            .iter()
            .map(|k| match k.to_public_key_der() {
                Ok(der) => hex::encode(sha2::Sha256::digest(der.as_bytes())),
                Err(_) => String::from("?"),
            })
            .collect()
    }

    /// Whether one of the keys made `signature_b64` (DER or fixed-size, base64) over
    /// `payload`.
    pub fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        let Ok(signature) = Signature::from_der(&raw).or_else(|_| Signature::from_slice(&raw)) else {
            return false;
        };
        self.keys.iter().any(|k| k.verify(payload, &signature).is_ok())
    }
}
