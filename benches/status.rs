//! What the status page costs the hot path, outside the test suite:
//! `cargo bench --bench status`. On loopback: the test suite's fake Red Hat registry, and
//! two pullgate processes (this package's release binary) in front of it with
//! `tag_ttl = "1h"` (tag requests answered locally): one with `[status] enabled = false`,
//! one with the page on.
//!
//! Measured with `wrk` (`PULLGATE_STATUS_CONNECTIONS`, 64 connections, for
//! `PULLGATE_STATUS_SECS`, 5 s), alternating for `PULLGATE_STATUS_ROUNDS` (4) rounds:
//! manifest GETs by tag on the page-less pullgate, on the other with no page open, and on
//! it with `PULLGATE_STATUS_TABS` (4) pages open, each loading `/status` and refreshing
//! its five JSON parts every 2 s as the page's script does. Target: with the page open
//! ≥ 0.95× the req/s without. Prints a Markdown table and writes
//! `target/bench-status.json`.

#[path = "../tests/common/fake_upstream/mod.rs"]
mod fake_upstream;
mod support;

use fake_upstream::FakeRedHat;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;

const ACCEPT: &str =
    "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// Pages open on `base`: each loads the page, then the five parts every 2 s, until `stop`.
fn open_pages(base: &str, tabs: u64, stop: Arc<AtomicBool>, loads: Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tabs)
        .map(|_| {
            let (base, stop, loads) = (base.to_string(), stop.clone(), loads.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let get = |path: String| {
                    let client = client.clone();
                    async move {
                        let r = client.get(path).send().await.expect("status GET");
                        assert!(r.status().is_success(), "{}", r.status());
                        let _ = r.bytes().await;
                    }
                };
                get(format!("{base}/status")).await;
                while !stop.load(Ordering::SeqCst) {
                    for part in ["summary", "fills", "egress", "pulls", "fleet"] {
                        get(format!("{base}/status/api/{part}")).await;
                    }
                    loads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
        })
        .collect()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        cleanup_on_signals();
        run().await;
    });
}

async fn run() {
    ensure_installed("/usr/bin/wrk", "wrk");
    let conns = env_num("PULLGATE_STATUS_CONNECTIONS", 64);
    let secs = env_num("PULLGATE_STATUS_SECS", 5);
    let rounds = env_num("PULLGATE_STATUS_ROUNDS", 4).max(1);
    let tabs = env_num("PULLGATE_STATUS_TABS", 4);
    let scratch = Scratch::new("pullgate-bench-status-");
    let fake = FakeRedHat::start().await;
    fake.add_image("ubi9/ubi", "latest", &[10_000]);
    let password = scratch.path().join("password");
    std::fs::write(&password, fake_upstream::PASSWORD).expect("password");
    let config = |name: &str, status: &str| {
        write_proxy_config(
            scratch.path(),
            name,
            &fake.registry_url,
            (fake_upstream::USERNAME, &password),
            &format!("[status]\nenabled = {status}"),
        )
    };
    let (odir, oconf) = config("off", "false");
    let (ndir, nconf) = config("on", "true");
    let (_off_proc, off_url) = serve_pullgate("off", &odir, &oconf);
    let (_on_proc, on_url) = serve_pullgate("on", &ndir, &nconf);
    let path = "/v2/registry.redhat.io/ubi9/ubi/manifests/latest";
    for base in [&off_url, &on_url] {
        // Warm: the manifest is cached and its tag fresh.
        wrk_get(&format!("{base}{path}"), 4, 1, &[ACCEPT]);
    }
    let (mut off, mut closed, mut open) = (Vec::new(), Vec::new(), Vec::new());
    let loads = Arc::new(AtomicU64::new(0));
    // Each round runs the three in a rotated order, so none always goes first.
    for round in 0..rounds {
        for turn in 0..3 {
            let kind = (round as usize + turn) % 3;
            let url = format!("{}{path}", if kind == 0 { &off_url } else { &on_url });
            let stop = Arc::new(AtomicBool::new(false));
            let pages = if kind == 2 {
                open_pages(&on_url, tabs, stop.clone(), loads.clone())
            } else {
                Vec::new()
            };
            let r = tokio::task::spawn_blocking(move || wrk_get(&url, conns, secs, &[ACCEPT]))
                .await
                .expect("wrk");
            stop.store(true, Ordering::SeqCst);
            for page in pages {
                page.await.expect("a page's refreshes");
            }
            [&mut off, &mut closed, &mut open][kind].push(r);
        }
        eprintln!(
            "  round {round}: {:.0} req/s without the page, {:.0} with it closed, {:.0} with {tabs} open",
            off[round as usize].rps, closed[round as usize].rps, open[round as usize].rps
        );
    }
    let med = |v: &[LoadResult], f: fn(&LoadResult) -> f64| median(v.iter().map(f).collect());
    let (rps_off, rps_closed, rps_open) = (med(&off, |r| r.rps), med(&closed, |r| r.rps), med(&open, |r| r.rps));
    println!(
        "\n| manifest GET by tag, {conns} connections, median of {rounds} | req/s | p99 (ms) | ratio to no page |"
    );
    println!("|---|---|---|---|");
    for (what, v, rps) in [
        ("`[status] enabled = false`", &off, rps_off),
        ("page on, not open", &closed, rps_closed),
        (
            &*format!("page open in {tabs} tabs, refreshing every 2 s"),
            &open,
            rps_open,
        ),
    ] {
        println!(
            "| {what} | {rps:.0} | {:.2} | {:.2}× |",
            med(v, |r| r.p99_ms),
            rps / rps_off
        );
    }
    let ratio = rps_open / rps_off;
    println!(
        "{} req/s with the page open >= 0.95x without ({} page refreshes during the runs)",
        if ratio >= 0.95 { "PASS" } else { "FAIL" },
        loads.load(Ordering::Relaxed)
    );
    let doc = json!({
        "rps_off": rps_off, "rps_closed": rps_closed, "rps_open": rps_open, "ratio_open": ratio,
        "tabs": tabs, "rounds_off": off.iter().map(LoadResult::json).collect::<Vec<_>>(),
        "rounds_closed": closed.iter().map(LoadResult::json).collect::<Vec<_>>(),
        "rounds_open": open.iter().map(LoadResult::json).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-status.json");
    let _ = std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap_or_default());
}
