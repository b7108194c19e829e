//! What the proxy knows, as the operator's status page and its JSON API show it: each
//! upstream with the hosts it dialled, the fills and peer reads running now, what the
//! cache holds against `max_size`, the fleet and the signature verdicts. Every figure is
//! read from state the proxy keeps anyway (the fill registry, the egress books, the
//! cache's in-memory totals, the metrics' counters); nothing here is on a request's path.

use super::Proxy;
use super::fill::FillView;
use crate::upstream::{HostView, Upstream};
use serde::Serialize;

/// One upstream (or one of OpenShift's two hosts) and the hosts it dialled.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub url: String,
    /// Seconds the circuit breaker keeps requests paused, when it does.
    pub paused_for_s: Option<u64>,
    pub hosts: Vec<HostView>,
    /// With a signature policy: its mode and the verdicts so far.
    pub policy: Option<PolicyStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub mode: &'static str,
    pub identities: Vec<String>,
    /// `(verdict, count)` since start.
    pub verdicts: Vec<(&'static str, u64)>,
}

/// What the cache holds.
#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    /// The blob store kind: `files`, `sled` or `s3`.
    pub store: &'static str,
    /// What `max_size` limits: blob and manifest bytes plus 256 B per record.
    pub usage_bytes: u64,
    pub max_size_bytes: Option<u64>,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

/// A member of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub name: String,
    /// `self`, `up` or `down`.
    pub state: &'static str,
}

fn upstream_status(u: &Upstream, policy: Option<PolicyStatus>) -> UpstreamStatus {
    UpstreamStatus {
        name: u.name.clone(),
        url: u.base_url().to_string(),
        paused_for_s: u.paused_for().map(|d| d.as_secs().max(1)),
        hosts: u.egress(),
        policy,
    }
}

impl Proxy {
    /// Every upstream, then OpenShift's signature store and update graph when set.
    pub fn upstream_statuses(&self) -> Vec<UpstreamStatus> {
        let mut all: Vec<UpstreamStatus> = self
            .routes
            .iter()
            .map(|r| {
                let policy = r.policy.as_ref().map(|p| PolicyStatus {
                    mode: p.policy.mode().as_str(),
                    identities: p.policy.identities().to_vec(),
                    verdicts: p.counters.counts(),
                });
                upstream_status(&r.upstream, policy)
            })
            .collect();
        if let Some(o) = &self.openshift {
            all.extend(o.client.upstreams().into_iter().map(|u| upstream_status(u, None)));
        }
        all
    }

    /// The fills running here and the blobs being read from peers, the oldest first.
    pub fn fills_now(&self) -> Vec<FillView> {
        let mut all = self.fills.views();
        all.extend(self.peer_reads.views());
        all.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        all
    }

    /// What the cache holds, from its in-memory totals.
    pub fn cache_view(&self) -> CacheView {
        let totals = self.cache.totals();
        CacheView {
            store: self.cache.store_name(),
            usage_bytes: totals.usage(),
            max_size_bytes: self.max_size,
            blobs: totals.blobs,
            manifests: totals.manifests,
            tags: totals.tags,
        }
    }

    /// The fleet's members and their state, with `[cluster]`.
    pub fn fleet(&self) -> Option<Vec<MemberStatus>> {
        let cluster = self.cluster.as_ref()?;
        Some(
            cluster
                .member_states()
                .into_iter()
                .map(|(name, state)| MemberStatus { name, state })
                .collect(),
        )
    }

    /// When this proxy started (milliseconds since the epoch).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }
}
