//! What an upstream serves besides manifests and blobs: signatures (the lookaside, and
//! any signature file at a configured URL, as OpenShift's release signature store), other
//! documents fetched anonymously from a configured host (the update graph), the referrers
//! API and tag-list pages.

use super::error::classify;
use super::{Upstream, UpstreamError, header_string, host_allowed, host_port, retry_after};
use crate::oci::{Digest, RepoName, media};
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};

/// A document fetched with [`Upstream::get_document`].
#[derive(Debug, Clone)]
pub struct Document {
    pub status: u16,
    pub content_type: Option<String>,
    /// `Retry-After` of a 429 or 503, in seconds.
    pub retry_after: Option<u64>,
    /// The body of a 200 (empty otherwise).
    pub body: Bytes,
}

impl Upstream {
    /// Signature `index` of `digest` from the upstream's lookaside, anonymously (as
    /// containers/image reads lookasides). `None` when there is no such signature: a
    /// 404, a 403 from object storage, or an HTML page served with 200.
    pub async fn lookaside_signature(
        &self,
        repo: &RepoName,
        digest: &Digest,
        index: u32,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let Some(base) = &self.sigstore else { return Ok(None) };
        let url = url::Url::parse(&format!(
            "{}/{}@sha256={}/signature-{index}",
            base.as_str().trim_end_matches('/'),
            repo.as_str(),
            digest.hex()
        ))
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        self.signature_document(url, media::MAX_MANIFEST_BYTES).await
    }

    /// A signature file at `url` (a lookaside's, or OpenShift's release signature store,
    /// whose protocol is the same): the bytes, or `None` when there is none.
    pub async fn signature_document(&self, url: url::Url, limit: usize) -> Result<Option<Bytes>, UpstreamError> {
        let document = self.get_document(url, None, limit).await?;
        match document.status {
            200 => {
                // An HTML page is a missing signature behind a web front end, not a signature.
                let bytes = document.body;
                let looks_like_html = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
                Ok((!bytes.is_empty() && !looks_like_html).then_some(bytes))
            }
            401 | 403 | 404 | 410 => Ok(None),
            429 => Err(UpstreamError::TooManyRequests {
                retry_after: document.retry_after,
            }),
            code => Err(UpstreamError::Status(code)),
        }
    }

    /// The signatures of `digest` from the registry signature extension API, when the
    /// upstream advertises it on `/v2/` (`X-Registry-Supports-Signatures: 1`); `None`
    /// when it does not offer the API.
    pub async fn extension_signatures(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<Bytes>>, UpstreamError> {
        if !self.advertises_signature_api().await? {
            return Ok(None);
        }
        // The API's path is not under /v2/: name the repository as repo_path does.
        let path = match &self.behind {
            Some(super::RemoteUpstream::PathPrefix(name)) => {
                format!("/extensions/v2/{name}/{repo}/signatures/{digest}")
            }
            Some(super::RemoteUpstream::Ns(name)) => format!("/extensions/v2/{repo}/signatures/{digest}?ns={name}"),
            None => format!("/extensions/v2/{repo}/signatures/{digest}"),
        };
        let resp = self.send(Method::GET, &path, repo, Self::base_headers()).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.check_status(&resp)?;
        let body = self.small_body(resp, media::MAX_MANIFEST_BYTES).await?;
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "schemaVersion", default)]
            schema_version: u32,
            #[serde(rename = "type", default)]
            kind: String,
            #[serde(default)]
            content: String,
        }
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            signatures: Vec<Entry>,
        }
        use base64::Engine as _;
        let list: List = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Protocol("the signature API answered something that is not its JSON".into()))?;
        Ok(Some(
            list.signatures
                .into_iter()
                .filter(|e| e.schema_version == 2 && e.kind == "atomic")
                .filter_map(|e| base64::engine::general_purpose::STANDARD.decode(e.content).ok())
                .map(Bytes::from)
                .collect(),
        ))
    }

    /// Whether `/v2/` advertises the signature extension API (asked once).
    async fn advertises_signature_api(&self) -> Result<bool, UpstreamError> {
        self.signature_api
            .get_or_try_init(|| async {
                let url = self.url("/v2/")?;
                let resp = tokio::time::timeout(self.response_timeout, self.client.get(url).send())
                    .await
                    .map_err(|_| UpstreamError::Timeout("response headers"))?
                    .map_err(|e| classify(&self.name, e))?;
                Ok(resp
                    .headers()
                    .get("x-registry-supports-signatures")
                    .is_some_and(|v| v.as_bytes() == b"1"))
            })
            .await
            .copied()
    }

    /// The cosign signatures of `digest`: the layers of its `sha256-<hex>.sig` manifest
    /// with the simple-signing media type, each checked against its digest, with its
    /// signature annotation. Empty when there is no such tag.
    pub async fn cosign_signatures(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<(Bytes, String)>, UpstreamError> {
        let manifest = match self.get_manifest(repo, &format!("sha256-{}.sig", digest.hex())).await {
            Ok(m) => m,
            Err(UpstreamError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        #[derive(serde::Deserialize)]
        struct Layer {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            digest: String,
            #[serde(default)]
            annotations: std::collections::HashMap<String, String>,
        }
        #[derive(serde::Deserialize)]
        struct SigManifest {
            #[serde(default)]
            layers: Vec<Layer>,
        }
        let parsed: SigManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|_| UpstreamError::Protocol("the cosign signature manifest is not a manifest".into()))?;
        let mut out = Vec::new();
        for layer in parsed.layers {
            let Some(signature) = layer.annotations.get(media::COSIGN_SIGNATURE_ANNOTATION) else {
                continue;
            };
            if layer.media_type != media::COSIGN_SIMPLE_SIGNING {
                continue;
            }
            let Ok(layer_digest) = Digest::parse(&layer.digest) else {
                continue;
            };
            let payload = self.small_blob(repo, &layer_digest).await?;
            out.push((payload, signature.clone()));
        }
        Ok(out)
    }

    /// A small blob (at most 1 MiB), read whole and checked against its digest.
    async fn small_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Bytes, UpstreamError> {
        let mut body = self.get_blob(repo, digest, 0).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > 1 << 20 {
                return Err(UpstreamError::Protocol(format!("blob {digest} is larger than 1 MiB")));
            }
        }
        if Digest::of(&bytes) != *digest {
            return Err(UpstreamError::Protocol(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(Bytes::from(bytes))
    }

    /// An anonymous GET of a document that is not a registry API call (a signature, the
    /// update graph), on the host `url` names: it must be a configured one (the
    /// upstream's own, its lookaside's, or an allowed host), and redirects go only to
    /// allowed hosts, as for blobs. The body (at most `limit` bytes, else an error) is
    /// read for a 200 only.
    pub async fn get_document(
        &self,
        url: url::Url,
        accept: Option<&str>,
        limit: usize,
    ) -> Result<Document, UpstreamError> {
        let origin = host_port(&url);
        let configured =
            origin == host_port(&self.base) || self.sigstore.as_ref().is_some_and(|s| host_port(s) == origin);
        if !configured && !host_allowed(&url, &self.allow_redirect_hosts) {
            return Err(UpstreamError::RedirectRefused {
                host: url.host_str().unwrap_or_default().to_string(),
            });
        }
        let mut headers = Self::base_headers();
        if let Some(accept) = accept {
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            );
        }
        let resp = self
            .send_following_redirects(Method::GET, url, &headers, None, origin)
            .await?;
        let status = resp.status().as_u16();
        let content_type = header_string(resp.headers(), "content-type");
        let retry_after = retry_after(resp.headers());
        let body = if status == 200 {
            if resp.content_length().is_some_and(|l| l > limit as u64) {
                return Err(UpstreamError::Protocol(format!(
                    "upstream body larger than {limit} bytes"
                )));
            }
            self.small_body(resp, limit).await?
        } else {
            Bytes::new()
        };
        Ok(Document {
            status,
            content_type,
            retry_after,
            body,
        })
    }

    /// The OCI referrers API: the index body and its `Content-Type`.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        query: &str,
    ) -> Result<(Bytes, Option<String>), UpstreamError> {
        let mut path = format!("referrers/{digest}");
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let path = self.repo_path(repo, &path);
        let mut headers = Self::base_headers();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        let resp = self.send(Method::GET, &path, repo, headers).await?;
        self.check_status(&resp)?;
        let content_type = header_string(resp.headers(), "content-type");
        Ok((self.small_body(resp, media::MAX_MANIFEST_BYTES).await?, content_type))
    }

    /// One page of the tag list: the body and the `Link` next target (path + query).
    pub async fn tags_list(&self, repo: &RepoName, query: &str) -> Result<(Bytes, Option<String>), UpstreamError> {
        let path = if query.is_empty() {
            self.repo_path(repo, "tags/list")
        } else {
            self.repo_path(repo, &format!("tags/list?{query}"))
        };
        let resp = self.send(Method::GET, &path, repo, Self::base_headers()).await?;
        self.check_status(&resp)?;
        let link = header_string(resp.headers(), "link");
        let body = tokio::time::timeout(self.response_timeout, resp.bytes())
            .await
            .map_err(|_| UpstreamError::Timeout("the tag list body"))?
            .map_err(|e| classify(&self.name, e))?;
        Ok((body, link.and_then(|l| next_link_target(&l))))
    }
}

/// The target of a `Link: <…>; rel="next"` header, as path and query.
pub fn next_link_target(link: &str) -> Option<String> {
    for part in link.split(',') {
        let part = part.trim();
        let (target, params) = part.strip_prefix('<')?.split_once('>')?;
        if params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        }) {
            let path_and_query = match url::Url::parse(target) {
                Ok(u) => match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                },
                Err(_) => target.to_string(),
            };
            return Some(path_and_query);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        assert_eq!(
            next_link_target(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        assert_eq!(
            next_link_target(r#"<https://h/v2/a/tags/list?n=1>;rel=next"#).as_deref(),
            Some("/v2/a/tags/list?n=1")
        );
        assert_eq!(next_link_target(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link_target("garbage"), None);
    }
}
