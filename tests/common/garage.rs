//! A real Garage (the S3-compatible distributed object store, from crates.io) for the
//! tests: `garage server --single-node --default-bucket` with its own config in a temp
//! dir, on free loopback ports, with a key and a bucket from the environment; stopped on
//! drop. Restartable on the same ports and data (an outage in the middle of a test).
//! `tests/run.sh` installs `garage` when it is missing; a test that needs it fails loudly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "GKpullgatetests0001";
pub const SECRET_KEY: &str = "pullgate-tests-secret-key-0123456789abcdef";
pub const BUCKET: &str = "pullgate";
/// A second key with read access, for an observer (the benchmark) whose requests must
/// not count as the proxies' ([`Garage::requests_under`] counts only [`ACCESS_KEY`]'s).
pub const OBSERVER_KEY: &str = "GKpullgateobserver01";
pub const OBSERVER_SECRET: &str = "pullgate-observer-secret-0123456789abcdef";

pub struct Garage {
    child: Option<Child>,
    dir: TempDir,
    pub endpoint: String,
    s3_port: u16,
    nice: Option<u8>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind :0")
        .port()
}

/// The `garage` binary: on PATH, or in cargo's bin directory.
pub fn garage_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("garage"))
        .find(|p| p.is_file());
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin/garage"))
        .filter(|p| p.is_file());
    on_path.or(cargo_bin).unwrap_or_else(|| {
        panic!("this test needs Garage: `cargo install garage --locked --no-default-features --features bundled-libs,sqlite` (tests/run.sh does it)")
    })
}

impl Garage {
    pub fn start() -> Garage {
        Garage::start_with(None)
    }

    /// Garage at `nice` priority `n`: a benchmark on one machine lets the processes it
    /// measures have the CPU first, as with a store on machines of its own.
    pub fn start_niced(n: u8) -> Garage {
        Garage::start_with(Some(n))
    }

    fn start_with(nice: Option<u8>) -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\ncompression_level = \"none\"\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = "0f".repeat(32),
        );
        std::fs::write(dir.path().join("garage.toml"), config).expect("write garage.toml");
        let mut garage = Garage {
            child: None,
            dir,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            s3_port,
            nice,
        };
        garage.resume();
        garage
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// Starts Garage (again) on the same ports and data, and waits until the bucket
    /// takes an object.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("garage.log")).expect("garage log");
        // At a lower priority, with `nice`, when asked (see `start_niced`).
        let mut cmd = match self.nice {
            Some(n) => {
                let mut c = Command::new("nice");
                c.args(["-n", &n.to_string()]).arg(garage_bin());
                c
            }
            None => Command::new(garage_bin()),
        };
        let child = cmd
            .arg("-c")
            .arg(self.config_path())
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            // One line per S3 request (`<peer> <METHOD> <uri>`): the benchmark counts them.
            .env("RUST_LOG", "garage=warn,garage_api_common::generic_server=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        self.wait_ready();
    }

    /// On a thread of its own: tests call this from inside their tokio runtime.
    fn wait_ready(&self) {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.wait_ready_blocking())
                .join()
                .expect("readiness probe")
        })
    }

    fn wait_ready_blocking(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        pullgate::upstream::install_crypto_provider();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(BUCKET)
            .with_region("garage")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .build()
            .expect("S3 client");
        loop {
            let probe = object_store::path::Path::from("readiness");
            let ok = runtime.block_on(async {
                use object_store::ObjectStoreExt as _;
                store.put(&probe, object_store::PutPayload::from_static(b"ok")).await
            });
            if ok.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Garage did not take an object within 60 s: {ok:?}\n{}",
                std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops Garage (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Garage's process id while it runs (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.s3_port
    }

    /// Garage's log: one line per S3 request, `<peer> <METHOD> /<bucket>/<key>?<query>`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// Creates [`OBSERVER_KEY`] with read access to the bucket (`garage key import`).
    pub fn add_observer_key(&self) {
        let garage = |args: &[&str]| {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(self.config_path())
                .args(args)
                .output()
                .expect("run garage");
            assert!(
                out.status.success(),
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        garage(&[
            "key",
            "import",
            "--yes",
            "-n",
            "observer",
            OBSERVER_KEY,
            OBSERVER_SECRET,
        ]);
        garage(&["bucket", "allow", "--read", BUCKET, "--key", OBSERVER_KEY]);
    }

    /// S3 requests made with [`ACCESS_KEY`] in the log so far that concern keys under
    /// `prefix` (by path, or by a listing's `prefix=` parameter), counted by operation: `CreateMultipartUpload`,
    /// `UploadPart`, `CompleteMultipartUpload`, `AbortMultipartUpload`, `PutObject` (also
    /// copies: the log does not show the copy header), `GetObject`, `HeadObject`,
    /// `DeleteObject`, `ListObjects`.
    pub fn requests_under(&self, prefix: &str) -> std::collections::BTreeMap<&'static str, u64> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let in_path = format!("/{BUCKET}/{prefix}/");
        let in_query = format!("prefix={prefix}");
        let mut counts = std::collections::BTreeMap::new();
        let by_key = format!("(key {ACCESS_KEY})");
        // An error answer is logged again as "error … in response to <request>": one
        // request, counted once.
        let requests = log
            .lines()
            .filter(|l| l.contains(&by_key) && !l.contains(" in response to "));
        for line in requests {
            let Some(request) = ["GET", "HEAD", "PUT", "POST", "DELETE"]
                .iter()
                .find_map(|m| line.find(&format!(" {m} /")).map(|i| &line[i + 1..]))
            else {
                continue;
            };
            let (method, uri) = request.split_once(' ').unwrap_or((request, ""));
            let uri = uri.split_whitespace().next().unwrap_or("");
            if !uri.starts_with(&in_path) && !uri.contains(&in_query) {
                continue;
            }
            let query = uri.split_once('?').map_or("", |(_, q)| q);
            let has = |k: &str| query.split('&').any(|p| p == k || p.starts_with(&format!("{k}=")));
            let op = match method {
                "POST" if has("uploads") => "CreateMultipartUpload",
                "POST" if has("uploadId") => "CompleteMultipartUpload",
                "PUT" if has("partNumber") => "UploadPart",
                "PUT" => "PutObject",
                "DELETE" if has("uploadId") => "AbortMultipartUpload",
                "DELETE" => "DeleteObject",
                "HEAD" => "HeadObject",
                "GET" if !uri.starts_with(&in_path) || has("list-type") => "ListObjects",
                "GET" => "GetObject",
                _ => "other",
            };
            *counts.entry(op).or_default() += 1;
        }
        counts
    }

    /// The `[cache]` table for a pullgate using this Garage's bucket under `prefix`;
    /// the key files go into `dir`.
    pub fn cache_toml(&self, dir: &Path, prefix: &str, extra: &str) -> String {
        let (id, secret) = (dir.join("s3-access-key"), dir.join("s3-secret-key"));
        std::fs::write(&id, ACCESS_KEY).expect("key file");
        std::fs::write(&secret, SECRET_KEY).expect("secret file");
        format!(
            "[cache]\nblob_store = \"s3\"\n{extra}\n[cache.s3]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nregion = \"garage\"\nprefix = \"{prefix}\"\nallow_http = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
            self.endpoint,
            id.display(),
            secret.display()
        )
    }

    /// The store settings for a cache in a test process.
    pub fn settings(&self, prefix: &str) -> pullgate::cache::s3::S3Settings {
        pullgate::cache::s3::S3Settings {
            endpoint: Some(self.endpoint.clone()),
            bucket: BUCKET.into(),
            region: "garage".into(),
            prefix: prefix.into(),
            credentials: Some((
                pullgate::secret::Secret::new(ACCESS_KEY),
                pullgate::secret::Secret::new(SECRET_KEY),
            )),
            allow_http: true,
            ca_pem: None,
            part_size: 5 << 20,
            fleet: Default::default(),
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which requests the fault-injecting front refuses.
#[derive(Clone, Copy)]
pub enum Refuse {
    /// Every `n`th request carrying a body (PUT, POST).
    EveryNthWrite(usize),
    /// Every `CompleteMultipartUpload` (POST with `uploadId`).
    Completions,
}

/// Fault injection in front of Garage: an HTTP forwarder that answers the requests
/// `Refuse` names with S3's `503 SlowDown` instead of passing them on.
/// The client signs for the forwarder's host, which is passed on unchanged, so Garage
/// checks the same signature. Bodies are buffered (test-sized objects only).
pub struct SlowDownFront {
    pub endpoint: String,
    /// Requests answered with 503 SlowDown so far.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowDownFront {
    pub async fn start(garage_endpoint: &str, refuse: Refuse) -> SlowDownFront {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind :0");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let (target, client) = (garage_endpoint.to_string(), reqwest::Client::new());
        let counter = refused.clone();
        let forward = move |req: Request| {
            let (target, client, seen, refused) = (target.clone(), client.clone(), seen.clone(), counter.clone());
            async move {
                let (parts, body) = req.into_parts();
                let with_body = matches!(parts.method, http::Method::PUT | http::Method::POST);
                let refuse_this = match refuse {
                    Refuse::EveryNthWrite(nth) => with_body && seen.fetch_add(1, SeqCst) % nth == 0,
                    Refuse::Completions => {
                        parts.method == http::Method::POST && parts.uri.query().is_some_and(|q| q.contains("uploadId="))
                    }
                };
                if refuse_this {
                    refused.fetch_add(1, SeqCst);
                    return Response::builder()
                        .status(503)
                        .header("content-type", "application/xml")
                        .body(Body::from(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                        ))
                        .unwrap();
                }
                let body = axum::body::to_bytes(body, usize::MAX).await.expect("request body");
                let url = format!(
                    "{target}{}",
                    parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                );
                let mut headers = parts.headers.clone();
                headers.remove(http::header::CONNECTION);
                let answer = client
                    .request(parts.method, url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .expect("Garage answers");
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if name != http::header::TRANSFER_ENCODING && name != http::header::CONNECTION {
                        response = response.header(name, value);
                    }
                }
                response
                    .body(Body::from(answer.bytes().await.expect("Garage's body")))
                    .unwrap()
            }
        };
        let app = axum::Router::new().fallback(forward);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlowDownFront {
            endpoint,
            refused,
            task,
        }
    }
}

impl Drop for SlowDownFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
