//! The client replicas use to ask each other (`[cluster]`): a blob or manifest from the
//! replica that owns its digest, over the peer routes, with the shared secret and the
//! hop header. Failures say whether the peer is unreachable (mark it down and ask the
//! next) or answered (it is alive; only a 404 is an answer to pass on).

use super::FetchedManifest;
use super::error::classify;
use crate::oci::{Digest, RepoName, media};
use crate::secret::Secret;
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};
use std::time::Duration;

pub use crate::oci::route::{HOP_HEADER, PEER_PREFIX, SECRET_HEADER};

/// What the peer client is built from.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// This replica's URL (the hop header's value).
    pub self_url: String,
    pub secret: Secret,
    pub connect_timeout: Duration,
    /// How long a peer may take to answer (its own upstream's time included).
    pub answer_timeout: Duration,
    /// Longest silence within a body.
    pub idle_timeout: Duration,
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer cannot be reached, timed out or broke off: ask the next one.
    #[error("peer {member} unreachable: {cause}")]
    Unreachable { member: String, cause: String },
    /// The owner says upstream has no such thing.
    #[error("not found")]
    NotFound,
    /// The peer answered with an error status: it is alive, but this answer is not one
    /// to pass on (its upstream failed, or the clusters disagree on a setting).
    #[error("peer {member} answered {status}")]
    Answered { member: String, status: u16 },
    #[error("peer client: {0}")]
    Setup(String),
}

/// A blob body from a peer.
pub struct PeerBlob {
    /// The whole blob's size, when the peer said it.
    pub total: Option<u64>,
    member: String,
    response: reqwest::Response,
    idle_timeout: Duration,
}

impl PeerBlob {
    /// The next frame, bounded by the idle timeout; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, PeerError>> {
        let cause = match tokio::time::timeout(self.idle_timeout, self.response.chunk()).await {
            Ok(Ok(Some(b))) => return Some(Ok(b)),
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => classify("peer", e).to_string(),
            Err(_) => "no bytes within the idle timeout".to_string(),
        };
        Some(Err(PeerError::Unreachable {
            member: self.member.clone(),
            cause,
        }))
    }

    pub fn member(&self) -> &str {
        &self.member
    }
}

pub struct PeerClient {
    client: reqwest::Client,
    settings: PeerSettings,
}

impl PeerClient {
    pub fn new(settings: PeerSettings) -> Result<PeerClient, PeerError> {
        super::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .no_proxy()
            .user_agent(super::USER_AGENT);
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| PeerError::Setup(format!("cluster.ca_file: not PEM certificates: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| PeerError::Setup(e.to_string()))?;
        Ok(PeerClient { client, settings })
    }

    async fn send(
        &self,
        method: Method,
        member: &str,
        upstream: &str,
        path: &str,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, PeerError> {
        let mut url = url::Url::parse(&format!("{member}{PEER_PREFIX}{path}"))
            .map_err(|e| PeerError::Setup(format!("peer URL: {e}")))?;
        url.query_pairs_mut().append_pair("ns", upstream);
        let mut req = self
            .client
            .request(method, url)
            .header(SECRET_HEADER, self.settings.secret.expose())
            .header(HOP_HEADER, &self.settings.self_url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let unreachable = |cause: String| PeerError::Unreachable {
            member: member.to_string(),
            cause,
        };
        let resp = tokio::time::timeout(self.settings.answer_timeout, req.send())
            .await
            .map_err(|_| unreachable("no answer within peer_timeout".into()))?
            .map_err(|e| unreachable(classify("peer", e).to_string()))?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(PeerError::NotFound),
            s => Err(PeerError::Answered {
                member: member.to_string(),
                status: s.as_u16(),
            }),
        }
    }

    /// A blob from `member`, from offset `from` on.
    pub async fn get_blob(
        &self,
        member: &str,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        from: u64,
    ) -> Result<PeerBlob, PeerError> {
        let mut headers = Vec::new();
        if from > 0 {
            let range =
                HeaderValue::from_str(&format!("bytes={from}-")).map_err(|e| PeerError::Setup(e.to_string()))?;
            headers.push((RANGE, range));
        }
        let path = format!("/v2/{}/blobs/{digest}", repo.as_str());
        let resp = self.send(Method::GET, member, upstream, &path, &headers).await?;
        let total = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(super::parse_content_range);
                match range {
                    Some((start, total)) if start == from => total,
                    _ => {
                        return Err(PeerError::Answered {
                            member: member.to_string(),
                            status: 206,
                        });
                    }
                }
            }
            _ if from > 0 => {
                return Err(PeerError::Answered {
                    member: member.to_string(),
                    status: resp.status().as_u16(),
                });
            }
            _ => resp.content_length(),
        };
        Ok(PeerBlob {
            total,
            member: member.to_string(),
            response: resp,
            idle_timeout: self.settings.idle_timeout,
        })
    }

    /// A blob's size as `member` knows it.
    pub async fn head_blob(
        &self,
        member: &str,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, PeerError> {
        let path = format!("/v2/{}/blobs/{digest}", repo.as_str());
        let resp = self.send(Method::HEAD, member, upstream, &path, &[]).await?;
        Ok(resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// A manifest by tag or digest as `member` stores it (every manifest type accepted,
    /// so the stored bytes come back whatever they are).
    pub async fn get_manifest(
        &self,
        member: &str,
        upstream: &str,
        repo: &RepoName,
        reference: &str,
    ) -> Result<FetchedManifest, PeerError> {
        let accept = HeaderValue::from_str(&format!(
            "{}, {}, {}",
            media::upstream_manifest_accept(),
            media::DOCKER_V1_SIGNED,
            media::DOCKER_V1
        ))
        .map_err(|e| PeerError::Setup(e.to_string()))?;
        let path = format!("/v2/{}/manifests/{reference}", repo.as_str());
        let resp = self
            .send(Method::GET, member, upstream, &path, &[(ACCEPT, accept)])
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let digest_header = header("docker-content-digest");
        let mut body = PeerBlob {
            total: None,
            member: member.to_string(),
            response: resp,
            idle_timeout: self.settings.idle_timeout,
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > media::MAX_MANIFEST_BYTES {
                return Err(PeerError::Answered {
                    member: member.to_string(),
                    status: 413,
                });
            }
        }
        Ok(FetchedManifest {
            bytes: Bytes::from(bytes),
            content_type,
            digest_header,
        })
    }
}
