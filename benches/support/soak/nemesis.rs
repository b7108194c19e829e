//! The nemesis: faults on a seeded schedule, overlapping — a replica SIGKILLed (mid-fill,
//! as fills run all the time) and restarted; Garage stopped and continued; the CDN
//! cutting connections, answering 503 or dribbling; the registry down for 30 s; the
//! single pullgate's disk full; its TLS certificate rotated with SIGHUP; SIGTERM during
//! fills, timed, then a restart. Clients leaving mid-body are the clients' own `Abandon`.
//! Every fault is a window the invariants read.

use super::world::{DRAIN, SINGLE, World, fill_disk, unfill};
use rand::Rng as _;
use rand::SeedableRng as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Fault {
    KillReplica,
    PauseGarage,
    CdnCut,
    Cdn503,
    CdnDribble,
    RegistryDown,
    DiskFull,
    RotateCertificate,
    TermDuringFill,
    /// Not injected: a pullgate that exited on its own, started again after
    /// [`RESTART_SEC`] as systemd's `Restart=on-failure` does (deploy/pullgate.service).
    ExitedAndRestarted,
}

/// deploy/pullgate.service's `RestartSec`.
pub const RESTART_SEC: Duration = Duration::from_secs(5);

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::KillReplica,
        Fault::PauseGarage,
        Fault::CdnCut,
        Fault::Cdn503,
        Fault::CdnDribble,
        Fault::RegistryDown,
        Fault::DiskFull,
        Fault::RotateCertificate,
        Fault::TermDuringFill,
    ];

    /// Whether the fault keeps content from upstream.
    pub fn upstream(self) -> bool {
        matches!(
            self,
            Fault::CdnCut | Fault::Cdn503 | Fault::CdnDribble | Fault::RegistryDown
        )
    }
}

/// A fault as it happened: from `start` to `end` (seconds since the soak started), on
/// `member` when it was one pullgate's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    pub fault: Fault,
    pub member: Option<usize>,
    pub start: f64,
    pub end: f64,
    /// For SIGTERM: how long the process took to exit (`None`: longer than allowed).
    pub exit_secs: Option<f64>,
    /// For an exit on its own: the last line the process logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub type Windows = Arc<Mutex<Vec<Window>>>;

fn record(windows: &Windows, w: Window) {
    windows.lock().unwrap_or_else(|p| p.into_inner()).push(w);
}

/// Whether a member is down (killed or terminated) right now: one replica at a time, so
/// the fleet keeps two.
fn member_down(world: &World) -> bool {
    world
        .members
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|m| !m.running())
}

/// Applies `fault` for `hold` and records its window.
async fn inject(world: Arc<World>, fault: Fault, hold: Duration, member: usize, started: Instant, windows: Windows) {
    let now = || started.elapsed().as_secs_f64();
    let start = now();
    let mut exit_secs = None;
    let mut on = None;
    match fault {
        Fault::KillReplica | Fault::TermDuringFill => {
            on = Some(member);
            let w = world.clone();
            let took = tokio::task::spawn_blocking(move || {
                if fault == Fault::KillReplica {
                    w.members.lock().unwrap_or_else(|p| p.into_inner())[member].kill();
                    return None;
                }
                let proc = w.members.lock().unwrap_or_else(|p| p.into_inner())[member].take();
                proc.and_then(super::world::terminate)
            })
            .await
            .ok()
            .flatten();
            exit_secs = took.map(|d| d.as_secs_f64());
            tokio::time::sleep(hold).await;
            world.members.lock().unwrap_or_else(|p| p.into_inner())[member].start();
            let _ = world.wait_ready(Duration::from_secs(30)).await;
        }
        Fault::PauseGarage => {
            let pid = world.garage.lock().map(|g| g.pid()).ok().flatten();
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-STOP", &pid.to_string()])
                    .status();
                tokio::time::sleep(hold).await;
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
        Fault::CdnCut => {
            world.fake.cut_after.store(96 << 10, Ordering::SeqCst);
            world.fake.cut_times.store(0, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            world.fake.cut_after.store(0, Ordering::SeqCst);
        }
        Fault::Cdn503 => {
            world.fake.cdn_fail_5xx.store(true, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            world.fake.cdn_fail_5xx.store(false, Ordering::SeqCst);
        }
        Fault::CdnDribble => {
            world.fake.frame_delay_ms.store(40, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            world.fake.frame_delay_ms.store(0, Ordering::SeqCst);
        }
        Fault::RegistryDown => {
            world.fake.stop();
            tokio::time::sleep(Duration::from_secs(30)).await;
            world.fake.restart().await;
        }
        Fault::DiskFull => {
            on = Some(SINGLE);
            let disk = world.disk.0.clone();
            let _ = tokio::task::spawn_blocking(move || fill_disk(&disk)).await;
            tokio::time::sleep(hold).await;
            unfill(&world.disk.0);
        }
        Fault::RotateCertificate => {
            on = Some(SINGLE);
            world.rotate_certificate();
        }
        Fault::ExitedAndRestarted => return, // not injected: see `supervise`
    }
    record(
        &windows,
        Window {
            fault,
            member: on,
            start,
            end: now(),
            exit_secs,
            note: None,
        },
    );
}

/// Runs the schedule until `stop`; waits for the faults under way to end.
pub async fn run(
    world: Arc<World>,
    seed: u64,
    started: Instant,
    minutes: f64,
    stop: Arc<AtomicBool>,
    windows: Windows,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6e656d65);
    // Short runs fault more often, so each kind shows in two minutes.
    let gap = if minutes <= 5.0 { 3.0..8.0 } else { 8.0..25.0 };
    let mut order: Vec<Fault> = Vec::new();
    let mut running: Vec<(Fault, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut last_move = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs_f64(rng.gen_range(gap.clone()))).await;
        if last_move.elapsed() > Duration::from_secs(15) {
            world.content.move_tag(&world.fake);
            world.content.add_cold(&world.fake, &mut rng);
            last_move = Instant::now();
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        running.retain(|(_, h)| !h.is_finished());
        if order.is_empty() {
            order = Fault::ALL.to_vec();
            // A seeded shuffle: every kind once per cycle.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
        }
        let fault = order.pop().unwrap_or(Fault::CdnCut);
        let busy = running.iter().any(|(f, _)| *f == fault);
        let takes_a_member = matches!(fault, Fault::KillReplica | Fault::TermDuringFill);
        if busy || (takes_a_member && member_down(&world)) {
            order.insert(0, fault);
            continue;
        }
        let member = match fault {
            Fault::TermDuringFill => rng.gen_range(0..=SINGLE),
            _ => rng.gen_range(0..SINGLE),
        };
        let hold = Duration::from_secs_f64(rng.gen_range(5.0..15.0));
        let handle = tokio::spawn(inject(world.clone(), fault, hold, member, started, windows.clone()));
        running.push((fault, handle));
    }
    for (_, h) in running {
        let _ = h.await;
    }
}

/// Plays systemd for the pullgates: one that exited on its own (not taken by the nemesis)
/// is started again after [`RESTART_SEC`], and its time down is a window, with the last
/// line it logged.
pub async fn supervise(world: Arc<World>, started: Instant, stop: Arc<AtomicBool>, windows: Windows) {
    let mut restarting: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut handled = std::collections::HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        restarting.retain(|h| !h.is_finished());
        let exited: Vec<(usize, u32, Option<String>)> = world
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| {
                let pid = m.pid()?;
                (m.exited() && handled.insert(pid)).then(|| (i, pid, m.last_log_line()))
            })
            .collect();
        for (member, _, note) in exited {
            let world = world.clone();
            let windows = windows.clone();
            restarting.push(tokio::spawn(async move {
                // A process that stops to be started again drained first, for up to
                // drain_timeout, accepting nothing: its time down began then.
                let draining = note
                    .as_deref()
                    .is_some_and(|n| n.contains("stopped to be started again"));
                let noticed = started.elapsed().as_secs_f64();
                let start = if draining {
                    (noticed - DRAIN.as_secs_f64() - 1.0).max(0.0)
                } else {
                    noticed
                };
                tokio::time::sleep(RESTART_SEC).await;
                world.members.lock().unwrap_or_else(|p| p.into_inner())[member].revive();
                let _ = world.wait_ready(Duration::from_secs(30)).await;
                record(
                    &windows,
                    Window {
                        fault: Fault::ExitedAndRestarted,
                        member: Some(member),
                        start,
                        end: started.elapsed().as_secs_f64(),
                        exit_secs: None,
                        note,
                    },
                );
            }));
        }
    }
    for h in restarting {
        let _ = h.await;
    }
}
