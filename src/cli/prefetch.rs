//! `pullgate prefetch`: warms the cache ahead of a maintenance window by pulling images
//! through pullgate: through an in-process pullgate on the data directory, or, when a
//! running pullgate holds the database, through that one. pullgate is reached as a
//! registry with the upstream client (Basic credentials when it asks for them).

use crate::app::StartError;
use crate::cache::CacheError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oci::image::{ImageManifest, index_entries};
use crate::oci::media;
use crate::oci::{Digest, DigestHasher, Reference, RepoName};
use crate::secret::Secret;
use crate::upstream::{Credentials, Upstream, UpstreamSettings};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub images: Vec<String>,
    /// `os/arch`: only this platform of an index (default: all).
    pub platform: Option<String>,
    /// `user:password` for a running pullgate with client authentication.
    pub creds: Option<String>,
    pub progress: bool,
}

/// `registry.redhat.io/ubi9/ubi:latest` or `…@sha256:…` → (name, reference).
pub fn parse_image(image: &str) -> Result<(RepoName, String), String> {
    let (name, reference) = match image.split_once('@') {
        Some((n, d)) => (n, d.to_string()),
        None => match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (image, "latest".to_string()),
        },
    };
    let name = RepoName::parse(name).map_err(|e| format!("{image}: {e}"))?;
    Reference::parse(&reference).map_err(|e| format!("{image}: {e}"))?;
    Ok((name, reference))
}

struct Puller {
    pullgate: Upstream,
    platform: Option<(String, String)>,
}

impl Puller {
    async fn manifest(&self, name: &RepoName, reference: &str) -> Result<(Digest, String, bytes::Bytes), String> {
        let fetched = self
            .pullgate
            .get_manifest(name, reference)
            .await
            .map_err(|e| format!("{name}:{reference}: {e}"))?;
        let media_type = fetched.content_type.unwrap_or_default();
        Ok((Digest::of(&fetched.bytes), media_type, fetched.bytes))
    }

    async fn blob(&self, name: &RepoName, digest: &Digest, bar: &ProgressBar) -> Result<(), String> {
        let mut body = self
            .pullgate
            .get_blob(name, digest, 0)
            .await
            .map_err(|e| format!("blob {digest}: {e}"))?;
        let mut hasher = DigestHasher::new();
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| format!("blob {digest}: {e}"))?;
            hasher.update(&chunk);
            bar.inc(chunk.len() as u64);
        }
        if &hasher.finish() != digest {
            return Err(format!("blob {digest}: bytes do not match the digest"));
        }
        Ok(())
    }

    /// Pulls one image (all platforms of an index, or the chosen one); returns the
    /// number of image manifests fetched.
    async fn pull(&self, image: &str, bar: &ProgressBar) -> Result<usize, String> {
        let (name, reference) = parse_image(image)?;
        let (digest, media_type, bytes) = self.manifest(&name, &reference).await?;
        if reference.contains(':') && digest.to_string() != reference {
            return Err(format!("{image}: manifest does not match its digest"));
        }
        let mut images = Vec::new();
        if media::is_index(&media::essence(&media_type)) {
            for e in index_entries(&bytes) {
                let wanted = self.platform.as_ref().is_none_or(|(os, arch)| {
                    e.os.as_deref() == Some(os.as_str()) && e.architecture.as_deref() == Some(arch.as_str())
                });
                if wanted {
                    let (d, _, b) = self.manifest(&name, &e.digest).await?;
                    if d.to_string() != e.digest {
                        return Err(format!("{image}: child {} does not match its digest", e.digest));
                    }
                    images.push(b);
                }
            }
            if images.is_empty() {
                return Err(format!("{image}: no manifest for the requested platform"));
            }
        } else {
            images.push(bytes);
        }
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for m in &images {
            let manifest = ImageManifest::parse(m)
                .ok()
                .filter(|i| i.config.is_some())
                .ok_or_else(|| format!("{image}: not an image manifest"))?;
            for (digest, size) in manifest.blobs().map_err(|e| format!("{image}: {e}"))? {
                if !blobs.iter().any(|(b, _)| b == &digest) {
                    blobs.push((digest, size));
                }
            }
        }
        bar.set_length(blobs.iter().map(|(_, s)| s).sum());
        for (digest, _) in &blobs {
            self.blob(&name, digest, bar).await?;
        }
        Ok(images.len())
    }
}

/// Pulls every image; returns the summary and how many failed.
pub async fn run(config: &Config, options: &Options) -> Result<(String, usize), String> {
    let platform = match &options.platform {
        Some(p) => {
            let (os, arch) = p
                .split_once('/')
                .ok_or_else(|| format!("--platform {p:?} must be os/arch, e.g. linux/amd64"))?;
            Some((os.to_string(), arch.to_string()))
        }
        None => None,
    };
    for image in &options.images {
        parse_image(image)?;
    }
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
        Err(StartError::Cache(CacheError::Locked { .. })) => {
            let addr = config.listen_addr().map_err(|e| e.to_string())?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            (None, format!("{scheme}://{host}:{}", addr.port()))
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut settings = UpstreamSettings::new("pullgate", url::Url::parse(&base).map_err(|e| format!("{base}: {e}"))?);
    settings.credentials = options
        .creds
        .as_ref()
        .map(|c| {
            c.split_once(':')
                .map(|(username, password)| Credentials {
                    username: username.to_string(),
                    password: Secret::new(password),
                })
                .ok_or("--creds must be user:password")
        })
        .transpose()?;
    let puller = Puller {
        pullgate: Upstream::new(settings, Arc::new(Metrics::new())).map_err(|e| e.to_string())?,
        platform,
    };
    let bars = MultiProgress::new();
    if !options.progress {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{msg:40!} [{bar:30}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut lines = Vec::new();
    let mut failed = 0;
    for image in &options.images {
        let bar = bars.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_message(image.clone()),
        );
        match puller.pull(image, &bar).await {
            Ok(n) => {
                bar.finish();
                lines.push(format!(
                    "ok      {image} ({n} image manifest{})",
                    if n == 1 { "" } else { "s" }
                ));
            }
            Err(e) => {
                bar.abandon();
                failed += 1;
                lines.push(format!("FAILED  {image}: {e}"));
            }
        }
    }
    if let Some(s) = server {
        s.shutdown().await.map_err(|e| e.to_string())?;
    }
    lines.push(format!(
        "{} of {} images prefetched",
        options.images.len() - failed,
        options.images.len()
    ));
    Ok((lines.join("\n") + "\n", failed))
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
        assert!(parse_image("UPPER/case").is_err());
        assert!(parse_image("a@sha256:zz").is_err());
    }
}
