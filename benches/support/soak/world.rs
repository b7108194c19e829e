//! What the soak runs: Garage; a fake Red Hat (registry with tokens, CDN redirects, a
//! moving tag, a signed lookaside); three pullgate replicas with `[cluster]` on one
//! Garage bucket; one single pullgate on `files` with a small `max_size` on a small
//! tmpfs (eviction all the time, and a disk to fill) serving TLS (a certificate to
//! rotate); and the content clients pull: a hot set, a cold pool that keeps growing.

use crate::fake_upstream::{
    FakeRedHat, MT_DOCKER_CONFIG, MT_DOCKER_LAYER, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, pseudo_random,
};
use crate::garage::Garage;
use crate::support::{Proc, Scratch};
use crate::tls::TestCa;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "soak-cluster-shared-secret";
/// Every pullgate's `drain_timeout`.
pub const DRAIN: Duration = Duration::from_secs(5);
/// The single pullgate's `max_size` and its tmpfs.
pub const MAX_SIZE: u64 = 96 << 20;
pub const DISK: &str = "256m";

/// One platform of an image: its manifest and blobs (digest, bytes).
#[derive(Clone)]
pub struct Platform {
    pub digest: String,
    pub blobs: Vec<(String, usize)>,
}

/// An image: a manifest list tagged in a repository, and its platforms.
#[derive(Clone)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub list: String,
    pub platforms: Vec<Platform>,
}

/// Stores a two-platform image with layers of `sizes` (per platform) in `fake`.
pub fn seed_image(fake: &FakeRedHat, repo: &str, tag: &str, sizes: &[usize], seed: u64) -> Image {
    let mut platforms = Vec::new();
    let mut entries = Vec::new();
    for (p, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let mut blobs = Vec::new();
        let layers: Vec<(String, usize)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let bytes = pseudo_random(seed.wrapping_mul(31).wrapping_add((p * 16 + i) as u64 + 1), size);
                (fake.add_blob(bytes), size)
            })
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({"architecture": arch, "os": "linux", "config": {"Labels": {"soak": format!("{repo}:{tag}:{seed}")}}, "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>()}})).unwrap_or_default();
        let config_len = config.len();
        let config_digest = fake.add_blob(Bytes::from(config));
        blobs.push((config_digest.clone(), config_len));
        blobs.extend(layers.iter().cloned());
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG, "digest": config_digest, "size": config_len},
            "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": MT_DOCKER_LAYER, "digest": d, "size": s})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let len = bytes.len();
        let digest = fake.put_manifest(repo, None, MT_DOCKER_MANIFEST, bytes);
        entries.push(serde_json::json!({"mediaType": MT_DOCKER_MANIFEST, "digest": digest, "size": len, "platform": {"architecture": arch, "os": "linux"}}));
        platforms.push(Platform { digest, blobs });
    }
    let list = serde_json::json!({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": entries});
    let list = fake.put_manifest(
        repo,
        Some(tag),
        MT_DOCKER_LIST,
        serde_json::to_vec(&list).unwrap_or_default(),
    );
    Image {
        repo: repo.into(),
        tag: tag.into(),
        list,
        platforms,
    }
}

/// The content clients pull.
pub struct Content {
    pub hot: Vec<Image>,
    pub cold: Mutex<Vec<Image>>,
    /// The moving tag's repository, and every list digest it has pointed at.
    pub moving: Mutex<(String, Vec<Image>)>,
    serial: Mutex<u64>,
}

impl Content {
    pub fn seed(fake: &FakeRedHat, rng: &mut impl rand::Rng) -> Content {
        let hot = (0..6)
            .map(|i| {
                seed_image(
                    fake,
                    &format!("soak/hot{i}"),
                    "latest",
                    &[rng.gen_range(64 << 10..512 << 10), rng.gen_range(64 << 10..1 << 20)],
                    1000 + i,
                )
            })
            .collect();
        let content = Content {
            hot,
            cold: Mutex::new(Vec::new()),
            moving: Mutex::new(("soak/moving".into(), Vec::new())),
            serial: Mutex::new(0),
        };
        for _ in 0..24 {
            content.add_cold(fake, rng);
        }
        content.move_tag(fake);
        content
    }

    /// A new cold image (never pulled yet).
    pub fn add_cold(&self, fake: &FakeRedHat, rng: &mut impl rand::Rng) {
        let n = {
            let mut s = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            *s += 1;
            *s
        };
        let sizes = [rng.gen_range(256 << 10..3 << 20), rng.gen_range(128 << 10..2 << 20)];
        let image = seed_image(fake, &format!("soak/cold{n}"), "v1", &sizes, 100_000 + n);
        self.cold.lock().unwrap_or_else(|p| p.into_inner()).push(image);
    }

    /// Points the moving tag at a new image.
    pub fn move_tag(&self, fake: &FakeRedHat) {
        let mut moving = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        let n = moving.1.len() as u64;
        let repo = moving.0.clone();
        moving
            .1
            .push(seed_image(fake, &repo, "latest", &[32 << 10], 900_000 + n));
    }
}

/// A pullgate process of the soak.
pub struct Member {
    pub name: String,
    pub url: String,
    pub config: PathBuf,
    pub proc: Option<Proc>,
    /// When it was (re)started: its baselines are taken after a warm-up from here.
    pub started: Instant,
}

impl Member {
    pub fn start(&mut self) {
        let log = self.config.with_file_name(format!("{}.log", self.name));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullgate"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("PULLGATE_LOG", "warn,pullgate::server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            );
        self.proc = Some(Proc::spawn(&self.name, &mut cmd, true, log));
        self.started = Instant::now();
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// Whether its process exited on its own (it is still held: not taken by the nemesis).
    pub fn exited(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(Some(_))))
    }

    /// The last line it logged.
    pub fn last_log_line(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.config.with_file_name(format!("{}.log", self.name))).ok()?;
        text.lines().last().map(str::to_string)
    }

    /// Starts it again when its process is gone (killed, or it exited: a start on a
    /// full disk fails).
    pub fn revive(&mut self) -> bool {
        let exited = match self.proc.as_mut() {
            Some(p) => matches!(p.child.try_wait(), Ok(Some(_))),
            None => true,
        };
        if exited {
            if let Some(mut p) = self.proc.take() {
                p.wait();
            }
            self.start();
        }
        exited
    }

    /// SIGKILL, now.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill").args(["-KILL", &p.pid().to_string()]).status();
            p.wait();
        }
    }

    /// Takes the process out (to terminate it without holding the members' lock).
    pub fn take(&mut self) -> Option<Proc> {
        self.proc.take()
    }
}

/// SIGTERM; how long the process took to exit (`None`: it did not within the drain and
/// 5 s, and was killed).
pub fn terminate(mut p: Proc) -> Option<Duration> {
    let started = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &p.pid().to_string()]).status();
    let limit = DRAIN + Duration::from_secs(5);
    while started.elapsed() < limit {
        if matches!(p.child.try_wait(), Ok(Some(_))) {
            p.wait();
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p.stop();
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A tmpfs for the single pullgate's data, unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "the soak mounts a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Everything running, and the paths the nemesis needs.
pub struct World {
    pub fake: Arc<FakeRedHat>,
    pub garage: Mutex<Garage>,
    pub members: Mutex<Vec<Member>>,
    pub ca: TestCa,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub disk: Tmpfs,
    pub content: Content,
    /// (member, repository, platform) of every image a member has served a whole pull
    /// of: content is hot *for that member* only once it has had it (a first fetch of a
    /// hot image is a fill, and a fill may fail while the disk is full).
    pub served: Mutex<std::collections::HashSet<(usize, String, u64)>>,
    /// Held for the run: the lookaside server's files, and the temp dir (dropped last).
    _lookaside: Arc<crate::lookaside::Lookaside>,
    _scratch: Scratch,
}

/// The index of the single pullgate among the members.
pub const SINGLE: usize = 3;

impl World {
    pub async fn start(rng: &mut impl rand::Rng) -> World {
        let scratch = Scratch::new("pullgate-soak-");
        let garage = Garage::start();
        if let Some(pid) = garage.pid() {
            crate::support::kill_on_signal(pid);
        }
        let fake = Arc::new(FakeRedHat::start().await);
        let (lookaside, lookaside_url, _task) = crate::lookaside::start_lookaside().await;
        let content = Content::seed(&fake, rng);
        for image in &content.hot {
            for d in std::iter::once(&image.list).chain(image.platforms.iter().map(|p| &p.digest)) {
                let path = crate::lookaside::sig_path(&image.repo, d, 1);
                lookaside
                    .files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path, b"\x89soak signature".to_vec());
            }
        }
        let password = scratch.path().join("registry-token");
        std::fs::write(&password, crate::fake_upstream::PASSWORD).expect("password");
        let secret = scratch.path().join("cluster-secret");
        std::fs::write(&secret, SECRET).expect("secret");
        let upstream = format!(
            "[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"{}\"\nusername = \"{}\"\npassword_file = \"{}\"\nallow_redirect_hosts = [\"127.0.0.2\"]\nsigstore = \"{lookaside_url}\"\nresponse_timeout = \"5s\"\nbody_idle_timeout = \"5s\"\nconnect_timeout = \"2s\"\n",
            fake.registry_url,
            crate::fake_upstream::USERNAME,
            password.display()
        );
        let urls: Vec<String> = (0..3).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let peers = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
        let mut members = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let dir = scratch.path().join(format!("replica{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let config = dir.join("pullgate.toml");
            let cache = garage.cache_toml(&dir, "soak", "max_size = \"2GiB\"");
            std::fs::write(
                &config,
                format!(
                    "listen = \"{}\"\ndata_dir = \"{}\"\n[server]\ndrain_timeout = \"{}s\"\n{cache}\n[cluster]\nself = \"{url}\"\npeers = [{peers}]\nsecret_file = \"{}\"\npeer_timeout = \"2s\"\n{upstream}",
                    url.trim_start_matches("http://"),
                    dir.join("data").display(),
                    DRAIN.as_secs(),
                    secret.display()
                ),
            )
            .expect("config");
            members.push(Member {
                name: format!("replica{i}"),
                url: url.clone(),
                config,
                proc: None,
                started: Instant::now(),
            });
        }
        let ca = TestCa::new("soak CA");
        let (cert, key) = ca.server_cert(&["127.0.0.1"]);
        let single_dir = scratch.path().join("single");
        std::fs::create_dir_all(&single_dir).expect("dir");
        let (tls_cert, tls_key) = (single_dir.join("tls.crt"), single_dir.join("tls.key"));
        std::fs::write(&tls_cert, cert).expect("cert");
        std::fs::write(&tls_key, key).expect("key");
        let disk = Tmpfs::mount(&single_dir.join("disk"));
        let port = free_port();
        let config = single_dir.join("pullgate.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[cache]\nmax_size = \"{}MiB\"\n[server]\ndrain_timeout = \"{}s\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{upstream}",
                disk.0.join("data").display(),
                MAX_SIZE >> 20,
                DRAIN.as_secs(),
                tls_cert.display(),
                tls_key.display()
            ),
        )
        .expect("config");
        members.push(Member {
            name: "single".into(),
            url: format!("https://127.0.0.1:{port}"),
            config,
            proc: None,
            started: Instant::now(),
        });
        for m in &mut members {
            m.start();
        }
        let world = World {
            fake,
            garage: Mutex::new(garage),
            members: Mutex::new(members),
            ca,
            tls_cert,
            tls_key,
            disk,
            content,
            served: Mutex::default(),
            _lookaside: lookaside,
            _scratch: scratch,
        };
        world
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("every pullgate ready at the start");
        world
    }

    /// A client that trusts the soak's CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.ca_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(90))
            .build()
            .expect("client")
    }

    pub fn urls(&self) -> Vec<String> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| m.url.clone())
            .collect()
    }

    /// Waits until every running member answers `/readyz` 200; how long it took.
    pub async fn wait_ready(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let client = self.client();
        let urls: Vec<String> = {
            let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            members.iter().filter(|m| m.running()).map(|m| m.url.clone()).collect()
        };
        for url in urls {
            loop {
                let ok = client
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
                if ok {
                    break;
                }
                if started.elapsed() > limit {
                    return Err(format!("{url} not ready after {limit:?}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Rotates the single pullgate's certificate (a new key from the same CA) and tells
    /// it with SIGHUP.
    pub fn rotate_certificate(&self) {
        let (cert, key) = self.ca.server_cert(&["127.0.0.1"]);
        let _ = std::fs::write(&self.tls_cert, cert);
        let _ = std::fs::write(&self.tls_key, key);
        if let Some(pid) = self.members.lock().unwrap_or_else(|p| p.into_inner())[SINGLE].pid() {
            let _ = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
        }
    }
}

/// Fills the tmpfs with a ballast file (until it is full); removed by [`unfill`].
pub fn fill_disk(disk: &Path) {
    let ballast = disk.join("ballast");
    if let Ok(mut f) = std::fs::File::create(&ballast) {
        use std::io::Write as _;
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
    }
}

pub fn unfill(disk: &Path) {
    let _ = std::fs::remove_file(disk.join("ballast"));
}
