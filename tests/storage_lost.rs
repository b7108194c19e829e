//! The data directory vanishing or turning read-only under a running pullgate (the
//! stray process a bench left behind): `/readyz` fails, one ERROR line names the path,
//! fills fail cleanly, no thread spins, and SIGTERM still stops the process within
//! `drain_timeout`.

mod common;

use common::ServeProcess;
use common::fake_upstream::FakeRedHat;
use std::path::Path;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn write_config(dir: &Path, data_dir: &Path, upstream: &str, store: &str) -> std::path::PathBuf {
    let text = common::config_toml(
        dir,
        upstream,
        &format!("[cache]\nblob_store = \"{store}\"\n[server]\ndrain_timeout = \"3s\""),
        "",
    )
    .replace(
        &format!("data_dir = \"{}\"", dir.join("data").display()),
        &format!("data_dir = \"{}\"", data_dir.display()),
    );
    let path = dir.join("pullgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Breaks the storage with `break_it`, then checks everything the module header says.
async fn storage_goes(store: &str, data_dir: &Path, dir: &Path, break_it: impl FnOnce()) {
    let fake = FakeRedHat::start().await;
    let cached = fake.add_image("ubi9/ubi", "latest", &[200_000]);
    let later = fake.add_image("ubi9/later", "latest", &[200_000]);
    let config = write_config(dir, data_dir, &fake.registry_url, store);
    let server = ServeProcess::start(&config, &[]);
    let client = common::client();
    let url = |p: &str| format!("{}{p}", server.url());
    let blob = |repo: &str, d: &str| url(&format!("/v2/registry.redhat.io/{repo}/blobs/{d}"));
    let r = client
        .get(blob("ubi9/ubi", &cached.layer_digests[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_eq!(client.get(url("/readyz")).send().await.unwrap().status(), 200);

    break_it();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = client.get(url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz still answers {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains(&data_dir.display().to_string()), "{body}");

    // A fill fails, and fails fast.
    let started = Instant::now();
    let r = client
        .get(blob("ubi9/later", &later.layer_digests[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Nothing spins: a few seconds with housekeeping and probes cost little CPU.
    let pid = server.child.id();
    let before = cpu_seconds(pid);
    for _ in 0..10 {
        let _ = client.get(url("/readyz")).send().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.5, "{used:.2} CPU seconds in 3 s: something spins");

    // SIGTERM ends it within drain_timeout (3 s) and a margin.
    let started = Instant::now();
    let (_, log) = server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped after {:?}",
        started.elapsed()
    );
    let errors: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("data directory is gone or not writable"))
        .collect();
    assert_eq!(errors.len(), 1, "one ERROR line: {log:#?}");
    assert!(errors[0].contains(&data_dir.display().to_string()), "{}", errors[0]);
}

/// `rm -rf DIR` while pullgate still writes into it: a file it creates between the walk
/// and the last `rmdir` fails that `rmdir` with ENOTEMPTY, so walk again, as an operator
/// would, until the directory is gone.
fn remove_while_written(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("removing {}: {e}", dir.display()),
        }
    }
    panic!("{} was still not empty after 100 removals", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_data_directory_with_the_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    storage_goes("sled", &data.clone(), dir.path(), || remove_while_written(&data)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_data_directory_with_the_files_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    storage_goes("files", &data.clone(), dir.path(), || remove_while_written(&data)).await;
}

/// A read-only bind mount over a directory, unmounted on drop.
struct ReadOnlyOver(std::path::PathBuf);

impl ReadOnlyOver {
    fn mount(dir: &Path) -> ReadOnlyOver {
        for args in [vec!["--bind"], vec!["-o", "remount,bind,ro"]] {
            let out = std::process::Command::new("mount")
                .args(&args)
                .arg(dir)
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "this test bind-mounts (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnlyOver(dir.to_path_buf())
    }
}

impl Drop for ReadOnlyOver {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_turns_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ro = std::sync::Arc::new(std::sync::Mutex::new(None));
    let hold = ro.clone();
    let target = data.clone();
    storage_goes("files", &data, dir.path(), move || {
        *hold.lock().unwrap() = Some(ReadOnlyOver::mount(&target));
    })
    .await;
    drop(ro);
}

/// A full disk under a running pullgate: readiness fails with one WARN (not one per
/// probe: load balancers probe every few seconds), comes back by itself with one INFO,
/// a stop on a full disk still ends the process, and a start on a full disk (sled writes
/// as it opens) fails at once with an error that says what to do, for systemd's
/// `Restart=on-failure` to try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_logged_once_and_a_start_on_it_fails_clearly() {
    let disk = common::SmallDisk::mount("48m");
    let dir = tempfile::tempdir().unwrap();
    let data = disk.0.join("data");
    let fake = FakeRedHat::start().await;
    let config = write_config(dir.path(), &data, &fake.registry_url, "files");
    let server = ServeProcess::start(&config, &[]);
    let client = common::client();
    let base = server.url();
    let ready = || common::readyz(&client, &base);
    assert_eq!(ready().await, 200);
    let filler = disk.0.join("filler");
    let fill = || {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}", filler.display()))
            .output();
    };
    fill();
    for _ in 0..5 {
        assert_eq!(ready().await, 503);
    }
    std::fs::remove_file(&filler).unwrap();
    common::eventually("ready once there is room", Duration::from_secs(10), async || {
        ready().await == 200
    })
    .await;
    fill();
    assert_eq!(ready().await, 503);
    let (_, log) = server.stop();
    let count = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("WARN pullgate::proxy: not ready"),
        2,
        "one WARN per time readiness was lost: {log:#?}"
    );
    assert_eq!(count("ready again"), 1, "{log:#?}");

    let out = common::pullgate(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "a start on a full disk fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the disk of {} is full", data.display())) && stderr.contains("free space"),
        "{stderr}"
    );
}

/// The soak's finding: a disk filled to the last byte while requests write to the
/// database. sled's log gets ENOSPC, and sled 0.34 keeps that error for the life of the
/// handle: every later write fails even once there is room. While the disk is full, hits
/// go on and a tag that moved is served verified without being kept; once there is room,
/// the process says why in one ERROR line and exits with a failure, for the service
/// manager to start it again; started again, it serves and fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_under_writes_serves_hits_then_restarts_to_reopen_its_database() {
    let disk = common::SmallDisk::mount("32m");
    let dir = tempfile::tempdir().unwrap();
    let data = disk.0.join("data");
    let fake = FakeRedHat::start().await;
    let hot = fake.add_image("ubi9/ubi", "latest", &[300_000]);
    let config = write_config(dir.path(), &data, &fake.registry_url, "files");
    // Tags revalidate on every request: each one asks the database to write.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[cache]\n", "[cache]\ntag_ttl = \"0s\"\n");
    std::fs::write(&config, text).unwrap();
    let server = ServeProcess::start(&config, &[]);
    let client = common::client();
    let base = server.url();
    let url = |p: &str| format!("{base}/v2/registry.redhat.io/ubi9/{p}");
    let get = async |p: String| client.get(p).send().await.unwrap();
    let tag_digest = async || {
        let r = get(url("ubi/manifests/latest")).await;
        let digest = r
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), digest)
    };
    assert_eq!(tag_digest().await, (200, Some(hot.manifest_digest.clone())));
    let r = get(url(&format!("ubi/blobs/{}", hot.layer_digests[0]))).await;
    assert_eq!(r.bytes().await.unwrap(), hot.layers[0]);

    // The disk fills to its last page while the cache is asked to write: a cold fill, a
    // tag that moves each time, and hits.
    let filler = disk.fill_up();
    let cold = fake.add_image("ubi9/cold", "latest", &[400_000]);
    let mut moved = hot.clone();
    for i in 0..8 {
        moved = fake.add_image("ubi9/ubi", "latest", &[1_000]);
        assert_eq!(
            tag_digest().await,
            (200, Some(moved.manifest_digest.clone())),
            "a moved tag is served verified though it cannot be kept"
        );
        // A fill started before the full disk was seen fails (its 200 has gone out);
        // from then on the blob is served through.
        let r = get(url(&format!("cold/blobs/{}", cold.layer_digests[0]))).await;
        let ok = r.status() == 200 && r.bytes().await.is_ok_and(|b| b == cold.layers[0]);
        assert!(ok || i == 0, "a miss on a full disk is served through ({i})");
        let r = get(url(&format!("ubi/blobs/{}", hot.layer_digests[0]))).await;
        assert_eq!(r.status(), 200, "hits go on while the disk is full");
        assert_eq!(r.bytes().await.unwrap(), hot.layers[0]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    std::fs::remove_file(&filler).unwrap();
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pullgate did not stop to reopen its database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exits with a failure, for Restart=on-failure");
    tokio::time::sleep(Duration::from_millis(100)).await; // the reader drains stderr
    let log = server.log.lock().unwrap().clone();
    let errors: Vec<&String> = log.iter().filter(|l| l.contains("stopped taking writes")).collect();
    assert!(
        errors.iter().any(|l| l.contains("ERROR")),
        "one ERROR line says why: {log:#?}"
    );

    let server = ServeProcess::start(&config, &[]);
    let base = server.url();
    let url = |p: &str| format!("{base}/v2/registry.redhat.io/ubi9/{p}");
    assert_eq!(common::readyz(&client, &base).await, 200);
    let r = client.get(url("ubi/manifests/latest")).send().await.unwrap();
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        moved.manifest_digest
    );
    let r = client
        .get(url(&format!("cold/blobs/{}", cold.layer_digests[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), cold.layers[0]);
    let r = client
        .get(url(&format!("ubi/blobs/{}", hot.layer_digests[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), hot.layers[0]);
    let (status, _) = server.stop();
    assert!(status.success());
}

/// The soak's finding: a blob the single pullgate had evicted was a fill while its disk
/// was full, and its body was cut on both attempts. While the disk is full, a miss is
/// served through: streamed from upstream, verified, and not kept (one upstream fetch
/// per request); a `Range` of it too; a broken body resumes; bad bytes never complete.
/// Once there is room, the blob is filled and kept again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_a_full_disk_is_served_through_verified_and_not_kept() {
    use std::sync::atomic::Ordering::SeqCst;
    let disk = common::SmallDisk::mount("32m");
    let dir = tempfile::tempdir().unwrap();
    let data = disk.0.join("data");
    let fake = FakeRedHat::start().await;
    let image = fake.add_image("ubi9/ubi", "latest", &[3_000_000, 500_000]);
    let config = write_config(dir.path(), &data, &fake.registry_url, "files");
    let server = ServeProcess::start(&config, &[]);
    let client = common::client();
    let base = server.url();
    let blob = |d: &str| format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{d}");
    let ballast = disk.fill_up();
    common::eventually("not ready on a full disk", Duration::from_secs(10), async || {
        common::readyz(&client, &base).await == 503
    })
    .await;

    let (big, small) = (&image.layer_digests[0], &image.layer_digests[1]);
    for n in 1..=2 {
        let r = client.get(blob(big)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), image.layers[0]);
        assert_eq!(fake.cdn_gets(big), n, "served through: fetched again, never kept");
    }
    let r = client
        .get(blob(big))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), image.layers[0].slice(1000..2000));
    // A body that breaks is resumed with Range.
    fake.cut_times.store(1, SeqCst);
    fake.cut_after.store(1_000_000, SeqCst);
    let r = client.get(blob(big)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), image.layers[0]);
    assert!(
        fake.cdn_ranges().iter().any(|r| r.starts_with("bytes=1000000-")),
        "resumed: {:?}",
        fake.cdn_ranges()
    );
    // Bad bytes never complete a response.
    fake.wrong_bytes.store(true, SeqCst);
    let r = client.get(blob(small)).send().await.unwrap();
    assert!(
        r.status() != 200 || r.bytes().await.is_err(),
        "a blob that does not verify is never completed"
    );
    fake.wrong_bytes.store(false, SeqCst);
    let metrics = common::metrics_text(&base).await;
    let outcome = |o: &str| common::metric_in(&metrics, "pullgate_fills_total", &[&format!("outcome=\"{o}\"")]);
    assert_eq!(outcome("served_through"), Some(4.0), "{metrics}");
    assert_eq!(outcome("verification_failed"), Some(1.0), "{metrics}");

    std::fs::remove_file(&ballast).unwrap();
    // Ready once there is room; or, when a database write landed while the disk was
    // full (sled keeps that error), stopped for the service manager to start it again
    // (tests/storage_lost.rs `a_disk_filled_under_writes_...`): started, it is ready.
    let full_lines = |log: &[String]| {
        log.iter()
            .filter(|l| l.contains("ERROR") && l.contains("the cache's disk is full"))
            .count()
    };
    let mut server = server;
    let mut checked_first_log = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while common::readyz(&client, &server.url()).await != 200 {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(!status.success(), "a stop to reopen the database is a failure exit");
            let (_, log) = std::mem::replace(&mut server, ServeProcess::start(&config, &[])).stop();
            assert_eq!(full_lines(&log), 1, "one ERROR line: {log:#?}");
            checked_first_log = true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ready once there is room (or started again)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = server.url();
    let blob = |d: &str| format!("{base}/v2/registry.redhat.io/ubi9/ubi/blobs/{d}");
    let before = fake.cdn_gets(big);
    for _ in 0..2 {
        let r = client.get(blob(big)).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap(), image.layers[0]);
    }
    assert_eq!(fake.cdn_gets(big), before + 1, "with room, filled once and kept");
    let (status, log) = server.stop();
    assert!(status.success(), "{log:#?}");
    if !checked_first_log {
        assert_eq!(full_lines(&log), 1, "one ERROR line: {log:#?}");
    }
}
