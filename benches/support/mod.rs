//! What the end-to-end benchmarks share: a temp dir and child processes that are cleaned
//! up on every exit path (also Ctrl-C), Debian tools installed when missing, `/proc`
//! readings, RSS sampling, and `wrk`'s report parsed.
#![allow(dead_code)]

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Cleanup: Drop guards for the normal and the panic path; a registry of what is alive
// for Ctrl-C, where no destructor runs.
// ---------------------------------------------------------------------------

static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills what the bench started and removes its temp dirs when the bench is told to
/// stop by SIGINT, SIGTERM or SIGHUP (a `timeout`, a closed terminal, Ctrl-C). With only
/// Ctrl-C handled, a bench stopped any other way died without running a destructor and
/// left its pullgate processes behind, running on data directories nobody would remove
/// or use. Call it inside the runtime, first thing.
pub fn cleanup_on_signals() {
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
            _ = hup.recv() => {},
        }
        eprintln!("bench: stopped by a signal; stopping everything it started");
        emergency_cleanup();
        std::process::exit(130);
    });
}

/// Has [`emergency_cleanup`] kill `pid` too: a process started elsewhere (Garage, by the
/// tests' helper), which a signal to the bench would otherwise leave behind.
#[allow(dead_code)] // used by the soak only
pub fn kill_on_signal(pid: u32) {
    lock(&PIDS).push(pid);
}

pub fn emergency_cleanup() {
    for pid in lock(&PIDS).drain(..) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    for dir in lock(&DIRS).drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The benchmark's temp dir; removed on drop (after every process in it was stopped:
/// it is created first, so it is dropped last).
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// A temp dir named `<prefix>…`.
    pub fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create temp dir");
        lock(&DIRS).push(dir.path().to_path_buf());
        Scratch { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            lock(&DIRS).retain(|d| d != dir.path());
            let _ = dir.close();
        }
    }
}

/// A child process, stopped on drop (SIGTERM and a grace period when `graceful`, then
/// SIGKILL).
pub struct Proc {
    name: String,
    pub child: Child,
    graceful: bool,
    pub log: PathBuf,
    stopped: bool,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, graceful: bool, log: PathBuf) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        lock(&PIDS).push(child.id());
        Proc {
            name: name.to_string(),
            child,
            graceful,
            log,
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself (a command that runs to completion).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
        self.stopped = true;
        let pid = self.child.id();
        lock(&PIDS).retain(|p| *p != pid);
        status
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.child.id();
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "bench: {} had already exited ({status}):\n{}",
                self.name,
                self.log_text()
            );
        }
        if std::thread::panicking() && matches!(self.child.try_wait(), Ok(None)) {
            // The bench failed: what the process said last may say why.
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("bench: {} was still running; the end of its log:\n{tail}", self.name);
        }
        if self.graceful && matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&PIDS).retain(|p| *p != pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Tools, ports, small helpers
// ---------------------------------------------------------------------------

/// Installs a Debian package with apt-get when `path` is missing (the bench runs as root,
/// like the test suite). Services the package would start are held back by a temporary
/// policy-rc.d when the machine has none, so nothing binds a fixed port.
pub fn ensure_installed(path: &str, package: &str) {
    if Path::new(path).exists() {
        return;
    }
    eprintln!(
        "bench: {path} is missing: installing Debian's `{package}` with apt-get (needs root and the Debian mirror) …"
    );
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt;
        fs::write(
            policy,
            "#!/bin/sh\n# written by a pullgate bench for one apt-get run\nexit 101\n",
        )
        .expect("write a temporary /usr/sbin/policy-rc.d");
        let _ = fs::set_permissions(policy, fs::Permissions::from_mode(0o755));
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ok = apt(&["update"]) && apt(&["install", "-y", "--no-install-recommends", package]);
    if own_policy {
        let _ = fs::remove_file(policy);
    }
    assert!(
        ok && Path::new(path).exists(),
        "bench: `apt-get install -y {package}` failed; install it by hand and run the bench again"
    );
    eprintln!("bench: installed {package}");
}

/// A port on `ip` that was free a moment ago (bind :0, read, release).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind :0")
        .port()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Seconds of CPU (user + system) a `/proc/.../stat` file says were used: utime and stime
/// are its fields 14 and 15, 12 and 13 after the command name (in clock ticks of 1/100 s).
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = fs::read_to_string(path).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Seconds of CPU process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// Seconds of CPU the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

pub fn count_lines(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Peak VmRSS of some processes, sampled every 10 ms on its own thread.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u64>>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (i, pid) in pids.iter().enumerate() {
                    peaks[i] = peaks[i].max(status_kib(*pid, "VmRSS:"));
                }
                if s.load(Relaxed) {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Peak RSS in KiB, per pid in the order given.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

#[derive(Clone, Copy, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadResult {
    pub fn json(&self) -> Value {
        json!({"requests": self.requests, "errors": self.errors, "rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms})
    }
}

/// Reads wrk's `--latency` report: the percentile lines, `N requests in`, `Requests/sec`,
/// `Non-2xx or 3xx responses` and `Socket errors`.
pub fn parse_wrk(text: &str) -> Option<LoadResult> {
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let mut r = LoadResult::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = ms(v)?,
            ["99%", v] => r.p99_ms = ms(v)?,
            [n, "requests", "in", ..] => r.requests = n.parse().ok()?,
            ["Requests/sec:", v] => r.rps = v.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (r.requests > 0 && r.rps > 0.0 && r.p99_ms > 0.0).then_some(r)
}

/// Writes `ROOT/NAME/pullgate.toml`: one pullgate on its own data directory in front of
/// a fake Red Hat's registry (CDN at 127.0.0.2), with `extra` appended after the
/// upstream's keys (more upstream keys, or further tables). Returns the directory and file.
pub fn write_proxy_config(
    root: &Path,
    name: &str,
    registry_url: &str,
    (username, password_file): (&str, &Path),
    extra: &str,
) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join("pullgate.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[cache]\ntag_ttl = \"1h\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{registry_url}\"\nusername = \"{username}\"\npassword_file = \"{}\"\nallow_redirect_hosts = [\"127.0.0.2\"]\n{extra}\n",
        dir.join("data").display(),
        password_file.display()
    );
    fs::write(&path, text).expect("config");
    (dir, path)
}
/// Starts `pullgate serve --config CONFIG` (this package's binary) with its log in
/// `dir/NAME.log`; returns it and its `http://` URL once it printed where it listens.
pub fn serve_pullgate(name: &str, dir: &Path, config: &Path) -> (Proc, String) {
    use std::io::{BufRead as _, BufReader, Write as _};
    let log_path = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullgate"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("PULLGATE_LOG", "warn,pullgate::server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(name, &mut cmd, true, log_path.clone());
    let stderr = proc.child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = fs::File::create(&log_path).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let addr = line[i + 20..].split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not start:\n{}", proc.log_text()));
    (proc, format!("http://{addr}"))
}

/// `wrk` GETs of `url` with `headers`, on `conns` connections for `secs` seconds; panics
/// on a non-2xx answer.
pub fn wrk_get(url: &str, conns: u64, secs: u64, headers: &[&str]) -> LoadResult {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "--latency", "-c", &conns.to_string(), "-d", &format!("{secs}s")]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let r = parse_wrk(&text).unwrap_or_else(|| panic!("wrk's output:\n{text}"));
    assert_eq!(r.errors, 0, "non-2xx answers:\n{text}");
    r
}
