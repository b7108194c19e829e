//! Signature policy verdicts, kept so that a restart or an upstream outage serves
//! verified content without verifying again: by upstream, repository, digest, how the
//! client asked (a tag's identity differs from a digest's) and the policy's fingerprint
//! (a changed policy decides anew). Beside them, the platform manifests a verified
//! index names, which its signature covers.

use super::{Cache, CacheResult};

/// What a verdict is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub upstream: String,
    pub repo: String,
    pub digest: String,
    /// The tag asked for, or `None` for a request by digest.
    pub tag: Option<String>,
    pub policy: String,
}

impl VerdictKey {
    fn bytes(&self) -> Vec<u8> {
        let form = match &self.tag {
            Some(t) => format!("tag:{t}"),
            None => "digest".into(),
        };
        format!(
            "v\n{}\n{}\n{}\n{form}\n{}",
            self.upstream, self.repo, self.digest, self.policy
        )
        .into_bytes()
    }

    /// The key marking `digest` as covered by a verified index of the same repository.
    fn covered(&self) -> Vec<u8> {
        format!("c\n{}\n{}\n{}\n{}", self.upstream, self.repo, self.digest, self.policy).into_bytes()
    }
}

impl Cache {
    /// The verdict kept for `key` (its name, as `trust::Verdict` spells it).
    pub async fn verdict(&self, key: &VerdictKey) -> CacheResult<Option<String>> {
        let k = key.bytes();
        self.blocking(move |i| Ok(i.verdicts.get(k)?.map(|v| String::from_utf8_lossy(&v).into_owned())))
            .await
    }

    pub async fn put_verdict(&self, key: &VerdictKey, verdict: &str) -> CacheResult<()> {
        let (k, v) = (key.bytes(), verdict.as_bytes().to_vec());
        self.blocking(move |i| {
            i.verdicts.insert(k, v)?;
            Ok(())
        })
        .await
    }

    /// Whether a verified index of the repository names `key.digest`.
    pub async fn covered(&self, key: &VerdictKey) -> CacheResult<bool> {
        let k = key.covered();
        self.blocking(move |i| Ok(i.verdicts.contains_key(k)?)).await
    }

    /// Marks `children` of a verified index as covered by it.
    pub async fn put_covered(&self, key: &VerdictKey, children: Vec<String>) -> CacheResult<()> {
        let keys: Vec<Vec<u8>> = children
            .into_iter()
            .map(|digest| VerdictKey { digest, ..key.clone() }.covered())
            .collect();
        let parent = key.digest.clone().into_bytes();
        self.blocking(move |i| {
            for k in keys {
                i.verdicts.insert(k, parent.clone())?;
            }
            Ok(())
        })
        .await
    }
}
