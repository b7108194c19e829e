//! Two minutes of the soak (benches/support/soak) with a fixed seed: three replicas on Garage and
//! a single pullgate under mixed client load and overlapping injected faults, with every
//! invariant checked. The 60-minute run is `cargo bench --bench soak`.

#[path = "common/fake_upstream/mod.rs"]
mod fake_upstream;
#[path = "common/garage.rs"]
#[allow(dead_code)]
mod garage;
#[path = "common/lookaside.rs"]
#[allow(dead_code)]
mod lookaside;
#[path = "../benches/support/soak/mod.rs"]
#[allow(dead_code)]
mod soak;
#[path = "../benches/support/mod.rs"]
mod support;
#[path = "common/tls.rs"]
mod tls;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_minutes_in_the_dmz() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = soak::run(&soak::Options {
        minutes: 2.0,
        seed: 42,
        clients: 4,
    })
    .await;
    eprintln!("{}", outcome.table);
    if !outcome.held() {
        for (name, tail) in &outcome.logs {
            eprintln!("--- {name} ---\n{tail}");
        }
    }
    assert!(outcome.held(), "an invariant did not hold:\n{}", outcome.table);
}
