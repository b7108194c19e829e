//! What each host an upstream dialled did lately, for the operator's status page: the
//! last success, the last failure with its phase, cause and remedy (the doctor's words),
//! and failures per minute over the last hour. Written once per upstream request (never
//! per body frame) and on failures; a cache hit never comes here.

use super::UpstreamError;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hosts remembered per upstream at most: they come from the configuration and from
/// redirects to allowed hosts, so this bound is never reached in practice.
const MAX_HOSTS: usize = 64;
/// Minutes of failure counts kept.
const MINUTES: usize = 60;

/// Milliseconds since the epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Counts per minute over the last [`MINUTES`], in a fixed ring.
#[derive(Debug, Clone)]
pub struct MinuteCounts {
    /// `(minute since the epoch, count)`, at `minute % MINUTES`.
    ring: [(u64, u64); MINUTES],
}

impl Default for MinuteCounts {
    fn default() -> Self {
        MinuteCounts {
            ring: [(0, 0); MINUTES],
        }
    }
}

impl MinuteCounts {
    pub fn add(&mut self, at_ms: u64, n: u64) {
        let minute = at_ms / 60_000;
        let slot = &mut self.ring[(minute % MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += n;
    }

    /// The sum over the hour before `now_ms` (this minute included).
    pub fn last_hour(&self, now_ms: u64) -> u64 {
        let minute = now_ms / 60_000;
        self.ring
            .iter()
            .filter(|(m, _)| *m + (MINUTES as u64) > minute && *m <= minute)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A failed request to a host, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FailureView {
    pub at_ms: u64,
    /// `dns`, `connect`, `tls`, `status` or `body`.
    pub phase: &'static str,
    /// The kind of `pullgate_upstream_errors_total`.
    pub kind: &'static str,
    pub cause: String,
    pub remedy: String,
}

/// One host of an upstream, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// `host:port`.
    pub host: String,
    /// `registry` (the upstream's own URL) or `cdn` (a redirect's host, the realm).
    pub role: &'static str,
    pub last_success_ms: Option<u64>,
    pub last_failure: Option<FailureView>,
    pub failures_last_hour: u64,
    pub requests_last_hour: u64,
}

#[derive(Default)]
struct HostRecord {
    last_success_ms: Option<u64>,
    last_failure: Option<FailureView>,
    failures: MinuteCounts,
    requests: MinuteCounts,
}

/// The hosts of one upstream.
pub struct EgressBook {
    /// `host:port` of the upstream's own URL.
    registry: String,
    hosts: Mutex<HashMap<String, HostRecord>>,
}

impl EgressBook {
    pub fn new(registry: String) -> EgressBook {
        EgressBook {
            registry,
            hosts: Mutex::default(),
        }
    }

    fn with_host(&self, host: &str, f: impl FnOnce(&mut HostRecord)) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(record) = hosts.get_mut(host) {
            f(record);
        } else if hosts.len() < MAX_HOSTS {
            f(hosts.entry(host.to_string()).or_default());
        }
    }

    /// `host` answered a request.
    pub fn success(&self, host: &str) {
        let now = now_ms();
        self.with_host(host, |r| {
            r.last_success_ms = Some(now);
            r.requests.add(now, 1);
        });
    }

    /// A request to `host` failed with `e`, in `phase`, with the doctor's remedy.
    pub fn failure(&self, host: &str, e: &UpstreamError, kind: &'static str) {
        let now = now_ms();
        let view = FailureView {
            at_ms: now,
            phase: e.phase().as_str(),
            kind,
            cause: e.to_string(),
            remedy: super::doctor::http_remedy(e, host),
        };
        self.with_host(host, |r| {
            r.last_failure = Some(view);
            r.failures.add(now, 1);
            r.requests.add(now, 1);
        });
    }

    /// Every host dialled, the upstream's own first (listed even before it is dialled).
    pub fn hosts(&self) -> Vec<HostView> {
        let now = now_ms();
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut views: Vec<HostView> = hosts
            .iter()
            .map(|(host, r)| HostView {
                host: host.clone(),
                role: if *host == self.registry { "registry" } else { "cdn" },
                last_success_ms: r.last_success_ms,
                last_failure: r.last_failure.clone(),
                failures_last_hour: r.failures.last_hour(now),
                requests_last_hour: r.requests.last_hour(now),
            })
            .collect();
        if !hosts.contains_key(&self.registry) {
            views.push(HostView {
                host: self.registry.clone(),
                role: "registry",
                last_success_ms: None,
                last_failure: None,
                failures_last_hour: 0,
                requests_last_hour: 0,
            });
        }
        views.sort_by(|a, b| (a.role != "registry", &a.host).cmp(&(b.role != "registry", &b.host)));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::NetPhase;

    #[test]
    fn minute_counts_keep_the_last_hour_only() {
        let mut c = MinuteCounts::default();
        let t0 = 1_000 * 60_000;
        c.add(t0, 2);
        c.add(t0 + 30_000, 1);
        c.add(t0 + 59 * 60_000, 4);
        assert_eq!(c.last_hour(t0 + 59 * 60_000), 7);
        assert_eq!(c.last_hour(t0 + 60 * 60_000), 4, "the first minute has left the hour");
        // The ring slot of minute t0 is reused sixty minutes later, not added to.
        c.add(t0 + 60 * 60_000, 1);
        assert_eq!(c.last_hour(t0 + 60 * 60_000), 5);
        assert_eq!(c.last_hour(t0 + 200 * 60_000), 0);
    }

    #[test]
    fn a_book_lists_the_registry_first_with_its_last_failure_and_remedy() {
        let book = EgressBook::new("registry.redhat.io:443".into());
        assert_eq!(book.hosts().len(), 1, "the registry shows before it is dialled");
        book.success("cdn01.quay.io:443");
        let e = UpstreamError::Unreachable {
            upstream: "rh".into(),
            host: "registry.redhat.io:443".into(),
            phase: NetPhase::Connect,
            cause: "connection refused".into(),
        };
        book.failure("registry.redhat.io:443", &e, "unreachable");
        let hosts = book.hosts();
        assert_eq!(hosts[0].host, "registry.redhat.io:443");
        assert_eq!(hosts[0].role, "registry");
        let failure = hosts[0].last_failure.as_ref().unwrap();
        assert_eq!(failure.phase, "connect");
        assert!(failure.remedy.contains("egress"), "{}", failure.remedy);
        assert_eq!(hosts[0].failures_last_hour, 1);
        assert_eq!(hosts[1].host, "cdn01.quay.io:443");
        assert_eq!(hosts[1].role, "cdn");
        assert!(hosts[1].last_success_ms.is_some());
        assert_eq!(hosts[1].failures_last_hour, 0);
    }
}
