//! Prometheus metrics, as typed families of the `prometheus-client` crate: each metric is
//! a field, so a misspelt name does not compile, and recording takes no global lock.
//! Names and labels are the ones the README lists and `deploy/monitoring` uses; the
//! exposition is OpenMetrics text (counters end in `_total`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histograms.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub upstream: String,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub kind: &'static str,
    /// `host:port` that failed: the registry, its token realm or a CDN host.
    pub host: String,
    /// dns, connect, tls, status or body.
    pub phase: &'static str,
    /// `registry` (the upstream's own host) or `cdn` (a host it redirected to).
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedirectLabels {
    pub upstream: String,
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// The member's URL.
    pub member: String,
    /// `up`, or `down` while it is skipped after failing (`self` for this replica).
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRequestLabels {
    pub member: String,
    /// ok, not_found, refused (an error answer) or unreachable.
    pub outcome: &'static str,
}

/// Every metric pullgate exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Latencies<RouteLabels>,
    pub cache_lookups: Family<LookupLabels, Counter>,
    /// `pullgate_served_bytes_total{source="cache"}` and `{source="upstream"}`, kept as
    /// handles: blob streams count every chunk and need no family lookup for it.
    pub served_from_cache: Counter,
    pub served_from_upstream: Counter,
    /// `pullgate_sendfile_bytes_total`: of the bytes served from the cache, those the
    /// kernel sent from the page cache (src/zero_copy.rs).
    pub sendfile_bytes: Counter,
    /// `pullgate_served_bytes_total{source="peer"}`: streamed from the replica that owns
    /// the blob.
    pub served_from_peer: Counter,
    pub cluster_members: Family<MemberLabels, Gauge>,
    pub peer_requests: Family<PeerRequestLabels, Counter>,
    /// Requests this replica answered for its peers.
    pub peer_served: Counter,
    pub upstream_bytes: Family<UpstreamLabels, Counter>,
    pub upstream_request_duration: Latencies<UpstreamLabels>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub fills_in_flight: Gauge,
    pub fills: Family<OutcomeLabels, Counter>,
    pub fill_resumes: Counter,
    pub verification_failures: Family<UpstreamLabels, Counter>,
    /// Signature policy verdicts on the manifests served or refused.
    pub signature_verdicts: Family<VerdictLabels, Counter>,
    pub redirects_refused: Family<RedirectLabels, Counter>,
    pub evictions: Counter,
    pub evicted_bytes: Counter,
    /// Time of the eviction passes that evicted something.
    pub eviction_pass_duration: Histogram,
    pub cache_size_bytes: Gauge,
    /// What `[cache] max_size` limits (blob + manifest bytes + a share per record).
    pub cache_usage_bytes: Gauge,
    /// `[cache] max_size` (0: no limit).
    pub cache_max_size_bytes: Gauge,
    pub cache_entries: Family<KindLabels, Gauge>,
    /// Tasks alive in the runtime (a number that must not creep).
    pub tokio_alive_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a fill ended with, as the `outcome` label of `pullgate_fills_total`.
pub mod fill_outcome {
    pub const PUBLISHED: &str = "published";
    pub const VERIFICATION_FAILED: &str = "verification_failed";
    pub const FAILED: &str = "failed";
    /// Streamed to its client verified but not kept: the cache's disk was full.
    pub const SERVED_THROUGH: &str = "served_through";
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::default();
        let http_request_duration = Latencies::new_with_constructor(latency_histogram as fn() -> Histogram);
        let cache_lookups = Family::default();
        let served_bytes = Family::<SourceLabels, Counter>::default();
        let served_from_cache = served_bytes.get_or_create_owned(&SourceLabels { source: "cache" });
        let served_from_upstream = served_bytes.get_or_create_owned(&SourceLabels { source: "upstream" });
        let served_from_peer = served_bytes.get_or_create_owned(&SourceLabels { source: "peer" });
        let cluster_members = Family::default();
        let peer_requests = Family::default();
        let peer_served = Counter::default();
        registry.register(
            "pullgate_cluster_members",
            "Members of the cluster by state (self, up, down); 1 per member",
            cluster_members.clone(),
        );
        registry.register(
            "pullgate_peer_requests",
            "Requests to the replica owning a digest, by member and outcome",
            peer_requests.clone(),
        );
        registry.register(
            "pullgate_peer_served",
            "Requests this replica answered for other replicas",
            peer_served.clone(),
        );
        let upstream_bytes = Family::default();
        let upstream_request_duration = Latencies::new_with_constructor(latency_histogram as fn() -> Histogram);
        let upstream_errors = Family::default();
        let fills_in_flight = Gauge::default();
        let fills = Family::default();
        let fill_resumes = Counter::default();
        let sendfile_bytes = Counter::default();
        let verification_failures = Family::default();
        let signature_verdicts = Family::default();
        let redirects_refused = Family::default();
        let evictions = Counter::default();
        let evicted_bytes = Counter::default();
        let eviction_pass_duration = latency_histogram();
        let cache_size_bytes = Gauge::default();
        let cache_usage_bytes = Gauge::default();
        let cache_max_size_bytes = Gauge::default();
        let cache_entries = Family::default();
        let tokio_alive_tasks = Gauge::default();
        // Help texts without a final period: the encoder adds one.
        registry.register(
            "pullgate_http_requests",
            "Client requests by route, method and status",
            http_requests.clone(),
        );
        registry.register(
            "pullgate_http_request_duration_seconds",
            "Time to a client response's headers, by route",
            http_request_duration.clone(),
        );
        registry.register(
            "pullgate_cache_lookups",
            "Cache lookups by kind and result (hit, miss, stale, revalidated, fill-join)",
            cache_lookups.clone(),
        );
        registry.register(
            "pullgate_served_bytes",
            "Blob bytes sent to clients, from the cache or from a running fill",
            served_bytes,
        );
        registry.register(
            "pullgate_upstream_bytes",
            "Blob bytes fetched from upstream (registry or CDN)",
            upstream_bytes.clone(),
        );
        registry.register(
            "pullgate_upstream_request_duration_seconds",
            "Time to upstream response headers, per request hop",
            upstream_request_duration.clone(),
        );
        registry.register(
            "pullgate_upstream_errors",
            "Failed upstream requests by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "pullgate_fills_in_flight",
            "Blob fills running now",
            fills_in_flight.clone(),
        );
        registry.register(
            "pullgate_fills",
            "Blob fills by outcome (published, verification_failed, failed, served_through)",
            fills.clone(),
        );
        registry.register(
            "pullgate_sendfile_bytes",
            "Blob bytes served from the cache that the kernel sent from the page cache (sendfile, plain HTTP/1.x)",
            sendfile_bytes.clone(),
        );
        registry.register(
            "pullgate_fill_resumes",
            "Blob downloads resumed with Range after the upstream body broke",
            fill_resumes.clone(),
        );
        registry.register(
            "pullgate_verification_failures",
            "Upstream content that failed digest or size verification",
            verification_failures.clone(),
        );
        registry.register(
            "pullgate_signature_verdicts",
            "Signature policy verdicts on manifests served or refused, by upstream and verdict",
            signature_verdicts.clone(),
        );
        registry.register(
            "pullgate_redirects_refused",
            "Upstream redirects refused because the host is not in allow_redirect_hosts",
            redirects_refused.clone(),
        );
        registry.register(
            "pullgate_evictions",
            "Cache entries removed by pullgate",
            evictions.clone(),
        );
        registry.register(
            "pullgate_evicted_bytes",
            "Bytes of blobs and manifests evicted to keep the cache under max_size",
            evicted_bytes.clone(),
        );
        registry.register(
            "pullgate_eviction_pass_duration_seconds",
            "Time of each eviction pass that evicted something",
            eviction_pass_duration.clone(),
        );
        registry.register(
            "pullgate_cache_size_bytes",
            "Disk use: bytes of cached blob files plus the database's files",
            cache_size_bytes.clone(),
        );
        registry.register(
            "pullgate_cache_usage_bytes",
            "What max_size limits: blob and manifest bytes plus 256 bytes per database record",
            cache_usage_bytes.clone(),
        );
        registry.register(
            "pullgate_cache_max_size_bytes",
            "The configured max_size (0: no limit)",
            cache_max_size_bytes.clone(),
        );
        registry.register(
            "pullgate_cache_entries",
            "Cached entries by kind",
            cache_entries.clone(),
        );
        registry.register(
            "pullgate_tokio_alive_tasks",
            "Tasks alive in the async runtime",
            tokio_alive_tasks.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_request_duration,
            cache_lookups,
            served_from_cache,
            served_from_upstream,
            sendfile_bytes,
            served_from_peer,
            cluster_members,
            peer_requests,
            peer_served,
            upstream_bytes,
            upstream_request_duration,
            upstream_errors,
            fills_in_flight,
            fills,
            fill_resumes,
            verification_failures,
            signature_verdicts,
            redirects_refused,
            evictions,
            evicted_bytes,
            eviction_pass_duration,
            cache_size_bytes,
            cache_usage_bytes,
            cache_max_size_bytes,
            cache_entries,
            tokio_alive_tasks,
        }
    }

    /// Lookups of `kind` (`manifest`, `blob`, `tags_list`) that ended with `result`.
    pub fn lookups(&self, kind: &'static str, result: &'static str) -> u64 {
        self.cache_lookups
            .get(&LookupLabels { kind, result })
            .map_or(0, |c| c.get())
    }

    pub fn fill_ended(&self, outcome: &'static str) {
        self.fills.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn verification_failed(&self, upstream: &str) {
        self.verification_failures
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .inc();
    }

    /// Fills that ended with `outcome` (see [`fill_outcome`]).
    pub fn fills_ended(&self, outcome: &'static str) -> u64 {
        self.fills.get(&OutcomeLabels { outcome }).map_or(0, |c| c.get())
    }

    pub fn verification_failures_of(&self, upstream: &str) -> u64 {
        self.verification_failures
            .get(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER` (a client
/// cannot grow the label set).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.http_requests
            .get_or_create(&RequestLabels {
                route: "blob",
                method: "GET",
                status: 200,
            })
            .inc_by(2);
        m.http_request_duration
            .get_or_create(&RouteLabels { route: "blob" })
            .observe(0.003);
        m.fills_in_flight.set(1);
        let text = m.render();
        assert!(text.contains("pullgate_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("pullgate_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"blob\"} 0"));
        assert!(text.contains("pullgate_http_request_duration_seconds_bucket{le=\"0.005\",route=\"blob\"} 1"));
        assert!(text.contains("pullgate_http_request_duration_seconds_count{route=\"blob\"} 1"));
        assert!(text.contains("pullgate_fills_in_flight 1"));
        assert!(text.contains("# HELP pullgate_fills_in_flight Blob fills running now.\n"));
        assert!(text.contains("pullgate_served_bytes_total{source=\"cache\"} 0"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.redirects_refused
            .get_or_create(&RedirectLabels {
                upstream: "u".into(),
                host: "a\"b\\c\nd".into(),
            })
            .inc();
        assert!(m.render().contains(r#"host="a\"b\\c\nd""#), "{}", m.render());
    }
}
