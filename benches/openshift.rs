//! Warming an OpenShift release ahead of a maintenance window, outside the test suite:
//! `cargo bench --bench openshift`. On loopback, in one temp dir:
//!
//! * **upstream**: the test suite's fake quay.io (anonymous tokens, blobs redirected to a
//!   CDN on 127.0.0.2) holding one synthetic release of `PULLGATE_OS_COMPONENTS` (185)
//!   components that share `PULLGATE_OS_BASE_LAYERS` (3) base layers of
//!   `PULLGATE_OS_BASE_MIB` (8) MiB, each with its own layer of `PULLGATE_OS_OWN_KIB` (512)
//!   KiB; its payload names them in `release-manifests/image-references`; the fake
//!   signature store and update graph serve the release;
//! * **pullgate**: `pullgate prefetch --imageset` (this package's release binary, an
//!   in-process pullgate on a fresh data dir, `--jobs 8`) of an ImageSetConfiguration
//!   naming the channel;
//! * **what sites do today**: `skopeo copy --all` of the same list (the payload and every
//!   component, by digest), one by one, into a local distribution 2.8 registry (Debian's
//!   `docker-registry`) from the same fake upstream.
//!
//! Each side runs `PULLGATE_OS_ROUNDS` (3) times on a fresh cache or registry, alternating;
//! medians. Reported: wall time, the ratio, CDN GETs per unique blob (most, and in all),
//! peak RSS of the prefetch process, and a re-run of the prefetch (HEADs only). Prints a
//! Markdown table and PASS/FAIL per target (≥ 2× faster, each unique blob fetched once,
//! prefetch RSS ≤ 128 MiB), and writes them as JSON to `target/bench-openshift.json`.

#[path = "../tests/common/fake_upstream/mod.rs"]
mod fake_upstream;
#[path = "../tests/common/openshift.rs"]
mod openshift;
#[path = "../tests/common/registry.rs"]
mod registry;
#[path = "../tests/common/skopeo.rs"]
mod skopeo;
mod support;

pub use fake_upstream::{PASSWORD, USERNAME};
use openshift::{CHANNEL, OpenShiftWorld, WorldSize, image_blobs};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The unique blobs of the release (payload and components), as stored in the fake.
fn release_blobs(world: &OpenShiftWorld) -> BTreeSet<String> {
    let r = &world.releases[0];
    std::iter::once(&r.pullspec)
        .chain(&r.components)
        .flat_map(|p| image_blobs(&world.quay, p.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()))
        .collect()
}

/// (most CDN GETs of one blob, CDN GETs in all) since the last reset.
fn cdn_fetches(world: &OpenShiftWorld, blobs: &BTreeSet<String>) -> (usize, usize) {
    let most = blobs.iter().map(|b| world.quay.cdn_gets(b)).max().unwrap_or(0);
    (most, world.quay.cdn_gets_total())
}

struct PrefetchRun {
    secs: f64,
    rss_kib: u64,
    output: String,
}

/// `pullgate prefetch --imageset` on `config`, timed, its peak RSS sampled.
fn prefetch(scratch: &Scratch, config: &std::path::Path, imageset: &std::path::Path, n: usize) -> PrefetchRun {
    let log = scratch.path().join(format!("prefetch-{n}.log"));
    let started = Instant::now();
    let mut proc = Proc::spawn(
        "pullgate prefetch",
        Command::new(env!("CARGO_BIN_EXE_pullgate"))
            .args(["prefetch", "--config"])
            .arg(config)
            .arg("--imageset")
            .arg(imageset)
            .args(["--jobs", "8"])
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null()),
        false,
        log.clone(),
    );
    let sampler = RssSampler::start(vec![proc.pid()]);
    let status = proc.wait();
    let secs = started.elapsed().as_secs_f64();
    let rss_kib = sampler.finish()[0];
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "prefetch failed ({status}):\n{output}");
    PrefetchRun { secs, rss_kib, output }
}

/// `skopeo copy --all` of every image, one after the other, into a fresh distribution.
async fn skopeo_copies(world: &OpenShiftWorld) -> f64 {
    let dist = registry::DockerRegistry::start().await;
    let skopeo = skopeo::Skopeo::new();
    let conf = skopeo.write_registries_conf("unqualified-search-registries = []\n");
    let source = world.quay.registry_url.trim_start_matches("http://").to_string();
    let dest = dist.url.trim_start_matches("http://").to_string();
    let r = &world.releases[0];
    let started = Instant::now();
    for (i, image) in std::iter::once(&r.pullspec).chain(&r.components).enumerate() {
        let path = image.trim_start_matches("quay.io/");
        let repo = path.rsplit_once('@').map(|(repo, _)| repo).unwrap_or(path);
        let from = format!("docker://{source}/{path}");
        let to = format!("docker://{dest}/{repo}:c{i}");
        let out = skopeo
            .copy_async(
                &conf,
                &["--all", "--src-tls-verify=false", "--dest-tls-verify=false", &from, &to],
            )
            .await;
        skopeo::assert_success(&format!("skopeo copy {from}"), &out);
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        cleanup_on_signals();
        run().await;
    });
}

async fn run() {
    ensure_installed("/usr/bin/docker-registry", "docker-registry");
    ensure_installed("/usr/bin/skopeo", "skopeo");
    let size = WorldSize {
        components: env_num("PULLGATE_OS_COMPONENTS", 185) as usize,
        versions: vec!["4.16.0".into()],
        base_layers: env_num("PULLGATE_OS_BASE_LAYERS", 3) as usize,
        base_layer_size: (env_num("PULLGATE_OS_BASE_MIB", 8) << 20) as usize,
        own_layer_size: (env_num("PULLGATE_OS_OWN_KIB", 512) << 10) as usize,
        changed_per_release: 0,
    };
    let rounds = env_num("PULLGATE_OS_ROUNDS", 3).max(1);
    let scratch = Scratch::new("pullgate-bench-openshift-");
    let world = OpenShiftWorld::start(&size).await;
    let blobs = release_blobs(&world);
    let unique_bytes: u64 = blobs
        .iter()
        .map(|b| world.quay.blob(b).map_or(0, |v| v.len() as u64))
        .sum();
    eprintln!(
        "openshift bench: {} components, {} unique blobs, {:.1} MiB; {rounds} rounds",
        size.components,
        blobs.len(),
        unique_bytes as f64 / (1u64 << 20) as f64
    );
    let imageset = scratch.path().join("imageset.yaml");
    std::fs::write(
        &imageset,
        format!("kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  platform:\n    channels:\n    - name: {CHANNEL}\n"),
    )
    .expect("imageset");

    let (mut pg_secs, mut sk_secs, mut rss, mut rerun_secs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pg_most, mut pg_total, mut sk_most, mut sk_total) = (0, 0, 0, 0);
    for round in 0..rounds as usize {
        // pullgate, on a fresh data dir.
        let dir = scratch.path().join(format!("pullgate-{round}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("pullgate.toml");
        std::fs::write(&config, world.config_toml(&dir, "", "")).expect("config");
        world.quay.reset_counters();
        let run = prefetch(&scratch, &config, &imageset, round * 2);
        let (most, total) = cdn_fetches(&world, &blobs);
        (pg_most, pg_total) = (pg_most.max(most), pg_total.max(total));
        eprintln!(
            "  round {round}: pullgate {:.2} s, RSS {} MiB, CDN GETs most {most} / all {total}",
            run.secs,
            run.rss_kib / 1024
        );
        pg_secs.push(run.secs);
        rss.push(run.rss_kib);
        // The same again: HEADs only.
        world.quay.reset_counters();
        let again = prefetch(&scratch, &config, &imageset, round * 2 + 1);
        assert_eq!(world.quay.cdn_gets_total(), 0, "a re-run fetched:\n{}", again.output);
        rerun_secs.push(again.secs);
        // skopeo, one image at a time, into a fresh distribution.
        world.quay.reset_counters();
        let secs = skopeo_copies(&world).await;
        let (most, total) = cdn_fetches(&world, &blobs);
        (sk_most, sk_total) = (sk_most.max(most), sk_total.max(total));
        eprintln!("  round {round}: skopeo {secs:.2} s, CDN GETs most {most} / all {total}");
        sk_secs.push(secs);
    }
    report(
        &size,
        blobs.len(),
        unique_bytes,
        (pg_secs, sk_secs, rss, rerun_secs),
        (pg_most, pg_total, sk_most, sk_total),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

type Times = (Vec<f64>, Vec<f64>, Vec<u64>, Vec<f64>);

fn report(size: &WorldSize, blobs: usize, bytes: u64, times: Times, fetches: (usize, usize, usize, usize)) {
    let (pg, sk, rss, rerun) = times;
    let (pg_most, pg_total, sk_most, sk_total) = fetches;
    let spread = |v: &[f64]| {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        format!("{min:.2}–{max:.2}")
    };
    let (pg_med, sk_med) = (median(pg.clone()), median(sk.clone()));
    let ratio = sk_med / pg_med;
    let rss_mib = rss.iter().max().copied().unwrap_or(0) / 1024;
    let mib = bytes as f64 / (1u64 << 20) as f64;
    println!(
        "\n### Warming a release: {} components, {blobs} unique blobs, {mib:.0} MiB\n",
        size.components
    );
    println!(
        "| measurement | pullgate prefetch --imageset | skopeo copy --all, one by one, into distribution | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| wall time, median of {} (s) [spread] | {pg_med:.2} [{}] | {sk_med:.2} [{}] | {ratio:.2}× |",
        pg.len(),
        spread(&pg),
        spread(&sk)
    );
    println!("| CDN GETs of one blob, most | {pg_most} | {sk_most} | |");
    println!("| CDN GETs in all ({blobs} unique blobs) | {pg_total} | {sk_total} | |");
    println!("| peak RSS (MiB) | {rss_mib} | | |");
    println!(
        "| re-run, median (s): HEADs only, 0 CDN GETs | {:.2} | | |",
        median(rerun.clone())
    );
    let targets = [
        ("at least 2x faster than skopeo one by one", ratio >= 2.0),
        ("each unique blob fetched once", pg_most == 1 && pg_total == blobs),
        ("prefetch RSS <= 128 MiB", rss_mib <= 128),
    ];
    for (what, ok) in targets {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
    }
    let doc = json!({
        "components": size.components, "unique_blobs": blobs, "unique_bytes": bytes,
        "pullgate_secs": pg, "skopeo_secs": sk, "ratio": ratio, "rerun_secs": rerun,
        "pullgate_cdn_most": pg_most, "pullgate_cdn_total": pg_total,
        "skopeo_cdn_most": sk_most, "skopeo_cdn_total": sk_total, "prefetch_rss_kib": rss,
        "targets": targets.iter().map(|(w, ok)| json!({"target": w, "pass": ok})).collect::<Vec<_>>(),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-openshift.json");
    let _ = std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap_or_default());
}
