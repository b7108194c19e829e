//! Image signatures for clients: lookaside (sigstore) signatures fetched from the
//! upstream's configured lookaside, cached byte-exact (present ones forever, absent
//! ones for `tag_ttl`), and the same signatures in the registry extension API's JSON.
//! Also the OCI referrers API, passed through and kept for when upstream is down.

use super::{Proxy, ProxyError, ProxyResult, Target};
use crate::cache::{SignatureEntry, StoredResponse, now_ms};
use crate::oci::Digest;
use crate::oci::media::OCI_INDEX;
use crate::oci::route::MAX_SIGNATURES;
use crate::upstream::UpstreamError;
use base64::Engine as _;
use bytes::Bytes;
use tracing::warn;

/// One entry of `GET /extensions/v2/<name>/signatures/<digest>`.
#[derive(serde::Serialize)]
struct ExtensionSignature {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    content: String,
}

#[derive(serde::Serialize)]
struct ExtensionSignatures {
    signatures: Vec<ExtensionSignature>,
}

/// A referrers index for a client.
pub struct ReferrersAnswer {
    pub body: String,
    pub content_type: String,
}

impl Proxy {
    /// Lookaside signature `index` (1-based) of `digest`; `None` when there is none.
    pub async fn signature(&self, target: &Target, digest: &Digest, index: u32) -> ProxyResult<Option<Bytes>> {
        if index == 0 || index > MAX_SIGNATURES {
            return Ok(None);
        }
        let upstream = target.upstream.name.as_str();
        let repo = target.repo.as_str();
        let cached = self.cache.signature(upstream, repo, digest, index).await?;
        match &cached {
            Some(SignatureEntry::Present(bytes)) => return Ok(Some(bytes.clone())),
            Some(SignatureEntry::Absent { checked_ms })
                if now_ms().saturating_sub(*checked_ms) < self.tag_ttl.as_millis() as u64 =>
            {
                return Ok(None);
            }
            _ => {}
        }
        match target.upstream.lookaside_signature(&target.repo, digest, index).await {
            Ok(Some(bytes)) => {
                self.cache
                    .put_signature(upstream, repo, digest, index, SignatureEntry::Present(bytes.clone()))
                    .await?;
                Ok(Some(bytes))
            }
            Ok(None) => {
                self.cache
                    .put_signature(
                        upstream,
                        repo,
                        digest,
                        index,
                        SignatureEntry::Absent { checked_ms: now_ms() },
                    )
                    .await?;
                Ok(None)
            }
            Err(e) if e.is_transient() && cached.is_some() => {
                warn!(upstream, repo, %digest, index, error = %e, "lookaside unavailable; answering from what is known");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every lookaside signature of `digest`, in order, up to the first missing one.
    pub async fn signatures(&self, target: &Target, digest: &Digest) -> ProxyResult<Vec<Bytes>> {
        let mut out = Vec::new();
        for index in 1..=MAX_SIGNATURES {
            match self.signature(target, digest, index).await? {
                Some(sig) => out.push(sig),
                None => break,
            }
        }
        Ok(out)
    }

    /// The extension API answer (JSON): every signature as an `atomic` entry. A
    /// lookaside that cannot be reached yields the signatures known so far (possibly
    /// none), because containers/image fails every pull on a non-200 here; a `signedBy`
    /// policy still fails closed on a missing signature.
    pub async fn extension_signatures(&self, target: &Target, digest: &Digest) -> ProxyResult<String> {
        let sigs = match self.signatures(target, digest).await {
            Ok(s) => s,
            Err(ProxyError::Upstream(e)) => {
                warn!(upstream = %target.upstream.name, %digest, error = %e, "lookaside unavailable; extension API answers without it");
                let mut known = Vec::new();
                for index in 1..=MAX_SIGNATURES {
                    match self
                        .cache
                        .signature(&target.upstream.name, target.repo.as_str(), digest, index)
                        .await?
                    {
                        Some(SignatureEntry::Present(b)) => known.push(b),
                        _ => break,
                    }
                }
                known
            }
            Err(e) => return Err(e),
        };
        let signatures = sigs
            .iter()
            .map(|bytes| ExtensionSignature {
                schema_version: 2,
                // containers/image ignores the name; Pulp keeps it as an identifier.
                name: format!("{digest}@{}", &Digest::of(bytes).hex()[..32]),
                kind: "atomic",
                content: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
            .collect();
        Ok(
            serde_json::to_string(&ExtensionSignatures { signatures })
                .unwrap_or_else(|_| r#"{"signatures":[]}"#.into()),
        )
    }

    /// The referrers API, passed through (with the client's `artifactType` filter); the
    /// last answer when upstream is unavailable.
    pub async fn referrers(
        &self,
        target: &Target,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> ProxyResult<ReferrersAnswer> {
        let query = match artifact_type {
            Some(t) => url::form_urlencoded::Serializer::new(String::new())
                .append_pair("artifactType", t)
                .finish(),
            None => String::new(),
        };
        let (upstream, repo) = (target.upstream.name.as_str(), target.repo.as_str());
        let response = match target.upstream.referrers(&target.repo, digest, &query).await {
            Ok((body, content_type)) => {
                let body = String::from_utf8(body.to_vec()).map_err(|_| {
                    ProxyError::Upstream(UpstreamError::Protocol("referrers index is not UTF-8".into()))
                })?;
                let response = StoredResponse { body, content_type };
                self.cache
                    .put_referrers(upstream, repo, digest, &query, response.clone())
                    .await?;
                response
            }
            Err(UpstreamError::NotFound) => {
                return Err(ProxyError::ManifestUnknown(
                    "upstream does not offer the referrers API; use the tag schema".into(),
                ));
            }
            Err(e) if e.is_transient() => match self.cache.referrers(upstream, repo, digest, &query).await? {
                Some(r) => r,
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(ReferrersAnswer {
            body: response.body,
            content_type: response.content_type.unwrap_or_else(|| OCI_INDEX.to_string()),
        })
    }
}
