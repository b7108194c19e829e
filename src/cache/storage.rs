//! Whether the data directory under a running pullgate is still the one it opened: the
//! directory and the database's directory are where they were (same device and inode)
//! and take a file. When one vanishes, is replaced or turns read-only, the cache says
//! so once (one ERROR line naming the path), readiness fails, and the cache refuses
//! work that would write to it (fills fail cleanly, the database is not asked to write
//! into a directory that is gone, which is where sled spins) until the directory is
//! back.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{error, info};

/// What was opened: each directory with its device and inode.
#[derive(Debug)]
pub struct StorageWatch {
    dirs: Vec<(PathBuf, u64, u64)>,
    probe_file: PathBuf,
    lost: AtomicBool,
    /// Why, when lost (the path and the cause).
    why: Mutex<Option<String>>,
}

impl StorageWatch {
    /// Watches `data_dir` and `data_dir/db` as they are now.
    pub fn new(data_dir: &Path) -> std::io::Result<StorageWatch> {
        let mut dirs = Vec::new();
        for dir in [data_dir.to_path_buf(), data_dir.join("db")] {
            let m = std::fs::metadata(&dir)?;
            dirs.push((dir, m.dev(), m.ino()));
        }
        Ok(StorageWatch {
            dirs,
            probe_file: data_dir.join(".pullgate-probe"),
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
        })
    }

    /// Checks the directories now: `Err` with the path and the cause when one is gone,
    /// replaced, or does not take a file.
    fn check(&self) -> Result<(), String> {
        for (dir, dev, ino) in &self.dirs {
            match std::fs::metadata(dir) {
                Ok(m) if (m.dev(), m.ino()) == (*dev, *ino) => {}
                Ok(_) => return Err(format!("{} was replaced by another directory", dir.display())),
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
        std::fs::write(&self.probe_file, b"ok")
            .and_then(|()| std::fs::remove_file(&self.probe_file))
            .map_err(|e| format!("{} does not take a file: {e}", self.probe_file.display()))
    }

    /// Checks and records the state; says so once when it changes.
    pub fn refresh(&self) -> Result<(), String> {
        let result = self.check();
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
        result
    }

    /// Whether the last check found the storage gone (cheap: no system call).
    pub fn lost(&self) -> Option<String> {
        if !self.lost.load(Ordering::SeqCst) {
            return None;
        }
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
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
        let why = watch.refresh().unwrap_err();
        assert!(why.contains(&data.display().to_string()), "{why}");
        assert!(watch.lost().is_some());
        // A new directory at the same path is not the one the database lives in.
        std::fs::create_dir_all(data.join("db")).unwrap();
        assert!(watch.refresh().unwrap_err().contains("replaced"));
    }
}
