//! The upstream client: one reqwest client per configured registry, the Bearer/Basic
//! token flow, redirects followed by pullgate itself (only to allowed hosts, never with
//! `Authorization`, never shown to clients), timeouts per phase, and a circuit breaker;
//! failures typed by host and phase (`error.rs`), counted and logged (`failures.rs`);
//! the hop-by-hop walk of `pullgate doctor` (`doctor.rs`). Only this module names
//! reqwest. `prefetch` uses it too, with a running pullgate as the registry. Signatures,
//! other documents, referrers and tag lists are in `documents.rs`; this file keeps the
//! request path itself (auth, send, redirects) with the manifest and blob calls on it,
//! which is why it runs a little over 800 lines.

pub mod auth;
mod breaker;
pub mod doctor;
mod documents;
pub mod egress;
mod error;
mod failures;
pub mod openshift;
pub mod peer;

pub use auth::Credentials;
pub use documents::{Document, next_link_target};
pub use egress::HostView;
pub use error::{NetPhase, UpstreamError};

use crate::metrics::{Metrics, RedirectLabels, UpstreamLabels};
use crate::oci::{Digest, RepoName, challenge, media};
use auth::{AuthState, Scheme, TokenResponse};
use breaker::Breaker;
use bytes::Bytes;
use error::{Resolver, classify};
use failures::FailureLog;
use prometheus_client::metrics::counter::Counter;
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("pullgate/", env!("CARGO_PKG_VERSION"));
/// How long a credential the token endpoint refused is not offered again.
const DENIED_MEMORY: Duration = Duration::from_secs(30);

/// What an upstream client is built from (the composition root reads the config and
/// the secret files).
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub url: url::Url,
    /// The signature lookaside base URL, when configured.
    pub sigstore: Option<url::Url>,
    pub credentials: Option<Credentials>,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// An HTTP(S) proxy every request goes through.
    pub egress_proxy: Option<String>,
    pub allow_redirect_hosts: Vec<String>,
    pub allow_realm_hosts: Vec<String>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_idle_timeout: Duration,
    /// When the upstream is another pullgate: how its upstream is named in requests.
    pub behind: Option<RemoteUpstream>,
    /// Pause requests after repeated failures (off for `prefetch`, whose requests are
    /// independent images: one failing must not hold back the rest).
    pub circuit_breaker: bool,
}

/// The upstream of another pullgate (a site cache in front of the DMZ's), and how
/// requests name it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUpstream {
    /// `/v2/<name>/<repo>/…`
    PathPrefix(String),
    /// `/v2/<repo>/…?ns=<name>`
    Ns(String),
}

impl UpstreamSettings {
    /// Settings with the default timeouts (10 s connect, 30 s response, 60 s idle) and
    /// nothing else allowed: for clients of a registry that needs no more (`prefetch`).
    pub fn new(name: impl Into<String>, url: url::Url) -> UpstreamSettings {
        UpstreamSettings {
            name: name.into(),
            url,
            sigstore: None,
            credentials: None,
            ca_pem: None,
            egress_proxy: None,
            allow_redirect_hosts: Vec::new(),
            allow_realm_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            behind: None,
            circuit_breaker: true,
        }
    }
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("CA certificates of upstream {upstream}: {reason}")]
    Certificates { upstream: String, reason: String },
    #[error("egress_proxy {proxy:?}: {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("cannot build the HTTP client for {upstream}: {reason}")]
    Client { upstream: String, reason: String },
}

/// A manifest as upstream served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub content_type: Option<String>,
    pub digest_header: Option<String>,
}

/// What a manifest HEAD said.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub content_type: Option<String>,
}

/// A blob body on its way in.
pub struct BlobBody {
    pub status: StatusCode,
    pub content_length: Option<u64>,
    /// For a 206: the first byte and the total size from `Content-Range`.
    pub range_start: Option<u64>,
    pub range_total: Option<u64>,
    /// The host that finally served the body (the CDN, after a redirect).
    pub served_by: String,
    response: reqwest::Response,
    idle_timeout: Duration,
    /// The upstream's name, for its errors.
    upstream: String,
    /// `host:port` the body comes from, and where its failures are counted and logged.
    host: String,
    failures: Arc<FailureLog>,
    /// Counts the bytes received (`pullgate_upstream_bytes_total`; blob bodies only).
    received: Option<Counter>,
}

impl BlobBody {
    /// The next frame, bounded by the idle timeout; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        let failed = match tokio::time::timeout(self.idle_timeout, self.response.chunk()).await {
            Err(_) => UpstreamError::Timeout("the next body frame"),
            Ok(Ok(Some(b))) => {
                if let Some(c) = &self.received {
                    c.inc_by(b.len() as u64);
                }
                return Some(Ok(b));
            }
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => classify(&self.upstream, e),
        };
        self.failures.record(&failed, &self.host);
        Some(Err(failed))
    }
}

pub struct Upstream {
    pub name: String,
    /// The signature lookaside base URL, when configured.
    pub sigstore: Option<url::Url>,
    base: url::Url,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    allow_redirect_hosts: Vec<String>,
    allow_realm_hosts: Vec<String>,
    response_timeout: Duration,
    idle_timeout: Duration,
    auth: std::sync::Mutex<AuthState>,
    metrics: Arc<Metrics>,
    /// This upstream's `pullgate_upstream_bytes_total`, and its label for the others.
    received: Counter,
    labels: UpstreamLabels,
    breaker: std::sync::Mutex<Breaker>,
    /// Scopes the token endpoint refused, until when: wrong credentials are not retried
    /// for every client request.
    denied: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Serialises token fetches so concurrent misses do not stampede the realm.
    token_fetch: tokio::sync::Mutex<()>,
    /// Failed requests, counted and logged (shared with the blob bodies).
    failures: Arc<FailureLog>,
    /// When the upstream is another pullgate: the name of its upstream.
    behind: Option<RemoteUpstream>,
    circuit_breaker: bool,
    /// Whether `/v2/` advertises the signature extension API, once asked.
    signature_api: tokio::sync::OnceCell<bool>,
}

/// Installs rustls' ring provider once per process (reqwest is built without one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn host_port(u: &url::Url) -> (String, Option<u16>) {
    (
        u.host_str().unwrap_or("").to_ascii_lowercase(),
        u.port_or_known_default(),
    )
}

/// `host:port` of a URL (the scheme's default port when it has none), as logs, metric
/// labels, errors and `doctor` name it: never the path or query.
fn host_port_label(u: &url::Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or(0)
    )
}

/// `true` when `url`'s host matches an entry (`host` or `host:port`).
fn host_allowed(url: &url::Url, allowed: &[String]) -> bool {
    let (host, port) = host_port(url);
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h == host && p.parse::<u16>().ok() == port,
            _ => entry == host,
        }
    })
}

impl Upstream {
    /// The upstream registry's host, for audit lines.
    pub fn host(&self) -> &str {
        self.base.host_str().unwrap_or_default()
    }

    pub fn new(settings: UpstreamSettings, metrics: Arc<Metrics>) -> Result<Upstream, SetupError> {
        install_crypto_provider();
        let name = settings.name;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Typed DNS failures: `pullgate doctor` and the logs tell them from others.
            .dns_resolver(Arc::new(Resolver))
            .connect_timeout(settings.connect_timeout)
            .user_agent(USER_AGENT);
        if let Some(pem) = &settings.ca_pem {
            let refuse = |reason: String| SetupError::Certificates {
                upstream: name.clone(),
                reason,
            };
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| refuse(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(refuse("no certificate in the file".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(proxy) = &settings.egress_proxy {
            let proxy = reqwest::Proxy::all(proxy).map_err(|e| SetupError::Proxy {
                proxy: proxy.clone(),
                reason: e.to_string(),
            })?;
            builder = builder.proxy(proxy);
        }
        let client = builder.build().map_err(|e| SetupError::Client {
            upstream: name.clone(),
            reason: e.to_string(),
        })?;
        let labels = UpstreamLabels { upstream: name.clone() };
        let failures = Arc::new(FailureLog::new(
            name.clone(),
            host_port_label(&settings.url),
            metrics.clone(),
        ));
        Ok(Upstream {
            received: metrics.upstream_bytes.get_or_create_owned(&labels),
            labels,
            name,
            sigstore: settings.sigstore,
            base: settings.url,
            client,
            credentials: settings.credentials,
            allow_redirect_hosts: settings.allow_redirect_hosts,
            allow_realm_hosts: settings.allow_realm_hosts,
            response_timeout: settings.response_timeout,
            idle_timeout: settings.body_idle_timeout,
            auth: std::sync::Mutex::new(AuthState::default()),
            metrics,
            breaker: std::sync::Mutex::default(),
            denied: std::sync::Mutex::default(),
            token_fetch: tokio::sync::Mutex::new(()),
            failures,
            behind: settings.behind,
            circuit_breaker: settings.circuit_breaker,
            signature_api: tokio::sync::OnceCell::new(),
        })
    }

    /// `/v2/<repo>/<rest>` (`rest` may carry a query) as this upstream names the
    /// repository: behind another pullgate, with that one's upstream as a path prefix or
    /// as `ns`.
    fn repo_path(&self, repo: &RepoName, rest: &str) -> String {
        let (rest, query) = rest.split_once('?').map_or((rest, None), |(r, q)| (r, Some(q)));
        let mut path = match &self.behind {
            Some(RemoteUpstream::PathPrefix(name)) => format!("/v2/{name}/{}/{rest}", repo.as_str()),
            _ => format!("/v2/{}/{rest}", repo.as_str()),
        };
        let ns = match &self.behind {
            Some(RemoteUpstream::Ns(name)) => Some(format!("ns={name}")),
            _ => None,
        };
        let query: Vec<String> = query.map(str::to_string).into_iter().chain(ns).collect();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        path
    }

    fn url(&self, path_and_query: &str) -> Result<url::Url, UpstreamError> {
        let base = self.base.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}{path_and_query}")).map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    fn auth_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Authorization` value for a scope, fetching a token if the upstream wants one.
    async fn authorization(&self, scope: &str, force_refresh: bool) -> Result<Option<String>, UpstreamError> {
        let scheme = self.auth_state().scheme.clone();
        match scheme {
            Scheme::Unknown | Scheme::Anonymous => Ok(None),
            Scheme::Basic => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                if !force_refresh && let Some(t) = self.auth_state().token(scope) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let _serial = self.token_fetch.lock().await;
                if !force_refresh && let Some(t) = self.auth_state().token(scope) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                if let Some(until) = self.denied.lock().unwrap_or_else(|p| p.into_inner()).get(scope)
                    && *until > std::time::Instant::now()
                {
                    return Err(UpstreamError::Denied(
                        "the token endpoint refused the credentials recently".into(),
                    ));
                }
                let (token, expires_in) = match self.fetch_token(&realm, service.as_deref(), scope).await {
                    Err(UpstreamError::Denied(why)) => {
                        self.denied
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(scope.to_string(), std::time::Instant::now() + DENIED_MEMORY);
                        return Err(UpstreamError::Denied(why));
                    }
                    other => other?,
                };
                self.auth_state().store_token(scope, token.clone(), expires_in);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// A token from the realm; a failure is counted and logged against the realm's host.
    async fn fetch_token(
        &self,
        realm: &url::Url,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Option<u64>), UpstreamError> {
        let result = self.request_token(realm, service, scope).await;
        if let Err(e) = &result {
            self.record_error(e, &host_port_label(realm));
        }
        result
    }

    async fn request_token(
        &self,
        realm: &url::Url,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Option<u64>), UpstreamError> {
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
            if let Some(c) = &self.credentials {
                q.append_pair("account", &c.username);
            }
        }
        let mut req = self.client.get(url).header(ACCEPT_ENCODING, "identity");
        if let Some(c) = &self.credentials {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let resp = tokio::time::timeout(self.response_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout("the token endpoint"))?
            .map_err(|e| classify(&self.name, e))?;
        let status = resp.status();
        if status.is_success() {
            self.failures.egress.success(&host_port_label(realm));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            warn!(upstream = %self.name, %status, "token endpoint refused the configured credentials");
            return Err(UpstreamError::Denied(format!("token endpoint answered {status}")));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::TooManyRequests {
                retry_after: retry_after(resp.headers()),
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let body = tokio::time::timeout(self.response_timeout, resp.bytes())
            .await
            .map_err(|_| UpstreamError::Timeout("the token body"))?
            .map_err(|e| classify(&self.name, e))?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Protocol("token endpoint answered something that is not a token".into()))?;
        parsed
            .into_token()
            .ok_or_else(|| UpstreamError::Protocol("token endpoint answered without token or access_token".into()))
    }

    /// Learns the upstream's scheme from a 401's challenges. Returns the scope the
    /// challenge asks for when it says `insufficient_scope`.
    fn learn_challenge(&self, headers: &HeaderMap) -> Result<Option<String>, UpstreamError> {
        let challenges: Vec<_> = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let scheme = if let Some(b) = challenges.iter().find(|c| c.is_bearer()) {
            let realm = b
                .param("realm")
                .ok_or_else(|| UpstreamError::Protocol("Bearer challenge without realm".into()))?;
            let realm =
                url::Url::parse(realm).map_err(|_| UpstreamError::Protocol("Bearer realm is not a URL".into()))?;
            if !matches!(realm.scheme(), "http" | "https") {
                return Err(UpstreamError::Protocol("Bearer realm is not http(s)".into()));
            }
            let same_host = host_port(&realm).0 == host_port(&self.base).0;
            if !same_host && !host_allowed(&realm, &self.allow_realm_hosts) {
                let host = realm.host_str().unwrap_or("").to_string();
                warn!(upstream = %self.name, %host, "refusing token realm on a host that is not configured");
                return Err(UpstreamError::RealmRefused { host });
            }
            if self.base.scheme() == "https" && realm.scheme() == "http" {
                return Err(UpstreamError::Protocol("Bearer realm downgrades https to http".into()));
            }
            let scope = (b.param("error") == Some("insufficient_scope"))
                .then(|| b.param("scope").map(str::to_string))
                .flatten();
            let new = Scheme::Bearer {
                realm,
                service: b.param("service").map(str::to_string),
            };
            self.auth_state().scheme = new;
            return Ok(scope);
        } else if challenges.iter().any(|c| c.is_basic()) {
            Scheme::Basic
        } else {
            return Err(UpstreamError::Denied(
                "upstream answered 401 without a usable challenge".into(),
            ));
        };
        self.auth_state().scheme = scheme;
        Ok(None)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker_record(&self, result: &Result<(), UpstreamError>) {
        if !self.circuit_breaker {
            return;
        }
        if let Some((failures, pause)) = self.breaker().record(result) {
            warn!(upstream = %self.name, failures, ?pause, "upstream keeps failing; pausing requests to it");
        }
    }

    /// Sends a request for `repo` with auth, one refresh-and-retry on 401 (same
    /// headers), and redirects followed to allowed hosts without credentials. A paused
    /// upstream (circuit open) is not asked at all.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        repo: &RepoName,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        if self.circuit_breaker {
            self.breaker().check()?;
        }
        let result = self.send_once(method, path_and_query, repo, headers).await;
        if let Err(e) = &result {
            self.breaker_record(&Err(e.clone()));
        }
        result
    }

    async fn send_once(
        &self,
        method: Method,
        path_and_query: &str,
        repo: &RepoName,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut scope = format!("repository:{}:pull", repo.as_str());
        let url = self.url(path_and_query)?;
        let mut refreshed = false;
        loop {
            let authorization = self.authorization(&scope, refreshed).await?;
            let resp = self
                .send_following_redirects(
                    method.clone(),
                    url.clone(),
                    &headers,
                    authorization,
                    host_port(&self.base),
                )
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if refreshed {
                warn!(upstream = %self.name, repo = %repo, "upstream still answers 401 after a fresh token");
                return Err(UpstreamError::Denied("upstream refused the credentials".into()));
            }
            if let Some(s) = self.learn_challenge(resp.headers())? {
                scope = s;
            }
            if matches!(self.auth_state().scheme, Scheme::Basic) && self.credentials.is_none() {
                return Err(UpstreamError::Denied(
                    "upstream wants Basic credentials and none are configured".into(),
                ));
            }
            self.auth_state().forget_token(&scope);
            refreshed = true;
        }
    }

    async fn send_following_redirects(
        &self,
        method: Method,
        mut url: url::Url,
        headers: &HeaderMap,
        authorization: Option<String>,
        origin: (String, Option<u16>),
    ) -> Result<reqwest::Response, UpstreamError> {
        for hop in 0..=MAX_REDIRECTS {
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            // Credentials only ever go to the upstream's own origin.
            if host_port(&url) == origin
                && let Some(a) = &authorization
            {
                req = req.header(AUTHORIZATION, a);
            }
            let what = if hop == 0 {
                "response headers"
            } else {
                "redirected response headers"
            };
            let started = std::time::Instant::now();
            let resp = tokio::time::timeout(self.response_timeout, req.send())
                .await
                .map_err(|_| UpstreamError::Timeout(what))
                .and_then(|r| r.map_err(|e| classify(&self.name, e)))
                .inspect_err(|e| self.record_error(e, &host_port_label(&url)))?;
            self.metrics
                .upstream_request_duration
                .get_or_create(&self.labels)
                .observe(started.elapsed().as_secs_f64());
            if answered(resp.status()) {
                self.failures.egress.success(&host_port_label(&url));
            }
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Protocol("redirect without Location".into()))?;
            let next = url
                .join(location)
                .map_err(|_| UpstreamError::Protocol("redirect to an invalid URL".into()))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(UpstreamError::Protocol("redirect to a non-http URL".into()));
            }
            if url.scheme() == "https" && next.scheme() == "http" {
                return Err(UpstreamError::Protocol("redirect downgrades https to http".into()));
            }
            let same_origin = host_port(&next) == origin;
            if !same_origin && !host_allowed(&next, &self.allow_redirect_hosts) {
                let host = next.host_str().unwrap_or("").to_string();
                warn!(upstream = %self.name, %host, "refused redirect to a host not in allow_redirect_hosts; add it if it is a legitimate CDN host");
                self.metrics
                    .redirects_refused
                    .get_or_create(&RedirectLabels {
                        upstream: self.name.clone(),
                        host: host.clone(),
                    })
                    .inc();
                return Err(UpstreamError::RedirectRefused { host });
            }
            // Never log the full URL: its query string is a signed credential.
            debug!(upstream = %self.name, host = next.host_str().unwrap_or(""), "following redirect");
            url = next;
        }
        Err(UpstreamError::Protocol("too many redirects".into()))
    }

    fn base_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        h
    }

    fn manifest_headers() -> HeaderMap {
        let mut h = Self::base_headers();
        h.insert(ACCEPT, HeaderValue::from_static(media::upstream_manifest_accept()));
        h
    }

    /// Each host this upstream dialled, with its last success and failure.
    pub fn egress(&self) -> Vec<egress::HostView> {
        self.failures.egress.hosts()
    }

    /// The upstream's URL (it carries no credentials: the configuration refuses them).
    /// How long the circuit breaker keeps requests paused, when it does.
    pub fn paused_for(&self) -> Option<Duration> {
        self.breaker().paused_for()
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    /// Counts and logs a failed request to `host` (`host:port`): see [`FailureLog`].
    fn record_error(&self, e: &UpstreamError, host: &str) {
        self.failures.record(e, host);
    }

    fn check_status(&self, resp: &reqwest::Response) -> Result<(), UpstreamError> {
        let result = self.status_result(resp);
        if let Err(e) = &result {
            self.record_error(e, &host_port_label(resp.url()));
        }
        self.breaker_record(&result);
        result
    }

    fn status_result(&self, resp: &reqwest::Response) -> Result<(), UpstreamError> {
        let status = resp.status();
        match status.as_u16() {
            200..=299 => Ok(()),
            404 => Err(UpstreamError::NotFound),
            401 | 403 => Err(UpstreamError::Denied(format!("upstream answered {status}"))),
            429 => Err(UpstreamError::TooManyRequests {
                retry_after: retry_after(resp.headers()),
            }),
            code => Err(UpstreamError::Status(code)),
        }
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &str) -> Result<FetchedManifest, UpstreamError> {
        let path = self.repo_path(repo, &format!("manifests/{reference}"));
        let resp = self.send(Method::GET, &path, repo, Self::manifest_headers()).await?;
        self.check_status(&resp)?;
        let content_type = header_string(resp.headers(), "content-type");
        let digest_header = header_string(resp.headers(), "docker-content-digest");
        if resp
            .content_length()
            .is_some_and(|l| l > media::MAX_MANIFEST_BYTES as u64)
        {
            return Err(UpstreamError::Protocol("manifest larger than 4 MiB".into()));
        }
        let bytes = self.small_body(resp, media::MAX_MANIFEST_BYTES).await?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest_header,
        })
    }

    pub async fn head_manifest(&self, repo: &RepoName, reference: &str) -> Result<ManifestHead, UpstreamError> {
        let path = self.repo_path(repo, &format!("manifests/{reference}"));
        let resp = self.send(Method::HEAD, &path, repo, Self::manifest_headers()).await?;
        self.check_status(&resp)?;
        Ok(ManifestHead {
            digest: header_string(resp.headers(), "docker-content-digest").and_then(|d| Digest::parse(&d).ok()),
            content_type: header_string(resp.headers(), "content-type"),
        })
    }

    /// Starts a blob download, optionally from an offset (`Range: bytes=N-`).
    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest, from: u64) -> Result<BlobBody, UpstreamError> {
        let path = self.repo_path(repo, &format!("blobs/{digest}"));
        let mut headers = Self::base_headers();
        if from > 0 {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={from}-")).map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            );
        }
        let resp = self.send(Method::GET, &path, repo, headers).await?;
        self.check_status(&resp)?;
        if resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity")
        {
            return Err(UpstreamError::Protocol(
                "upstream applied a Content-Encoding despite Accept-Encoding: identity".into(),
            ));
        }
        let (range_start, range_total) = header_string(resp.headers(), "content-range")
            .and_then(|v| parse_content_range(&v))
            .map_or((None, None), |(s, t)| (Some(s), t));
        let from_host = host_port_label(resp.url());
        Ok(BlobBody {
            status: resp.status(),
            content_length: resp.content_length(),
            range_start,
            range_total,
            served_by: resp.url().host_str().unwrap_or_default().to_string(),
            response: resp,
            idle_timeout: self.idle_timeout,
            upstream: self.name.clone(),
            host: from_host,
            failures: self.failures.clone(),
            received: Some(self.received.clone()),
        })
    }

    /// `GET /v2/` without credentials (what a client's first request does): the status,
    /// and the Bearer realm a 401 names (learnt, so a token can follow). A realm on a
    /// host that is not allowed is [`UpstreamError::RealmRefused`].
    pub async fn challenge(&self) -> Result<(u16, Option<url::Url>), UpstreamError> {
        let url = self.url("/v2/")?;
        let resp = tokio::time::timeout(self.response_timeout, self.client.get(url).send())
            .await
            .map_err(|_| UpstreamError::Timeout("response headers"))?
            .map_err(|e| classify(&self.name, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            self.learn_challenge(resp.headers())?;
        } else if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let realm = match &self.auth_state().scheme {
            Scheme::Bearer { realm, .. } => Some(realm.clone()),
            _ => None,
        };
        Ok((status.as_u16(), realm))
    }

    /// A token to pull `repo`, with the configured credentials (after
    /// [`Upstream::challenge`] learnt the scheme).
    pub async fn check_token(&self, repo: &RepoName) -> Result<(), UpstreamError> {
        let scope = format!("repository:{}:pull", repo.as_str());
        self.authorization(&scope, false).await.map(|_| ())
    }

    /// Where the registry sends a blob download: the redirect's target (never shown
    /// whole: its query string is a signed credential), or `None` when it serves the
    /// blob itself.
    pub async fn blob_redirect(&self, repo: &RepoName, digest: &Digest) -> Result<Option<url::Url>, UpstreamError> {
        let url = self.url(&self.repo_path(repo, &format!("blobs/{digest}")))?;
        let scope = format!("repository:{}:pull", repo.as_str());
        let mut req = self.client.get(url.clone()).headers(Self::base_headers());
        if let Some(a) = self.authorization(&scope, false).await? {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = tokio::time::timeout(self.response_timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout("response headers"))?
            .map_err(|e| classify(&self.name, e))?;
        if !resp.status().is_redirection() {
            return self.status_result(&resp).map(|()| None);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| UpstreamError::Protocol("redirect without Location".into()))?;
        url.join(location)
            .map(Some)
            .map_err(|_| UpstreamError::Protocol("redirect to an invalid URL".into()))
    }

    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, UpstreamError> {
        let path = self.repo_path(repo, &format!("blobs/{digest}"));
        let resp = self.send(Method::HEAD, &path, repo, Self::base_headers()).await?;
        self.check_status(&resp)?;
        Ok(header_string(resp.headers(), "content-length").and_then(|l| l.parse().ok()))
    }

    /// Whether a pullgate (this upstream) holds the blob, asked with
    /// `Cache-Control: only-if-cached` so nothing is fetched: its size, or `None` (504).
    pub async fn blob_cached(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, UpstreamError> {
        let path = self.repo_path(repo, &format!("blobs/{digest}"));
        let mut headers = Self::base_headers();
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            HeaderValue::from_static("only-if-cached"),
        );
        let resp = self.send(Method::HEAD, &path, repo, headers).await?;
        if resp.status() == StatusCode::GATEWAY_TIMEOUT {
            return Ok(None);
        }
        self.check_status(&resp)?;
        Ok(Some(
            header_string(resp.headers(), "content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// Reads a whole (small) body with the idle timeout and a size limit.
    async fn small_body(&self, resp: reqwest::Response, limit: usize) -> Result<Bytes, UpstreamError> {
        let from_host = host_port_label(resp.url());
        let mut body = BlobBody {
            status: resp.status(),
            content_length: resp.content_length(),
            range_start: None,
            range_total: None,
            served_by: resp.url().host_str().unwrap_or_default().to_string(),
            response: resp,
            idle_timeout: self.idle_timeout,
            upstream: self.name.clone(),
            host: from_host,
            failures: self.failures.clone(),
            received: None,
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > limit {
                return Err(UpstreamError::Protocol(format!(
                    "upstream body larger than {limit} bytes"
                )));
            }
        }
        Ok(Bytes::from(bytes))
    }
}

/// Whether a status says the host answered as a registry does (the others are counted
/// as failures where the response is checked): content, a redirect, a challenge, a 404.
fn answered(status: StatusCode) -> bool {
    status.is_success()
        || status.is_redirection()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::NOT_FOUND
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `bytes N-M/T` → (N, Some(T)); `T` may be `*`.
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, _) = span.split_once('-')?;
    Some((first.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn allowed_hosts() {
        let u = url::Url::parse("https://cdn01.quay.io/sha256/ab?x=1").unwrap();
        assert!(host_allowed(&u, &["cdn01.quay.io".into()]));
        assert!(host_allowed(&u, &["CDN01.quay.io:443".into()]));
        assert!(!host_allowed(&u, &["cdn01.quay.io:8443".into()]));
        assert!(!host_allowed(&u, &["quay.io".into()]));
        assert!(!host_allowed(
            &url::Url::parse("https://evil.cdn01.quay.io/").unwrap(),
            &["cdn01.quay.io".into()]
        ));
    }
}
