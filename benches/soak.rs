//! The soak, outside the test suite: `cargo bench --bench soak -- --minutes 60 --seed 7`
//! (the suite runs two minutes with a fixed seed: tests/soak.rs). What runs and what is
//! checked: benches/support/soak/mod.rs. Prints the table, writes `target/bench-soak.json`, and
//! exits 1 when an invariant did not hold. Needs root (it mounts a tmpfs) and Garage.

#[path = "../tests/common/fake_upstream/mod.rs"]
mod fake_upstream;
#[path = "../tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "../tests/common/lookaside.rs"]
#[allow(dead_code)]
mod lookaside;
#[path = "support/soak/mod.rs"]
mod soak;
mod support;
#[path = "../tests/common/tls.rs"]
mod tls;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = soak::Options {
        minutes: arg("--minutes", "60").parse().unwrap_or(60.0),
        seed: arg("--seed", "7").parse().unwrap_or(7),
        clients: arg("--clients", "6").parse().unwrap_or(6),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(async {
        support::cleanup_on_signals();
        soak::run(&options).await
    });
    println!("{}", outcome.table);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-soak.json");
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&outcome.json).unwrap_or_default());
    println!("wrote {}", out.display());
    if !outcome.held() {
        std::process::exit(1);
    }
}
