//! What clients pulled lately and how the cache did over the last hour, kept in memory
//! for the status page: the last [`RECENT`] manifest and blob GETs with the repositories'
//! bytes per minute, and one sample of the counters a minute ([`MINUTES`] of them).
//!
//! The request path only hands a [`Pull`] to a bounded channel (`try_send`: no lock, and
//! a full channel drops the record rather than wait); a task files it. The sampler reads
//! counters the metrics keep anyway.

use crate::metrics::{LookupLabels, Metrics};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Pulls listed.
pub const RECENT: usize = 100;
/// Minutes of history kept.
pub const MINUTES: usize = 60;
/// Pulls waiting to be filed at most; more are dropped (the page is not the access log).
/// Room for [`FILE_EVERY`] at 160,000 requests a second.
const QUEUE: usize = 16_384;
/// How often waiting pulls are filed (the page refreshes every 2 s).
const FILE_EVERY: Duration = Duration::from_millis(100);
/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// One manifest or blob GET as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Pull {
    pub at_ms: u64,
    /// The name as the client asked for it (`registry.redhat.io/ubi9/ubi`).
    pub name: String,
    /// The tag or digest.
    pub reference: String,
    /// `manifest` or `blob`.
    pub kind: &'static str,
    /// The client's address.
    pub client: String,
    /// The htpasswd user, when clients authenticate.
    pub user: Option<String>,
    /// `hit`, `miss`, `peer`, `fill-join`, `stale`, `revalidated`, or `-` for an error.
    pub cache: &'static str,
    pub status: u16,
    /// `Content-Length` of the answer (0 when it had none).
    pub bytes: u64,
}

/// The counters at one minute.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Bytes served to clients so far (from the cache, upstream and peers).
    pub served_bytes: u64,
    /// Lookups answered from the cache so far (hit, stale, revalidated).
    pub hits: u64,
    /// All lookups so far.
    pub lookups: u64,
    pub evictions: u64,
    /// What `max_size` limits, at that minute.
    pub usage_bytes: u64,
}

/// One minute of the history as the charts plot it: the counters' increase over the
/// minute, and the usage at its end.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MinuteDelta {
    pub at_ms: u64,
    pub served_bytes: u64,
    pub hits: u64,
    pub lookups: u64,
    pub evictions: u64,
    pub usage_bytes: u64,
}

/// A repository's bytes over the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct RepoBytes {
    pub name: String,
    pub bytes: u64,
}

#[derive(Default)]
struct Filed {
    recent: VecDeque<Pull>,
    /// `(minute since the epoch, bytes per name)`, the newest last.
    per_minute: VecDeque<(u64, HashMap<String, u64>)>,
    samples: VecDeque<Sample>,
}

impl Filed {
    fn file(&mut self, pull: Pull) {
        let minute = pull.at_ms / 60_000;
        if self.per_minute.back().is_none_or(|(m, _)| *m != minute) {
            self.per_minute.push_back((minute, HashMap::new()));
            while self.per_minute.len() > MINUTES {
                self.per_minute.pop_front();
            }
        }
        if let Some((_, names)) = self.per_minute.back_mut() {
            match names.get_mut(&pull.name) {
                Some(bytes) => *bytes += pull.bytes,
                None => {
                    names.insert(pull.name.clone(), pull.bytes);
                }
            }
        }
        self.recent.push_back(pull);
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }
}

/// The recent pulls and the minute samples.
pub struct Activity {
    queue: mpsc::Sender<Pull>,
    filed: Arc<Mutex<Filed>>,
}

impl Activity {
    /// Starts the task that files pulls (needs a tokio runtime).
    pub fn start() -> Arc<Activity> {
        let (queue, mut incoming) = mpsc::channel::<Pull>(QUEUE);
        let filed: Arc<Mutex<Filed>> = Arc::default();
        let into = filed.clone();
        // Drained on a tick rather than woken per pull: a wakeup of this task for every
        // request cost the manifest path ~10% of its req/s on 2 cores (benches/status.rs);
        // a send to a receiver that is not waiting is an atomic push and nothing more.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FILE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The lock only when there is something to file, once a tick.
                let mut filed = None;
                while let Ok(pull) = incoming.try_recv() {
                    filed
                        .get_or_insert_with(|| into.lock().unwrap_or_else(|p| p.into_inner()))
                        .file(pull);
                }
                if filed.is_none() && incoming.is_closed() {
                    return;
                }
            }
        });
        Arc::new(Activity { queue, filed })
    }

    /// Hands a pull over to be filed; never waits.
    pub fn record(&self, pull: Pull) {
        let _ = self.queue.try_send(pull);
    }

    fn filed(&self) -> std::sync::MutexGuard<'_, Filed> {
        self.filed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last pulls, the newest first.
    pub fn recent(&self) -> Vec<Pull> {
        self.filed().recent.iter().rev().cloned().collect()
    }

    /// The repositories with the most bytes over the hour before `now_ms`, at most `n`.
    pub fn top_repositories(&self, now_ms: u64, n: usize) -> Vec<RepoBytes> {
        let minute = now_ms / 60_000;
        let mut sums: HashMap<String, u64> = HashMap::new();
        for (m, names) in self.filed().per_minute.iter() {
            if *m + MINUTES as u64 > minute {
                for (name, bytes) in names {
                    *sums.entry(name.clone()).or_default() += bytes;
                }
            }
        }
        let mut top: Vec<RepoBytes> = sums
            .into_iter()
            .map(|(name, bytes)| RepoBytes { name, bytes })
            .collect();
        top.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        top.truncate(n);
        top
    }

    /// Samples the counters now and then every [`SAMPLE_EVERY`], until aborted.
    pub async fn sample_every_minute(self: Arc<Self>, proxy: Arc<crate::proxy::Proxy>) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        loop {
            every.tick().await;
            let usage = proxy.cache_view().usage_bytes;
            self.sample(read_counters(proxy.metrics(), crate::cache::now_ms(), usage));
        }
    }

    /// Keeps a sample (the newest [`MINUTES`] + 1, so there are [`MINUTES`] deltas).
    pub fn sample(&self, s: Sample) {
        let mut filed = self.filed();
        filed.samples.push_back(s);
        while filed.samples.len() > MINUTES + 1 {
            filed.samples.pop_front();
        }
    }

    /// The history as per-minute increases, ending with `now` (taken by the caller, so
    /// a fresh pullgate shows its first minute too).
    pub fn history(&self, now: Sample) -> Vec<MinuteDelta> {
        let filed = self.filed();
        let points: Vec<Sample> = filed.samples.iter().copied().chain(std::iter::once(now)).collect();
        deltas(&points)
    }
}

/// Increases between consecutive samples (a counter that went down, after a restart of
/// the process that fed it, counts from zero).
pub fn deltas(points: &[Sample]) -> Vec<MinuteDelta> {
    points
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let up = |x: u64, y: u64| if y >= x { y - x } else { y };
            MinuteDelta {
                at_ms: b.at_ms,
                served_bytes: up(a.served_bytes, b.served_bytes),
                hits: up(a.hits, b.hits),
                lookups: up(a.lookups, b.lookups),
                evictions: up(a.evictions, b.evictions),
                usage_bytes: b.usage_bytes,
            }
        })
        .collect()
}

/// The lookup results that were answered from the cache.
const FROM_CACHE: [&str; 3] = ["hit", "stale", "revalidated"];
/// Every lookup result.
const RESULTS: [&str; 6] = ["hit", "stale", "revalidated", "miss", "fill-join", "peer"];
const KINDS: [&str; 3] = ["manifest", "blob", "tags_list"];

/// The counters now.
pub fn read_counters(metrics: &Metrics, at_ms: u64, usage_bytes: u64) -> Sample {
    let lookups = |results: &[&'static str]| -> u64 {
        KINDS
            .iter()
            .flat_map(|kind| results.iter().map(move |result| (*kind, *result)))
            .map(|(kind, result)| {
                metrics
                    .cache_lookups
                    .get_or_create(&LookupLabels { kind, result })
                    .get()
            })
            .sum()
    };
    Sample {
        at_ms,
        served_bytes: metrics.served_from_cache.get()
            + metrics.served_from_upstream.get()
            + metrics.served_from_peer.get(),
        hits: lookups(&FROM_CACHE),
        lookups: lookups(&RESULTS),
        evictions: metrics.evictions.get(),
        usage_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(at_ms: u64, name: &str, bytes: u64) -> Pull {
        Pull {
            at_ms,
            name: name.into(),
            reference: "latest".into(),
            kind: "blob",
            client: "127.0.0.1".into(),
            user: None,
            cache: "hit",
            status: 200,
            bytes,
        }
    }

    #[test]
    fn filing_keeps_the_last_pulls_and_an_hour_of_bytes_per_repository() {
        let mut filed = Filed::default();
        let t0 = 5_000 * 60_000;
        for i in 0..(RECENT as u64 + 10) {
            filed.file(pull(t0 + i, "a", 1));
        }
        filed.file(pull(t0 + 61 * 60_000, "b", 500));
        assert_eq!(filed.recent.len(), RECENT);
        assert_eq!(filed.recent.back().unwrap().name, "b");
        let activity = Activity {
            queue: mpsc::channel(1).0,
            filed: Arc::new(Mutex::new(filed)),
        };
        let top = activity.top_repositories(t0 + 61 * 60_000, 10);
        assert_eq!(top.len(), 1, "a's minute is more than an hour old: {top:?}");
        assert_eq!(top[0].name, "b");
        let top = activity.top_repositories(t0 + 59 * 60_000, 10);
        assert_eq!((top[0].name.as_str(), top[0].bytes), ("b", 500));
        assert_eq!((top[1].name.as_str(), top[1].bytes), ("a", 110));
        assert_eq!(activity.recent()[0].name, "b", "the newest first");
    }

    #[test]
    fn history_is_the_increase_per_minute_and_survives_a_counter_reset() {
        let s = |at_ms, served_bytes, usage_bytes| Sample {
            at_ms,
            served_bytes,
            usage_bytes,
            ..Sample::default()
        };
        let d = deltas(&[s(0, 100, 1), s(60_000, 250, 2), s(120_000, 30, 3)]);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].served_bytes, d[0].usage_bytes), (150, 2));
        assert_eq!(d[1].served_bytes, 30, "after a reset the counter counts from zero");
        assert!(deltas(&[s(0, 1, 1)]).is_empty());
    }
}
