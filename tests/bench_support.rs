//! The benches' process handling (benches/support), which once left a pullgate behind:
//! `Proc::stop` ends a pullgate whose data directory is gone, and a bench told to stop
//! by SIGTERM (not only Ctrl-C) takes the processes it started with it.

#[path = "../benches/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a process that still runs counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn stop_ends_a_pullgate_whose_data_directory_is_gone() {
    let scratch = support::Scratch::new("pullgate-test-stray-");
    let data = scratch.path().join("data");
    let config = scratch.path().join("pullgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[cache]\nblob_store = \"sled\"\n[server]\ndrain_timeout = \"2s\"\n[[upstream]]\nname = \"up\"\nurl = \"http://127.0.0.1:1\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log = scratch.path().join("pullgate.log");
    let mut proc = support::Proc::spawn(
        "pullgate",
        Command::new(env!("CARGO_BIN_EXE_pullgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
        true,
        log.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(Instant::now() < deadline, "pullgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = proc.pid();
    std::fs::remove_dir_all(&data).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    proc.stop();
    assert!(!alive(pid), "pullgate {pid} outlived Proc::stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} (the SIGKILL fallback should not be needed)",
        started.elapsed()
    );
}

/// Acts as a bench: handles signals as the benches do, starts a child and waits. Run
/// by the next test in a process of its own.
#[test]
#[ignore = "a helper process for sigterm_takes_the_benchs_processes_with_it"]
fn helper_a_bench_that_started_a_child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        support::cleanup_on_signals();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let proc = support::Proc::spawn("sleep", &mut cmd, false, "/dev/null".into());
        println!("child-pid {}", proc.pid());
        std::future::pending::<()>().await;
    });
}

#[test]
fn sigterm_takes_the_benchs_processes_with_it() {
    let mut bench = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_a_bench_that_started_a_child",
            "--nocapture",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead as _;
    let stdout = std::io::BufReader::new(bench.stdout.take().unwrap());
    let child: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("child-pid ").and_then(|p| p.trim().parse().ok()))
        .expect("the helper names its child");
    assert!(alive(child));
    Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .unwrap();
    let status = bench.wait().unwrap();
    assert!(!status.success(), "the bench exits on SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) {
        assert!(Instant::now() < deadline, "the bench's child {child} outlived it");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// benches/ab.sh's verdicts: spreads apart name the higher side (and whether higher is
/// better for that path); spreads that touch are noise; ratios to the peers are taken
/// run by run.
#[test]
fn ab_summary_names_a_difference_only_when_the_spreads_are_apart() {
    let scratch = support::Scratch::new("pullgate-test-ab-");
    let run = |pg_cold8: f64, pg_warm1: f64, p99: f64, dist_warm1: f64| {
        serde_json::json!({"results": {
            "pullgate_files": {
                "cold_8": {"gbps": pg_cold8, "cdn_fetches": 1},
                "warm_1_gbps_median": pg_warm1,
                "manifest_digest": {"rps": 60000.0, "p99_ms": p99},
            },
            "distribution": {"warm_1_gbps_median": dist_warm1},
        }})
    };
    let runs = [
        ("A-1", run(2.6, 2.0, 2.0, 1.0)),
        ("A-2", run(2.8, 3.0, 2.2, 2.0)),
        ("B-1", run(1.9, 2.5, 3.0, 1.0)),
        ("B-2", run(2.1, 2.9, 3.5, 1.0)),
    ];
    for (name, doc) in runs {
        std::fs::write(scratch.path().join(format!("{name}.json")), doc.to_string()).unwrap();
    }
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ab_summary.py"))
        .arg(scratch.path())
        .args(["2", "base", "change"])
        .output()
        .expect("python3 runs benches/ab_summary.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{text}"))
            .to_string()
    };
    assert!(row("cold GET, 8 clients (GB/s)").ends_with("| 1.35× | A higher (better) |"));
    assert!(row("warm GET, 1 client (GB/s)").ends_with("| no difference the noise can show |"));
    assert!(row("manifest by digest, p99 (ms)").ends_with("| B higher (A better) |"));
    assert!(row("cold GET, 1 client (GB/s)").ends_with("| not measured by both |"));
    // A's warm ratios to distribution per run: 2.0/1.0 and 3.0/2.0.
    assert!(
        row("warm GET, 1 client / distribution")
            .starts_with("| warm GET, 1 client / distribution | 2.00 1.50 | 1.75× |")
    );
    assert!(text.contains("A's CDN fetches for 8 cold clients, per run: 1 1"));
}
