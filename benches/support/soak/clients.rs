//! The soak's clients: a seeded mix of image pulls (manifest list → platform manifest →
//! config and layers, every blob verified by digest), HEADs, `Range` requests checked
//! against the upstream's bytes, manifests by tag while the tag moves, slow readers and
//! readers that leave mid-body, for hot and cold content, through every pullgate. Each
//! operation is retried once; what happened is recorded for the invariants.

use super::world::{Image, World};
use rand::Rng as _;
use rand::SeedableRng as _;
use sha2::Digest as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Op {
    Pull,
    Head,
    Range,
    MovingTag,
    SlowRead,
    Abandon,
    Signature,
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Failure {
    /// A response completed with bytes that do not match their digest (never allowed).
    WrongBytes(String),
    Status(u16),
    Connect,
    Timeout,
    /// The body ended early (an error mid-body).
    Body,
    /// The moving tag named a digest it never pointed at.
    WrongTag,
}

impl Failure {
    pub fn kind(&self) -> String {
        match self {
            Failure::WrongBytes(_) => "wrong_bytes".into(),
            Failure::Status(s) => format!("http_{s}"),
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Body => "body_cut".into(),
            Failure::WrongTag => "wrong_tag".into(),
        }
    }
}

/// One operation, as the invariants read it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub op: Op,
    pub member: usize,
    /// Hot content this member has served whole before (see `World::served`).
    pub hot: bool,
    /// Seconds since the soak started, at the start and the end.
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
    /// The failures of its attempts (empty: the first attempt succeeded).
    pub failures: Vec<Failure>,
    pub ok: bool,
    /// Blob digests it read whole and verified.
    pub verified: Vec<String>,
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect
    } else {
        Failure::Body
    }
}

/// A GET (or HEAD) with the manifest Accept list.
async fn get(
    client: &reqwest::Client,
    url: &str,
    head: bool,
    range: Option<(u64, u64)>,
) -> Result<reqwest::Response, Failure> {
    let mut req = if head { client.head(url) } else { client.get(url) };
    req = req.header("accept", ACCEPT);
    if let Some((a, b)) = range {
        req = req.header("range", format!("bytes={a}-{b}"));
    }
    let r = req.send().await.map_err(|e| classify(&e))?;
    if !r.status().is_success() {
        return Err(Failure::Status(r.status().as_u16()));
    }
    Ok(r)
}

/// Reads a whole body, `delay` between frames; (bytes, sha256).
async fn read_all(r: reqwest::Response, delay: Option<Duration>) -> Result<(Vec<u8>, String), Failure> {
    let mut r = r;
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| classify(&e))? {
        body.extend_from_slice(&chunk);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    Ok((body, digest))
}

/// Reads a blob whole and checks it.
async fn blob(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    digest: &str,
    delay: Option<Duration>,
) -> Result<u64, Failure> {
    let r = get(
        client,
        &format!("{base}/v2/registry.redhat.io/{repo}/blobs/{digest}"),
        false,
        None,
    )
    .await?;
    let (body, got) = read_all(r, delay).await?;
    if got != digest {
        return Err(Failure::WrongBytes(format!("{repo}@{digest} read as {got}")));
    }
    Ok(body.len() as u64)
}

/// A pull as a client does it: the list by tag, one platform by digest, its blobs.
async fn pull(
    client: &reqwest::Client,
    base: &str,
    image: &Image,
    platform: usize,
    verified: &mut Vec<String>,
) -> Result<u64, Failure> {
    let list = get(
        client,
        &format!("{base}/v2/registry.redhat.io/{}/manifests/{}", image.repo, image.tag),
        false,
        None,
    )
    .await?;
    let (_, digest) = read_all(list, None).await?;
    if digest != image.list && !image.repo.ends_with("moving") {
        return Err(Failure::WrongBytes(format!(
            "{}:{} list read as {digest}",
            image.repo, image.tag
        )));
    }
    let p = &image.platforms[platform % image.platforms.len()];
    let m = get(
        client,
        &format!("{base}/v2/registry.redhat.io/{}/manifests/{}", image.repo, p.digest),
        false,
        None,
    )
    .await?;
    let (_, got) = read_all(m, None).await?;
    if got != p.digest {
        return Err(Failure::WrongBytes(format!("manifest {} read as {got}", p.digest)));
    }
    let mut bytes = 0;
    for (d, _) in &p.blobs {
        bytes += blob(client, base, &image.repo, d, None).await?;
        verified.push(d.clone());
    }
    Ok(bytes)
}

/// The operation's one attempt.
async fn attempt(
    world: &World,
    client: &reqwest::Client,
    base: &str,
    op: Op,
    image: &Image,
    choice: u64,
    verified: &mut Vec<String>,
) -> Result<u64, Failure> {
    let p = &image.platforms[(choice % 2) as usize];
    let (layer, size) = p.blobs[p.blobs.len() - 1].clone();
    let blob_url = format!("{base}/v2/registry.redhat.io/{}/blobs/{layer}", image.repo);
    match op {
        Op::Pull => pull(client, base, image, choice as usize, verified).await,
        Op::Head => {
            let r = get(client, &blob_url, true, None).await?;
            let len = r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if len != Some(size as u64) {
                return Err(Failure::WrongBytes(format!("HEAD {layer}: length {len:?}, not {size}")));
            }
            Ok(0)
        }
        Op::Range => {
            let a = choice % size as u64;
            let b = (a + 65_536).min(size as u64 - 1);
            let r = get(client, &blob_url, false, Some((a, b))).await?;
            let (body, _) = read_all(r, None).await?;
            let upstream = world.fake.blob(&layer).unwrap_or_default();
            if body.as_slice() != &upstream[a as usize..=b as usize] {
                return Err(Failure::WrongBytes(format!("range {a}-{b} of {layer}")));
            }
            Ok(body.len() as u64)
        }
        Op::MovingTag => {
            let (repo, history) = world.content.moving.lock().map(|m| m.clone()).unwrap_or_default();
            let r = get(
                client,
                &format!("{base}/v2/registry.redhat.io/{repo}/manifests/latest"),
                false,
                None,
            )
            .await?;
            let (body, digest) = read_all(r, None).await?;
            if !history.iter().any(|i| i.list == digest) {
                return Err(Failure::WrongTag);
            }
            Ok(body.len() as u64)
        }
        Op::SlowRead => {
            let n = blob(client, base, &image.repo, &layer, Some(Duration::from_millis(20))).await?;
            verified.push(layer);
            Ok(n)
        }
        Op::Abandon => {
            // Leaves mid-body: the server must carry on for the others.
            let mut r = get(client, &blob_url, false, None).await?;
            let first = r.chunk().await.map_err(|e| classify(&e))?;
            Ok(first.map_or(0, |c| c.len() as u64))
        }
        Op::Signature => {
            let path = crate::lookaside::sig_path(&image.repo, &image.list, 1)
                .replace("/containers/sigstore/", "/sigstore/registry.redhat.io/");
            let r = get(client, &format!("{base}{path}"), false, None).await?;
            let (body, _) = read_all(r, None).await?;
            Ok(body.len() as u64)
        }
    }
}

/// Runs one client until `stop`; its records.
pub async fn client(world: Arc<World>, id: u64, seed: u64, started: Instant, stop: Arc<AtomicBool>) -> Vec<Record> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id << 32));
    let client = world.client();
    let urls = world.urls();
    let mut records = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let member = rng.gen_range(0..urls.len());
        let hot = rng.gen_bool(0.7);
        let op = match rng.gen_range(0..100) {
            0..=44 => Op::Pull,
            45..=59 => Op::Head,
            60..=71 => Op::Range,
            72..=81 => Op::MovingTag,
            82..=87 => Op::SlowRead,
            88..=93 => Op::Abandon,
            _ => Op::Signature,
        };
        let op = if op == Op::Signature && !hot { Op::Head } else { op };
        let image = if hot {
            world.content.hot[rng.gen_range(0..world.content.hot.len())].clone()
        } else {
            let cold = world.content.cold.lock().map(|c| c.clone()).unwrap_or_default();
            cold[rng.gen_range(0..cold.len())].clone()
        };
        let choice: u64 = rng.r#gen();
        let key = (member, image.repo.clone(), choice % 2);
        // Hot for this member only once it has served the image whole (see World::served).
        let warm = hot && world.served.lock().is_ok_and(|s| s.contains(&key));
        let start = started.elapsed().as_secs_f64();
        let mut record = Record {
            op,
            member,
            hot: warm,
            start,
            end: start,
            bytes: 0,
            failures: Vec::new(),
            ok: false,
            verified: Vec::new(),
        };
        for _ in 0..2 {
            match attempt(&world, &client, &urls[member], op, &image, choice, &mut record.verified).await {
                Ok(bytes) => {
                    record.bytes += bytes;
                    record.ok = true;
                    break;
                }
                Err(f) => {
                    let wrong = matches!(f, Failure::WrongBytes(_));
                    record.failures.push(f);
                    if wrong {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        record.end = started.elapsed().as_secs_f64();
        if record.ok && op == Op::Pull {
            world.served.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        }
        records.push(record);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
    }
    records
}
