//! The egress path of one upstream walked hop by hop, for `pullgate doctor`: the
//! registry's DNS, TCP connect and TLS (or the egress proxy's, when one is configured),
//! its `/v2/` challenge; the token realm (the same hops when it is on another host, then
//! a token with the configured credentials); a probe image's manifest and config blob:
//! the redirect target checked against `allow_redirect_hosts`, that CDN host's hops, the
//! bytes verified against the digest; the signature lookaside. Each hop passes or fails
//! with its phase, host:port, cause and the remedy an operator can act on. Nothing
//! secret is ever part of a hop: hosts, ports, statuses and the account name only (a
//! CDN URL's signed query string is never shown).

use super::{Upstream, UpstreamError, UpstreamSettings, host_port_label};
use crate::metrics::Metrics;
use crate::oci::{Digest, DigestHasher, RepoName, image};
use crate::trust::{CosignSignature, Policy, Requested, Verdict};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where on the path a hop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Dns,
    Connect,
    Tls,
    /// An HTTP answer: the `/v2/` challenge, a status.
    Http,
    Token,
    Manifest,
    Redirect,
    Blob,
    Signature,
    /// OpenShift's update graph.
    Graph,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Http => "http",
            Phase::Token => "token",
            Phase::Manifest => "manifest",
            Phase::Redirect => "redirect",
            Phase::Blob => "blob",
            Phase::Signature => "signature",
            Phase::Graph => "graph",
        }
    }
}

/// One hop: passed, or failed with its cause and what to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hop {
    pub phase: Phase,
    /// `host:port`, or what was asked (`ubi9/ubi-minimal:latest`).
    pub target: String,
    pub passed: bool,
    /// What was seen (`127.0.0.1, ::1`, `401 Bearer realm on sso.redhat.com`), or the
    /// cause of the failure.
    pub detail: String,
    pub remedy: Option<String>,
}

/// The walk of one upstream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub upstream: String,
    pub url: String,
    /// The egress proxy the requests went through, when one is configured.
    pub egress_proxy: Option<String>,
    pub hops: Vec<Hop>,
    /// Why the walk stopped early, or what it could not try (no probe image).
    pub notes: Vec<String>,
    /// Where each hop goes as it finishes (the status page shows them one by one).
    #[serde(skip)]
    live: Option<tokio::sync::mpsc::UnboundedSender<Hop>>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.hops.iter().all(|h| h.passed)
    }

    /// A failed hop, for callers that go on after it.
    fn fail_hop(
        &mut self,
        phase: Phase,
        target: impl Into<String>,
        cause: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.fail(phase, target, cause, remedy);
    }

    /// An empty report of the walk with `settings`.
    pub(super) fn new(settings: &UpstreamSettings) -> Report {
        Report {
            upstream: settings.name.clone(),
            url: settings.url.to_string(),
            egress_proxy: settings.egress_proxy.clone(),
            hops: Vec::new(),
            notes: Vec::new(),
            live: None,
        }
    }

    fn push(&mut self, hop: Hop) {
        if let Some(live) = &self.live {
            let _ = live.send(hop.clone());
        }
        self.hops.push(hop);
    }

    pub(super) fn pass(&mut self, phase: Phase, target: impl Into<String>, detail: impl Into<String>) {
        self.push(Hop {
            phase,
            target: target.into(),
            passed: true,
            detail: detail.into(),
            remedy: None,
        });
    }

    /// Records a failure; returns `false` so a caller can `return report.fail(…)`-style
    /// stop.
    pub(super) fn fail(
        &mut self,
        phase: Phase,
        target: impl Into<String>,
        cause: impl Into<String>,
        remedy: impl Into<String>,
    ) -> bool {
        self.push(Hop {
            phase,
            target: target.into(),
            passed: false,
            detail: cause.into(),
            remedy: Some(remedy.into()),
        });
        false
    }
}

/// The probe image given on the command line or configured: `repo:tag`.
pub struct ProbeImage {
    pub repo: RepoName,
    pub tag: String,
}

impl ProbeImage {
    /// `repo:tag` (a tag is required: the walk starts where a pull by tag does).
    pub fn parse(s: &str) -> Result<ProbeImage, String> {
        let (repo, tag) = s
            .rsplit_once(':')
            .filter(|(r, _)| !r.is_empty())
            .ok_or_else(|| format!("{s:?}: expected REPOSITORY:TAG, e.g. ubi9/ubi-minimal:latest"))?;
        let repo = RepoName::parse(repo).map_err(|e| format!("{s:?}: {e}"))?;
        if tag.is_empty() || tag.contains('/') {
            return Err(format!("{s:?}: expected REPOSITORY:TAG"));
        }
        Ok(ProbeImage {
            repo,
            tag: tag.to_string(),
        })
    }
}

/// Walks `settings`' egress path; `probe` names the image whose manifest and config blob
/// are fetched (without one, the walk ends after the token).
pub async fn walk(settings: UpstreamSettings, probe: Option<ProbeImage>, policy: Option<&Policy>) -> Report {
    walk_live(settings, probe, policy, None).await
}

/// [`walk`], sending each hop to `live` as it finishes. The sender is dropped when the walk
/// ends, so a receiver sees its channel close then (not when the report is dropped).
pub async fn walk_live(
    settings: UpstreamSettings,
    probe: Option<ProbeImage>,
    policy: Option<&Policy>,
    live: Option<tokio::sync::mpsc::UnboundedSender<Hop>>,
) -> Report {
    let mut report = walk_reporting(settings, probe, policy, live).await;
    report.live = None;
    report
}

async fn walk_reporting(
    settings: UpstreamSettings,
    probe: Option<ProbeImage>,
    policy: Option<&Policy>,
    live: Option<tokio::sync::mpsc::UnboundedSender<Hop>>,
) -> Report {
    let mut report = Report::new(&settings);
    report.live = live;
    let tls = TlsProbe::new(settings.ca_pem.as_deref());
    let timeout = settings.connect_timeout;
    let via_proxy = match &settings.egress_proxy {
        Some(proxy) => match url::Url::parse(proxy) {
            Ok(p) => Some(p),
            Err(e) => {
                report.fail(
                    Phase::Connect,
                    proxy.clone(),
                    format!("egress_proxy is not a URL: {e}"),
                    format!("fix egress_proxy of upstream {}", settings.name),
                );
                return report;
            }
        },
        None => None,
    };
    // Through an egress proxy, this host reaches only the proxy: its hops are the ones to
    // check here, and the proxy's own reach shows in the HTTP answers.
    if let Some(proxy) = &via_proxy {
        report
            .notes
            .push(format!("requests go through egress_proxy {}", host_port_label(proxy)));
        if !endpoint(&mut report, proxy, &tls, timeout, &settings.name, "egress_proxy").await {
            return report;
        }
    } else if !endpoint(&mut report, &settings.url, &tls, timeout, &settings.name, "registry").await {
        return report;
    }

    let name = settings.name.clone();
    let account = settings.credentials.as_ref().map(|c| c.username.clone());
    let allow_redirect_hosts = settings.allow_redirect_hosts.clone();
    let has_sigstore = settings.sigstore.is_some();
    let registry = host_port_label(&settings.url);
    let upstream = match Upstream::new(settings, Arc::new(Metrics::new())) {
        Ok(u) => u,
        Err(e) => {
            report.fail(Phase::Http, registry, e.to_string(), "fix the upstream's configuration");
            return report;
        }
    };

    // The challenge: who issues tokens.
    let realm = match upstream.challenge().await {
        Ok((status, realm)) => {
            let detail = match &realm {
                Some(r) => format!("GET /v2/: {status}, Bearer realm on {}", host_port_label(r)),
                None => format!("GET /v2/: {status}"),
            };
            report.pass(Phase::Http, registry.clone(), detail);
            realm
        }
        Err(UpstreamError::RealmRefused { host }) => {
            report.fail(
                Phase::Token,
                host.clone(),
                format!("the registry sends clients for tokens to {host}, which is not the registry's host"),
                format!("add \"{host}\" to allow_realm_hosts of upstream {name} if it is the registry's token service"),
            );
            return report;
        }
        Err(e) => {
            report.fail(Phase::Http, registry.clone(), e.to_string(), http_remedy(&e, &registry));
            return report;
        }
    };
    if let Some(realm) = &realm
        && realm.host_str() != upstream.base.host_str()
        && via_proxy.is_none()
        && !endpoint(&mut report, realm, &tls, timeout, &name, "token realm").await
    {
        return report;
    }

    let Some(probe) = probe else {
        report.notes.push(
            "no probe image (give --image REPOSITORY:TAG or probe_image in the upstream): the token, manifest and CDN hops were not tried".into(),
        );
        return report;
    };
    let image = format!("{}:{}", probe.repo, probe.tag);

    // A token for the probe repository, with the configured credentials.
    if realm.is_some() {
        let realm_host = realm.as_ref().map(host_port_label).unwrap_or_default();
        match upstream.check_token(&probe.repo).await {
            Ok(()) => report.pass(
                Phase::Token,
                realm_host,
                match &account {
                    Some(a) => format!("token for {} issued to {a}", probe.repo),
                    None => format!("anonymous token for {}", probe.repo),
                },
            ),
            Err(UpstreamError::Denied(_)) => {
                let remedy = match &account {
                    Some(a) => format!(
                        "the service account `{a}` was refused: check username and the token in password_file (or auth_file) of upstream {name}"
                    ),
                    None => format!(
                        "the registry wants credentials and upstream {name} has none: set username and password_file (a registry service account)"
                    ),
                };
                report.fail(
                    Phase::Token,
                    realm_host,
                    "the token endpoint refused the request",
                    remedy,
                );
                return report;
            }
            Err(e) => {
                let remedy = http_remedy(&e, &realm_host);
                report.fail(Phase::Token, realm_host, e.to_string(), remedy);
                return report;
            }
        }
    }

    // The manifest by tag, then (for an index) one platform's, then its config blob.
    let config = match probe_config(&upstream, &probe).await {
        Ok((digest, detail)) => {
            report.pass(Phase::Manifest, image.clone(), detail);
            digest
        }
        Err((e, what)) => {
            let remedy = match &e {
                UpstreamError::NotFound => format!("{image} does not exist upstream: give --image an image that does"),
                UpstreamError::Denied(_) => format!(
                    "the account {} may not pull {}: check its permissions at the registry",
                    account.as_deref().unwrap_or("(anonymous)"),
                    probe.repo
                ),
                other => http_remedy(other, &registry),
            };
            report.fail(Phase::Manifest, image, format!("{what}: {e}"), remedy);
            return report;
        }
    };

    let mut blob_host = registry.clone();
    match upstream.blob_redirect(&probe.repo, &config).await {
        Ok(Some(target)) => {
            blob_host = host_port_label(&target);
            let target_host = target.host_str().unwrap_or_default().to_string();
            let same_origin = host_port_label(&target) == registry;
            if !same_origin && !super::host_allowed(&target, &allow_redirect_hosts) {
                report.fail(
                    Phase::Redirect,
                    host_port_label(&target),
                    format!(
                        "the registry redirects blob downloads to {target_host}, which is not in allow_redirect_hosts"
                    ),
                    format!("add \"{target_host}\" to allow_redirect_hosts of upstream {name}"),
                );
                return report;
            }
            report.pass(
                Phase::Redirect,
                host_port_label(&target),
                format!("blob downloads redirect to {target_host} (allowed)"),
            );
            if via_proxy.is_none() && !same_origin && !endpoint(&mut report, &target, &tls, timeout, &name, "CDN").await
            {
                return report;
            }
        }
        Ok(None) => report.pass(Phase::Redirect, registry.clone(), "the registry serves blobs itself"),
        Err(e) => {
            report.fail(Phase::Blob, registry.clone(), e.to_string(), http_remedy(&e, &registry));
            return report;
        }
    }
    match fetch_verified(&upstream, &probe.repo, &config, &blob_host).await {
        Ok(size) => report.pass(
            Phase::Blob,
            blob_host.clone(),
            format!("config blob {config}: {size} bytes, sha256 verified"),
        ),
        Err((host, cause)) => {
            let remedy = format!(
                "the bytes from {host} do not match their digest: something between this host and {host} alters them (a TLS-inspecting or caching proxy?)"
            );
            let remedy = match &cause {
                BlobFailure::Upstream(e) => http_remedy(e, &host),
                BlobFailure::Mismatch(_) => remedy,
            };
            report.fail(Phase::Blob, host, cause.to_string(), remedy);
            return report;
        }
    }

    if has_sigstore {
        let manifest = upstream
            .get_manifest(&probe.repo, &probe.tag)
            .await
            .map(|m| Digest::of(&m.bytes));
        let lookaside = upstream.sigstore.as_ref().map(host_port_label).unwrap_or_default();
        match manifest {
            Ok(d) => match upstream.lookaside_signature(&probe.repo, &d, 1).await {
                Ok(Some(_)) => report.pass(Phase::Signature, lookaside, "signature-1 fetched"),
                Ok(None) => report.pass(
                    Phase::Signature,
                    lookaside,
                    "no signature for this manifest (a 404 is normal for unsigned images)",
                ),
                Err(e) => {
                    let remedy = http_remedy(&e, &lookaside);
                    report.fail(Phase::Signature, lookaside, e.to_string(), remedy);
                }
            },
            Err(e) => {
                let remedy = http_remedy(&e, &registry);
                report.fail(Phase::Manifest, image.clone(), e.to_string(), remedy);
            }
        }
    }
    if let Some(policy) = policy {
        signature_hop(&mut report, &upstream, &probe, policy, &image).await;
    }
    report
}

/// The `signature` hop of a policy: the probe image's manifest (by tag) verified under
/// it, as a client's request would be.
async fn signature_hop(report: &mut Report, upstream: &Upstream, probe: &ProbeImage, policy: &Policy, image: &str) {
    let name = upstream.name.clone();
    let remedy = format!(
        "check signature_policy of upstream {name}: its keys (the signer's fingerprint), its identities, and the upstream's sigstore"
    );
    let digest = match upstream.get_manifest(&probe.repo, &probe.tag).await {
        Ok(m) => Digest::of(&m.bytes),
        Err(e) => return report.fail_hop(Phase::Signature, image, e.to_string(), remedy),
    };
    let mut gpg = Vec::new();
    for n in 1..=crate::oci::route::MAX_SIGNATURES {
        match upstream.lookaside_signature(&probe.repo, &digest, n).await {
            Ok(Some(s)) => gpg.push(s),
            Ok(None) => break,
            Err(e) => return report.fail_hop(Phase::Signature, image, e.to_string(), remedy),
        }
    }
    if gpg.is_empty()
        && upstream.sigstore.is_none()
        && let Ok(Some(api)) = upstream.extension_signatures(&probe.repo, &digest).await
    {
        gpg = api;
    }
    let cosign: Vec<CosignSignature> = match policy.has_cosign_keys() {
        true => match upstream.cosign_signatures(&probe.repo, &digest).await {
            Ok(sigs) => sigs
                .into_iter()
                .map(|(payload, signature)| CosignSignature { payload, signature })
                .collect(),
            Err(e) => return report.fail_hop(Phase::Signature, image, e.to_string(), remedy),
        },
        false => Vec::new(),
    };
    let digest_text = digest.to_string();
    let requested = Requested {
        repo: probe.repo.as_str(),
        tag: Some(&probe.tag),
        digest: &digest_text,
    };
    let judgement = policy.judge(&requested, &gpg, &cosign);
    if judgement.verdict == Verdict::Verified {
        report.pass(
            Phase::Signature,
            image,
            format!("{digest} verified under the policy ({})", judgement.explain()),
        );
    } else {
        report.fail_hop(
            Phase::Signature,
            image,
            format!("{}: {}", judgement.verdict.as_str(), judgement.explain()),
            remedy,
        );
    }
}

/// The config blob's digest of the probe image (the first linux/amd64 entry of an
/// index, else its first), and what was seen.
async fn probe_config(upstream: &Upstream, probe: &ProbeImage) -> Result<(Digest, String), (UpstreamError, String)> {
    let by_tag = upstream
        .get_manifest(&probe.repo, &probe.tag)
        .await
        .map_err(|e| (e, "manifest by tag".to_string()))?;
    let entries = image::index_entries(&by_tag.bytes);
    let (manifest, detail) = if entries.is_empty() {
        let detail = format!("manifest {}", Digest::of(&by_tag.bytes));
        (by_tag.bytes, detail)
    } else {
        let entry = entries
            .iter()
            .find(|e| e.os.as_deref() == Some("linux") && e.architecture.as_deref() == Some("amd64"))
            .unwrap_or(&entries[0]);
        let m = upstream
            .get_manifest(&probe.repo, &entry.digest)
            .await
            .map_err(|e| (e, format!("platform manifest {}", entry.digest)))?;
        (
            m.bytes,
            format!("index of {} platforms, {}", entries.len(), entry.digest),
        )
    };
    let protocol = |why: String| (UpstreamError::Protocol(why), "image manifest".to_string());
    let config = image::ImageManifest::parse(&manifest)
        .map_err(|e| protocol(format!("not an image manifest: {e}")))?
        .config
        .ok_or_else(|| protocol("the image manifest names no config".into()))?;
    let digest = Digest::parse(&config.digest).map_err(|e| protocol(format!("config digest: {e}")))?;
    Ok((digest, detail))
}

#[derive(Debug, thiserror::Error)]
enum BlobFailure {
    #[error("{0}")]
    Upstream(UpstreamError),
    #[error("the bytes hash to {0}, not to the digest")]
    Mismatch(Digest),
}

/// Downloads the blob (redirects followed as a fill does) and checks its digest;
/// returns its size. Failures are named after `host`, where the bytes come from.
async fn fetch_verified(
    upstream: &Upstream,
    repo: &RepoName,
    digest: &Digest,
    host: &str,
) -> Result<u64, (String, BlobFailure)> {
    let host = host.to_string();
    let mut body = upstream
        .get_blob(repo, digest, 0)
        .await
        .map_err(|e| (host.clone(), BlobFailure::Upstream(e)))?;
    let mut hasher = DigestHasher::new();
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk.map_err(|e| (host.clone(), BlobFailure::Upstream(e)))?;
        hasher.update(&chunk);
    }
    let size = hasher.len();
    let got = hasher.finish();
    if &got != digest {
        return Err((host, BlobFailure::Mismatch(got)));
    }
    Ok(size)
}

/// What to do about an HTTP-level failure at `host`.
pub(super) fn http_remedy(e: &UpstreamError, host: &str) -> String {
    match e {
        UpstreamError::Timeout(_) => format!(
            "{host} accepted the connection but did not answer in time: check the path to it (an egress proxy, a slow link)"
        ),
        UpstreamError::Unreachable { .. } => {
            format!("{host} could not be reached over HTTP: check the egress rules and the egress proxy for it")
        }
        UpstreamError::Status(code) => format!(
            "{host} answered HTTP {code}: if it persists, the service is failing or a proxy in between answers for it"
        ),
        UpstreamError::TooManyRequests { .. } => format!("{host} rate-limits this host: retry later"),
        UpstreamError::RedirectRefused { host } => format!("add \"{host}\" to allow_redirect_hosts"),
        UpstreamError::RealmRefused { host } => format!("add \"{host}\" to allow_realm_hosts"),
        _ => format!("{host} answered something unexpected: check that the upstream's url names a registry"),
    }
}

/// The DNS, TCP and (for https) TLS hops to `url`'s host; `false` when one failed.
pub(super) async fn endpoint(
    report: &mut Report,
    url: &url::Url,
    tls: &TlsProbe,
    timeout: Duration,
    upstream: &str,
    role: &str,
) -> bool {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default().unwrap_or(0);
    let target = format!("{host}:{port}");
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            return report.fail(
                    Phase::Dns,
                    target,
                    format!("{host} ({role}) does not resolve: {e}"),
                    format!(
                        "make {host} resolvable from this host (its resolver in /etc/resolv.conf, or the DMZ's DNS forwarder)"
                    ),
                );
        }
        Err(_) => {
            return report.fail(
                Phase::Dns,
                target,
                format!(
                    "resolving {host} ({role}) timed out after {}",
                    humantime::format_duration(timeout)
                ),
                "check that this host's DNS servers answer (/etc/resolv.conf) and that outbound DNS is allowed",
            );
        }
    };
    let Some(addr) = addrs.first().copied() else {
        return report.fail(
            Phase::Dns,
            target,
            format!("{host} ({role}) resolves to no address"),
            format!("make {host} resolvable from this host"),
        );
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    report.pass(Phase::Dns, target.clone(), format!("{role}: {}", shown.join(", ")));
    let allow = format!("allow outbound TCP {port} from this host to {host}");
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return report.fail(
                Phase::Connect,
                target,
                format!("connection to {addr} refused"),
                format!("{allow} (a refusal is a REJECT rule or nothing listening on {port})"),
            );
        }
        Ok(Err(e)) => {
            return report.fail(Phase::Connect, target, format!("connecting to {addr}: {e}"), allow);
        }
        Err(_) => {
            return report.fail(
                Phase::Connect,
                target,
                format!(
                    "connecting to {addr} timed out after {}",
                    humantime::format_duration(timeout)
                ),
                format!("{allow} (no answer at all: a firewall drops the packets)"),
            );
        }
    };
    report.pass(Phase::Connect, target.clone(), format!("{addr} accepted"));
    if url.scheme() != "https" {
        return true;
    }
    match tls.handshake(stream, &host, timeout).await {
        Ok(subject) => {
            report.pass(Phase::Tls, target, format!("certificate {subject} verified"));
            true
        }
        Err(TlsFailure::UnknownIssuer { subject, issuer }) => report.fail(
            Phase::Tls,
            target,
            format!("certificate {subject} is issued by {issuer}, which this host does not trust"),
            format!(
                "if a TLS-inspecting egress proxy re-signs traffic, put its CA certificate (PEM) in ca_file of upstream {upstream}; otherwise the connection is not reaching {host}"
            ),
        ),
        Err(TlsFailure::Other(why)) => report.fail(
            Phase::Tls,
            target,
            why,
            format!("check that port {port} of {host} speaks TLS and its certificate is valid for {host}"),
        ),
    }
}

enum TlsFailure {
    UnknownIssuer { subject: String, issuer: String },
    Other(String),
}

/// TLS handshakes that verify as the upstream client does (system roots plus
/// `ca_file`) and remember the certificate presented, to name it when it fails.
pub(super) struct TlsProbe {
    roots: Arc<rustls::RootCertStore>,
}

impl TlsProbe {
    pub(super) fn new(ca_pem: Option<&[u8]>) -> TlsProbe {
        super::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = ca_pem {
            for cert in rustls_pki_pem(pem) {
                let _ = roots.add(cert);
            }
        }
        TlsProbe { roots: Arc::new(roots) }
    }

    /// The verified end-entity certificate's subject.
    async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<String, TlsFailure> {
        let verifier = match rustls::client::WebPkiServerVerifier::builder(self.roots.clone()).build() {
            Ok(v) => Arc::new(Recording {
                inner: v,
                seen: Mutex::default(),
            }),
            Err(e) => return Err(TlsFailure::Other(format!("no usable CA certificates: {e}"))),
        };
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| TlsFailure::Other(format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let described = || {
            verifier
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
                .map(describe)
                .unwrap_or_else(|| ("(none presented)".into(), "(unknown)".into()))
        };
        match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(_)) => Ok(described().0),
            Ok(Err(e)) => {
                let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
                match rustls_error {
                    Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                        let (subject, issuer) = described();
                        Err(TlsFailure::UnknownIssuer { subject, issuer })
                    }
                    Some(other) => Err(TlsFailure::Other(format!(
                        "TLS handshake failed: {other} (certificate {})",
                        described().0
                    ))),
                    None => Err(TlsFailure::Other(format!("TLS handshake failed: {e}"))),
                }
            }
            Err(_) => Err(TlsFailure::Other(format!(
                "no TLS handshake within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

fn rustls_pki_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Subject and issuer of a DER certificate, as text.
fn describe(der: &[u8]) -> (String, String) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (cert.subject().to_string(), cert.issuer().to_string()),
        Err(_) => ("(unparsable certificate)".into(), "(unknown)".into()),
    }
}

/// The standard verifier, remembering the end-entity certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
