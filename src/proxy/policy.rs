//! Signature policy at the edge: every manifest of an upstream with a policy, fetched or
//! cached, by tag or by digest, is served only when
//! - a signature of its own verifies it (simple signing from the lookaside or the
//!   registry's signature API, cosign from the `sha256-<hex>.sig` tag), or
//! - it is a platform manifest that a verified index of the same repository names, or
//! - it is an index without a signature of its own whose every platform manifest
//!   carries one (older images signed each platform only).
//!
//! Anything else is refused (403 `DENIED`, the upstream, `repo@digest` and why) or, in
//! audit mode, served and logged. Verdicts are kept (in memory and in the database) by
//! upstream, repository, digest, how the client asked and the policy's fingerprint: a
//! verified manifest is not verified again, also offline or after a restart; a refused
//! one is decided again after `tag_ttl` (its signatures may appear).

use super::{Proxy, ProxyError, ProxyResult, Target};
use crate::cache::{VerdictKey, now_ms};
use crate::metrics::VerdictLabels;
use crate::oci::image::index_entries;
use crate::oci::{Digest, media};
use crate::trust::{CosignSignature, Judgement, Mode, Policy, Requested, Verdict};
use bytes::Bytes;
use std::sync::Arc;
use tracing::warn;

/// A verdict and the words for it, kept together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// What was read (`2 read: 1 by an unknown key, …`), or how it passed.
    pub why: String,
    /// When it was decided (negative verdicts are decided again after `tag_ttl`).
    pub decided_ms: u64,
}

impl Decision {
    fn encode(&self) -> String {
        format!("{}\n{}\n{}", self.verdict.as_str(), self.decided_ms, self.why)
    }

    fn decode(text: &str) -> Option<Decision> {
        let mut parts = text.splitn(3, '\n');
        Some(Decision {
            verdict: Verdict::parse(parts.next()?)?,
            decided_ms: parts.next()?.parse().ok()?,
            why: parts.next().unwrap_or_default().to_string(),
        })
    }
}

/// The in-memory side of the verdicts (the database keeps them all).
pub type VerdictMemory = quick_cache::sync::Cache<VerdictKey, Decision>;

/// How many verdicts are kept in memory.
pub const VERDICTS_IN_MEMORY: usize = 100_000;

impl Proxy {
    /// Applies the target's policy to the manifest `digest` (`bytes`, `media_type`)
    /// about to be served for a request by `tag` (or by digest): the verdict when a
    /// policy applies and lets it through, `None` without a policy, or
    /// [`ProxyError::PolicyRefused`].
    pub(super) async fn apply_policy(
        &self,
        target: &Target,
        tag: Option<&str>,
        digest: &Digest,
        bytes: &Bytes,
        media_type: &str,
    ) -> ProxyResult<Option<Verdict>> {
        let Some(policy) = target.policy.clone() else {
            return Ok(None);
        };
        let key = VerdictKey {
            upstream: target.upstream.name.clone(),
            repo: target.repo.to_string(),
            digest: digest.to_string(),
            tag: tag.map(str::to_string),
            policy: policy.fingerprint().to_string(),
        };
        let decision = match self.kept_decision(&key).await? {
            Some(d) => d,
            None => {
                let d = self.decide(target, &policy, &key, bytes, media_type).await?;
                self.verdicts.insert(key.clone(), d.clone());
                self.cache.put_verdict(&key, &d.encode()).await?;
                d
            }
        };
        self.metrics
            .signature_verdicts
            .get_or_create(&VerdictLabels {
                upstream: key.upstream.clone(),
                verdict: decision.verdict.as_str(),
            })
            .inc();
        if decision.verdict == Verdict::Verified {
            return Ok(Some(decision.verdict));
        }
        let what = format!("{}@{digest}", target.repo);
        match policy.mode() {
            Mode::Audit => {
                warn!(upstream = %key.upstream, repo = %target.repo, %digest, verdict = decision.verdict.as_str(), "signature policy (audit) of upstream {}: {what} {} ({})", key.upstream, decision.verdict.as_str(), decision.why);
                Ok(Some(decision.verdict))
            }
            Mode::Enforce => {
                let message = match decision.verdict {
                    Verdict::Unsigned => format!("signature policy of upstream {}: {what} is unsigned", key.upstream),
                    _ => format!(
                        "signature policy of upstream {}: no signature verifies {what} ({})",
                        key.upstream, decision.why
                    ),
                };
                warn!(upstream = %key.upstream, repo = %target.repo, %digest, verdict = decision.verdict.as_str(), "{message}");
                Err(ProxyError::PolicyRefused {
                    message,
                    verdict: decision.verdict,
                })
            }
        }
    }

    /// A kept decision that still holds: a verification forever, a refusal for
    /// `tag_ttl`.
    async fn kept_decision(&self, key: &VerdictKey) -> ProxyResult<Option<Decision>> {
        let kept = match self.verdicts.get(key) {
            Some(d) => Some(d),
            None => {
                let stored = self.cache.verdict(key).await?.and_then(|t| Decision::decode(&t));
                if let Some(d) = &stored {
                    self.verdicts.insert(key.clone(), d.clone());
                }
                stored
            }
        };
        Ok(kept.filter(|d| {
            d.verdict == Verdict::Verified || now_ms().saturating_sub(d.decided_ms) < self.tag_ttl.as_millis() as u64
        }))
    }

    /// Decides anew (see the module header).
    async fn decide(
        &self,
        target: &Target,
        policy: &Arc<Policy>,
        key: &VerdictKey,
        bytes: &Bytes,
        media_type: &str,
    ) -> ProxyResult<Decision> {
        let decided = |verdict, why: String| Decision {
            verdict,
            why,
            decided_ms: now_ms(),
        };
        let digest = Digest::parse(&key.digest).map_err(|e| ProxyError::Verification(e.to_string()))?;
        let own = self.judge_own(target, policy, key.tag.as_deref(), &digest).await?;
        let index = media::is_index(&media::essence(media_type));
        let children: Vec<String> = if index {
            index_entries(bytes).into_iter().map(|e| e.digest).collect()
        } else {
            Vec::new()
        };
        if own.verdict == Verdict::Verified {
            if index {
                self.cache.put_covered(key, children).await?;
            }
            return Ok(decided(Verdict::Verified, own.explain()));
        }
        if key.tag.is_none() && self.cache.covered(key).await? {
            return Ok(decided(Verdict::Verified, "named by a verified index".into()));
        }
        if index && !children.is_empty() {
            let mut verified = 0;
            for child in &children {
                let Ok(d) = Digest::parse(child) else { continue };
                let j = self.judge_own(target, policy, key.tag.as_deref(), &d).await?;
                if j.verdict == Verdict::Verified {
                    verified += 1;
                }
            }
            if verified == children.len() {
                self.cache.put_covered(key, children).await?;
                return Ok(decided(Verdict::Verified, "every platform manifest is signed".into()));
            }
            return Ok(decided(
                own.verdict,
                format!(
                    "{}; {verified} of {} platform manifests verified",
                    own.explain(),
                    children.len()
                ),
            ));
        }
        Ok(decided(own.verdict, own.explain()))
    }

    /// The manifest's own signatures, judged: simple signing from the lookaside (kept
    /// like any lookaside signature) or the registry's signature API, and cosign's.
    async fn judge_own(
        &self,
        target: &Target,
        policy: &Policy,
        tag: Option<&str>,
        digest: &Digest,
    ) -> ProxyResult<Judgement> {
        let mut gpg = self.signatures(target, digest).await?;
        if gpg.is_empty()
            && target.upstream.sigstore.is_none()
            && let Some(api) = target.upstream.extension_signatures(&target.repo, digest).await?
        {
            gpg = api;
        }
        let cosign: Vec<CosignSignature> = if policy.has_cosign_keys() {
            target
                .upstream
                .cosign_signatures(&target.repo, digest)
                .await?
                .into_iter()
                .map(|(payload, signature)| CosignSignature { payload, signature })
                .collect()
        } else {
            Vec::new()
        };
        let digest_text = digest.to_string();
        let requested = Requested {
            repo: target.repo.as_str(),
            tag,
            digest: &digest_text,
        };
        Ok(policy.judge(&requested, &gpg, &cosign))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip() {
        let d = Decision {
            verdict: Verdict::WrongIdentity,
            why: "2 read: 1 by an unknown key, 1 for another identity".into(),
            decided_ms: 42,
        };
        assert_eq!(Decision::decode(&d.encode()), Some(d));
        assert_eq!(Decision::decode("nonsense"), None);
    }
}
