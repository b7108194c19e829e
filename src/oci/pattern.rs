//! Repository name patterns (`ubi9/*`, `rhel?/*`, `*-minimal`) for the upstreams'
//! allow/deny lists and the cache tooling's `--repo`: shell-style globs in which `*`
//! also matches `/`, compiled once with `globset`.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A set of compiled patterns; an empty set matches nothing.
#[derive(Debug, Clone)]
pub struct RepoPatterns {
    set: GlobSet,
    count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a repository pattern such as \"ubi9/*\": {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl RepoPatterns {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<RepoPatterns, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let refuse = |reason: &str| PatternError {
                pattern: p.to_string(),
                reason: reason.to_string(),
            };
            if p.is_empty() || p.starts_with('/') || p.chars().any(char::is_whitespace) {
                return Err(refuse("empty, absolute or containing spaces"));
            }
            let glob = GlobBuilder::new(p)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| refuse(&e.kind().to_string()))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| PatternError {
            pattern: patterns.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", "),
            reason: e.to_string(),
        })?;
        Ok(RepoPatterns {
            set,
            count: patterns.len(),
        })
    }

    /// One pattern.
    pub fn one(pattern: &str) -> Result<RepoPatterns, PatternError> {
        Self::new(&[pattern])
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn matches(&self, repo: &str) -> bool {
        self.set.is_match(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_match(pattern: &str, text: &str) -> bool {
        RepoPatterns::one(pattern).unwrap().matches(text)
    }

    #[test]
    fn globs() {
        assert!(glob_match("ubi9/*", "ubi9/ubi"));
        assert!(glob_match("ubi9/*", "ubi9/a/b"));
        assert!(!glob_match("ubi9/*", "ubi9"));
        assert!(!glob_match("ubi9/*", "ubi8/ubi"));
        assert!(glob_match("*-minimal", "ubi9/ubi-minimal"));
        assert!(glob_match("rhel?/*", "rhel9/httpd"));
        assert!(glob_match("*", "anything/at/all"));
        assert!(!glob_match("a*b*c", "a-b-d"));
    }

    #[test]
    fn sets_and_bad_patterns() {
        let set = RepoPatterns::new(&["ubi9/*", "rhel8/postgres"]).unwrap();
        assert!(set.matches("ubi9/ubi") && set.matches("rhel8/postgres"));
        assert!(!set.matches("rhel8/other"));
        assert!(RepoPatterns::new::<&str>(&[]).unwrap().is_empty());
        assert!(!RepoPatterns::new::<&str>(&[]).unwrap().matches("x"));
        for bad in ["", "/abs", "a b", "ubi[9"] {
            assert!(RepoPatterns::one(bad).is_err(), "{bad:?}");
        }
    }
}
