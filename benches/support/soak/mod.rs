//! A day in the DMZ, compressed: a soak of the whole system under mixed load and
//! overlapping faults on a seeded schedule, with invariants checked all along. Shared by
//! the bench (`cargo bench --bench soak -- --minutes 60 --seed S`) and the suite's
//! two-minute run (tests/soak.rs). The parts: [`world`] (the processes and content),
//! [`clients`], [`nemesis`], [`watch`] (resources), [`report`] (the invariants and the
//! table).

pub mod clients;
pub mod nemesis;
pub mod report;
pub mod watch;
pub mod world;

use report::Invariant;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Options {
    pub minutes: f64,
    pub seed: u64,
    pub clients: u64,
}

/// What a soak found.
pub struct Outcome {
    pub table: String,
    pub json: serde_json::Value,
    pub invariants: Vec<Invariant>,
    /// The last lines each pullgate logged.
    #[allow(dead_code)] // read by the suite's run only
    pub logs: Vec<(String, String)>,
}

impl Outcome {
    pub fn held(&self) -> bool {
        self.invariants.iter().all(|i| i.held)
    }
}

/// Reads every blob a client ever read whole, through every pullgate, and checks it.
async fn final_pass(world: &world::World, digests: &[(String, String)]) -> Vec<String> {
    let client = world.client();
    let mut broken = Vec::new();
    for url in world.urls() {
        for (repo, digest) in digests {
            let got = async {
                let r = client
                    .get(format!("{url}/v2/registry.redhat.io/{repo}/blobs/{digest}"))
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    return Some(format!("HTTP {}", r.status()));
                }
                let body = r.bytes().await.ok()?;
                use sha2::Digest as _;
                Some(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))))
            }
            .await;
            if got.as_deref() != Some(digest.as_str()) {
                broken.push(format!("{url} {repo}@{digest}: {got:?}"));
            }
        }
    }
    broken
}

/// Runs the soak (see the module header).
pub async fn run(options: &Options) -> Outcome {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let world = Arc::new(world::World::start(&mut rng).await);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let windows: nemesis::Windows = Arc::default();
    let warmup = (options.minutes * 60.0 * 0.25).min(120.0);
    let clients: Vec<_> = (0..options.clients)
        .map(|id| tokio::spawn(clients::client(world.clone(), id, options.seed, started, stop.clone())))
        .collect();
    let sampler = tokio::spawn(watch::sample(world.clone(), started, stop.clone()));
    let nemesis_stop = Arc::new(AtomicBool::new(false));
    let nemesis = tokio::spawn(nemesis::run(
        world.clone(),
        options.seed,
        started,
        options.minutes,
        nemesis_stop.clone(),
        windows.clone(),
    ));
    let supervisor = tokio::spawn(nemesis::supervise(
        world.clone(),
        started,
        stop.clone(),
        windows.clone(),
    ));
    // The last tenth runs without new faults, so everything heals under load.
    let run_for = Duration::from_secs_f64(options.minutes * 60.0);
    tokio::time::sleep(run_for.mul_f64(0.9)).await;
    nemesis_stop.store(true, Ordering::SeqCst);
    let _ = nemesis.await;
    // Heal: a member whose restart failed (a start on a full disk) starts again.
    let revived: Vec<String> = world
        .members
        .lock()
        .map(|mut m| {
            m.iter_mut()
                .filter_map(|m| m.revive().then(|| m.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let ready = world.wait_ready(Duration::from_secs(10)).await;
    tokio::time::sleep(run_for.mul_f64(0.1)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = supervisor.await;
    let mut records = Vec::new();
    for c in clients {
        records.extend(c.await.unwrap_or_default());
    }
    let samples = sampler.await.unwrap_or_default();
    let windows: Vec<nemesis::Window> = windows.lock().map(|w| w.clone()).unwrap_or_default();

    let mut digests: Vec<(String, String)> = Vec::new();
    {
        let images: Vec<world::Image> = world
            .content
            .hot
            .iter()
            .cloned()
            .chain(world.content.cold.lock().map(|c| c.clone()).unwrap_or_default())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for d in records.iter().flat_map(|r| r.verified.iter()) {
            if seen.insert(d.clone())
                && let Some(image) = images
                    .iter()
                    .find(|i| i.platforms.iter().any(|p| p.blobs.iter().any(|(b, _)| b == d)))
            {
                digests.push((image.repo.clone(), d.clone()));
            }
        }
    }
    let final_broken = final_pass(&world, &digests).await;

    let pids: Vec<u32> = world
        .members
        .lock()
        .map(|m| m.iter().filter_map(|m| m.pid()).collect())
        .unwrap_or_default();
    let garage_pid = world.garage.lock().ok().and_then(|g| g.pid());
    let exits: Vec<(String, Option<f64>)> = {
        let procs: Vec<(String, Option<crate::support::Proc>)> = world
            .members
            .lock()
            .map(|mut m| m.iter_mut().map(|m| (m.name.clone(), m.take())).collect())
            .unwrap_or_default();
        procs
            .into_iter()
            .map(|(name, p)| (name, p.and_then(world::terminate).map(|d| d.as_secs_f64())))
            .collect()
    };
    if let Ok(mut g) = world.garage.lock() {
        g.stop();
    }
    let left: Vec<String> = pids
        .iter()
        .copied()
        .chain(garage_pid)
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .filter(|pid| {
            !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        })
        .map(|pid| format!("pid {pid} still runs"))
        .collect();

    let mut invariants = report::client_invariants(&records, &windows);
    invariants.extend(report::resource_invariants(&samples, &windows, warmup));
    invariants.push(Invariant {
        name: "after the nemesis stops, every pullgate is ready within 10 s",
        held: ready.is_ok(),
        detail: format!("{ready:?}; started again after the nemesis: {revived:?}"),
    });
    let mut final_inv = report::invariant(
        "a final pass reads every blob ever served and checks its digest",
        final_broken,
    );
    if final_inv.held {
        final_inv.held = !digests.is_empty();
        final_inv.detail = format!("{} blobs, through {} pullgates", digests.len(), world.urls().len());
    }
    invariants.push(final_inv);
    invariants.push(report::exit_invariant(&windows));
    invariants.push(report::termination_invariant(&windows, &exits));
    invariants.push(Invariant {
        name: "no process is left behind (checked by PID)",
        held: left.is_empty(),
        detail: if left.is_empty() {
            "none".into()
        } else {
            left.join("; ")
        },
    });
    // What each pullgate logged, for a failed run (the temp dir goes with the world).
    let logs: Vec<(String, String)> = world
        .members
        .lock()
        .map(|m| {
            m.iter()
                .map(|m| {
                    let text =
                        std::fs::read_to_string(m.config.with_file_name(format!("{}.log", m.name))).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    (m.name.clone(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
                })
                .collect()
        })
        .unwrap_or_default();
    let table = report::table(
        &records,
        &windows,
        &samples,
        &invariants,
        options.seed,
        options.minutes,
        warmup,
    );
    let json = serde_json::json!({
        "minutes": options.minutes, "seed": options.seed, "clients": options.clients,
        "operations": records.len(), "windows": windows, "samples": samples,
        "invariants": invariants, "final_blobs": digests.len(), "exits": exits, "log_tails": logs,
        "errors": records.iter().filter(|r| !r.failures.is_empty()).map(|r| serde_json::json!({"op": r.op, "member": r.member, "hot": r.hot, "start": r.start, "ok": r.ok, "failures": r.failures})).collect::<Vec<_>>(),
    });
    Outcome {
        table,
        json,
        invariants,
        logs,
    }
}
