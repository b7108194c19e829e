//! `pullgate cache stats|ls|verify|evict|purge`: inspect and repair the cache in a data
//! directory. They open the database themselves, so they refuse (clearly) while a
//! running pullgate holds it, and close it cleanly when done. They stream: output is
//! written as the cache is read, page by page, never collected whole.

use crate::cache::{Cache, TagRecord, now_ms};
use crate::config::{Config, format_duration, format_size as human_bytes};
use crate::oci::Digest;
use crate::oci::image::{ImageManifest, index_entries};
use crate::oci::pattern::RepoPatterns;
use crate::proxy::ProxyStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Entries read from the database per page.
const PAGE: usize = 1024;

type Out<'a> = &'a mut (dyn Write + Send);

fn io_err(e: std::io::Error) -> String {
    format!("writing the output: {e}")
}

/// Opens the cache, saying on stderr when an unclean stop had to be repaired.
pub async fn open(config: &Config) -> Result<Cache, String> {
    let (cache, report) = crate::app::open_cache(config).map_err(|e| e.to_string())?;
    if report.scanned {
        eprintln!("scanned the cache after an unclean stop: {report:?}");
    }
    if cache.is_shared() {
        // The commands act on the fleet's bucket, not only on what this replica saw.
        eprintln!("reading the shared bucket's blobs and the replicas' reported uses…");
        let adopted = cache.learn_bucket().await.map_err(|e| e.to_string())?;
        eprintln!("learnt {adopted} blobs from the shared bucket");
    }
    Ok(cache)
}

/// Closes the cache cleanly (the next start scans nothing).
async fn close(cache: &Cache) -> Result<(), String> {
    cache.close().await.map_err(|e| e.to_string())
}

fn age(ms: u64) -> String {
    let d = Duration::from_millis(now_ms().saturating_sub(ms));
    format_duration(Duration::from_secs(d.as_secs().max(1)))
}

/// Sizes, entries, and the hit ratio of the last proxy run: the cache's running totals,
/// read in constant time.
pub async fn stats(config: &Config, out: Out<'_>) -> Result<usize, String> {
    let cache = open(config).await?;
    let s = cache.stats().await.map_err(|e| e.to_string())?;
    writeln!(
        out,
        "data_dir:   {}\nblob store: {}\nsize:       {} ({} of blobs, {} database)\nblobs:      {}\nmanifests:  {}\ntags:       {}",
        config.data_dir.display(),
        cache.store_name(),
        human_bytes(s.total_bytes()),
        human_bytes(s.blob_bytes),
        human_bytes(s.db_bytes),
        s.blobs,
        s.manifests,
        s.tags
    )
    .map_err(io_err)?;
    match cache
        .meta::<ProxyStats>(ProxyStats::KEY)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(p) => {
            let ratio = p
                .hit_ratio()
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "n/a".into());
            writeln!(
                out,
                "hit ratio:  {ratio} ({} hits, {} misses) since the proxy started {} ago\nserved:     {} from the cache, {} from upstream",
                p.hits,
                p.misses,
                age(p.started_ms),
                human_bytes(p.bytes_from_cache),
                human_bytes(p.bytes_from_upstream)
            )
            .map_err(io_err)?;
        }
        None => writeln!(out, "hit ratio:  n/a (no proxy run recorded yet)").map_err(io_err)?,
    }
    close(&cache).await?;
    Ok(0)
}

/// `--repo PATTERN`, compiled; `None` matches everything.
fn repo_pattern(pattern: Option<&str>) -> Result<Option<RepoPatterns>, String> {
    pattern
        .map(|p| RepoPatterns::one(p).map_err(|e| format!("--repo: {e}")))
        .transpose()
}

/// Whether `upstream/repo` (or `repo` alone) matches the pattern.
fn repo_matches(pattern: Option<&RepoPatterns>, upstream: &str, repo: &str) -> bool {
    pattern.is_none_or(|p| p.matches(repo) || p.matches(&format!("{upstream}/{repo}")))
}

/// Calls `f` on every tag mapping in (upstream, repository, tag) order, a page at a time.
async fn for_each_tag(
    cache: &Cache,
    mut f: impl AsyncFnMut(String, String, String, TagRecord) -> Result<(), String>,
) -> Result<(), String> {
    let mut after = None;
    loop {
        let page = cache.tags_page(after.take(), PAGE).await.map_err(|e| e.to_string())?;
        let full = page.len() == PAGE;
        for (u, r, t, rec) in page {
            after = Some((u.clone(), r.clone(), t.clone()));
            f(u, r, t, rec).await?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Cached tags, optionally of one upstream or matching a repository pattern.
pub async fn ls(config: &Config, upstream: Option<&str>, repo: Option<&str>, out: Out<'_>) -> Result<usize, String> {
    let repo = repo_pattern(repo)?;
    let cache = open(config).await?;
    writeln!(out, "IMAGE\tDIGEST\tMEDIA TYPE\tCHECKED").map_err(io_err)?;
    let mut n = 0u64;
    for_each_tag(&cache, async |u, r, t, rec| {
        if upstream.is_some_and(|want| want != u) || !repo_matches(repo.as_ref(), &u, &r) {
            return Ok(());
        }
        n += 1;
        writeln!(
            out,
            "{u}/{r}:{t}\t{}\t{}\t{} ago",
            rec.digest,
            rec.media_type,
            age(rec.fetched_ms)
        )
        .map_err(io_err)
    })
    .await?;
    writeln!(out, "{n} tags").map_err(io_err)?;
    close(&cache).await?;
    Ok(0)
}

/// Progress for a long command: a bar on a terminal, else a line on stderr every few
/// seconds (logs of a job or a pipe), both with the rate and the time left.
struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

/// How often the line form of [`Progress`] reports.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(what);
            bar
        });
        Progress {
            bar,
            what,
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= PROGRESS_EVERY => {
                self.last_line = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let rate = self.done as f64 / secs;
                let left = self.total.saturating_sub(self.done) as f64 / rate.max(0.001);
                eprintln!(
                    "{}: {}/{} ({rate:.0}/s, ETA {})",
                    self.what,
                    self.done,
                    self.total,
                    format_duration(Duration::from_secs(left.ceil() as u64))
                );
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Re-hashes every blob and manifest; removes and reports the bad ones, and checks the
/// last-use index against the records.
pub async fn verify(config: &Config, out: Out<'_>) -> Result<usize, String> {
    let cache = open(config).await?;
    let totals = cache.totals();
    let mut progress = Progress::new("verifying", totals.blobs + totals.manifests);
    let (mut blobs, mut manifests, mut bad) = (0u64, 0u64, 0usize);
    let mut after = None;
    loop {
        let page = cache.blobs_page(after.take(), PAGE).await.map_err(|e| e.to_string())?;
        let full = page.len() == PAGE;
        after = page.last().map(|(d, _)| d.clone());
        let digests: Vec<Digest> = page.iter().map(|(d, _)| d.clone()).collect();
        let intact = cache.rehash_blobs(page).await.map_err(|e| e.to_string())?;
        for (digest, ok) in digests.iter().zip(intact) {
            if !ok {
                cache.remove_blob(digest).await.map_err(|e| e.to_string())?;
                writeln!(out, "blob {digest}: bytes do not match; removed").map_err(io_err)?;
                bad += 1;
            }
        }
        blobs += digests.len() as u64;
        progress.inc(digests.len() as u64);
        if !full {
            break;
        }
    }
    let mut after = None;
    loop {
        let page = cache
            .manifests_page(after.take(), PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() == PAGE;
        after = page.last().cloned();
        for digest in &page {
            // The cache checks a manifest's bytes against its digest as it reads them.
            if !matches!(cache.manifest(digest).await, Ok(Some(_))) {
                cache.remove_manifest(digest).await.map_err(|e| e.to_string())?;
                writeln!(out, "manifest {digest}: bytes do not match; removed").map_err(io_err)?;
                bad += 1;
            }
        }
        manifests += page.len() as u64;
        progress.inc(page.len() as u64);
        if !full {
            break;
        }
    }
    progress.finish();
    for problem in cache.check_index().await.map_err(|e| e.to_string())? {
        writeln!(out, "last-use index: {problem}").map_err(io_err)?;
        bad += 1;
    }
    writeln!(
        out,
        "verified {blobs} blobs and {manifests} manifests: {bad} bad entries removed"
    )
    .map_err(io_err)?;
    close(&cache).await?;
    Ok(bad)
}

/// Manifests and blobs reachable from `roots` (indexes to their children, images to
/// their config and layers), as far as they are stored; manifests already in `seen`
/// are not read again.
async fn closure(
    cache: &Cache,
    roots: impl IntoIterator<Item = Digest>,
    seen: &mut HashSet<Digest>,
    mut blob: impl FnMut(Digest),
) {
    let mut todo: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Ok(Some(m)) = cache.manifest(&d).await else {
            continue;
        };
        for child in index_entries(&m.bytes) {
            if let Ok(c) = Digest::parse(&child.digest) {
                todo.push(c);
            }
        }
        if let Ok(image) = ImageManifest::parse(&m.bytes) {
            for desc in image.config.iter().chain(&image.layers) {
                if let Ok(b) = Digest::parse(&desc.digest) {
                    blob(b);
                }
            }
        }
    }
}

/// Evicts by repository pattern (its tags, and the manifests and blobs only they
/// reach) and/or by age (tags checked, and manifests and blobs last used, longer ago
/// than `older_than`).
pub async fn evict(
    config: &Config,
    older_than: Option<Duration>,
    repo: Option<&str>,
    out: Out<'_>,
) -> Result<usize, String> {
    if older_than.is_none() && repo.is_none() {
        return Err("say what to evict: --older-than DURATION and/or --repo PATTERN".into());
    }
    let pattern = repo_pattern(repo)?;
    let cache = open(config).await?;
    let cutoff = older_than.map(|d| now_ms().saturating_sub(d.as_millis() as u64));
    let old = |rec: &TagRecord| cutoff.is_some_and(|c| rec.fetched_ms < c);
    // The tags to remove: the pattern's (only the old ones when both are given), or
    // every old one.
    let mut gone_roots = Vec::new();
    let mut tags = 0u64;
    for_each_tag(&cache, async |u, r, t, rec| {
        let gone = match &pattern {
            Some(p) => repo_matches(Some(p), &u, &r) && (cutoff.is_none() || old(&rec)),
            None => old(&rec),
        };
        if gone {
            cache.remove_tag(&u, &r, &t).await.map_err(|e| e.to_string())?;
            tags += 1;
            gone_roots.extend(Digest::parse(&rec.digest).ok());
        }
        Ok(())
    })
    .await?;
    let (mut manifests, mut blobs, mut freed) = (0u64, 0u64, 0u64);
    if pattern.is_some() {
        // What only the removed tags reach: their closure, less what any kept tag reaches.
        let mut gone_manifests = HashSet::new();
        let mut gone_blobs = HashSet::new();
        closure(&cache, gone_roots, &mut gone_manifests, |b| {
            gone_blobs.insert(b);
        })
        .await;
        let mut kept_manifests = HashSet::new();
        for_each_tag(&cache, async |_, _, _, rec| {
            let root = Digest::parse(&rec.digest).ok();
            closure(&cache, root, &mut kept_manifests, |b| {
                gone_blobs.remove(&b);
            })
            .await;
            Ok(())
        })
        .await?;
        for m in gone_manifests.difference(&kept_manifests) {
            if cache.manifest(m).await.ok().flatten().is_some() {
                cache.remove_manifest(m).await.map_err(|e| e.to_string())?;
                manifests += 1;
            }
        }
        for d in &gone_blobs {
            if let Ok(Some(rec)) = cache.blob(d).await {
                cache.remove_blob(d).await.map_err(|e| e.to_string())?;
                freed += rec.size;
                blobs += 1;
            }
        }
    } else if let Some(cutoff) = cutoff {
        let evicted = cache.evict_unused_since(cutoff).await.map_err(|e| e.to_string())?;
        (manifests, blobs, freed) = (evicted.manifests, evicted.blobs, evicted.bytes);
    }
    writeln!(
        out,
        "evicted {tags} tags, {manifests} manifests, {blobs} blobs ({} freed)",
        human_bytes(freed)
    )
    .map_err(io_err)?;
    close(&cache).await?;
    Ok(0)
}

pub async fn purge(config: &Config, out: Out<'_>) -> Result<usize, String> {
    let cache = open(config).await?;
    let n = cache.purge().await.map_err(|e| e.to_string())?;
    writeln!(out, "purged {n} entries from {}", config.data_dir.display()).map_err(io_err)?;
    close(&cache).await?;
    Ok(0)
}
