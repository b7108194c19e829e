//! The proxy decides every answer: which upstream a client name means
//! ([`Proxy::resolve`]), hit / miss / revalidate for manifests and tags
//! ([`manifests`]), blob lookups that start or join single-flight fills and the ranges
//! and bodies they are served with ([`blobs`]), tag lists ([`tags`]), signatures and
//! referrers ([`signatures`]), OpenShift's release signatures and update graph
//! ([`openshift`]), and the kind of every failure ([`error`]). The HTTP layer
//! only renders what these return. Also the proxy's housekeeping: eviction passes,
//! saved statistics, readiness, metrics and an orderly shutdown.

mod blobs;
mod database_watch;
use database_watch::DATABASE_PATIENCE;
pub mod error;
pub mod fill;
mod manifests;
pub mod openshift;
mod owners;
mod peer_reads;
pub mod policy;
pub mod read;
mod signatures;
pub mod status;
mod tags;
mod through;

pub use blobs::BlobAnswer;
pub use error::{ErrorKind, Missing, ProxyError, ProxyResult};
pub use manifests::ManifestAnswer;
pub use signatures::ReferrersAnswer;
pub use tags::TagsAnswer;

use crate::cache::{Cache, now_ms};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::oci::pattern::RepoPatterns;
use crate::oci::{Digest, RepoName};
use crate::upstream::Upstream;
use fill::FillRegistry;
use std::sync::Arc;
use std::time::Duration;

/// The proxy's own settings (the composition root builds them from the config).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The upstream for names that start with no upstream name.
    pub default_upstream: Option<String>,
    /// How long a tag mapping is trusted before it is revalidated.
    pub tag_ttl: Duration,
    /// Upstream blob downloads running at once.
    pub max_concurrent_fills: usize,
    /// Bytes on disk to keep at most (LRU eviction beyond).
    pub max_size: Option<u64>,
    /// Whether `/v2/` advertises the signature extension API.
    pub signatures_extension: bool,
}

/// An upstream and the client names that reach it.
pub struct UpstreamRoute {
    pub upstream: Arc<Upstream>,
    /// Other path prefixes and `ns` values that mean this upstream.
    pub aliases: Vec<String>,
    /// Repository patterns clients may pull (empty: all), and those refused.
    pub allow: RepoPatterns,
    pub deny: RepoPatterns,
    /// The signatures its manifests must carry, when a policy is configured.
    pub policy: Option<Arc<policy::RoutePolicy>>,
}

impl UpstreamRoute {
    /// The upstream's name, then its aliases.
    fn prefixes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.upstream.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    fn permits(&self, repo: &RepoName) -> bool {
        (self.allow.is_empty() || self.allow.matches(repo.as_str())) && !self.deny.matches(repo.as_str())
    }
}

/// How a response was produced, for logs and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Revalidated,
    FillJoin,
    /// Streamed from the replica that owns the digest (`[cluster]`).
    Peer,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::FillJoin => "fill-join",
            CacheStatus::Peer => "peer",
        }
    }
}

/// A client's repository name resolved to an upstream and the upstream's name for it.
#[derive(Clone)]
pub struct Target {
    upstream: Arc<Upstream>,
    repo: RepoName,
    policy: Option<Arc<policy::RoutePolicy>>,
    /// Asked by another replica of the cluster: answered here, never forwarded again.
    from_peer: bool,
    /// A published blob may be sent as placeholder frames for the connection's writer
    /// to send with sendfile ([`crate::zero_copy`]): the body goes straight to a plain
    /// HTTP/1.x client, and nothing reads its bytes on the way.
    kernel_copy: bool,
}

impl Target {
    /// The upstream's configured name (what `OCI-Namespace` answers with).
    pub fn upstream_name(&self) -> &str {
        &self.upstream.name
    }

    /// The repository as the upstream names it.
    pub fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// The same target, for a client whose connection sends placeholder frames with
    /// sendfile (see [`Target::kernel_copy`]).
    pub fn sent_by_kernel(mut self) -> Target {
        self.kernel_copy = true;
        self
    }

    /// The same target, asked by a peer replica: this replica answers it itself.
    pub fn asked_by_peer(mut self) -> Target {
        self.from_peer = true;
        self
    }
}

pub struct Proxy {
    routes: Vec<UpstreamRoute>,
    default_upstream: Option<usize>,
    cache: Cache,
    tag_ttl: Duration,
    fills: Arc<FillRegistry>,
    /// `[cache] max_size` (also the bound of a shared bucket).
    max_size: Option<u64>,
    signatures_extension: bool,
    metrics: Arc<Metrics>,
    started_ms: u64,
    /// The other replicas, when `[cluster]` is configured.
    cluster: Option<Arc<Cluster>>,
    /// Streams from peers that this replica's clients share.
    peer_streams: Arc<owners::SharedPeerStreams>,
    /// Blobs being read from peers now (for the status page).
    peer_reads: Arc<peer_reads::PeerReads>,
    /// OpenShift's release signatures and update graph, when `[openshift]` is set.
    openshift: Option<openshift::OpenShift>,
    /// Signature policy verdicts recently used (all are kept in the database).
    verdicts: policy::VerdictMemory,
    /// What the last readiness check found, so only a change is logged (a load
    /// balancer probes every few seconds).
    was_ready: std::sync::atomic::AtomicBool,
    /// Set when the database stopped taking writes (see [`Proxy::needs_restart`]).
    restart: Restart,
}

/// Why this process must be started again, once known, and a wake-up for the waiter.
#[derive(Default)]
struct Restart {
    why: std::sync::OnceLock<String>,
    wake: tokio::sync::Notify,
}

/// How often the housekeeping task runs an eviction pass (blobs spared while clients
/// read them are evicted once they are done; a fleet's round runs at least as often as
/// its report interval), and how often it saves the statistics and the recorded reads.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
const SAVE_EVERY: Duration = Duration::from_secs(30);

impl Proxy {
    pub fn new(
        settings: ProxySettings,
        routes: Vec<UpstreamRoute>,
        cache: Cache,
        metrics: Arc<Metrics>,
    ) -> ProxyResult<Proxy> {
        let default_upstream = match &settings.default_upstream {
            Some(name) => Some(
                routes
                    .iter()
                    .position(|r| &r.upstream.name == name)
                    .ok_or_else(|| ProxyError::NameUnknown(format!("default upstream {name:?} is not configured")))?,
            ),
            None => None,
        };
        Ok(Proxy {
            routes,
            default_upstream,
            cache,
            tag_ttl: settings.tag_ttl,
            fills: Arc::new(FillRegistry::new(
                metrics.clone(),
                settings.max_concurrent_fills,
                settings.max_size,
            )),
            max_size: settings.max_size,
            signatures_extension: settings.signatures_extension,
            metrics,
            started_ms: now_ms(),
            cluster: None,
            peer_streams: Arc::default(),
            peer_reads: Arc::default(),
            openshift: None,
            verdicts: policy::VerdictMemory::new(policy::VERDICTS_IN_MEMORY),
            was_ready: std::sync::atomic::AtomicBool::new(true),
            restart: Restart::default(),
        })
    }

    /// Makes this proxy one replica of `cluster`: each digest's owner fetches it.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Proxy {
        self.cluster = Some(cluster);
        self
    }

    /// Counts a request this replica answers for another.
    pub fn served_a_peer(&self) {
        self.metrics.peer_served.inc();
    }

    /// Whether `/v2/` advertises the signature extension API.
    pub fn signatures_extension(&self) -> bool {
        self.signatures_extension
    }

    /// The blob store in use, for the startup log line.
    pub fn store_name(&self) -> &'static str {
        self.cache.store_name()
    }

    /// Routing: `?ns=` first (a path already prefixed with that upstream, or one of its
    /// aliases, is not prefixed twice), then the longest leading path prefix naming an
    /// upstream or alias, then `default_upstream`. The upstream's allow/deny patterns
    /// then apply: a refused name is `DENIED` and never fetched or served.
    pub fn resolve(&self, name: &RepoName, ns: Option<&str>) -> ProxyResult<Target> {
        let (route, repo) = self.route(name, ns)?;
        if !route.permits(&repo) {
            return Err(ProxyError::Denied(format!(
                "{repo} is not in the repositories allowed from {}",
                route.upstream.name
            )));
        }
        Ok(Target {
            upstream: route.upstream.clone(),
            repo,
            policy: route.policy.clone(),
            from_peer: false,
            kernel_copy: false,
        })
    }

    fn route(&self, name: &RepoName, ns: Option<&str>) -> ProxyResult<(&UpstreamRoute, RepoName)> {
        if let Some(ns) = ns {
            let route = self
                .routes
                .iter()
                .find(|r| r.prefixes().any(|p| p.eq_ignore_ascii_case(ns)))
                .ok_or_else(|| {
                    ProxyError::NameUnknown(format!("no upstream named {:?} is configured", truncate(ns)))
                })?;
            let repo = route
                .prefixes()
                .find_map(|p| name.strip_prefix(p))
                .unwrap_or_else(|| name.clone());
            return Ok((route, repo));
        }
        let by_prefix = self
            .routes
            .iter()
            .flat_map(|r| r.prefixes().map(move |p| (r, p)))
            .filter(|(_, p)| name.has_prefix(p))
            .max_by_key(|(_, p)| p.len());
        if let Some((route, prefix)) = by_prefix {
            let repo = name
                .strip_prefix(prefix)
                .ok_or_else(|| ProxyError::NameInvalid(format!("{name} names an upstream but no repository in it")))?;
            return Ok((route, repo));
        }
        match self.default_upstream {
            Some(i) => Ok((&self.routes[i], name.clone())),
            None => Err(ProxyError::NameUnknown(format!(
                "{name} does not start with a configured upstream name and no default_upstream is set"
            ))),
        }
    }

    // ---- housekeeping ---------------------------------------------------------------

    /// Readiness: the database answers a write and blob storage takes a file.
    /// (Upstream reachability is not required: the cache can serve.)
    pub async fn ready(&self) -> ProxyResult<()> {
        // A stalled database never answers: readiness says so rather than hanging.
        let result = match database_watch::answer_within(DATABASE_PATIENCE, self.cache.probe()).await {
            Ok(probed) => probed.map_err(ProxyError::from),
            Err(stalled) => Err(ProxyError::Cache(crate::cache::CacheError::Stalled(stalled))),
        };
        let was_ready = self
            .was_ready
            .swap(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
        match &result {
            Err(e) if was_ready => tracing::warn!(error = %e, "not ready"),
            Ok(()) if !was_ready => tracing::info!("ready again"),
            _ => {}
        }
        result
    }

    /// The metrics exposition, with the cache's sizes read now.
    pub async fn render_metrics(&self) -> String {
        if let Some(cluster) = &self.cluster {
            cluster.export(&self.metrics);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.metrics
                .tokio_alive_tasks
                .set(runtime.metrics().num_alive_tasks() as i64);
        }
        if let Ok(stats) = self.cache.stats().await {
            let m = &self.metrics;
            m.cache_size_bytes.set(stats.total_bytes() as i64);
            m.cache_usage_bytes.set(self.cache.totals().usage() as i64);
            m.cache_max_size_bytes.set(self.max_size.unwrap_or(0) as i64);
            for (kind, n) in [
                ("blob", stats.blobs),
                ("manifest", stats.manifests),
                ("tag", stats.tags),
            ] {
                m.cache_entries
                    .get_or_create(&crate::metrics::KindLabels { kind })
                    .set(n as i64);
            }
        }
        self.metrics.render()
    }

    /// Runs until dropped: an eviction pass every [`HOUSEKEEPING_EVERY`], and now and
    /// then the statistics and recorded reads saved.
    pub async fn housekeeping(self: Arc<Self>) {
        let every = self
            .cache
            .fleet_report_interval()
            .map_or(HOUSEKEEPING_EVERY, |i| i.min(HOUSEKEEPING_EVERY));
        let mut saved = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            // Said once when the data directory goes (or comes back); nothing else runs
            // against a directory that is gone.
            if self.cache.check_storage().is_err() {
                continue;
            }
            // The disk has room (a full one keeps serving hits until it has): a database
            // that still refuses writes kept the error of a write into the full disk.
            // A write that never answers: the database stalled (see `database_watch`).
            match database_watch::answer_within(DATABASE_PATIENCE, self.cache.database_takes_writes()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.must_restart(format!(
                        "the database stopped taking writes after an I/O error ({e}); sled keeps such an error until the database is opened again"
                    ));
                    return;
                }
                Err(stalled) => {
                    self.must_restart(stalled);
                    return;
                }
            }
            self.fills.enforce_limit(&self.cache).await;
            match self
                .cache
                .fleet_round(self.max_size, self.fills.running_digests())
                .await
            {
                Ok(round) if round.evicted > 0 => {
                    self.metrics.evictions.inc_by(round.evicted);
                    self.metrics.evicted_bytes.inc_by(round.evicted_bytes);
                    tracing::info!(?round, "the fleet's evictor evicted least recently used blobs");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the fleet round failed"),
            }
            if saved.elapsed() >= SAVE_EVERY {
                saved = tokio::time::Instant::now();
                let _ = self.save_stats().await;
                let _ = self.cache.write_back_access().await;
            }
        }
    }

    /// Records why the process must be started again (once; one ERROR line) and wakes
    /// [`Proxy::needs_restart`].
    fn must_restart(&self, why: String) {
        if self.restart.why.set(why.clone()).is_ok() {
            tracing::error!(target: crate::http::server::LIFECYCLE, reason = %why, "stopping so that the service manager starts pullgate again (Restart=on-failure)");
            self.restart.wake.notify_one();
        }
    }

    /// Resolves, with the reason, when this process can no longer work as it is and must
    /// be started again: `serve` then drains and exits with a failure, and the service
    /// manager (systemd's `Restart=on-failure`, a pod's restart policy) starts it again,
    /// as PostgreSQL does when its log cannot be written.
    pub async fn needs_restart(&self) -> String {
        loop {
            if let Some(why) = self.restart.why.get() {
                return why.clone();
            }
            self.restart.wake.notified().await;
        }
    }

    /// Stops running fills (their staged bytes are discarded, nothing half published),
    /// saves the statistics, and closes the cache cleanly (recorded reads written back,
    /// the database flushed, the marker that spares the next start a scan).
    pub async fn shutdown(&self) -> ProxyResult<()> {
        self.fills.stop_all(Duration::from_secs(5)).await;
        let _ = self.save_stats().await;
        Ok(self.cache.close().await?)
    }

    /// Saves this run's counters to the database for `pullgate cache stats`.
    async fn save_stats(&self) -> ProxyResult<()> {
        let m = &self.metrics;
        let lookups = |results: &[&'static str]| -> u64 {
            ["manifest", "blob", "tags_list"]
                .iter()
                .flat_map(|kind| results.iter().map(move |r| m.lookups(kind, r)))
                .sum()
        };
        let stats = ProxyStats {
            started_ms: self.started_ms,
            saved_ms: now_ms(),
            hits: lookups(&["hit", "revalidated", "stale"]),
            misses: lookups(&["miss", "fill-join", "peer"]),
            bytes_from_cache: m.served_from_cache.get(),
            bytes_from_upstream: m.served_from_upstream.get(),
        };
        Ok(self.cache.put_meta(ProxyStats::KEY, stats).await?)
    }

    // ---- for tests and embedding ----------------------------------------------------

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Blob fills running now.
    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    /// Waits until no fill is running (every client that got bytes from a fill has
    /// them before the fill has published; this is when it has).
    pub async fn fills_idle(&self) {
        self.fills.idle().await
    }

    /// Whether a verified blob is published in the cache.
    pub async fn has_blob(&self, digest: &Digest) -> ProxyResult<bool> {
        Ok(self.cache.blob(digest).await?.is_some())
    }

    /// Whether a manifest is stored in the cache.
    pub async fn has_manifest(&self, digest: &Digest) -> ProxyResult<bool> {
        Ok(self.cache.manifest(digest).await?.is_some())
    }
}

/// Counters a running proxy saves in the database for `pullgate cache stats`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    pub started_ms: u64,
    pub saved_ms: u64,
    /// Lookups answered from the cache (hit, revalidated, stale).
    pub hits: u64,
    /// Lookups that needed upstream (miss, fill-join).
    pub misses: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_upstream: u64,
}

impl ProxyStats {
    /// Where the statistics are kept among the cache's named values.
    pub const KEY: &'static str = "proxy_stats";

    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
