//! What the page and the JSON API show, read at one moment from the proxy, the metrics
//! and the activity records.

use super::StatusState;
use super::activity::{self, MinuteDelta, Pull, RepoBytes};
use crate::http::AppState;
use crate::proxy::fill::FillView;
use crate::proxy::status::{CacheView, MemberStatus, UpstreamStatus};
use serde::Serialize;

/// Repositories listed by bytes.
const TOP_REPOSITORIES: usize = 10;

fn now_ms() -> u64 {
    crate::cache::now_ms()
}

/// `/status/api/summary`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub version: &'static str,
    pub now_ms: u64,
    pub uptime_s: u64,
    pub listen: String,
    pub cache: CacheView,
    pub fills_in_flight: usize,
    /// Over the history (at most the last hour).
    pub served_bytes_last_hour: u64,
    pub hit_ratio_last_hour: Option<f64>,
    pub evictions_last_hour: u64,
    /// One entry a minute, the newest last.
    pub history: Vec<MinuteDelta>,
    /// Upstreams with a signature policy: `(upstream, mode, [(verdict, count)])`.
    pub signatures: Vec<SignatureCounts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureCounts {
    pub upstream: String,
    pub mode: &'static str,
    pub verdicts: Vec<(&'static str, u64)>,
}

/// `/status/api/pulls`.
#[derive(Debug, Clone, Serialize)]
pub struct Pulls {
    pub recent: Vec<Pull>,
    pub top_last_hour: Vec<RepoBytes>,
}

/// `/status/api/fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    /// Whether `[cluster]` is set.
    pub clustered: bool,
    pub members: Vec<MemberStatus>,
}

pub fn summary(app: &AppState, status: &StatusState) -> Summary {
    summary_with(app, status, &app.proxy.upstream_statuses())
}

fn summary_with(app: &AppState, status: &StatusState, upstreams: &[UpstreamStatus]) -> Summary {
    let now = now_ms();
    let cache = app.proxy.cache_view();
    let sample = activity::read_counters(app.proxy.metrics(), now, cache.usage_bytes);
    let history = status.activity.history(sample);
    let hits: u64 = history.iter().map(|d| d.hits).sum();
    let lookups: u64 = history.iter().map(|d| d.lookups).sum();
    Summary {
        version: status.about.version,
        now_ms: now,
        uptime_s: now.saturating_sub(app.proxy.started_ms()) / 1000,
        listen: status.about.listening_on().to_string(),
        fills_in_flight: app.proxy.fills_now().len(),
        served_bytes_last_hour: history.iter().map(|d| d.served_bytes).sum(),
        hit_ratio_last_hour: (lookups > 0).then(|| hits as f64 / lookups as f64),
        evictions_last_hour: history.iter().map(|d| d.evictions).sum(),
        history,
        cache,
        signatures: upstreams
            .iter()
            .filter_map(|u| {
                let p = u.policy.as_ref()?;
                Some(SignatureCounts {
                    upstream: u.name.clone(),
                    mode: p.mode,
                    verdicts: p.verdicts.clone(),
                })
            })
            .collect(),
    }
}

pub fn pulls(status: &StatusState) -> Pulls {
    Pulls {
        recent: status.activity.recent(),
        top_last_hour: status.activity.top_repositories(now_ms(), TOP_REPOSITORIES),
    }
}

pub fn fleet(app: &AppState) -> Fleet {
    match app.proxy.fleet() {
        Some(members) => Fleet {
            clustered: true,
            members,
        },
        None => Fleet {
            clustered: false,
            members: Vec::new(),
        },
    }
}

/// Everything the page shows.
pub struct Snapshot {
    pub summary: Summary,
    pub fills: Vec<FillView>,
    pub egress: Vec<UpstreamStatus>,
    pub pulls: Pulls,
    pub fleet: Fleet,
}

impl Snapshot {
    pub fn take(app: &AppState, status: &StatusState) -> Snapshot {
        let egress = app.proxy.upstream_statuses();
        Snapshot {
            summary: summary_with(app, status, &egress),
            fills: app.proxy.fills_now(),
            egress,
            pulls: pulls(status),
            fleet: fleet(app),
        }
    }
}
