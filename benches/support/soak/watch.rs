//! What the soak measures on the pullgates while it runs: every 5 s, each running
//! member's RSS, open file descriptors and live tokio tasks, and the single pullgate's
//! cache usage against `max_size`.

use super::world::{SINGLE, World};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub member: usize,
    pub pid: u32,
    /// Seconds since this process started.
    pub age: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub tasks: Option<u64>,
    pub usage: Option<u64>,
}

/// A gauge without labels from a metrics text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Samples until `stop`.
pub async fn sample(world: Arc<World>, started: Instant, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let client = world.client();
    let mut samples = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let members: Vec<(usize, String, Option<u32>, Instant)> = {
            let m = world.members.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .enumerate()
                .map(|(i, m)| (i, m.url.clone(), m.pid(), m.started))
                .collect()
        };
        for (i, url, pid, since) in members {
            let Some(pid) = pid else { continue };
            let text = match client
                .get(format!("{url}/metrics"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            samples.push(Sample {
                t: started.elapsed().as_secs_f64(),
                member: i,
                pid,
                age: since.elapsed().as_secs_f64(),
                rss_kib: crate::support::status_kib(pid, "VmRSS:"),
                fds: fds(pid),
                tasks: metric(&text, "pullgate_tokio_alive_tasks"),
                usage: (i == SINGLE)
                    .then(|| metric(&text, "pullgate_cache_usage_bytes"))
                    .flatten(),
            });
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    samples
}
