//! Keeping a bucket that several replicas share under `[cache] max_size`, least
//! recently used first across all of them, with one replica evicting at a time.
//!
//! - **Who evicts.** Every replica writes a heartbeat object `<prefix>replicas/<id>` each
//!   report interval and lists them; the live replica (heartbeat younger than three
//!   intervals, by the store's clock) with the smallest id is the evictor. When it dies
//!   its heartbeat goes stale and the next one takes over; a takeover first lists the
//!   bucket's blobs, so the new evictor knows what it never heard of. No conditional
//!   write is needed: two replicas believing themselves evictor for an interval would
//!   only both evict least recently used blobs.
//! - **What was used.** Each replica uploads what it read and published since its last
//!   report as `<prefix>access/<ms>-<id>` (`<hex> <last use ms> <size>` lines); every
//!   replica merges the others' reports into its own last-use index (adopting blobs it
//!   did not know), so each holds the fleet's view. Reports older than ten minutes are
//!   deleted by the evictor.
//! - **Evicting.** Beyond `max_size` the evictor marks the least recently used blobs
//!   and deletes them only after a grace period, and only if no report, reader or fill
//!   has used them since: a client streaming a blob on any replica (streams renew their
//!   use every second) keeps it. Other replicas find a deleted object missing at its
//!   next read and fetch it again.

use super::keys::{self, Kind};
use super::{BlobLocation, BlobRecord, CacheResult, Inner, TxResult, committed, now_ms};
use crate::oci::Digest;
use sled::transaction::Transactional;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a fleet shares its view and when it evicts.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// How often each replica reports, heartbeats and reads the others' reports.
    pub report_interval: Duration,
    /// How long a blob marked for eviction waits for a use that saves it.
    pub eviction_grace: Duration,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            report_interval: Duration::from_secs(10),
            eviction_grace: Duration::from_secs(60),
        }
    }
}

/// How often a client's stream of a published blob renews its use of it, so a long
/// stream keeps its blob recent in the fleet's view.
pub const STREAM_RENEWS_USE_EVERY: Duration = Duration::from_secs(1);

/// The shortest grace that still saves a streamed blob: a renewal, then up to one
/// interval until it is reported and one until the evictor merges it.
pub fn least_eviction_grace(report_interval: Duration) -> Duration {
    report_interval * 2 + STREAM_RENEWS_USE_EVERY
}

/// How long access reports are kept in the bucket.
const REPORTS_KEPT: Duration = Duration::from_secs(600);

/// A use of a blob, as reported to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Use {
    pub digest: Digest,
    pub last_use_ms: u64,
    pub size: u64,
}

pub(super) fn encode_report(uses: &[Use]) -> Vec<u8> {
    uses.iter()
        .map(|u| format!("{} {} {}\n", u.digest.hex(), u.last_use_ms, u.size))
        .collect::<String>()
        .into_bytes()
}

pub(super) fn decode_report(body: &[u8]) -> Vec<Use> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some(Use {
                digest: Digest::from_hex(parts.next()?).ok()?,
                last_use_ms: parts.next()?.parse().ok()?,
                size: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// This replica's part in the fleet.
pub(super) struct Fleet {
    pub id: String,
    pub settings: FleetSettings,
    state: Mutex<FleetState>,
}

#[derive(Default)]
struct FleetState {
    last_round: Option<Instant>,
    /// Uses since the last report.
    unreported: Vec<Use>,
    /// Reports already merged (their keys).
    merged: HashSet<String>,
    evictor: bool,
    /// Whether this replica listed the bucket's blobs since it became the evictor.
    seeded: bool,
    /// Blobs marked for eviction: when, and their size.
    marked: HashMap<Digest, (u64, u64)>,
}

/// What one fleet round did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetRound {
    pub evictor: bool,
    pub replicas: usize,
    pub reports_merged: usize,
    pub adopted: usize,
    pub marked: usize,
    pub evicted: u64,
    pub evicted_bytes: u64,
}

impl Fleet {
    pub fn new(id: String, settings: FleetSettings) -> Fleet {
        Fleet {
            id,
            settings,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a use for the next report.
    pub fn used(&self, digest: &Digest, last_use_ms: u64, size: u64) {
        self.state().unreported.push(Use {
            digest: digest.clone(),
            last_use_ms,
            size,
        });
    }
}

impl Inner {
    /// One round of the fleet's work, when a report interval has passed: report this
    /// replica's uses, heartbeat, learn the evictor, merge the others' reports, and (on
    /// the evictor) evict beyond `max_size`, sparing `protected` digests.
    pub(super) fn fleet_round(&self, max_size: Option<u64>, protected: &HashSet<Digest>) -> CacheResult<FleetRound> {
        let (Some(fleet), Some(shared)) = (&self.fleet, &self.shared) else {
            return Ok(FleetRound::default());
        };
        {
            let mut st = fleet.state();
            if st
                .last_round
                .is_some_and(|at| at.elapsed() < fleet.settings.report_interval)
            {
                return Ok(FleetRound {
                    evictor: st.evictor,
                    ..Default::default()
                });
            }
            st.last_round = Some(Instant::now());
        }
        self.write_back_access()?;
        let mut round = FleetRound::default();
        let uses = std::mem::take(&mut fleet.state().unreported);
        if !uses.is_empty() {
            let key = format!("{}-{}", now_ms(), fleet.id);
            if let Err(e) = shared.put_report(&key, encode_report(&uses)) {
                tracing::warn!(error = %e, "could not report uses to the fleet");
                fleet.state().unreported.extend(uses);
            } else {
                fleet.state().merged.insert(key);
            }
        }
        let replicas = shared.heartbeat(&fleet.id, fleet.settings.report_interval * 3)?;
        round.replicas = replicas.live.len();
        let evictor = replicas.live.iter().min().is_some_and(|id| id == &fleet.id);
        round.evictor = evictor;
        {
            let mut st = fleet.state();
            if st.evictor != evictor {
                tracing::info!(replica = %fleet.id, evictor, live = replicas.live.len(), "the fleet's evictor changed");
                st.seeded = false;
                st.marked.clear();
            }
            st.evictor = evictor;
        }
        for (key, age) in shared.reports()? {
            if fleet.state().merged.contains(&key) {
                continue;
            }
            if evictor && age > REPORTS_KEPT {
                let _ = shared.delete_report(&key);
                continue;
            }
            let body = shared.report(&key)?;
            for u in decode_report(&body) {
                round.adopted += usize::from(self.merge_use(&u)?);
            }
            fleet.state().merged.insert(key);
            round.reports_merged += 1;
        }
        if evictor {
            for stale in replicas.stale {
                let _ = shared.forget_replica(&stale);
            }
            if !fleet.state().seeded {
                for (digest, size, created_ms) in shared.blobs_with_times()? {
                    let u = Use {
                        digest,
                        last_use_ms: created_ms,
                        size,
                    };
                    round.adopted += usize::from(self.merge_use(&u)?);
                }
                fleet.state().seeded = true;
            }
            if let Some(max) = max_size {
                self.evict_for_fleet(fleet, max, protected, &mut round)?;
            }
        }
        Ok(round)
    }

    /// Learns the whole bucket: every blob object (adopted with its upload time as its
    /// last use when unknown) and every replica's reports. For the cache commands, which
    /// act on the fleet's content rather than on what this replica happened to see.
    /// Returns the blobs adopted.
    pub(super) fn learn_bucket(&self) -> CacheResult<u64> {
        let Some(shared) = &self.shared else { return Ok(0) };
        let mut adopted = 0;
        for (digest, size, created_ms) in shared.blobs_with_times()? {
            let u = Use {
                digest,
                last_use_ms: created_ms,
                size,
            };
            adopted += u64::from(self.merge_use(&u)?);
        }
        for (key, _) in shared.reports()? {
            for u in decode_report(&shared.report(&key)?) {
                adopted += u64::from(self.merge_use(&u)?);
            }
        }
        Ok(adopted)
    }

    /// Records a use another replica reported: moves the blob's last-use entry, or adopts
    /// the blob if this replica did not know it. Returns whether it was adopted.
    fn merge_use(&self, u: &Use) -> CacheResult<bool> {
        let k = keys::digest(&u.digest);
        let adopted = committed((&self.blobs, &self.lru).transaction(|(blobs, lru)| -> TxResult<bool> {
            match blobs
                .get(k)?
                .and_then(|v| serde_json::from_slice::<BlobRecord>(&v).ok())
            {
                Some(mut record) if record.last_access_ms < u.last_use_ms => {
                    lru.remove(&keys::lru(record.last_access_ms, Kind::Blob, &u.digest)[..])?;
                    record.last_access_ms = u.last_use_ms;
                    if let Ok(value) = serde_json::to_vec(&record) {
                        blobs.insert(k, value)?;
                    }
                    lru.insert(
                        &keys::lru(u.last_use_ms, Kind::Blob, &u.digest)[..],
                        &record.size.to_be_bytes()[..],
                    )?;
                    Ok(false)
                }
                Some(_) => Ok(false),
                None => {
                    let record = BlobRecord {
                        size: u.size,
                        location: BlobLocation::S3,
                        created_ms: u.last_use_ms,
                        last_access_ms: u.last_use_ms,
                    };
                    if let Ok(value) = serde_json::to_vec(&record) {
                        blobs.insert(k, value)?;
                        lru.insert(
                            &keys::lru(u.last_use_ms, Kind::Blob, &u.digest)[..],
                            &u.size.to_be_bytes()[..],
                        )?;
                    }
                    Ok(true)
                }
            }
        }))?;
        if adopted {
            super::add(&self.totals.blobs, 1);
            super::add(&self.totals.blob_bytes, u.size);
        }
        Ok(adopted)
    }

    /// The evictor's pass: blobs marked a grace period ago and not used since are
    /// deleted; then, while the fleet's blobs (less those already marked) exceed
    /// `max_size`, the least recently used are marked.
    fn evict_for_fleet(
        &self,
        fleet: &Fleet,
        max_size: u64,
        protected: &HashSet<Digest>,
        round: &mut FleetRound,
    ) -> CacheResult<()> {
        let now = now_ms();
        let grace = fleet.settings.eviction_grace.as_millis() as u64;
        let due: Vec<(Digest, u64)> = fleet
            .state()
            .marked
            .iter()
            .filter(|(_, (at, _))| now.saturating_sub(*at) >= grace)
            .map(|(d, (at, _))| (d.clone(), *at))
            .collect();
        for (d, marked_at) in due {
            let used_since = self.blob(&d)?.is_none_or(|r| r.last_access_ms > marked_at);
            let busy =
                protected.contains(&d) || self.readers.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&d);
            if busy {
                continue;
            }
            fleet.state().marked.remove(&d);
            if used_since {
                continue;
            }
            if let Some(r) = self.remove_blob(&d)? {
                round.evicted += 1;
                round.evicted_bytes += r.size;
            }
        }
        let marked_bytes: u64 = fleet.state().marked.values().map(|(_, size)| size).sum();
        let mut over = self.totals.snapshot().usage().saturating_sub(marked_bytes);
        if over <= max_size {
            return Ok(());
        }
        for item in self.lru.iter() {
            let (key, value) = item?;
            let Some((_, Kind::Blob, d)) = keys::parse_lru(&key) else {
                continue;
            };
            if over <= max_size {
                break;
            }
            let mut st = fleet.state();
            if st.marked.contains_key(&d) || protected.contains(&d) {
                continue;
            }
            let size = keys::be_u64(&value).unwrap_or(0);
            st.marked.insert(d, (now, size));
            round.marked += 1;
            over = over.saturating_sub(size + super::records::RECORD_OVERHEAD);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let uses = vec![
            Use {
                digest: Digest::of(b"a"),
                last_use_ms: 5,
                size: 7,
            },
            Use {
                digest: Digest::of(b"b"),
                last_use_ms: 6,
                size: 0,
            },
        ];
        assert_eq!(decode_report(&encode_report(&uses)), uses);
        assert_eq!(decode_report(b"garbage\nmore garbage 1 2\n"), Vec::<Use>::new());
    }
}
