//! The blob and manifest clients of `cargo bench --bench e2e` and what they measure:
//! minimal blocking HTTP/1.1 (or TLS) readers, cold and warm GETs with RSS and CPU
//! sampling, and `wrk` for the manifest load. Split from e2e.rs to keep each file short.

use super::*;

/// One client = one kept-alive connection; never follows redirects (a proxy that answered
/// with one would fail the status check instead of being measured as the CDN).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build reqwest client")
}

/// How long a blob client waits for the next bytes before it calls the target stuck.
pub(crate) const STALLED_TARGET: Duration = Duration::from_secs(60);

/// A blob client as cheap as a client can be, so the servers rather than the client are
/// what is measured: one kept-alive HTTP/1.1 connection, blocking reads into a 1 MiB
/// buffer, bytes counted and the length checked against `Content-Length` (every server
/// here sends one; a response without it fails loudly). The same client for every target;
/// `https://` URLs speak TLS (rustls) trusting what [`trust_for_blob_clients`] was given.
pub(crate) struct BlobClient {
    host: String,
    tls: bool,
    stream: Option<Box<dyn Connection>>,
    buf: Vec<u8>,
}

pub(crate) trait Connection: std::io::Read + Write + Send {}
impl<T: std::io::Read + Write + Send> Connection for T {}

/// The TLS client configuration of the blob clients (phase `tls`).
static BLOB_CLIENT_TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Blob clients on `https://` URLs trust the CA `ca_pem`.
pub(crate) fn trust_for_blob_clients(ca_pem: &str) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = BLOB_CLIENT_TLS.set(Arc::new(config));
}

/// The TLS version and cipher suite a blob client agrees with the server of `url`
/// (phase `tls` reports them: two servers' CPU per GB compare only on the same suite).
pub(crate) fn negotiated_tls(url: &str) -> String {
    let host = BlobClient::new(url).host;
    let mut tcp = std::net::TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    let config = BLOB_CLIENT_TLS.get().expect("trust_for_blob_clients first").clone();
    let ip = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(ip.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("TLS client");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .unwrap_or_else(|e| panic!("TLS handshake with {host}: {e}"));
    }
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    format!(
        "{:?} {:?}",
        conn.protocol_version().expect("version"),
        suite.expect("suite")
    )
}

impl BlobClient {
    pub(crate) fn new(url: &str) -> BlobClient {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, Some(rest)),
            None => (false, url.strip_prefix("http://")),
        };
        let host = rest
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("bench URLs are http(s)://host:port/...: {url}"))
            .to_string();
        BlobClient {
            host,
            tls,
            stream: None,
            buf: vec![0; MIB as usize],
        }
    }

    pub(crate) fn connect(&mut self) -> &mut Box<dyn Connection> {
        if self.stream.is_none() {
            let s = std::net::TcpStream::connect(&self.host).unwrap_or_else(|e| panic!("connect {}: {e}", self.host));
            s.set_nodelay(true).expect("TCP_NODELAY");
            // A target that stops sending fails the run loudly (the read errors out)
            // instead of holding the bench, and an A/B run, for ever.
            s.set_read_timeout(Some(STALLED_TARGET)).expect("SO_RCVTIMEO");
            let stream: Box<dyn Connection> = if self.tls {
                let config = BLOB_CLIENT_TLS.get().expect("trust_for_blob_clients first").clone();
                let ip = self.host.rsplit_once(':').map_or(self.host.as_str(), |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(ip.to_string()).expect("server name");
                let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
                Box::new(rustls::StreamOwned::new(conn, s))
            } else {
                Box::new(s)
            };
            self.stream = Some(stream);
        }
        self.stream.as_mut().expect("connected")
    }

    /// GETs `url` and reads the whole body; the elapsed time from sending the request to
    /// the last byte.
    pub(crate) fn fetch(&mut self, url: &str, expect: u64) -> Duration {
        use std::io::Read;
        let path = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/")
            .to_string();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pullgate-e2e\r\n\r\n",
            self.host
        );
        let t = Instant::now();
        self.connect().write_all(request.as_bytes()).expect("send request");
        // The head: read until the blank line; whatever follows it is body.
        let mut head = Vec::with_capacity(1024);
        let body_start = loop {
            let n = self
                .stream
                .as_mut()
                .expect("connected")
                .read(&mut self.buf)
                .expect("read head");
            assert!(n > 0, "GET {url}: connection closed before the response head");
            head.extend_from_slice(&self.buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(head.len() < 64 * 1024, "GET {url}: response head too long");
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_string();
        let status = text.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(status, "200", "GET {url}: {}", text.lines().next().unwrap_or(""));
        let length: u64 = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("GET {url}: no Content-Length in\n{text}"));
        assert_eq!(length, expect, "GET {url}: Content-Length");
        let mut got = (head.len() - body_start) as u64;
        let stream = self.stream.as_mut().expect("connected");
        while got < length {
            let n = stream
                .read(&mut self.buf)
                .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
            assert!(n > 0, "GET {url}: body ended after {got} of {length} bytes");
            got += n as u64;
        }
        assert_eq!(got, expect, "GET {url}: body length");
        t.elapsed()
    }
}

/// A cold GET by `clients` at once (one client: one fresh connection), timed, with the
/// peak RSS of `pid` meanwhile.
pub(crate) async fn cold_get(url: &str, clients: usize, size: u64, pid: u32) -> (Duration, u64) {
    let sampler = RssSampler::start(vec![pid]);
    let took = if clients == 1 {
        fetch(url, size).await
    } else {
        fetch_concurrent(url, clients, size).await
    };
    (took, sampler.finish()[0])
}

/// Warm GET figures of several targets, measured side by side.
pub(crate) struct WarmFigures {
    /// GB/s of each timed round, by target: one client.
    pub(crate) one: Vec<Vec<f64>>,
    pub(crate) one_peak_rss_kib: Vec<u64>,
    /// CPU seconds the target used per GB over its timed one-client rounds (`None` for a
    /// pid of 0). /proc counts in ticks of 10 ms: the figure means something over a few
    /// hundred MiB served, not for a smoke run's tiny blob.
    pub(crate) one_server_cpu_s_per_gb: Vec<Option<f64>>,
    /// The one client's CPU time over the wall time of its timed rounds, by target: near
    /// 1.0, the client is what limits (it copies every byte out of the socket).
    pub(crate) one_client_busy: Vec<f64>,
    /// GB/s aggregate of each of 3 rounds, by target: `clients` at once.
    pub(crate) many: Vec<Vec<f64>>,
    pub(crate) many_peak_rss_kib: Vec<u64>,
}

impl WarmFigures {
    /// Target `i`'s figures as they go into the results JSON.
    pub(crate) fn json(&self, i: usize) -> Value {
        json!({
            "warm_1_gbps_median": median(self.one[i].clone()), "warm_1_gbps": self.one[i],
            "warm_1_peak_rss_kib": self.one_peak_rss_kib[i],
            "warm_1_server_cpu_s_per_gb": self.one_server_cpu_s_per_gb[i],
            "warm_1_client_busy": self.one_client_busy[i],
            "warm_8_gbps_median": median(self.many[i].clone()), "warm_8_gbps": self.many[i],
            "warm_8_peak_rss_kib": self.many_peak_rss_kib[i],
        })
    }
}

/// Warm GET of each `(url, pid)`: one client, interleaved A B C … for `rounds` timed
/// rounds after one untimed; then `clients` at once, interleaved, 3 rounds. Peak RSS of
/// each pid is sampled meanwhile (a pid of 0 is not sampled), and over the timed
/// one-client rounds each pid's CPU and the client thread's.
pub(crate) async fn warm_gets(targets: &[(String, u32)], size: u64, rounds: usize, clients: usize) -> WarmFigures {
    let sampler = RssSampler::start(targets.iter().map(|t| t.1).collect());
    let urls: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
    let pids: Vec<u32> = targets.iter().map(|t| t.1).collect();
    let (one, server_cpu, client_cpu, wall) = tokio::task::spawn_blocking(move || {
        // One kept-alive client per target, as a browser-less puller would have.
        let mut conns: Vec<BlobClient> = urls.iter().map(|u| BlobClient::new(u)).collect();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); urls.len()];
        let (mut server_cpu, mut client_cpu, mut wall) =
            (vec![0.0; urls.len()], vec![0.0; urls.len()], vec![0.0; urls.len()]);
        for round in 0..=rounds {
            for (i, url) in urls.iter().enumerate() {
                let (server_before, client_before) = (cpu_seconds(pids[i]), thread_cpu_seconds());
                let d = conns[i].fetch(url, size);
                if round > 0 {
                    samples[i].push(gbps(size, d));
                    server_cpu[i] += cpu_seconds(pids[i]) - server_before;
                    client_cpu[i] += thread_cpu_seconds() - client_before;
                    wall[i] += d.as_secs_f64();
                }
            }
        }
        (samples, server_cpu, client_cpu, wall)
    })
    .await
    .expect("warm rounds");
    let one_peak_rss_kib = sampler.finish();
    let timed_gb = rounds as f64 * size as f64 / 1e9;
    let one_server_cpu_s_per_gb = (0..targets.len())
        .map(|i| (targets[i].1 != 0).then(|| server_cpu[i] / timed_gb))
        .collect();
    let one_client_busy = (0..targets.len()).map(|i| client_cpu[i] / wall[i]).collect();
    let mut many: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut many_peak_rss_kib = vec![0u64; targets.len()];
    for _ in 0..3 {
        for (i, (url, pid)) in targets.iter().enumerate() {
            let sampler = RssSampler::start(vec![*pid]);
            let d = fetch_concurrent(url, clients, size).await;
            many_peak_rss_kib[i] = many_peak_rss_kib[i].max(sampler.finish()[0]);
            many[i].push(gbps(clients as u64 * size, d));
        }
    }
    WarmFigures {
        one,
        one_peak_rss_kib,
        one_server_cpu_s_per_gb,
        one_client_busy,
        many,
        many_peak_rss_kib,
    }
}

/// One GET on a fresh connection (its own thread).
pub(crate) async fn fetch(url: &str, expect: u64) -> Duration {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || BlobClient::new(&url).fetch(&url, expect))
        .await
        .expect("client thread")
}

/// `n` clients GET `url` at once (each on its own connection and thread, released by a
/// barrier); the wall time until the last one has its last byte.
pub(crate) async fn fetch_concurrent(url: &str, n: usize, expect: u64) -> Duration {
    fetch_spread(vec![url.to_string()], n, expect).await
}

/// `n` clients at once spread round-robin over `urls` (each on its own connection and
/// thread, released by a barrier); the wall time until the last one has its last byte.
pub(crate) async fn fetch_spread(urls: Vec<String>, n: usize, expect: u64) -> Duration {
    tokio::task::spawn_blocking(move || {
        let barrier = Arc::new(std::sync::Barrier::new(n + 1));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (url, barrier) = (urls[i % urls.len()].clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut c = BlobClient::new(&url);
                    c.connect();
                    barrier.wait();
                    c.fetch(&url, expect)
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for thread in threads {
            thread.join().expect("client thread");
        }
        t.elapsed()
    })
    .await
    .expect("clients")
}

/// `conns` connections GET `url` (a manifest) in a closed loop for `secs`, driven by
/// `wrk` (`--latency`) with one thread: one core drives the load, the other is left to
/// the server under test (with two wrk threads the load generator preempts the server on
/// this 2-core machine and its own scheduling shows up as server latency). Requests/s
/// and the latency percentiles wrk reports. Errors are non-2xx answers plus socket errors.
pub(crate) async fn load(url: &str, conns: usize, secs: f64) -> LoadResult {
    let out = Command::new("wrk")
        .args(["-t1", "--latency", "-c"])
        .arg(conns.to_string())
        .arg("-d")
        .arg(format!("{}s", secs.ceil() as u64))
        .arg("-H")
        .arg(format!("Accept: {MANIFEST_ACCEPT}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).unwrap_or_else(|| panic!("could not read wrk's output:\n{text}"))
}
