//! `pullgate prefetch`: warms the cache ahead of a maintenance window by pulling images
//! through pullgate: through an in-process pullgate on the data directory, or, when a
//! running pullgate holds the database, through that one.

use crate::config::Config;
use crate::oci::media::{self, index_entries};
use crate::oci::{Digest, DigestHasher, Reference, RepoName};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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
    client: reqwest::Client,
    base: String,
    creds: Option<(String, String)>,
    platform: Option<(String, String)>,
}

impl Puller {
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        let req = self.client.get(url);
        match &self.creds {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    async fn manifest(&self, name: &RepoName, reference: &str) -> Result<(Digest, String, bytes::Bytes), String> {
        let url = format!("{}/v2/{name}/manifests/{reference}", self.base);
        let resp = self
            .get(url)
            .header("accept", media::UPSTREAM_MANIFEST_ACCEPT.join(", "))
            .send()
            .await
            .map_err(|e| format!("{name}:{reference}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{name}:{reference}: pullgate answered {}", resp.status()));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| format!("{name}:{reference}: {e}"))?;
        Ok((Digest::of(&bytes), media_type, bytes))
    }

    async fn blob(&self, name: &RepoName, digest: &Digest, bar: &ProgressBar) -> Result<(), String> {
        let mut resp = self
            .get(format!("{}/v2/{name}/blobs/{digest}", self.base))
            .send()
            .await
            .map_err(|e| format!("{digest}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("blob {digest}: pullgate answered {}", resp.status()));
        }
        let mut hasher = DigestHasher::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("blob {digest}: {e}"))? {
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
        #[derive(serde::Deserialize)]
        struct Desc {
            digest: String,
            #[serde(default)]
            size: u64,
        }
        #[derive(serde::Deserialize)]
        struct Image {
            config: Desc,
            #[serde(default)]
            layers: Vec<Desc>,
        }
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for m in &images {
            let img: Image = serde_json::from_slice(m).map_err(|e| format!("{image}: not an image manifest: {e}"))?;
            for d in std::iter::once(img.config).chain(img.layers) {
                let digest = Digest::parse(&d.digest).map_err(|e| format!("{image}: {e}"))?;
                if !blobs.iter().any(|(b, _)| b == &digest) {
                    blobs.push((digest, d.size));
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
    crate::upstream::install_crypto_provider();
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
    let (server, base) = match crate::server::spawn(&local).await {
        Ok(s) => {
            let url = s.url();
            (Some(s), url)
        }
        Err(e) if e.contains("in use by another pullgate") => {
            let addr = config.listen_addr().map_err(|e| e.to_string())?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            (None, format!("{scheme}://{host}:{}", addr.port()))
        }
        Err(e) => return Err(e),
    };
    let creds = options
        .creds
        .as_ref()
        .map(|c| {
            c.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .ok_or("--creds must be user:password")
        })
        .transpose()?;
    let puller = Puller {
        client: reqwest::Client::builder().build().map_err(|e| e.to_string())?,
        base,
        creds,
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
