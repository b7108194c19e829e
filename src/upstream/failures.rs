//! How failed upstream requests are counted and logged: `pullgate_upstream_errors_total`
//! by kind, host, phase and role, and one WARN line per (host, phase) every
//! [`WARN_EVERY`] at most, saying how many were not logged since, so an outage does not
//! flood the log; and each host's recent outcomes for the status page
//! ([`super::egress::EgressBook`]). Shared by an upstream client and the blob bodies it
//! hands out.

use super::UpstreamError;
use crate::metrics::{Metrics, UpstreamErrorLabels};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// How often one (host, phase) of failures is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A (host:port, phase) whose failures are logged at most every [`WARN_EVERY`].
type WarnKey = (String, &'static str);

pub(super) struct FailureLog {
    upstream: String,
    /// `host:port` of the upstream's own URL (role `registry`; others are `cdn`).
    registry: String,
    metrics: Arc<Metrics>,
    /// When a (host, phase) was last logged, and how many were not since.
    warned: Mutex<HashMap<WarnKey, (Instant, u64)>>,
    /// Each host's last success and failure, for the status page.
    pub egress: super::egress::EgressBook,
}

impl FailureLog {
    pub fn new(upstream: String, registry: String, metrics: Arc<Metrics>) -> FailureLog {
        FailureLog {
            upstream,
            egress: super::egress::EgressBook::new(registry.clone()),
            registry,
            metrics,
            warned: Mutex::default(),
        }
    }

    /// Counts and (rate-limited) logs a failed request to `host` (`host:port`).
    pub fn record(&self, e: &UpstreamError, host: &str) {
        let Some(kind) = e.metric_kind() else { return };
        self.egress.failure(host, e, kind);
        let phase = e.phase().as_str();
        self.metrics
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: self.upstream.clone(),
                kind,
                host: host.to_string(),
                phase,
                role: if host == self.registry { "registry" } else { "cdn" },
            })
            .inc();
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() > 256 {
            // Hosts come from the configuration and the upstream's redirects: a bound
            // against an upstream naming ever new ones.
            warned.clear();
        }
        let key = (host.to_string(), phase);
        let suppressed = match warned.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < WARN_EVERY => {
                *suppressed += 1;
                return;
            }
            Some((_, suppressed)) => std::mem::take(suppressed),
            None => 0,
        };
        warned.insert(key, (now, 0));
        drop(warned);
        warn!(upstream = %self.upstream, host, phase, cause = %e, suppressed, "upstream request failed");
    }
}
