//! Noticing a database that stopped answering. sled 0.34 can deadlock inside its log
//! under heavy concurrent writes (seen here with the `sled` blob store and eight cold
//! clients of a 256 MiB blob: one writer spinning in `Log::reserve`, another waiting in
//! the segment accountant while holding it, every `sled-io` thread waiting for it;
//! upstream: spacejam/sled#1412). Such a process serves nothing that needs a write and
//! never recovers. The writes pullgate already makes to check the database (the
//! housekeeping's, readiness's) are given a patience: one unanswered past it has the
//! process started again, like a database that keeps an I/O error. No write is added:
//! a write that lands while the disk is full leaves sled with an error it keeps.

use std::future::Future;
use std::time::Duration;

/// How long the database may take to answer one probing write before it counts as
/// stalled. Such a write takes microseconds (a flush, milliseconds); only a stuck log
/// makes it wait.
pub(super) const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// `probe`'s answer, or why the database counts as stalled when it has not answered
/// within `patience`.
pub(super) async fn answer_within<T>(patience: Duration, probe: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(patience, probe).await.map_err(|_| {
        format!(
            "the database has not answered a write for {patience:?}: it stalled (sled can deadlock inside its log under heavy writes) and only a new process clears that"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_probe_that_never_answers_is_a_stall_after_the_patience() {
        let started = tokio::time::Instant::now();
        let why = answer_within(PATIENCE, std::future::pending::<()>()).await.unwrap_err();
        assert!(why.contains("has not answered a write for 200ms"), "{why}");
        assert!(started.elapsed() >= PATIENCE);
    }

    #[tokio::test]
    async fn a_slow_probe_within_the_patience_is_its_answer() {
        let slow = async {
            tokio::time::sleep(PATIENCE / 2).await;
            7
        };
        assert_eq!(answer_within(PATIENCE, slow).await, Ok(7));
    }
}
