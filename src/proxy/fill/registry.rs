//! The registry of running fills, by digest: a miss starts one fill task (detached from
//! the request, so a client that leaves does not cancel it) and every other request for
//! the digest joins it. Also the limits around fills: `max_concurrent_fills` slots,
//! `max_size` enforced after each publish, and stopping every fill at shutdown.

use super::task::FillTask;
use super::{Fill, FillError, FillProgress, RecentChunks};
use crate::cache::{BlobRecord, Cache};
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName};
use crate::upstream::Upstream;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{info, warn};

pub struct FillRegistry {
    running: Mutex<HashMap<Digest, Arc<Fill>>>,
    /// A gate per digest whose fill is being started: starting takes a round trip (a
    /// shared store creates its upload), and requests arriving meanwhile wait for it and
    /// join rather than each start a fill only to throw it away.
    starting: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// How many fills run, for whoever waits for them all to end.
    running_count: watch::Sender<usize>,
    pub(super) metrics: Arc<Metrics>,
    /// `max_concurrent_fills` slots: fills beyond them wait before asking upstream.
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled at shutdown: running fills stop and discard their staged bytes.
    pub(super) shutdown: tokio_util::sync::CancellationToken,
    /// `[cache] max_size`, enforced after every publish.
    max_size: Option<u64>,
    /// Held by the eviction pass running now: fills that end together start one pass,
    /// not one each competing for the same entries (the running pass re-reads the
    /// totals as it goes, so it also covers what they published).
    evicting: tokio::sync::Mutex<()>,
    /// Every fill task, until it has finished and dropped what it holds (the cache
    /// among it), so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
}

/// A request's turn to start a digest's fill. Dropped (whatever the outcome), it lets
/// the next waiter in and forgets its gate: later requests find the fill running, and
/// those already waiting re-check before starting one.
struct StartingTurn<'a> {
    /// Held until the turn ends (released after `drop` below forgot the gate).
    _guard: tokio::sync::OwnedMutexGuard<()>,
    gate: Arc<tokio::sync::Mutex<()>>,
    registry: &'a FillRegistry,
    digest: Digest,
}

impl Drop for StartingTurn<'_> {
    fn drop(&mut self) {
        let mut starting = self.registry.starting.lock().unwrap_or_else(|p| p.into_inner());
        if starting.get(&self.digest).is_some_and(|g| Arc::ptr_eq(g, &self.gate)) {
            starting.remove(&self.digest);
        }
    }
}

/// What a blob lookup found.
pub enum Lookup {
    /// Published meanwhile.
    Cached(BlobRecord),
    /// This request started the fill.
    Started(Arc<Fill>),
    /// Another request's fill is running; this one follows it.
    Joined(Arc<Fill>),
}

impl FillRegistry {
    pub fn new(metrics: Arc<Metrics>, max_concurrent_fills: usize, max_size: Option<u64>) -> Self {
        FillRegistry {
            running: Mutex::default(),
            starting: Mutex::default(),
            running_count: watch::Sender::new(0),
            metrics,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_fills.max(1))),
            shutdown: tokio_util::sync::CancellationToken::new(),
            max_size,
            evicting: tokio::sync::Mutex::new(()),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the number of running fills (gauge and watchers).
    fn count(&self, running: &HashMap<Digest, Arc<Fill>>) {
        self.metrics.fills_in_flight.set(running.len() as i64);
        self.running_count.send_replace(running.len());
    }

    /// The running fill of `digest`, if any.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.running().get(digest).cloned()
    }

    /// The running fills, as the status page shows them, the oldest first.
    pub fn views(&self) -> Vec<super::FillView> {
        let fills: Vec<Arc<Fill>> = self.running().values().cloned().collect();
        let mut views: Vec<super::FillView> = fills.iter().map(|f| f.view()).collect();
        views.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        views
    }

    /// Digests being filled now (never evicted).
    pub fn running_digests(&self) -> HashSet<Digest> {
        self.running().keys().cloned().collect()
    }

    pub fn in_flight(&self) -> usize {
        self.running().len()
    }

    /// Waits until no fill is running.
    pub async fn idle(&self) {
        let _ = self.running_count.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Called by a fill task once its outcome is published to its readers.
    pub(super) fn finished(&self, digest: &Digest) {
        let mut running = self.running();
        running.remove(digest);
        self.count(&running);
    }

    /// Evicts least recently used content beyond `max_size`, if one is set, unless a
    /// pass is running already.
    pub async fn enforce_limit(&self, cache: &Cache) {
        let Some(max) = self.max_size else { return };
        let Ok(_pass) = self.evicting.try_lock() else { return };
        match cache.enforce_limit(max, self.running_digests()).await {
            Ok(e) if e.blobs + e.manifests > 0 => {
                self.metrics.evictions.inc_by(e.blobs + e.manifests);
                self.metrics.evicted_bytes.inc_by(e.bytes);
                self.metrics.eviction_pass_duration.observe(e.took.as_secs_f64());
                info!(
                    blobs = e.blobs,
                    manifests = e.manifests,
                    bytes = e.bytes,
                    ms = e.took.as_millis() as u64,
                    "evicted least recently used content"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "eviction failed"),
        }
    }

    /// Stops every running fill (their staged bytes are discarded) and waits up to
    /// `deadline` for them to finish.
    pub async fn stop_all(&self, deadline: std::time::Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
    }

    /// Waits for the digest's turn to start a fill (see [`FillRegistry::starting`]).
    async fn starting_turn(&self, digest: &Digest) -> StartingTurn<'_> {
        let gate = self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        StartingTurn {
            _guard: gate.clone().lock_owned().await,
            gate,
            registry: self,
            digest: digest.clone(),
        }
    }

    /// Returns the published blob, the running fill, or a new fill started for it.
    pub async fn get_or_start(
        self: &Arc<Self>,
        cache: &Cache,
        upstream: Arc<Upstream>,
        repo: RepoName,
        digest: &Digest,
    ) -> Result<Lookup, FillError> {
        if let Some(fill) = self.get(digest) {
            fill.joined();
            return Ok(Lookup::Joined(fill));
        }
        // One request at a time starts the digest's fill; those waiting here join it, or
        // take the blob if it was cached meanwhile (here, or in a shared store another
        // replica filled).
        let _turn = self.starting_turn(digest).await;
        if let Some(fill) = self.get(digest) {
            fill.joined();
            return Ok(Lookup::Joined(fill));
        }
        if let Some(record) = cache.blob(digest).await? {
            return Ok(Lookup::Cached(record));
        }
        let (fill_id, staged) = cache.begin_fill(digest).await?;
        let (tx, rx) = watch::channel(FillProgress::default());
        let recent = Arc::new(RecentChunks::default());
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            fill_id,
            progress: rx,
            recent: recent.clone(),
            upstream: upstream.name.clone(),
            repo: repo.clone(),
            started: std::time::Instant::now(),
            clients: std::sync::atomic::AtomicUsize::new(1),
        });
        {
            let mut running = self.running();
            if let Some(existing) = running.get(digest).cloned() {
                drop(running);
                let c = cache.clone();
                tokio::spawn(async move { c.abort_fill(fill_id, staged).await });
                existing.joined();
                return Ok(Lookup::Joined(existing));
            }
            // A fill may have published between the caller's cache check and now: it
            // publishes before it leaves this map, so this re-check under the lock sees it.
            if let Ok(Some(record)) = cache.blob_now(digest) {
                drop(running);
                let c = cache.clone();
                tokio::spawn(async move { c.abort_fill(fill_id, staged).await });
                return Ok(Lookup::Cached(record));
            }
            running.insert(digest.clone(), fill.clone());
            self.count(&running);
        }
        let task = FillTask::new(self.clone(), cache.clone(), upstream, repo, fill.clone(), tx, recent);
        self.tasks.spawn(task.run(staged));
        Ok(Lookup::Started(fill))
    }
}
