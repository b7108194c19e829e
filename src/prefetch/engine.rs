//! The prefetch run over a list of images: each resolved to its manifests (every
//! platform of an index, or one), their blobs gathered into one set so a blob that many
//! images share is fetched once, what pullgate already holds skipped after one HEAD
//! (`only-if-cached`: nothing is fetched to answer it), the rest fetched `jobs` at a
//! time and verified. A failure is named with the images it fails and never stops the
//! others.

use super::client::{Manifest, Pullgate};
use super::progress::Progress;
use crate::oci::image::{ImageManifest, index_entries};
use crate::oci::{Digest, Reference, RepoName};
use futures_util::StreamExt as _;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One image to warm, and why it is wanted (`image`, `release`, `component`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub image: String,
    pub kind: &'static str,
}

impl Wanted {
    pub fn new(image: impl Into<String>, kind: &'static str) -> Wanted {
        Wanted {
            image: image.into(),
            kind,
        }
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Requests to pullgate at once.
    pub jobs: usize,
    /// `(os, arch)`: only this platform of an index (default: all).
    pub platform: Option<(String, String)>,
    /// Resolve and count, fetch no blob.
    pub dry_run: bool,
}

/// Free room where the blobs will go, when known: under `max_size`, on the disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    pub under_max_size: Option<u64>,
    pub on_disk: Option<u64>,
}

/// An image resolved to its manifests and blobs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: RepoName,
    pub manifests: usize,
    pub blobs: Vec<(Digest, u64)>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// One line per image: `ok`, `FAILED` or (dry run) what it holds.
    pub lines: Vec<String>,
    pub images: usize,
    pub failed: Vec<(String, String)>,
    pub manifests: usize,
    pub unique_blobs: usize,
    pub cached_blobs: usize,
    pub fetched_blobs: usize,
    /// Bytes of every unique blob, of those pullgate did not hold, of those fetched.
    pub bytes_total: u64,
    pub bytes_missing: u64,
    pub bytes_fetched: u64,
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// `registry.redhat.io/ubi9/ubi:latest`, `…@sha256:…` or `…:tag@sha256:…` → (name,
/// reference); no tag means `latest`.
pub fn parse_image(image: &str) -> Result<(RepoName, String), String> {
    let image = image.strip_prefix("docker://").unwrap_or(image);
    let (name, reference) = match image.split_once('@') {
        Some((n, d)) => {
            // A tag beside the digest says nothing more: the digest decides.
            let n = match n.rsplit_once(':') {
                Some((head, tag)) if !tag.contains('/') => head,
                _ => n,
            };
            (n, d.to_string())
        }
        None => match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (image, "latest".to_string()),
        },
    };
    let name = RepoName::parse(name).map_err(|e| format!("{image}: {e}"))?;
    Reference::parse(&reference).map_err(|e| format!("{image}: {e}"))?;
    Ok((name, reference))
}

/// The image manifests of `manifest`: itself, or its platform children (one platform
/// when asked), each fetched by digest.
pub async fn platform_manifests(
    client: &Pullgate,
    name: &RepoName,
    manifest: Manifest,
    platform: Option<&(String, String)>,
) -> Result<Vec<Manifest>, String> {
    if !manifest.is_index() {
        return Ok(vec![manifest]);
    }
    let mut children = Vec::new();
    for e in index_entries(&manifest.bytes) {
        let wanted = platform.is_none_or(|(os, arch)| {
            e.os.as_deref() == Some(os.as_str()) && e.architecture.as_deref() == Some(arch.as_str())
        });
        if wanted {
            children.push(client.manifest(name, &e.digest).await?);
        }
    }
    if children.is_empty() {
        return Err("no manifest for the requested platform".into());
    }
    Ok(children)
}

/// Fetches an image's manifests and lists its blobs.
pub async fn resolve(client: &Pullgate, image: &str, platform: Option<&(String, String)>) -> Result<Resolved, String> {
    let (name, reference) = parse_image(image)?;
    let top = client.manifest(&name, &reference).await?;
    let images = platform_manifests(client, &name, top, platform).await?;
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for m in &images {
        let manifest = ImageManifest::parse(&m.bytes).map_err(|e| format!("manifest {}: {e}", m.digest))?;
        for (digest, size) in manifest.blobs()? {
            if !blobs.iter().any(|(b, _)| b == &digest) {
                blobs.push((digest, size));
            }
        }
    }
    Ok(Resolved {
        name,
        manifests: images.len(),
        blobs,
    })
}

/// A blob the run needs: its size, a repository to fetch it through, the images that
/// need it.
struct Need {
    size: u64,
    name: RepoName,
    users: Vec<usize>,
}

/// Runs the whole list (see the module header).
pub async fn run(
    client: &Pullgate,
    wanted: &[Wanted],
    options: &RunOptions,
    room: Room,
    progress: &Progress,
) -> Summary {
    let started = Instant::now();
    let jobs = options.jobs.max(1);
    let mut summary = Summary {
        images: wanted.len(),
        ..Summary::default()
    };
    progress.phase("manifests", wanted.len() as u64);
    let resolved: Vec<Result<Resolved, String>> = futures_util::stream::iter(
        wanted
            .iter()
            .map(|w| resolve(client, &w.image, options.platform.as_ref())),
    )
    .buffered(jobs)
    .inspect(|_| progress.step())
    .collect()
    .await;
    let mut needs: BTreeMap<Digest, Need> = BTreeMap::new();
    for (i, r) in resolved.iter().enumerate() {
        let Ok(r) = r else { continue };
        summary.manifests += r.manifests;
        for (digest, size) in &r.blobs {
            needs
                .entry(digest.clone())
                .or_insert_with(|| Need {
                    size: *size,
                    name: r.name.clone(),
                    users: Vec::new(),
                })
                .users
                .push(i);
        }
    }
    summary.unique_blobs = needs.len();
    summary.bytes_total = needs.values().map(|n| n.size).sum();

    progress.phase("cache check", needs.len() as u64);
    let held: Vec<(Digest, bool)> = futures_util::stream::iter(needs.iter().map(|(d, n)| async move {
        // A HEAD that fails counts as not held: the GET will say why.
        (d.clone(), matches!(client.cached(&n.name, d).await, Ok(Some(_))))
    }))
    .buffer_unordered(jobs)
    .inspect(|_| progress.step())
    .collect()
    .await;
    let missing: Vec<Digest> = held.into_iter().filter(|(_, h)| !h).map(|(d, _)| d).collect();
    summary.cached_blobs = needs.len() - missing.len();
    summary.bytes_missing = missing.iter().filter_map(|d| needs.get(d)).map(|n| n.size).sum();
    summary.warnings.extend(room_warnings(summary.bytes_missing, room));
    if !options.dry_run {
        for w in &summary.warnings {
            progress.warn(w);
        }
    }

    let mut blob_errors: HashMap<Digest, String> = HashMap::new();
    if !options.dry_run {
        progress.bytes("blobs", missing.len() as u64, summary.bytes_missing);
        let fetched: Vec<(Digest, Result<u64, String>)> = futures_util::stream::iter(missing.iter().map(|d| {
            let need = &needs[d];
            async move { (d.clone(), fetch_with_retry(client, &need.name, d, progress).await) }
        }))
        .buffer_unordered(jobs)
        .inspect(|_| progress.step())
        .collect()
        .await;
        for (d, r) in fetched {
            match r {
                Ok(size) => {
                    summary.fetched_blobs += 1;
                    summary.bytes_fetched += size;
                }
                Err(e) => {
                    blob_errors.insert(d, e);
                }
            }
        }
    }
    progress.finish();
    for (w, r) in wanted.iter().zip(&resolved) {
        let failure = match r {
            Err(e) => Err(e.clone()),
            Ok(r) => match r.blobs.iter().find_map(|(d, _)| blob_errors.get(d)) {
                Some(e) => Err(e.clone()),
                None => Ok(r),
            },
        };
        let line = match failure {
            Err(e) => {
                let line = format!("FAILED  {}: {e}", w.image);
                summary.failed.push((w.image.clone(), e));
                line
            }
            Ok(r) if options.dry_run => {
                let size: u64 = r.blobs.iter().map(|(_, s)| s).sum();
                format!(
                    "{:<10} {} ({} image manifest{}, {} blobs, {})",
                    w.kind,
                    w.image,
                    r.manifests,
                    plural(r.manifests),
                    r.blobs.len(),
                    crate::config::format_size(size)
                )
            }
            Ok(r) => format!(
                "ok      {} ({} image manifest{})",
                w.image,
                r.manifests,
                plural(r.manifests)
            ),
        };
        summary.lines.push(line);
    }
    summary.elapsed = started.elapsed();
    summary
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The blob, fetched and verified; one more try after a failure (pullgate's own fill
/// resumes broken downloads; this covers a fill that failed as a whole).
async fn fetch_with_retry(
    client: &Pullgate,
    name: &RepoName,
    digest: &Digest,
    progress: &Progress,
) -> Result<u64, String> {
    let mut last = String::new();
    for _ in 0..2 {
        match client.fetch_blob(name, digest, |n| progress.add_bytes(n)).await {
            Ok(size) => return Ok(size),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Warnings when the bytes to fetch exceed the free room.
pub fn room_warnings(needed: u64, room: Room) -> Vec<String> {
    let size = crate::config::format_size;
    let mut out = Vec::new();
    if let Some(free) = room.under_max_size
        && needed > free
    {
        out.push(format!(
            "{} to fetch, but only {} is free under [cache] max_size: least recently used content will be evicted to make room",
            size(needed),
            size(free)
        ));
    }
    if let Some(free) = room.on_disk
        && needed > free
    {
        out.push(format!(
            "{} to fetch, but only {} is free on the cache's disk: the run will fail when it fills",
            size(needed),
            size(free)
        ));
    }
    out
}

impl Summary {
    /// The closing lines: counts, bytes and time.
    pub fn totals(&self, dry_run: bool) -> Vec<String> {
        let size = crate::config::format_size;
        let ok = self.images - self.failed.len();
        let mut out = Vec::new();
        if dry_run {
            out.push(format!(
                "{} images, {} image manifests, {} unique blobs, {} in all ({} not cached yet)",
                self.images,
                self.manifests,
                self.unique_blobs,
                size(self.bytes_total),
                size(self.bytes_missing)
            ));
        } else {
            out.push(format!(
                "blobs: {} unique, {} already cached, {} fetched ({}) in {:.1}s",
                self.unique_blobs,
                self.cached_blobs,
                self.fetched_blobs,
                size(self.bytes_fetched),
                self.elapsed.as_secs_f64()
            ));
            out.push(format!("{ok} of {} images prefetched", self.images));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_references() {
        let (n, r) = parse_image("registry.redhat.io/ubi9/ubi:9.4").unwrap();
        assert_eq!((n.as_str(), r.as_str()), ("registry.redhat.io/ubi9/ubi", "9.4"));
        let (n, r) = parse_image("registry.redhat.io/ubi9/ubi").unwrap();
        assert_eq!((n.as_str(), r.as_str()), ("registry.redhat.io/ubi9/ubi", "latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, r) = parse_image(&format!("quay.io/x@{d}")).unwrap();
        assert_eq!(r, d);
        let (n, r) = parse_image(&format!("docker://quay.io/x:v1@{d}")).unwrap();
        assert_eq!((n.as_str(), r.as_str()), ("quay.io/x", d.as_str()));
        assert!(parse_image("UPPER/case").is_err());
        assert!(parse_image("a@sha256:zz").is_err());
    }

    #[test]
    fn room_warnings_name_both_limits() {
        let room = Room {
            under_max_size: Some(10),
            on_disk: Some(5),
        };
        assert_eq!(room_warnings(4, room).len(), 0);
        assert_eq!(room_warnings(7, room).len(), 1);
        let w = room_warnings(20, room);
        assert!(w[0].contains("max_size") && w[1].contains("disk"), "{w:?}");
        assert!(room_warnings(u64::MAX, Room::default()).is_empty());
    }
}
