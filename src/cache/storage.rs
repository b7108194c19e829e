//! Whether the data directory under a running pullgate is still the one it opened: the
//! directory and the database's directory are where they were (same device and inode)
//! and take a file. When one vanishes, is replaced or turns read-only, the cache says
//! so once (one ERROR line naming the path), readiness fails, and the cache refuses
//! work that would write to it (fills fail cleanly, the database is not asked to write
//! into a directory that is gone, which is where sled spins) until the directory is
//! back. Also what a full disk leaves behind for the next start: sled's unfinished
//! snapshots.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tracing::{error, info};

/// What is wrong with the data directory.
#[derive(Debug)]
pub enum Trouble {
    /// Gone, replaced or read-only: nothing may touch it.
    Lost(String),
    /// No room: what it holds is still good.
    Full(String),
}

impl Trouble {
    #[cfg(test)]
    pub fn reason(&self) -> &str {
        match self {
            Trouble::Lost(r) | Trouble::Full(r) => r,
        }
    }
}

/// Whether an I/O error says the file system has no room (or no quota) left.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[derive(Debug)]
pub struct StorageWatch {
    /// Each directory, held open: its inode cannot be reused while it is held, so a
    /// directory made at the same path later is told apart.
    dirs: Vec<(PathBuf, std::fs::File)>,
    probe_file: PathBuf,
    /// Held while the probe file is written and removed: two checks at once (the
    /// housekeeping's, readiness, the database watch, a fill) would remove each
    /// other's file and read the `ENOENT` as a lost directory.
    probing: Mutex<()>,
    lost: AtomicBool,
    /// Whether the disk was full at the last check.
    full: AtomicBool,
    /// Free bytes the disk must have before it counts as having room again, after a
    /// fill found it full: the size of the largest blob that did not fit. Without it the
    /// staged bytes the failed fill gave back would pass the next probe, and the next
    /// miss would be a fill that fails the same way (a client retrying would see two
    /// cut bodies).
    room_needed: AtomicU64,
    /// Why, when lost (the path and the cause).
    why: Mutex<Option<String>>,
}

impl StorageWatch {
    /// Watches `data_dir` and `data_dir/db` as they are now.
    pub fn new(data_dir: &Path) -> std::io::Result<StorageWatch> {
        let mut dirs = Vec::new();
        for dir in [data_dir.to_path_buf(), data_dir.join("db")] {
            let held = std::fs::File::open(&dir)?;
            dirs.push((dir, held));
        }
        Ok(StorageWatch {
            dirs,
            probe_file: data_dir.join(".pullgate-probe"),
            probing: Mutex::new(()),
            lost: AtomicBool::new(false),
            full: AtomicBool::new(false),
            room_needed: AtomicU64::new(0),
            why: Mutex::new(None),
        })
    }

    /// Checks the directories now: `Err` with the path and the cause when one is gone,
    /// replaced, or does not take a file; `Full` apart, as a full disk still serves
    /// what it holds.
    fn check(&self) -> Result<(), Trouble> {
        for (dir, held) in &self.dirs {
            let (dev, ino) = match held.metadata() {
                Ok(m) => (m.dev(), m.ino()),
                Err(e) => return Err(Trouble::Lost(format!("{}: {e}", dir.display()))),
            };
            match std::fs::metadata(dir) {
                Ok(m) if (m.dev(), m.ino()) == (dev, ino) => {}
                Ok(_) => {
                    return Err(Trouble::Lost(format!(
                        "{} was replaced by another directory",
                        dir.display()
                    )));
                }
                Err(e) => return Err(Trouble::Lost(format!("{}: {e}", dir.display()))),
            }
        }
        let probed = {
            let _probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::write(&self.probe_file, b"ok").and_then(|()| std::fs::remove_file(&self.probe_file))
        };
        match probed {
            Ok(()) => self.has_room_needed(),
            Err(e) if is_full(&e) => Err(Trouble::Full(format!("{} is full: {e}", self.probe_file.display()))),
            Err(e) => Err(Trouble::Lost(format!(
                "{} does not take a file: {e}",
                self.probe_file.display()
            ))),
        }
    }

    /// Checks and records the state; says so once when it changes. A full disk fails
    /// the check (readiness) but is not lost: hits go on, misses are served through.
    pub fn refresh(&self) -> Result<(), Trouble> {
        let result = match self.check() {
            Err(Trouble::Full(reason)) => {
                if !self.full.swap(true, Ordering::SeqCst) {
                    error!(target: crate::http::server::LIFECYCLE, reason = %reason, "the cache's disk is full: not ready, misses are served through without being kept until there is room");
                }
                return Err(Trouble::Full(reason));
            }
            other => {
                if self.full.swap(false, Ordering::SeqCst) && other.is_ok() {
                    info!(target: crate::http::server::LIFECYCLE, "the cache's disk has room again");
                }
                other.map_err(|t| match t {
                    Trouble::Lost(r) | Trouble::Full(r) => r,
                })
            }
        };
        let mut why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(reason) => {
                if !self.lost.swap(true, Ordering::SeqCst) {
                    error!(target: crate::http::server::LIFECYCLE, reason = %reason, "the cache's data directory is gone or not writable: not ready, fills refused until it is back");
                }
                *why = Some(reason.clone());
            }
            Ok(()) => {
                if self.lost.swap(false, Ordering::SeqCst) {
                    info!(target: crate::http::server::LIFECYCLE, "the cache's data directory is back");
                }
                *why = None;
            }
        }
        result.map_err(Trouble::Lost)
    }

    /// After a fill found the disk full: whether it has room for that blob now.
    fn has_room_needed(&self) -> Result<(), Trouble> {
        let needed = self.room_needed.load(Ordering::SeqCst);
        if needed == 0 {
            return Ok(());
        }
        let (dir, _) = &self.dirs[0];
        let free = rustix::fs::statvfs(dir).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize));
        if free < needed {
            return Err(Trouble::Full(format!(
                "{} has {free} bytes free, and a blob of {needed} bytes did not fit",
                dir.display()
            )));
        }
        self.room_needed.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Records a full disk that a fill of a `needed`-byte blob found between two checks:
    /// the disk counts as full until it has that much free.
    pub fn saw_full(&self, reason: &str, needed: u64) {
        self.room_needed.fetch_max(needed, Ordering::SeqCst);
        if !self.full.swap(true, Ordering::SeqCst) {
            error!(target: crate::http::server::LIFECYCLE, reason = %reason, "the cache's disk is full: not ready, misses are served through without being kept until there is room");
        }
    }

    /// Whether the last check (or a write since) found the disk full (cheap: no system
    /// call).
    pub fn full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Whether the last check found the storage gone (cheap: no system call).
    pub fn lost(&self) -> Option<String> {
        if !self.lost.load(Ordering::SeqCst) {
            return None;
        }
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Removes sled's unfinished snapshots (`snap.<lsn>.generating`) from `db_dir`. sled
/// 0.34 writes a snapshot to that name and renames it only once it is complete and
/// synced; a full disk (or a crash) in between leaves the partial file, and the next
/// open picks it as the newest snapshot and fails with "Read corrupted data" at every
/// start (sled issue #1527; the soak's single pullgate, SIGTERMed while its disk was
/// full). The complete snapshot before it is still there (sled removes old ones only
/// after the rename) and the log replays from it, so the partial one is only dropped.
pub fn remove_unfinished_snapshots(db_dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(db_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(&path)?;
            tracing::warn!(target: crate::http::server::LIFECYCLE, path = %path.display(), "removed an unfinished database snapshot (a write cut short by a full disk or a crash); the database recovers from the previous one and its log");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_or_replaced_directory_is_lost_until_it_is_back() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("db")).unwrap();
        let watch = StorageWatch::new(&data).unwrap();
        assert!(watch.refresh().is_ok());
        assert_eq!(watch.lost(), None);
        std::fs::remove_dir_all(&data).unwrap();
        let why = watch.refresh().unwrap_err().reason().to_string();
        assert!(why.contains(&data.display().to_string()), "{why}");
        assert!(watch.lost().is_some());
        // A new directory at the same path is not the one the database lives in.
        std::fs::create_dir_all(data.join("db")).unwrap();
        assert!(watch.refresh().unwrap_err().reason().contains("replaced"));
    }

    /// Checks from several threads at once (the housekeeping, readiness, the database
    /// watch and fills all check) never take each other's probe file for a lost
    /// directory. Without the lock this failed within a few hundred checks.
    #[test]
    fn checks_at_once_do_not_see_a_lost_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("db")).unwrap();
        let watch = std::sync::Arc::new(StorageWatch::new(root.path()).unwrap());
        let checkers: Vec<_> = (0..4)
            .map(|_| {
                let watch = watch.clone();
                std::thread::spawn(move || (0..500).filter(|_| watch.refresh().is_err()).count())
            })
            .collect();
        let failed: usize = checkers.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(failed, 0, "checks that saw a lost directory: {:?}", watch.lost());
    }

    #[test]
    fn a_disk_a_fill_found_full_has_room_again_only_with_room_for_that_blob() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("db")).unwrap();
        let watch = StorageWatch::new(root.path()).unwrap();
        assert!(watch.refresh().is_ok());
        watch.saw_full("No space left on device", u64::MAX / 2);
        assert!(watch.full());
        // The probe file fits, but the blob that did not fit would not fit either.
        let why = watch.refresh().unwrap_err().reason().to_string();
        assert!(why.contains("did not fit"), "{why}");
        assert!(watch.full());
        assert!(watch.lost().is_none(), "a full disk is not a lost one");
        watch.room_needed.store(1, Ordering::SeqCst);
        assert!(watch.refresh().is_ok());
        assert!(!watch.full());
        // Once it had room, a later probe needs no more than the probe file.
        assert_eq!(watch.room_needed.load(Ordering::SeqCst), 0);
    }
}
