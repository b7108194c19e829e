//! Replicas in a cluster (`[cluster]`): three `pullgate serve` processes share one Garage
//! bucket in front of the Red Hat-like fake. The fleet fetches each digest once (24
//! concurrent cold GETs spread over the three make one CDN GET; a manifest list pulled
//! through all three makes one upstream request per manifest); the owner killed in the
//! middle of a fill costs at most one more CDN GET and no client gets wrong bytes; a
//! replica leaves the member list and comes back; the peer routes want the secret; a
//! forwarded request is never forwarded twice; wrong bytes from a peer never complete
//! a body.

mod common;

use common::fake_upstream::FakeRedHat;
use common::garage::Garage;
use common::{ServeProcess, body_bytes};
use pullgate::cluster::rank;
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

const SECRET: &str = "s3cr3t-shared-by-the-fleet";

/// A free loopback port: bound and released (a member list names every replica's URL
/// before any of them runs).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replicas on `127.0.0.1:<port>`, each with its own data dir, one bucket prefix.
struct Fleet {
    root: tempfile::TempDir,
    urls: Vec<String>,
    replicas: Vec<Option<ServeProcess>>,
    upstream_url: String,
    prefix: String,
}

impl Fleet {
    fn start(n: usize, fake: &FakeRedHat, garage: &Garage, prefix: &str) -> Fleet {
        let urls: Vec<String> = (0..n).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let mut fleet = Fleet {
            root: tempfile::tempdir().unwrap(),
            urls,
            replicas: (0..n).map(|_| None).collect(),
            upstream_url: fake.registry_url.clone(),
            prefix: prefix.into(),
        };
        let peers = fleet.urls.clone();
        for i in 0..n {
            fleet.start_replica(i, &peers, garage);
        }
        fleet
    }

    /// Starts replica `i` with `peers` as its member list.
    fn start_replica(&mut self, i: usize, peers: &[String], garage: &Garage) {
        let dir = self.root.path().join(format!("r{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = self.root.path().join("cluster-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let cluster = cluster_toml(&self.urls[i], peers, &secret);
        let toml = common::config_toml(
            &dir,
            &self.upstream_url,
            &format!("{}\n{cluster}", garage.cache_toml(&dir, &self.prefix, "")),
            "",
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.urls[i].trim_start_matches("http://")),
        );
        let config = dir.join("pullgate.toml");
        std::fs::write(&config, toml).unwrap();
        self.replicas[i] = Some(ServeProcess::start(&config, &[]));
    }

    fn replica(&self, i: usize) -> &ServeProcess {
        self.replicas[i].as_ref().expect("replica running")
    }

    /// The replicas in the order of their weight for `key` (the owner first).
    fn ranked(&self, key: &str) -> Vec<usize> {
        rank(&self.urls, key)
            .into_iter()
            .map(|m| self.urls.iter().position(|u| u == m).unwrap())
            .collect()
    }

    /// Waits until no replica has a fill running (uploads completed).
    async fn settle(&self) {
        for r in self.replicas.iter().flatten() {
            let url = r.url();
            common::eventually("fills to finish", Duration::from_secs(20), async || {
                metric(&url, "pullgate_fills_in_flight", "").await == 0.0
            })
            .await;
        }
    }

    fn blob_url(&self, i: usize, digest: &str) -> String {
        format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{digest}", self.urls[i])
    }
}

fn cluster_toml(me: &str, peers: &[String], secret: &Path) -> String {
    let peers = peers.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[cluster]\nself = \"{me}\"\npeers = [{peers}]\nsecret_file = \"{}\"\npeer_timeout = \"2s\"\n",
        secret.display()
    )
}

/// A metric's value summed over the series whose labels contain `labels`.
async fn metric(url: &str, name: &str, labels: &str) -> f64 {
    common::metric_in(&common::metrics_text(url).await, name, &[labels]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_four_cold_gets_over_three_replicas_make_one_cdn_fetch() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[6 << 20]);
    let (layer, bytes) = (img.layer_digests[0].clone(), img.layers[0].clone());
    // Slow enough that every request arrives while the one fill runs.
    fake.frame_delay_ms.store(5, SeqCst);
    let fleet = Fleet::start(3, &fake, &garage, "cold24");
    let client = common::client();
    let gets = (0..24).map(|i| {
        let url = fleet.blob_url(i % 3, &layer);
        let client = client.clone();
        async move { body_bytes(client.get(url).send().await.unwrap()).await }
    });
    let bodies = futures_util::future::join_all(gets).await;
    for (i, body) in bodies.into_iter().enumerate() {
        let body = body.unwrap_or_else(|e| panic!("GET {i}: {e}"));
        assert!(body == bytes[..], "GET {i}: the blob's bytes");
    }
    assert_eq!(fake.cdn_gets(&layer), 1, "one CDN fetch for the fleet");
    assert_eq!(
        fake.registry_blob_redirects(&layer),
        1,
        "one registry blob GET (redirected to the CDN) for the fleet"
    );
    let owner = fleet.ranked(&layer)[0];
    for i in (0..3).filter(|&i| i != owner) {
        let url = fleet.replica(i).url();
        assert!(
            metric(&url, "pullgate_served_bytes_total", "source=\"peer\"").await >= bytes.len() as f64,
            "replica {i} streamed from the owner"
        );
        assert_eq!(
            metric(&url, "pullgate_upstream_bytes_total", "").await,
            0.0,
            "replica {i} fetched nothing"
        );
        assert_eq!(
            metric(&url, "pullgate_cluster_members", "state=\"up\"").await,
            2.0,
            "replica {i} sees two peers up"
        );
    }
    let owner_url = fleet.replica(owner).url();
    assert!(metric(&owner_url, "pullgate_peer_served_total", "").await >= 2.0);

    // Later, every replica serves it from the shared store without asking anyone.
    fake.reset_counters();
    for i in 0..3 {
        let body = body_bytes(client.get(fleet.blob_url(i, &layer)).send().await.unwrap())
            .await
            .unwrap();
        assert!(body == bytes[..]);
    }
    assert_eq!(fake.cdn_gets(&layer), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_list_through_three_replicas_costs_one_upstream_request_per_manifest() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let list = fake.add_docker_list("ubi9/multi", "latest");
    let fleet = Fleet::start(3, &fake, &garage, "lists");
    let client = common::client();
    let accept = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    let get = |i: usize, reference: String| {
        let url = format!(
            "{}/v2/registry.redhat.io/ubi9/multi/manifests/{reference}",
            fleet.urls[i]
        );
        let client = client.clone();
        async move {
            let resp = client.get(url).header("accept", accept).send().await.unwrap();
            assert_eq!(resp.status(), 200, "manifest {reference} through replica {i}");
            let digest = resp.headers()["docker-content-digest"].to_str().unwrap().to_string();
            (digest, resp.bytes().await.unwrap())
        }
    };
    for i in 0..3 {
        let (digest, bytes) = get(i, "latest".into()).await;
        assert_eq!(digest, list.digest);
        assert_eq!(bytes, list.bytes);
        for (child, image) in list.children.iter().zip(&list.child_images) {
            let (digest, bytes) = get(i, child.1.clone()).await;
            assert_eq!(digest, image.manifest_digest);
            assert_eq!(bytes, image.manifest);
        }
    }
    // Those answered 401 are each replica's first request, which learns the challenge.
    let requests: Vec<_> = fake
        .manifest_requests()
        .into_iter()
        .filter(|r| r.status != 401)
        .collect();
    let mut references: Vec<&str> = requests.iter().map(|r| r.reference.as_str()).collect();
    references.sort();
    let mut expected: Vec<&str> = std::iter::once("latest")
        .chain(list.children.iter().map(|c| c.1.as_str()))
        .collect();
    expected.sort();
    assert_eq!(references, expected, "one upstream request per manifest: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_killed_mid_fill_costs_at_most_one_more_cdn_fetch_and_no_wrong_bytes() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let img = fake.add_image("ubi9/ubi", "latest", &[12 << 20]);
    let (layer, bytes) = (img.layer_digests[0].clone(), img.layers[0].clone());
    fake.frame_delay_ms.store(10, SeqCst);
    let mut fleet = Fleet::start(3, &fake, &garage, "killed");
    let owner = fleet.ranked(&layer)[0];
    let client = common::client();
    // Three clients per replica, each reading until the kill.
    let mut responses = Vec::new();
    for i in 0..9 {
        let resp = client.get(fleet.blob_url(i % 3, &layer)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        responses.push((i % 3, resp));
    }
    let (_, first) = &mut responses[0];
    let mut got = first.chunk().await.unwrap().unwrap().len();
    while got < 2 << 20 {
        got += first.chunk().await.unwrap().expect("bytes before the kill").len();
    }
    fleet.replica(owner).signal("KILL");
    fleet.replicas[owner] = None;
    fake.frame_delay_ms.store(0, SeqCst);

    let survivors: Vec<usize> = (0..3).filter(|&i| i != owner).collect();
    // Every client reads at once, as real ones do: clients that share a stream go at
    // the pace of the slowest, so reading one body at a time could stall the others.
    let reads = responses.into_iter().enumerate().map(|(n, (via, resp))| {
        let (client, fleet, survivors, bytes, layer) = (&client, &fleet, &survivors, &bytes, &layer);
        async move {
            // The first client has read some of its body already: the rest follows.
            let skip = if n == 0 { got } else { 0 };
            match body_bytes(resp).await {
                Ok(b) => {
                    assert!(
                        b == bytes[skip..],
                        "client {n} via {via}: a complete body is the right one"
                    );
                    false
                }
                Err(_) => {
                    // Cut off: the client retries on a survivor.
                    let again = body_bytes(
                        client
                            .get(fleet.blob_url(survivors[n % 2], layer))
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await
                    .expect("the retry succeeds");
                    assert!(again == bytes[..], "client {n}: the retry's bytes");
                    true
                }
            }
        }
    });
    let retried = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .filter(|&r| r)
        .count();
    assert!(
        fake.cdn_gets(&layer) <= 2,
        "at most one more CDN fetch: {}",
        fake.cdn_gets(&layer)
    );
    assert!(
        retried <= 3,
        "only the killed replica's own clients needed a retry ({retried})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_from_the_peers_and_added_back() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let mut fleet = Fleet::start(3, &fake, &garage, "members");
    let client = common::client();
    let blobs: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            let bytes = vec![i as u8; 100_000 + i];
            (fake.add_blob(bytes.clone()), bytes)
        })
        .collect();
    let pull = |urls: Vec<String>, n: std::ops::Range<usize>| {
        let client = client.clone();
        let blobs = blobs.clone();
        async move {
            for (k, (digest, bytes)) in blobs[n].iter().enumerate() {
                let url = format!("{}/v2/registry.redhat.io/ubi9/ubi/blobs/{digest}", urls[k % urls.len()]);
                let body = body_bytes(client.get(url).send().await.unwrap()).await.unwrap();
                assert!(&body == bytes);
            }
        }
    };
    // Replica 2 leaves: the other two are restarted with a list without it.
    fleet.replicas[2] = None;
    let two = fleet.urls[..2].to_vec();
    for i in 0..2 {
        fleet.replicas[i] = None;
        fleet.start_replica(i, &two, &garage);
    }
    pull(two.clone(), 0..6).await;
    fleet.settle().await;
    for (digest, _) in &blobs[..6] {
        assert_eq!(fake.cdn_gets(digest), 1, "two replicas: one fetch per blob");
    }
    // It comes back: three again, everyone with the full list.
    let three = fleet.urls.clone();
    for i in 0..3 {
        fleet.replicas[i] = None;
        fleet.start_replica(i, &three, &garage);
    }
    pull(three.clone(), 0..12).await;
    fleet.settle().await;
    pull(three, 0..12).await;
    for (digest, _) in &blobs {
        assert_eq!(fake.cdn_gets(digest), 1, "three replicas: still one fetch per blob");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_routes_want_the_secret() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let blob = fake.add_blob(vec![7u8; 1000]);
    let fleet = Fleet::start(1, &fake, &garage, "secret");
    let client = common::client();
    let url = format!(
        "{}/_pullgate/peer/v2/ubi9/ubi/blobs/{blob}?ns=registry.redhat.io",
        fleet.urls[0]
    );
    let without = client.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert_eq!(common::error_code(without).await, "UNAUTHORIZED");
    let wrong = client
        .get(&url)
        .header("x-pullgate-cluster-secret", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(&url)
        .header("x-pullgate-cluster-secret", SECRET)
        .header("x-pullgate-hop", "http://127.0.0.1:1")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(body_bytes(right).await.unwrap(), vec![7u8; 1000]);
    assert_eq!(fake.cdn_gets_total(), 1, "nothing fetched for the refused requests");
    let (_, log) = fleet.replicas.into_iter().next().unwrap().unwrap().stop();
    common::assert_no_secrets(&log, &[SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_never_forwarded_twice() {
    let garage = Garage::start();
    let fake = FakeRedHat::start().await;
    let mut fleet = Fleet::start(2, &fake, &garage, "hops");
    let (a, b) = (fleet.urls[0].clone(), fleet.urls[1].clone());
    // Misconfigured: B also lists A under another name (localhost), so for some digests
    // A thinks B owns them while B thinks "A" does.
    let alias = a.replace("127.0.0.1", "localhost");
    let b_list = vec![a.clone(), b.clone(), alias.clone()];
    fleet.replicas[1] = None;
    fleet.start_replica(1, &b_list, &garage);
    let (_, bytes) = (0u32..)
        .map(|i| {
            let bytes = format!("blob {i}").repeat(5000).into_bytes();
            (common::fake_upstream::sha256_digest(&bytes), bytes)
        })
        .find(|(d, _)| rank(&fleet.urls, d)[0] == b && rank(&b_list, d)[0] != b)
        .unwrap();
    let digest = fake.add_blob(bytes.clone());
    let client = common::client();
    let body = body_bytes(client.get(fleet.blob_url(0, &digest)).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(body, bytes);
    assert_eq!(fake.cdn_gets(&digest), 1);
    let (a_url, b_url) = (fleet.replica(0).url(), fleet.replica(1).url());
    assert_eq!(
        metric(&a_url, "pullgate_peer_requests_total", "outcome=\"ok\"").await,
        1.0
    );
    assert_eq!(metric(&b_url, "pullgate_peer_served_total", "").await, 1.0);
    assert_eq!(
        metric(&b_url, "pullgate_peer_requests_total", "").await,
        0.0,
        "B asked no one: the hop header says the request was forwarded already"
    );
    assert_eq!(metric(&a_url, "pullgate_peer_served_total", "").await, 0.0);

    // The hop header on the plain registry route, with the secret, is honoured too.
    let other = "other blob".repeat(3000).into_bytes();
    let other = (0u32..)
        .map(|i| [other.clone(), i.to_be_bytes().to_vec()].concat())
        .find(|o| rank(&b_list, &common::fake_upstream::sha256_digest(o))[0] != b)
        .unwrap();
    let other_digest = fake.add_blob(other.clone());
    let resp = client
        .get(fleet.blob_url(1, &other_digest))
        .header("x-pullgate-cluster-secret", SECRET)
        .header("x-pullgate-hop", a.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(resp).await.unwrap(), other);
    assert_eq!(
        metric(&b_url, "pullgate_peer_requests_total", "").await,
        0.0,
        "answered by B itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_there_are_no_peer_routes() {
    let h = common::Harness::start().await;
    let blob = h.fake.add_blob(vec![1u8; 100]);
    let path = format!("/_pullgate/peer/v2/ubi9/ubi/blobs/{blob}?ns=registry.redhat.io");
    let resp = common::client()
        .get(h.url(&path))
        .header("x-pullgate-cluster-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(common::error_code(resp).await, "UNSUPPORTED");
    // The hop header alone changes nothing for a pullgate that is not in a cluster.
    let resp = common::client()
        .get(h.url(&format!("/v2/registry.redhat.io/ubi9/ubi/blobs/{blob}")))
        .header("x-pullgate-hop", "http://127.0.0.1:1")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(resp).await.unwrap(), vec![1u8; 100]);
    assert_eq!(h.fake.cdn_gets_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_from_a_peer_are_verified_like_bytes_from_upstream() {
    // A "peer" that answers every blob with the right length and the wrong bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar = format!("http://{}", listener.local_addr().unwrap());
    let lie = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let served = lie.clone();
    let app = axum::Router::new().fallback(move || {
        let body = served.lock().unwrap().clone();
        async move { body }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let fake = FakeRedHat::start().await;
    let me = format!("http://127.0.0.1:{}", free_port());
    let members = vec![me.clone(), liar.clone()];
    let (digest, bytes) = (0u32..)
        .map(|i| {
            let bytes = format!("layer {i} ").repeat(40_000).into_bytes();
            (common::fake_upstream::sha256_digest(&bytes), bytes)
        })
        .find(|(d, _)| rank(&members, d)[0] == liar)
        .unwrap();
    fake.add_blob(bytes.clone());
    *lie.lock().unwrap() = vec![b'x'; bytes.len()];
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let toml = common::config_toml(
        dir.path(),
        &fake.registry_url,
        &cluster_toml(&me, &members, &secret),
        "",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", me.trim_start_matches("http://")),
    );
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, toml).unwrap();
    let server = ServeProcess::start(&config, &[]);
    let url = format!("{me}/v2/registry.redhat.io/ubi9/ubi/blobs/{digest}");
    let client = common::client();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the peer's answer began");
    assert!(
        body_bytes(resp).await.is_err(),
        "a body whose digest does not match never completes"
    );
    assert_eq!(fake.cdn_gets(&digest), 0, "the owner was asked, not upstream");
    assert!(metric(&server.url(), "pullgate_verification_failures_total", "").await >= 1.0);
    let (_, log) = server.stop();
    assert!(log.iter().any(|l| l.contains("failed verification")), "{log:?}");
}
