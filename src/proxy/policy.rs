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

/// The in-memory side of the verdicts (the database keeps them all, with their words):
/// by a SHA-256 of the key's parts, so a hit builds no string.
pub type VerdictMemory = quick_cache::sync::Cache<[u8; 32], (Verdict, u64)>;

/// The memory key of a verdict: upstream, repository, digest, how the client asked,
/// policy fingerprint.
fn memory_key(upstream: &str, repo: &str, digest: &Digest, tag: Option<&str>, policy: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [upstream, repo, digest.hex(), tag.unwrap_or("\0digest"), policy] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// A policy's verdict counters, one per verdict, made once per upstream so a request
/// counts without building a label.
pub struct VerdictCounters(Vec<(Verdict, prometheus_client::metrics::counter::Counter)>);

impl VerdictCounters {
    pub fn new(metrics: &crate::metrics::Metrics, upstream: &str) -> VerdictCounters {
        VerdictCounters(
            Verdict::ALL
                .iter()
                .map(|v| {
                    let labels = VerdictLabels {
                        upstream: upstream.to_string(),
                        verdict: v.as_str(),
                    };
                    (*v, metrics.signature_verdicts.get_or_create_owned(&labels))
                })
                .collect(),
        )
    }

    /// `(verdict, count)` of every verdict, in [`Verdict::ALL`]'s order.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.0.iter().map(|(v, c)| (v.as_str(), c.get())).collect()
    }

    fn count(&self, verdict: Verdict) {
        if let Some((_, c)) = self.0.iter().find(|(v, _)| *v == verdict) {
            c.inc();
        }
    }
}

/// An upstream's policy as the proxy holds it: the policy and its counters.
pub struct RoutePolicy {
    pub policy: Policy,
    pub counters: VerdictCounters,
}

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
        let Some(route_policy) = target.policy.clone() else {
            return Ok(None);
        };
        let policy = &route_policy.policy;
        let memory = memory_key(
            &target.upstream.name,
            target.repo.as_str(),
            digest,
            tag,
            policy.fingerprint(),
        );
        let fresh = |verdict: Verdict, decided_ms: u64| {
            verdict == Verdict::Verified || now_ms().saturating_sub(decided_ms) < self.tag_ttl.as_millis() as u64
        };
        // The hot path: a kept verification, counted, nothing built.
        if let Some((Verdict::Verified, _)) = self.verdicts.get(&memory) {
            route_policy.counters.count(Verdict::Verified);
            return Ok(Some(Verdict::Verified));
        }
        let key = VerdictKey {
            upstream: target.upstream.name.clone(),
            repo: target.repo.to_string(),
            digest: digest.to_string(),
            tag: tag.map(str::to_string),
            policy: policy.fingerprint().to_string(),
        };
        let stored = self.cache.verdict(&key).await?.and_then(|t| Decision::decode(&t));
        let decision = match stored.filter(|d| fresh(d.verdict, d.decided_ms)) {
            Some(d) => d,
            None => {
                let d = self.decide(target, policy, &key, bytes, media_type).await?;
                self.cache.put_verdict(&key, &d.encode()).await?;
                d
            }
        };
        self.verdicts.insert(memory, (decision.verdict, decision.decided_ms));
        route_policy.counters.count(decision.verdict);
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

    /// Decides anew (see the module header).
    async fn decide(
        &self,
        target: &Target,
        policy: &Policy,
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
