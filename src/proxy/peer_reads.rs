//! Blobs this replica is reading from a peer right now (`[cluster]`), for the status
//! page: each registered while its stream runs, with the bytes relayed so far and the
//! clients it feeds. Registered once per peer read (a miss), updated with an atomic per
//! frame; a cache hit never comes here.

use super::fill::FillView;
use crate::oci::{Digest, RepoName};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One read from a peer.
pub struct PeerRead {
    upstream: String,
    repo: RepoName,
    digest: Digest,
    member: String,
    size: Option<u64>,
    started: Instant,
    bytes: AtomicU64,
    clients: AtomicUsize,
}

impl PeerRead {
    pub fn relayed(&self, pos: u64) {
        self.bytes.store(pos, Ordering::Relaxed);
    }

    pub fn clients(&self, n: usize) {
        self.clients.store(n, Ordering::Relaxed);
    }

    fn view(&self) -> FillView {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        FillView {
            upstream: self.upstream.clone(),
            repo: self.repo.to_string(),
            digest: self.digest.to_string(),
            size: self.size,
            bytes,
            seconds,
            rate: if seconds > 0.0 {
                (bytes as f64 / seconds) as u64
            } else {
                0
            },
            clients: self.clients.load(Ordering::Relaxed),
            from_peer: Some(self.member.clone()),
        }
    }
}

/// The reads from peers running now.
#[derive(Default)]
pub struct PeerReads {
    open: Mutex<HashMap<u64, Arc<PeerRead>>>,
    next_id: AtomicU64,
}

/// A registered read; dropped, it is gone from the list.
pub struct PeerReadGuard {
    reads: Arc<PeerReads>,
    id: u64,
    pub read: Arc<PeerRead>,
}

impl Drop for PeerReadGuard {
    fn drop(&mut self) {
        self.reads
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl PeerReads {
    /// Registers a read of `digest` from `member`.
    pub fn start(
        self: &Arc<Self>,
        (upstream, repo, digest): (&str, &RepoName, &Digest),
        member: &str,
        size: Option<u64>,
    ) -> PeerReadGuard {
        let read = Arc::new(PeerRead {
            upstream: upstream.to_string(),
            repo: repo.clone(),
            digest: digest.clone(),
            member: member.to_string(),
            size,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            clients: AtomicUsize::new(1),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, read.clone());
        PeerReadGuard {
            reads: self.clone(),
            id,
            read,
        }
    }

    /// The reads running now, the oldest first.
    pub fn views(&self) -> Vec<FillView> {
        let reads: Vec<Arc<PeerRead>> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut views: Vec<FillView> = reads.iter().map(|r| r.view()).collect();
        views.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_listed_while_its_guard_lives() {
        let reads = Arc::new(PeerReads::default());
        let repo = RepoName::parse("ubi9/ubi").unwrap();
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let guard = reads.start(("rh", &repo, &digest), "https://10.0.0.2:5000", Some(100));
        guard.read.relayed(40);
        guard.read.clients(3);
        let views = reads.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].bytes, 40);
        assert_eq!(views[0].clients, 3);
        assert_eq!(views[0].from_peer.as_deref(), Some("https://10.0.0.2:5000"));
        drop(guard);
        assert!(reads.views().is_empty());
    }
}
