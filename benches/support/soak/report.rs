//! The soak's verdict: each invariant checked against what the clients, the nemesis and
//! the sampler recorded, and the table (requests, bytes, faults by kind, client errors by
//! kind, retries, hit latency during faults, RSS and descriptors) with its JSON.

use super::clients::{Failure, Record};
use super::nemesis::{Fault, Window};
use super::watch::Sample;
use super::world::{DRAIN, MAX_SIZE, SINGLE};
use std::collections::BTreeMap;

/// How far above `max_size` the single pullgate's usage may go: fills running when it
/// is measured are counted before eviction catches up (a few cold layers of up to 3 MiB
/// each, four clients).
pub const USAGE_SLACK: u64 = 16 << 20;

/// One invariant: its name, whether it held, and what broke it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invariant {
    pub name: &'static str,
    pub held: bool,
    pub detail: String,
}

pub fn invariant(name: &'static str, broken: Vec<String>) -> Invariant {
    Invariant {
        name,
        held: broken.is_empty(),
        detail: if broken.is_empty() {
            "held".into()
        } else {
            let n = broken.len();
            let mut shown: Vec<String> = broken.into_iter().take(5).collect();
            if n > 5 {
                shown.push(format!("… {} more", n - 5));
            }
            shown.join("; ")
        },
    }
}

fn overlaps(w: &Window, r: &Record, margin: f64) -> bool {
    w.start - margin <= r.end && r.start <= w.end + margin
}

/// Why a failed operation does not count against the pullgate it asked.
fn excused(r: &Record, windows: &[Window]) -> bool {
    windows.iter().any(|w| {
        let on_member = w.member == Some(r.member);
        let replica = r.member < SINGLE;
        match w.fault {
            Fault::KillReplica | Fault::TermDuringFill | Fault::ExitedAndRestarted => on_member && overlaps(w, r, 2.0),
            Fault::PauseGarage => replica && overlaps(w, r, 2.0),
            Fault::DiskFull => r.member == SINGLE && !r.hot && overlaps(w, r, 1.0),
            f if f.upstream() => (!r.hot || r.member == SINGLE) && overlaps(w, r, 2.0),
            _ => false,
        }
    })
}

/// The client-side invariants: no wrong bytes ever; every operation on a pullgate that
/// stayed up completed after at most one retry.
pub fn client_invariants(records: &[Record], windows: &[Window]) -> Vec<Invariant> {
    let wrong: Vec<String> = records
        .iter()
        .flat_map(|r| r.failures.iter())
        .filter_map(|f| match f {
            Failure::WrongBytes(what) => Some(what.clone()),
            Failure::WrongTag => Some("the moving tag named a digest it never had".into()),
            _ => None,
        })
        .collect();
    let unfinished: Vec<String> = records
        .iter()
        .filter(|r| !r.ok && !excused(r, windows))
        .map(|r| format!("{:?} on member {} at {:.0}s: {:?}", r.op, r.member, r.start, r.failures))
        .collect();
    vec![
        invariant("no response completes with bytes that do not match their digest", wrong),
        invariant(
            "every operation on a pullgate that stays up completes after at most one retry",
            unfinished,
        ),
    ]
}

/// Baseline once the run is past its warm-up and the process is at least as old (and a
/// minute: a young process still fills its caches and allocator arenas), then every later sample
/// outside fault windows within +20 % (with a small floor for small numbers).
fn growth(
    samples: &[Sample],
    windows: &[Window],
    warmup: f64,
    field: fn(&Sample) -> Option<u64>,
    floor: u64,
    what: &str,
) -> Vec<String> {
    let mut broken = Vec::new();
    let mut baselines: BTreeMap<u32, u64> = BTreeMap::new();
    let quiet = |s: &Sample| !windows.iter().any(|w| w.start - 5.0 <= s.t && s.t <= w.end + 10.0);
    for s in samples.iter().filter(|s| s.t >= warmup && s.age >= warmup.max(60.0)) {
        let Some(v) = field(s) else { continue };
        let base = *baselines.entry(s.pid).or_insert(v);
        let limit = base + (base / 5).max(floor);
        if v > limit && quiet(s) {
            broken.push(format!(
                "member {} (pid {}) {what} {v} at {:.0}s, baseline {base}",
                s.member, s.pid, s.t
            ));
        }
    }
    broken
}

pub fn resource_invariants(samples: &[Sample], windows: &[Window], warmup: f64) -> Vec<Invariant> {
    let over: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            s.usage
                .filter(|u| *u > MAX_SIZE + USAGE_SLACK)
                .map(|u| format!("{u} bytes at {:.0}s", s.t))
        })
        .collect();
    vec![
        invariant("the single pullgate's cache stays within max_size + 16 MiB", over),
        invariant(
            "RSS stays within +20 % (or 24 MiB) of its value after warm-up",
            growth(samples, windows, warmup, |s| Some(s.rss_kib), 24 << 10, "RSS KiB"),
        ),
        invariant(
            "open file descriptors stay within +20 %",
            growth(samples, windows, warmup, |s| Some(s.fds), 12, "fds"),
        ),
        invariant(
            "tokio tasks do not grow",
            growth(samples, windows, warmup, |s| s.tasks, 16, "tasks"),
        ),
    ]
}

/// A pullgate exits on its own only because its disk filled: a start that cannot open
/// its database on a full disk (sled writes as it opens), or a database that kept the
/// error of a write into the full disk (sled clears it only when opened again), so the
/// process stops to be started again. Anything else (a panic, an error) is a finding.
pub fn exit_invariant(windows: &[Window]) -> Invariant {
    let because_full =
        |n: &str| n.contains("is full") || (n.contains("stopped taking writes") && n.contains("No space left"));
    let broken: Vec<String> = windows
        .iter()
        .filter(|w| w.fault == Fault::ExitedAndRestarted)
        .filter(|w| !w.note.as_deref().is_some_and(because_full))
        .map(|w| format!("member {:?} at {:.0}s: {:?}", w.member, w.start, w.note))
        .collect();
    invariant("a pullgate exits on its own only because its disk filled", broken)
}

/// SIGTERM during fills ended each process within `drain_timeout` + 5 s.
pub fn termination_invariant(windows: &[Window], final_exits: &[(String, Option<f64>)]) -> Invariant {
    let limit = DRAIN.as_secs_f64() + 5.0;
    let mut broken: Vec<String> = windows
        .iter()
        .filter(|w| w.fault == Fault::TermDuringFill)
        .filter(|w| w.exit_secs.is_none_or(|s| s > limit))
        .map(|w| format!("member {:?} at {:.0}s took {:?}", w.member, w.start, w.exit_secs))
        .collect();
    broken.extend(
        final_exits
            .iter()
            .filter(|(_, s)| s.is_none_or(|s| s > limit))
            .map(|(name, s)| format!("{name} at the end took {s:?}")),
    );
    invariant("every process stops within drain_timeout + 5 s of SIGTERM", broken)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The Markdown table.
pub fn table(
    records: &[Record],
    windows: &[Window],
    samples: &[Sample],
    invariants: &[Invariant],
    seed: u64,
    minutes: f64,
    warmup: f64,
) -> String {
    let mut out = format!("### Soak: {minutes} min, seed {seed}\n\n| measurement | value |\n|---|---|\n");
    let bytes: u64 = records.iter().map(|r| r.bytes).sum();
    out.push_str(&format!(
        "| client operations | {} ({} with a retry) |\n",
        records.len(),
        records.iter().filter(|r| !r.failures.is_empty() && r.ok).count()
    ));
    out.push_str(&format!(
        "| bytes read by clients | {:.1} MiB |\n",
        bytes as f64 / 1048576.0
    ));
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for w in windows.iter().filter(|w| w.fault != Fault::ExitedAndRestarted) {
        *faults.entry(format!("{:?}", w.fault)).or_default() += 1;
    }
    let abandons = records.iter().filter(|r| r.op == super::clients::Op::Abandon).count();
    faults.insert("ClientLeavesMidBody".into(), abandons);
    out.push_str(&format!(
        "| faults injected | {} |\n",
        faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let exits: Vec<String> = windows
        .iter()
        .filter(|w| w.fault == Fault::ExitedAndRestarted)
        .map(|w| format!("member {} at {:.0}s", w.member.unwrap_or_default(), w.start))
        .collect();
    out.push_str(&format!(
        "| exits on their own, started again after 5 s as systemd would | {} {} |\n",
        exits.len(),
        if exits.is_empty() {
            String::new()
        } else {
            format!("({})", exits.join(", "))
        }
    ));
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for f in records.iter().flat_map(|r| &r.failures) {
        *errors.entry(f.kind()).or_default() += 1;
    }
    out.push_str(&format!(
        "| errors seen by clients (attempts) | {} |\n",
        if errors.is_empty() {
            "none".into()
        } else {
            errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let during: Vec<f64> = records
        .iter()
        .filter(|r| r.ok && r.hot && r.failures.is_empty() && windows.iter().any(|w| overlaps(w, r, 0.0)))
        .map(|r| (r.end - r.start) * 1000.0)
        .collect();
    out.push_str(&format!(
        "| hot operations during faults: p50 / p99 (ms), n | {:.1} / {:.1}, {} |\n",
        percentile(during.clone(), 0.5),
        percentile(during.clone(), 0.99),
        during.len()
    ));
    for member in 0..=SINGLE {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.member == member).collect();
        let at = of.iter().find(|s| s.t >= warmup);
        let last = of.last();
        if let (Some(a), Some(b)) = (at, last) {
            out.push_str(&format!(
                "| {} RSS / fds after warm-up → at the end | {} MiB / {} → {} MiB / {} |\n",
                if member == SINGLE {
                    "single".to_string()
                } else {
                    format!("replica{member}")
                },
                a.rss_kib / 1024,
                a.fds,
                b.rss_kib / 1024,
                b.fds
            ));
        }
    }
    out.push_str("\n| invariant | |\n|---|---|\n");
    for i in invariants {
        out.push_str(&format!(
            "| {} | {} |\n",
            i.name,
            if i.held {
                "PASS".to_string()
            } else {
                format!("FAIL: {}", i.detail)
            }
        ));
    }
    out
}
