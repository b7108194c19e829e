//! Repository names and manifest references (tag or digest), validated by the
//! distribution-spec grammar so nothing malformed travels further in.

use super::digest::{Digest, DigestError};
use std::fmt;

/// Longest repository name accepted, as distribution enforces.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name such as `ubi9/ubi` or `registry.redhat.io/ubi9/ubi`: one or more
/// `/`-separated components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}")]
    BadComponent(String),
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: exactly ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !valid_component(component) {
                let shown: String = component.chars().take(64).collect();
                return Err(NameError::BadComponent(shown));
            }
        }
        Ok(RepoName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with `prefix/` removed, when it starts with that whole-component prefix.
    pub fn strip_prefix(&self, prefix: &str) -> Option<RepoName> {
        let rest = self.0.strip_prefix(prefix)?.strip_prefix('/')?;
        (!rest.is_empty()).then(|| RepoName(rest.to_string()))
    }

    /// `true` when the name is `prefix` itself or starts with `prefix/`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.0 == prefix || self.strip_prefix(prefix).is_some()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
        (first_ok && rest_ok && b.len() <= MAX_TAG_LEN).then(|| Tag(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a mutable tag or an immutable digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid tag {0:?}")]
    BadTag(String),
    #[error(transparent)]
    BadDigest(#[from] DigestError),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a valid tag.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') {
            return Ok(Reference::Digest(Digest::parse(s)?));
        }
        Tag::parse(s)
            .map(Reference::Tag)
            .ok_or_else(|| ReferenceError::BadTag(s.chars().take(64).collect()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "ubi9",
            "ubi9/ubi",
            "registry.redhat.io/ubi9/ubi-minimal",
            "a__b/c--d/e.f",
            "a/b/c/d/e/f",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "A", "a/../b", "..", "a/.", "a.-b", "a___b", "%2e%2e", "a\0b", "a b", "-a", "a-",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RepoName::parse(&"a".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn prefixes() {
        let n = RepoName::parse("registry.redhat.io/ubi9/ubi").unwrap();
        assert_eq!(n.strip_prefix("registry.redhat.io").unwrap().as_str(), "ubi9/ubi");
        assert!(n.strip_prefix("registry.redhat").is_none());
        assert!(n.has_prefix("registry.redhat.io/ubi9"));
        assert!(
            RepoName::parse("registry.redhat.io")
                .unwrap()
                .strip_prefix("registry.redhat.io")
                .is_none()
        );
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(Reference::parse("sha256-abc.sig"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:totallywrong"),
            Err(ReferenceError::BadDigest(_))
        ));
        assert!(Reference::parse(".hidden").is_err());
        assert!(Reference::parse(&"a".repeat(129)).is_err());
        assert!(Reference::parse("").is_err());
    }

    proptest! {
        #[test]
        fn name_parse_never_panics(s in "\\PC{0,300}") {
            if let Ok(n) = RepoName::parse(&s) {
                prop_assert!(!n.as_str().contains(".."));
                prop_assert!(!n.as_str().starts_with('/'));
            }
        }

        #[test]
        fn reference_parse_never_panics(s in "\\PC{0,200}") {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn generated_names_parse(parts in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5})?", 1..6)) {
            let s = parts.join("/");
            prop_assert!(RepoName::parse(&s).is_ok(), "{}", s);
        }
    }
}
