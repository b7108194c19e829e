//! Content digests (`sha256:<64 lowercase hex>`), the only algorithm pullgate accepts,
//! and the streaming hasher that checks bytes against them.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A validated `sha256:` digest. Construction guarantees 64 lowercase hex characters,
/// so the hex part is safe to use in storage keys and file names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must have the form sha256:<64 lowercase hex>")]
    Malformed,
    #[error("unsupported digest algorithm {0:?}: only sha256 is supported")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// Parses `sha256:<hex>`. Uppercase hex is rejected, as the OCI spec requires.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if algorithm != "sha256" {
            let valid_algorithm = !algorithm.is_empty()
                && algorithm.len() <= 32
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if valid_algorithm {
                DigestError::UnsupportedAlgorithm(algorithm.to_string())
            } else {
                DigestError::Malformed
            });
        }
        Self::from_hex(encoded)
    }

    /// Builds a digest from the 64-character lowercase hex encoding alone.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_string() })
        } else {
            Err(DigestError::Malformed)
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Hashes bytes as they stream past and counts them.
#[derive(Clone, Default)]
pub struct DigestHasher {
    hasher: Sha256,
    len: u64,
}

impl DigestHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.hasher.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_valid_and_rejects_invalid() {
        assert_eq!(Digest::parse(EMPTY).unwrap().to_string(), EMPTY);
        assert_eq!(Digest::of(b""), Digest::parse(EMPTY).unwrap());
        assert_eq!(
            Digest::parse(&EMPTY.to_uppercase().replace("SHA256", "sha256")),
            Err(DigestError::Malformed)
        );
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse("sha256"), Err(DigestError::Malformed));
        assert_eq!(
            Digest::parse("sha512:00"),
            Err(DigestError::UnsupportedAlgorithm("sha512".into()))
        );
        assert_eq!(Digest::parse("SHA256:00"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse("totallywrong"), Err(DigestError::Malformed));
        assert!(Digest::parse(&format!("{EMPTY}0")).is_err());
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = DigestHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_roundtrips(s in ".{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.to_string(), s);
            }
        }

        #[test]
        fn any_hex_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let s = format!("sha256:{}", hex::encode(&bytes));
            prop_assert_eq!(Digest::parse(&s).unwrap().to_string(), s);
        }
    }
}
