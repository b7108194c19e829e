//! What a signature policy costs, outside the test suite: `cargo bench --bench policy`.
//! On loopback: the test suite's fake Red Hat registry and a signature lookaside, a
//! 2-platform image (a Docker manifest list and its two children, each signed by a gpg
//! key made here with `skopeo standalone-sign`), and two pullgate processes (this
//! package's release binary) in front of them, one with `signature_policy` and one
//! without, both with `tag_ttl = "1h"` so tag requests are answered locally.
//!
//! Measured: the first GET of the list by tag on each (cold: the upstream manifest fetch,
//! and on the policy side the signature fetch and verification), then manifest GETs by tag
//! with `PULLGATE_POLICY_CONNECTIONS` (64) connections for `PULLGATE_POLICY_SECS` (5) s
//! driven by `wrk`, alternating the two for `PULLGATE_POLICY_ROUNDS` (3) rounds; medians.
//! Target: with a policy (verdict kept) ≥ 0.9× the req/s without one. Prints a Markdown
//! table and writes JSON to `target/bench-policy.json`.

#[path = "../tests/common/fake_upstream/mod.rs"]
mod fake_upstream;
#[path = "../tests/common/lookaside.rs"]
#[allow(dead_code)]
mod lookaside;
#[path = "../tests/common/registry.rs"]
mod registry;
#[path = "../tests/common/signing.rs"]
mod signing;
mod support;

use fake_upstream::FakeRedHat;
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use support::*;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
    ensure_installed("/usr/bin/skopeo", "skopeo");
    ensure_installed("/usr/bin/gpg", "gnupg");
    let conns = env_num("PULLGATE_POLICY_CONNECTIONS", 64);
    let secs = env_num("PULLGATE_POLICY_SECS", 5);
    let rounds = env_num("PULLGATE_POLICY_ROUNDS", 3).max(1);
    let scratch = Scratch::new("pullgate-bench-policy-");
    let fake = FakeRedHat::start().await;
    let (store, lookaside_url, _task) = lookaside::start_lookaside().await;
    let key = signing::GpgKey::generate("release");
    // The image under load, and fresh ones for first verifications.
    let repos: Vec<String> = std::iter::once("ubi9/ubi".to_string())
        .chain((0..5).map(|i| format!("ubi9/first{i}")))
        .collect();
    for repo in &repos {
        let list = fake.add_docker_list(repo, "latest");
        let reference = format!("registry.redhat.io/{repo}:latest");
        let sign = |digest: &str, bytes: &[u8]| {
            store
                .files
                .lock()
                .unwrap()
                .insert(lookaside::sig_path(repo, digest, 1), key.sign(bytes, &reference));
        };
        sign(&list.digest, &list.bytes);
        for child in &list.child_images {
            sign(&child.manifest_digest, &child.manifest);
        }
    }
    let password = scratch.path().join("password");
    std::fs::write(&password, fake_upstream::PASSWORD).expect("password");
    let config = |name: &str, policy: &str| {
        write_proxy_config(
            scratch.path(),
            name,
            &fake.registry_url,
            (fake_upstream::USERNAME, &password),
            &format!("sigstore = \"{lookaside_url}\"\n{policy}"),
        )
    };
    let (pdir, pconf) = config(
        "policy",
        &format!("signature_policy = {{ keys = [\"{}\"] }}", key.public_key.display()),
    );
    let (ndir, nconf) = config("plain", "");
    let (_policy_proc, policy_url) = serve_pullgate("policy", &pdir, &pconf);
    let (_plain_proc, plain_url) = serve_pullgate("plain", &ndir, &nconf);
    let client = reqwest::Client::new();
    let first = |base: String, repo: String| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let r = client
                .get(format!("{base}/v2/registry.redhat.io/{repo}/manifests/latest"))
                .header("accept", ACCEPT)
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await;
            started.elapsed().as_secs_f64() * 1000.0
        }
    };
    // Warm both (tokens, connections) on the loaded image, then time each fresh image's
    // first GET on both, alternating which goes first.
    first(plain_url.clone(), repos[0].clone()).await;
    first(policy_url.clone(), repos[0].clone()).await;
    let (mut firsts_plain, mut firsts_policy) = (Vec::new(), Vec::new());
    for (i, repo) in repos.iter().skip(1).enumerate() {
        if i % 2 == 0 {
            firsts_plain.push(first(plain_url.clone(), repo.clone()).await);
            firsts_policy.push(first(policy_url.clone(), repo.clone()).await);
        } else {
            firsts_policy.push(first(policy_url.clone(), repo.clone()).await);
            firsts_plain.push(first(plain_url.clone(), repo.clone()).await);
        }
    }
    let (first_plain, first_policy) = (median(firsts_plain.clone()), median(firsts_policy.clone()));
    eprintln!("policy bench: first GET by tag {firsts_plain:.1?} ms without a policy, {firsts_policy:.1?} ms with one");
    let path = "/v2/registry.redhat.io/ubi9/ubi/manifests/latest";
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let accept = format!("Accept: {ACCEPT}");
        let p = wrk_get(&format!("{policy_url}{path}"), conns, secs, &[&accept]);
        let n = wrk_get(&format!("{plain_url}{path}"), conns, secs, &[&accept]);
        eprintln!(
            "  round {round}: {:.0} req/s with a policy, {:.0} without",
            p.rps, n.rps
        );
        with.push(p);
        without.push(n);
    }
    let med = |v: &[LoadResult], f: fn(&LoadResult) -> f64| median(v.iter().map(f).collect());
    let (rps_with, rps_without) = (med(&with, |r| r.rps), med(&without, |r| r.rps));
    let ratio = rps_with / rps_without;
    println!("\n| measurement | with signature_policy | without | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| manifest GET by tag, {conns} connections, median of {rounds} (req/s) | {rps_with:.0} | {rps_without:.0} | {ratio:.2}× |"
    );
    println!(
        "| p99 (ms) | {:.2} | {:.2} | |",
        med(&with, |r| r.p99_ms),
        med(&without, |r| r.p99_ms)
    );
    println!(
        "| first GET of a 2-platform list by tag, median of 5 fresh images (ms) | {first_policy:.1} | {first_plain:.1} | +{:.1} ms to fetch its signature and verify it |",
        first_policy - first_plain
    );
    println!(
        "{} policy req/s >= 0.9x without",
        if ratio >= 0.9 { "PASS" } else { "FAIL" }
    );
    let doc = json!({
        "rps_with": rps_with, "rps_without": rps_without, "ratio": ratio,
        "first_get_ms_with": first_policy, "first_get_ms_without": first_plain,
        "rounds_with": with.iter().map(LoadResult::json).collect::<Vec<_>>(),
        "rounds_without": without.iter().map(LoadResult::json).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-policy.json");
    let _ = std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap_or_default());
}
