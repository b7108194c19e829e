//! Warming the cache ahead of a maintenance window, through pullgate itself: an
//! in-process pullgate on the data directory, or, when a running pullgate holds the
//! database, that one (reached as a registry, with Basic credentials when it asks).
//! What to warm is a list of images, or an oc-mirror ImageSetConfiguration resolved
//! into one ([`imageset`]: releases from the update graph and their payloads'
//! components, operator catalogs' bundles, additional images); [`engine`] then fetches
//! each unique blob once.

pub mod client;
pub mod engine;
pub mod imageset;
pub mod progress;

use crate::app::StartError;
use crate::cache::CacheError;
use crate::config::{BlobStoreKind, Config};
use crate::secret::Secret;
use crate::upstream::Credentials;
use client::Pullgate;
use engine::{Room, RunOptions, Wanted};
use progress::Progress;
use std::path::PathBuf;

/// What `pullgate prefetch` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub images: Vec<String>,
    /// An ImageSetConfiguration to resolve into images (with or beside `images`).
    pub imageset: Option<PathBuf>,
    /// `os/arch`: only this platform of an index (default: all).
    pub platform: Option<String>,
    /// `user:password` for a running pullgate with client authentication.
    pub creds: Option<String>,
    /// Requests at once (default 8).
    pub jobs: usize,
    /// Print the images and their total size; fetch no blob.
    pub dry_run: bool,
    pub progress: bool,
}

/// What a run printed, and how many images failed.
pub type Outcome = (String, usize);

fn platform(p: Option<&str>) -> Result<Option<(String, String)>, String> {
    p.map(|p| {
        p.split_once('/')
            .map(|(os, arch)| (os.to_string(), arch.to_string()))
            .ok_or_else(|| format!("--platform {p:?} must be os/arch, e.g. linux/amd64"))
    })
    .transpose()
}

fn credentials(creds: Option<&str>) -> Result<Option<Credentials>, String> {
    creds
        .map(|c| {
            c.split_once(':')
                .map(|(username, password)| Credentials {
                    username: username.to_string(),
                    password: Secret::new(password),
                })
                .ok_or_else(|| "--creds must be user:password".to_string())
        })
        .transpose()
}

/// The free room for what will be fetched: under `max_size` (from pullgate's own
/// figures) and on the data directory's file system (local stores only).
async fn room(config: &Config, client: &Pullgate) -> Room {
    let under_max_size = match config.cache.max_size {
        Some(max) => client
            .metric("pullgate_cache_usage_bytes")
            .await
            .map(|used| max.0.saturating_sub(used as u64)),
        None => None,
    };
    let on_disk = (config.cache.blob_store != BlobStoreKind::S3)
        .then(|| rustix::fs::statvfs(&config.data_dir).ok())
        .flatten()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    Room {
        under_max_size,
        on_disk,
    }
}

/// Runs `prefetch` (see the module header); the text to print and the failure count.
pub async fn run(config: &Config, options: &Options) -> Result<Outcome, String> {
    let platform = platform(options.platform.as_deref())?;
    let credentials = credentials(options.creds.as_deref())?;
    for image in &options.images {
        engine::parse_image(image)?;
    }
    let imageset = match &options.imageset {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let (set, warnings) =
                crate::openshift::imageset::ImageSet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some((set, warnings))
        }
        None => None,
    };
    // An in-process pullgate on the data directory, unless a running one holds it.
    let mut local = config.clone();
    local.listen = "127.0.0.1:0".into();
    local.tls = None;
    local.clients.htpasswd = None;
    let (server, base) = match crate::app::spawn(&local).await {
        Ok(s) => {
            let url = s.url();
            (Some(s), url)
        }
        Err(StartError::Cache(CacheError::Locked { .. })) => (None, running_url(config)?),
        Err(e) => return Err(e.to_string()),
    };
    let client = Pullgate::new(url::Url::parse(&base).map_err(|e| format!("{base}: {e}"))?, credentials)?;
    let progress = Progress::new(options.progress);
    let mut lines = Vec::new();
    let mut wanted: Vec<Wanted> = options.images.iter().map(|i| Wanted::new(i.clone(), "image")).collect();
    let mut plan_failures = Vec::new();
    if let Some((set, warnings)) = &imageset {
        lines.extend(warnings.iter().map(|w| format!("warning: {w}")));
        let plan = imageset::plan(&client, set, &progress).await;
        lines.extend(plan.notes.iter().cloned());
        plan_failures = plan.failures;
        wanted.extend(plan.images);
    }
    let run_options = RunOptions {
        jobs: if options.jobs == 0 { 8 } else { options.jobs },
        platform,
        dry_run: options.dry_run,
    };
    let room = room(config, &client).await;
    let summary = engine::run(&client, &wanted, &run_options, room, &progress).await;
    if let Some(s) = server {
        s.shutdown().await.map_err(|e| e.to_string())?;
    }
    lines.extend(summary.warnings.iter().map(|w| format!("warning: {w}")));
    lines.extend(summary.lines.iter().cloned());
    for (what, why) in &plan_failures {
        lines.push(format!("FAILED  {what}: {why}"));
    }
    lines.extend(summary.totals(options.dry_run));
    let failed = summary.failed.len() + plan_failures.len();
    if failed > 0 {
        lines.push(format!("{failed} failed:"));
        for (what, why) in summary.failed.iter().chain(&plan_failures) {
            lines.push(format!("  {what}: {why}"));
        }
    }
    Ok((lines.join("\n") + "\n", failed))
}

/// The URL of the pullgate that runs on this configuration.
fn running_url(config: &Config) -> Result<String, String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    Ok(format!("{scheme}://{host}:{}", addr.port()))
}
