//! Watching that the database still answers. sled 0.34 can deadlock inside its log
//! under heavy concurrent writes (seen here with the `sled` blob store and eight cold
//! clients of a 256 MiB blob: two writers stuck in `Log::reserve` and the segment
//! accountant, for good; upstream: spacejam/sled#1412). Such a process serves nothing
//! that needs a write and never recovers, so a database write that has not answered
//! within the patience has the process started again, like a database that keeps an
//! I/O error.

use std::future::Future;
use std::time::Duration;

/// How long the database may take to answer one in-memory write before it counts as
/// stalled. Such a write takes microseconds; only a stuck log makes it wait.
pub(super) const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `probe` every `every` until one has not answered within `patience`, and then
/// returns why the process must be started again. A probe that answers, whatever it
/// found (errors are the housekeeping's to judge), keeps it watching.
pub(super) async fn watch<F, Fut>(every: Duration, patience: Duration, mut probe: F) -> String
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::time::sleep(every).await;
        if tokio::time::timeout(patience, probe()).await.is_err() {
            return format!(
                "the database has not answered a write for {patience:?}: it stalled (sled can deadlock inside its log under heavy writes) and only a new process clears that"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    const EVERY: Duration = Duration::from_millis(20);
    const PATIENCE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_probe_that_never_answers_is_a_stall_after_the_patience() {
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        let started = tokio::time::Instant::now();
        let why = tokio::time::timeout(
            Duration::from_secs(10),
            watch(EVERY, PATIENCE, move || {
                // Answers twice, then stalls for good.
                let n = counted.fetch_add(1, SeqCst);
                async move {
                    if n >= 2 {
                        std::future::pending::<()>().await;
                    }
                }
            }),
        )
        .await
        .expect("a stall is reported");
        assert!(why.contains("has not answered a write for 200ms"), "{why}");
        assert_eq!(probes.load(SeqCst), 3, "it stopped at the probe that stalled");
        assert!(started.elapsed() >= 3 * EVERY + PATIENCE);
    }

    #[tokio::test]
    async fn probes_that_answer_within_the_patience_keep_it_watching() {
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        let watching = watch(EVERY, PATIENCE, move || {
            counted.fetch_add(1, SeqCst);
            // Slow, but within the patience.
            tokio::time::sleep(PATIENCE / 2)
        });
        assert!(
            tokio::time::timeout(8 * PATIENCE, watching).await.is_err(),
            "no stall reported"
        );
        assert!(probes.load(SeqCst) >= 5, "it kept probing: {}", probes.load(SeqCst));
    }
}
