//! `pullgate cache stats|ls|verify|evict|purge`: inspect and repair the cache in a data
//! directory. They open the database themselves, so they refuse (clearly) while a
//! running pullgate holds it.

use crate::cache::{BlobRecord, Cache, TagRecord, now_ms};
use crate::config::{Config, format_duration, format_size as human_bytes};
use crate::oci::image::{ImageManifest, index_entries};
use crate::oci::pattern::RepoPatterns;
use crate::oci::{Digest, DigestHasher};
use crate::proxy::ProxyStats;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

pub async fn open(config: &Config) -> Result<Cache, String> {
    let (cache, report) = crate::app::open_cache(config).map_err(|e| e.to_string())?;
    if report != Default::default() {
        eprintln!("repaired after an unclean stop: {report:?}");
    }
    Ok(cache)
}

fn age(ms: u64) -> String {
    let d = Duration::from_millis(now_ms().saturating_sub(ms));
    format_duration(Duration::from_secs(d.as_secs().max(1)))
}

pub async fn stats(config: &Config) -> Result<String, String> {
    let cache = open(config).await?;
    let s = cache.stats().await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "data_dir:   {}\nblob store: {}\nsize:       {} ({} of blobs, {} database)\nblobs:      {}\nmanifests:  {}\ntags:       {}\n",
        config.data_dir.display(),
        cache.store_name(),
        human_bytes(s.total_bytes()),
        human_bytes(s.blob_bytes),
        human_bytes(s.db_bytes),
        s.blobs,
        s.manifests,
        s.tags
    );
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
            out.push_str(&format!(
                "hit ratio:  {ratio} ({} hits, {} misses) since the proxy started {} ago\nserved:     {} from the cache, {} from upstream\n",
                p.hits,
                p.misses,
                age(p.started_ms),
                human_bytes(p.bytes_from_cache),
                human_bytes(p.bytes_from_upstream)
            ));
        }
        None => out.push_str("hit ratio:  n/a (no proxy run recorded yet)\n"),
    }
    Ok(out)
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

pub async fn ls(config: &Config, upstream: Option<&str>, repo: Option<&str>) -> Result<String, String> {
    let repo = repo_pattern(repo)?;
    let cache = open(config).await?;
    let mut tags = cache.list_tags().await.map_err(|e| e.to_string())?;
    tags.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let mut out = String::from("IMAGE\tDIGEST\tMEDIA TYPE\tCHECKED\n");
    let mut n = 0;
    for (u, r, t, rec) in tags {
        if upstream.is_some_and(|want| want != u) || !repo_matches(repo.as_ref(), &u, &r) {
            continue;
        }
        n += 1;
        out.push_str(&format!(
            "{u}/{r}:{t}\t{}\t{}\t{} ago\n",
            rec.digest,
            rec.media_type,
            age(rec.fetched_ms)
        ));
    }
    out.push_str(&format!("{n} tags\n"));
    Ok(out)
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// Re-hashes a stored blob; `Ok(false)` when its bytes do not match.
async fn blob_is_intact(cache: &Cache, digest: &Digest, record: &BlobRecord) -> bool {
    let Ok(reader) = cache.open_blob(digest, record, 0).await else {
        return false;
    };
    let (size, digest_ok) = {
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut hasher = DigestHasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(_) => return (0, false),
                }
            }
            let len = hasher.len();
            (len, hasher.finish() == digest)
        })
        .await
        .unwrap_or((0, false))
    };
    digest_ok && size == record.size
}

/// Re-hashes every blob and manifest; removes and reports the bad ones.
pub async fn verify(config: &Config) -> Result<(String, usize), String> {
    let cache = open(config).await?;
    let blobs = cache.list_blobs().await.map_err(|e| e.to_string())?;
    let manifests = cache.list_manifests().await.map_err(|e| e.to_string())?;
    let bar = progress((blobs.len() + manifests.len()) as u64, "verifying");
    let mut bad = Vec::new();
    for (digest, record) in &blobs {
        if !blob_is_intact(&cache, digest, record).await {
            cache.remove_blob(digest).await.map_err(|e| e.to_string())?;
            bad.push(format!("blob {digest}: bytes do not match; removed"));
        }
        bar.inc(1);
    }
    for digest in &manifests {
        // The cache checks a manifest's bytes against its digest as it reads them.
        let ok = matches!(cache.manifest(digest).await, Ok(Some(_)));
        if !ok {
            cache.remove_manifest(digest).await.map_err(|e| e.to_string())?;
            bad.push(format!("manifest {digest}: bytes do not match; removed"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    cache.flush().await.map_err(|e| e.to_string())?;
    let mut out = bad.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!(
        "verified {} blobs and {} manifests: {} bad entries removed\n",
        blobs.len(),
        manifests.len(),
        bad.len()
    ));
    Ok((out, bad.len()))
}

/// Manifests and blobs reachable from `roots` (indexes to their children, images to
/// their config and layers), as far as they are stored.
async fn closure(cache: &Cache, roots: impl IntoIterator<Item = Digest>) -> (HashSet<Digest>, HashSet<Digest>) {
    let (mut manifests, mut blobs) = (HashSet::new(), HashSet::new());
    let mut todo: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = todo.pop() {
        if !manifests.insert(d.clone()) {
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
                    blobs.insert(b);
                }
            }
        }
    }
    (manifests, blobs)
}

/// Evicts by repository pattern (its tags, and the manifests and blobs only they
/// reach) or by age (blobs cached and tags checked longer ago than `older_than`).
pub async fn evict(config: &Config, older_than: Option<Duration>, repo: Option<&str>) -> Result<String, String> {
    if older_than.is_none() && repo.is_none() {
        return Err("say what to evict: --older-than DURATION and/or --repo PATTERN".into());
    }
    let pattern = repo_pattern(repo)?;
    let cache = open(config).await?;
    let tags = cache.list_tags().await.map_err(|e| e.to_string())?;
    let cutoff = older_than.map(|d| now_ms().saturating_sub(d.as_millis() as u64));
    let old = |rec: &TagRecord| cutoff.is_some_and(|c| rec.fetched_ms < c);
    let (mut gone, mut kept): (Vec<_>, Vec<_>) = tags.into_iter().partition(|(u, r, _, rec)| match &pattern {
        Some(p) => repo_matches(Some(p), u, r),
        None => old(rec),
    });
    if repo.is_some() && cutoff.is_some() {
        // Both given: only the matching repositories' tags that are also old.
        let (still_kept, really_gone): (Vec<_>, Vec<_>) = gone.into_iter().partition(|(_, _, _, rec)| !old(rec));
        kept.extend(still_kept);
        gone = really_gone;
    }
    let digests = |v: &Vec<(String, String, String, TagRecord)>| -> Vec<Digest> {
        v.iter()
            .filter_map(|(_, _, _, rec)| Digest::parse(&rec.digest).ok())
            .collect()
    };
    let (gone_m, gone_b) = closure(&cache, digests(&gone)).await;
    let (kept_m, kept_b) = closure(&cache, digests(&kept)).await;
    let mut removed_blobs = 0u64;
    let mut freed = 0u64;
    for (u, r, t, _) in &gone {
        cache.remove_tag(u, r, t).await.map_err(|e| e.to_string())?;
    }
    let mut removed_manifests = 0;
    for m in gone_m.difference(&kept_m) {
        cache.remove_manifest(m).await.map_err(|e| e.to_string())?;
        removed_manifests += 1;
    }
    let mut doomed: HashSet<Digest> = gone_b.difference(&kept_b).cloned().collect();
    if let Some(c) = cutoff
        && repo.is_none()
    {
        for (d, rec) in cache.list_blobs().await.map_err(|e| e.to_string())? {
            if rec.created_ms < c && !kept_b.contains(&d) {
                doomed.insert(d);
            }
        }
    }
    for d in &doomed {
        if let Ok(Some(rec)) = cache.blob(d).await {
            freed += rec.size;
            cache.remove_blob(d).await.map_err(|e| e.to_string())?;
            removed_blobs += 1;
        }
    }
    cache.flush().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "evicted {} tags, {removed_manifests} manifests, {removed_blobs} blobs ({} freed)\n",
        gone.len(),
        human_bytes(freed)
    ))
}

pub async fn purge(config: &Config) -> Result<String, String> {
    let cache = open(config).await?;
    let n = cache.purge().await.map_err(|e| e.to_string())?;
    Ok(format!("purged {n} entries from {}\n", config.data_dir.display()))
}
