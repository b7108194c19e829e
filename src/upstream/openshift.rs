//! The two hosts besides the registries that OpenShift clusters need: the release
//! signature store (the cluster-version operator's protocol,
//! `<store>/sha256=<hex>/signature-<N>`) and the update graph (Cincinnati JSON). Each is
//! an [`Upstream`] of its own (its own timeouts, failure counts and breaker), reached
//! anonymously, through the configured egress proxy and CA, with redirects allowed only
//! between these two hosts.

use super::doctor::{Phase, Report, TlsProbe, endpoint, http_remedy};
use super::{SetupError, Upstream, UpstreamError, UpstreamSettings, host_port_label};
use crate::metrics::Metrics;
use crate::oci::Digest;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The largest release signature accepted (a GPG signature is a few KiB).
pub const MAX_RELEASE_SIGNATURE_BYTES: usize = 64 * 1024;
/// The largest update graph accepted (a channel's graph is a few MiB at most).
pub const MAX_GRAPH_BYTES: usize = 32 * 1024 * 1024;
/// The upstream names the two hosts' failures are counted and logged under.
pub const SIGNATURES_NAME: &str = "openshift-signatures";
pub const GRAPH_NAME: &str = "openshift-graph";

/// Where the two hosts are and how they are reached (from `[openshift]`).
#[derive(Debug, Clone)]
pub struct OpenShiftSettings {
    /// `https://mirror.openshift.com/pub/openshift-v4/signatures/openshift/release`
    pub signature_store: url::Url,
    /// `https://api.openshift.com/api/upgrades_info/v1/graph`
    pub update_graph: url::Url,
    pub ca_pem: Option<Vec<u8>>,
    pub egress_proxy: Option<String>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl OpenShiftSettings {
    /// The registry-client settings of one of the two hosts: anonymous, redirects only
    /// to the other one.
    fn host(&self, name: &str, url: &url::Url, other: &url::Url) -> UpstreamSettings {
        let mut s = UpstreamSettings::new(name, url.clone());
        s.ca_pem = self.ca_pem.clone();
        s.egress_proxy = self.egress_proxy.clone();
        s.allow_redirect_hosts = vec![host_port_label(other)];
        s.connect_timeout = self.connect_timeout;
        s.response_timeout = self.response_timeout;
        s.body_idle_timeout = self.response_timeout;
        s
    }

    /// The signature store's client settings (for `doctor`).
    pub fn signature_store_settings(&self) -> UpstreamSettings {
        self.host(SIGNATURES_NAME, &self.signature_store, &self.update_graph)
    }

    /// The update graph's client settings (for `doctor`).
    pub fn update_graph_settings(&self) -> UpstreamSettings {
        self.host(GRAPH_NAME, &self.update_graph, &self.signature_store)
    }
}

/// A query of the update graph: the parameters the cluster-version operator sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GraphQuery {
    pub channel: Option<String>,
    pub arch: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
}

impl GraphQuery {
    /// The query string, parameters in a fixed order.
    pub fn to_query_string(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs() {
            q.append_pair(k, v);
        }
        q.finish()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("channel", &self.channel),
            ("arch", &self.arch),
            ("id", &self.id),
            ("version", &self.version),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// The update graph as the service answered it.
#[derive(Debug, Clone)]
pub struct GraphDocument {
    pub body: Bytes,
    pub content_type: Option<String>,
}

pub struct OpenShiftClient {
    signatures: Upstream,
    graph: Upstream,
    store: url::Url,
    graph_url: url::Url,
}

impl OpenShiftClient {
    pub fn new(settings: &OpenShiftSettings, metrics: Arc<Metrics>) -> Result<OpenShiftClient, SetupError> {
        Ok(OpenShiftClient {
            signatures: Upstream::new(settings.signature_store_settings(), metrics.clone())?,
            graph: Upstream::new(settings.update_graph_settings(), metrics)?,
            store: settings.signature_store.clone(),
            graph_url: settings.update_graph.clone(),
        })
    }

    /// The signature store's and the update graph's clients (for the status page).
    pub fn upstreams(&self) -> [&Upstream; 2] {
        [&self.signatures, &self.graph]
    }

    /// Release signature `index` (1-based) of the release image `digest`; `None` when
    /// the store has none (404, 403 or 410). Bodies over 64 KiB are refused.
    pub async fn release_signature(&self, digest: &Digest, index: u32) -> Result<Option<Bytes>, UpstreamError> {
        let url = url::Url::parse(&format!(
            "{}/sha256={}/signature-{index}",
            self.store.as_str().trim_end_matches('/'),
            digest.hex()
        ))
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        self.signatures
            .signature_document(url, MAX_RELEASE_SIGNATURE_BYTES)
            .await
    }

    /// The update graph for `query`: a 200's JSON body. A 404 is [`UpstreamError::NotFound`];
    /// other statuses are errors with their code.
    pub async fn update_graph(&self, query: &GraphQuery) -> Result<GraphDocument, UpstreamError> {
        let mut url = self.graph_url.clone();
        let q = query.to_query_string();
        url.set_query((!q.is_empty()).then_some(q.as_str()));
        let document = self
            .graph
            .get_document(url, Some("application/json"), MAX_GRAPH_BYTES)
            .await?;
        match document.status {
            200 => {
                if serde_json::from_slice::<serde_json::Value>(&document.body).is_err() {
                    return Err(UpstreamError::Protocol(
                        "the update graph service answered something that is not JSON".into(),
                    ));
                }
                Ok(GraphDocument {
                    body: document.body,
                    content_type: document.content_type,
                })
            }
            404 => Err(UpstreamError::NotFound),
            429 => Err(UpstreamError::TooManyRequests {
                retry_after: document.retry_after,
            }),
            code => Err(UpstreamError::Status(code)),
        }
    }
}

/// What a document GET must answer for its hop to pass: the detail shown, or why not.
pub type Judge = fn(&super::Document) -> Result<String, String>;

/// The walk to a host that serves documents rather than a registry (OpenShift's release
/// signature store and update graph): its DNS, TCP and TLS hops (or the egress
/// proxy's), then a GET of `url` judged by `judge`.
pub async fn walk_document(
    settings: UpstreamSettings,
    url: url::Url,
    role: &str,
    phase: Phase,
    judge: Judge,
) -> Report {
    let mut report = Report::new(&settings);
    let tls = TlsProbe::new(settings.ca_pem.as_deref());
    let first_hop = match &settings.egress_proxy {
        Some(proxy) => {
            report.notes.push(format!("requests go through egress_proxy {proxy}"));
            url::Url::parse(proxy).map(|p| (p, "egress_proxy"))
        }
        None => Ok((url.clone(), role)),
    };
    let (first, first_role) = match first_hop {
        Ok(hop) => hop,
        Err(e) => {
            report.fail(
                Phase::Connect,
                "egress_proxy",
                format!("not a URL: {e}"),
                "fix egress_proxy in [openshift]",
            );
            return report;
        }
    };
    if !endpoint(
        &mut report,
        &first,
        &tls,
        settings.connect_timeout,
        &settings.name,
        first_role,
    )
    .await
    {
        return report;
    }
    let host = host_port_label(&url);
    let name = settings.name.clone();
    let client = match Upstream::new(settings, Arc::new(Metrics::new())) {
        Ok(u) => u,
        Err(e) => {
            report.fail(phase, host, e.to_string(), "fix [openshift] in the configuration");
            return report;
        }
    };
    match client.get_document(url, Some("application/json"), 32 << 20).await {
        Ok(document) => match judge(&document) {
            Ok(detail) => report.pass(phase, host, detail),
            Err(why) => {
                let remedy = format!("{host} answered, but not as {name} should: check the URL in [openshift]");
                report.fail(phase, host, why, remedy);
            }
        },
        Err(e) => {
            let remedy = http_remedy(&e, &host);
            report.fail(phase, host, e.to_string(), remedy);
        }
    }
    report
}

/// `pullgate doctor`'s walks of the two hosts: the signature store must answer a
/// signature GET (a 404 for a digest no release has is a pass), the graph must answer
/// `probe_channel`'s graph as JSON.
pub async fn doctor(settings: &OpenShiftSettings, probe_channel: &str) -> Vec<super::doctor::Report> {
    let missing = Digest::of(b"pullgate doctor: no release has this digest");
    let signature = url::Url::parse(&format!(
        "{}/sha256={}/signature-1",
        settings.signature_store.as_str().trim_end_matches('/'),
        missing.hex()
    ));
    let mut graph = settings.update_graph.clone();
    graph
        .query_pairs_mut()
        .append_pair("channel", probe_channel)
        .append_pair("arch", "amd64");
    let mut reports = Vec::new();
    match signature {
        Ok(url) => reports.push(
            walk_document(
                settings.signature_store_settings(),
                url,
                "release signature store",
                Phase::Signature,
                |d| match d.status {
                    200 => Ok("signature-1 fetched".into()),
                    404 | 403 | 410 => Ok(format!("the store answers ({} for a digest no release has)", d.status)),
                    s => Err(format!("the store answered HTTP {s}")),
                },
            )
            .await,
        ),
        Err(e) => tracing::warn!(error = %e, "signature store URL"),
    }
    reports.push(
        walk_document(
            settings.update_graph_settings(),
            graph,
            "update graph",
            Phase::Graph,
            |d| {
                if d.status != 200 {
                    return Err(format!("the graph service answered HTTP {}", d.status));
                }
                let graph: serde_json::Value =
                    serde_json::from_slice(&d.body).map_err(|e| format!("not an update graph: {e}"))?;
                match graph.get("nodes").and_then(|n| n.as_array()) {
                    Some(nodes) => Ok(format!("{} releases in the probe channel's graph", nodes.len())),
                    None => Err("not an update graph: no \"nodes\"".into()),
                }
            },
        )
        .await,
    );
    reports
}
