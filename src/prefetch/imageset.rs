//! An ImageSetConfiguration resolved into the images to warm, by oc-mirror v2's rules
//! (the pure parts are `crate::openshift`): each channel's releases from the update
//! graph (asked through pullgate, which keeps it for the clusters), each release's
//! payload and the components its last layer's `image-references` names (and its
//! release signatures, warmed), each catalog with the bundles and related images its
//! file-based catalog selects, and the additional images; `blockedImages` removed.
//! What cannot be resolved is a named failure; the rest goes on.

use super::client::{BlobReader, Manifest, Pullgate};
use super::engine::{Wanted, parse_image, platform_manifests};
use super::progress::Progress;
use crate::oci::image::ImageManifest;
use crate::oci::{Digest, RepoName};
use crate::openshift::catalog::{self, Catalog, CatalogBuilder};
use crate::openshift::graph::Graph;
use crate::openshift::imageset::{ImageSet, OperatorCatalog};
use crate::openshift::layers::{self, Overlay};
use crate::openshift::release::{self, ImageReferences};
use std::collections::HashSet;

/// The image config label that names a catalog's file-based catalog directory.
const CONFIGS_LABEL: &str = "operators.operatorframework.io.index.configs.v1";
/// The largest `image-references` read from a payload.
const MAX_IMAGE_REFERENCES: u64 = 16 << 20;
/// The largest single file of a file-based catalog.
const MAX_CATALOG_FILE: u64 = 128 << 20;
/// The largest image config read.
const MAX_CONFIG: u64 = 4 << 20;

/// What an image set resolves to.
#[derive(Debug, Default)]
pub struct Plan {
    /// The images, each once, in the order found (releases, components, catalogs,
    /// bundles and related images, additional images).
    pub images: Vec<Wanted>,
    /// What each step found, for the report.
    pub notes: Vec<String>,
    /// What could not be resolved (a channel, a payload, a catalog), and why.
    pub failures: Vec<(String, String)>,
}

impl Plan {
    fn want(&mut self, seen: &mut HashSet<String>, image: &str, kind: &'static str) {
        if seen.insert(image.to_string()) {
            self.images.push(Wanted::new(image, kind));
        }
    }
}

/// Resolves `set` through `client` (see the module header).
pub async fn plan(client: &Pullgate, set: &ImageSet, progress: &Progress) -> Plan {
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    releases(client, set, progress, &mut plan, &mut seen).await;
    for operator in &set.operators {
        progress.phase("catalogs", 1);
        progress.message(operator.catalog.clone());
        match catalog_images(client, operator).await {
            Ok((selected, images)) => {
                plan.notes.push(format!(
                    "catalog {}: {} bundles selected, {} images",
                    operator.catalog,
                    selected,
                    images.len() + 1
                ));
                plan.want(&mut seen, &operator.catalog, "catalog");
                for (image, kind) in images {
                    plan.want(&mut seen, &image, kind);
                }
            }
            Err(e) => {
                // The catalog image itself is still warmed; what it selects is unknown.
                plan.want(&mut seen, &operator.catalog, "catalog");
                plan.failures.push((format!("catalog {}", operator.catalog), e));
            }
        }
        progress.step();
    }
    for image in &set.additional_images {
        plan.want(&mut seen, image, "additional");
    }
    let before = plan.images.len();
    plan.images.retain(|w| !set.is_blocked(&w.image));
    if plan.images.len() < before {
        let n = before - plan.images.len();
        plan.notes.push(format!(
            "{n} image{} left out by blockedImages",
            if n == 1 { "" } else { "s" }
        ));
    }
    plan
}

/// Every release the channels (and `platform.release`) select, with their components
/// and signatures.
async fn releases(client: &Pullgate, set: &ImageSet, progress: &Progress, plan: &mut Plan, seen: &mut HashSet<String>) {
    let mut payloads: Vec<(String, String, String)> = Vec::new(); // (pullspec, version, arch)
    for arch in &set.platform.architectures {
        for channel in &set.platform.channels {
            progress.phase("graph", 1);
            progress.message(format!("{} ({arch})", channel.name));
            let what = format!("channel {} ({arch})", channel.name);
            let selected = client
                .update_graph(&channel.name, arch)
                .await
                .and_then(|body| Graph::parse(&body).map_err(|e| e.to_string()))
                .and_then(|graph| {
                    graph.select(channel).map_err(|e| e.to_string()).map(|nodes| {
                        nodes
                            .into_iter()
                            .map(|n| (n.payload.clone(), n.version.to_string()))
                            .collect::<Vec<_>>()
                    })
                });
            match selected {
                Ok(nodes) => {
                    let versions: Vec<&str> = nodes.iter().map(|(_, v)| v.as_str()).collect();
                    plan.notes.push(format!("{what}: releases {}", versions.join(", ")));
                    payloads.extend(nodes.into_iter().map(|(p, v)| (p, v, arch.clone())));
                }
                Err(e) => plan.failures.push((what, e)),
            }
            progress.step();
        }
    }
    if let Some(release) = &set.platform.release {
        let arch = set
            .platform
            .architectures
            .first()
            .cloned()
            .unwrap_or_else(|| "amd64".into());
        payloads.push((release.clone(), release.clone(), arch));
    }
    progress.phase("releases", payloads.len() as u64);
    for (payload, version, arch) in payloads {
        if seen.contains(&payload) {
            progress.step();
            continue;
        }
        progress.message(version.clone());
        plan.want(seen, &payload, "release");
        match release_contents(client, &payload, &arch).await {
            Ok((digest, references)) => {
                let signatures = client.release_signatures(&digest).await;
                plan.notes.push(format!(
                    "release {version} ({arch}): {} components, {}",
                    references.components.len(),
                    match &signatures {
                        Ok(n) => format!("{n} release signature{}", if *n == 1 { "" } else { "s" }),
                        Err(e) => format!("signatures not warmed: {e}"),
                    }
                ));
                for c in &references.components {
                    plan.want(seen, &c.image, "component");
                }
            }
            Err(e) => plan.failures.push((format!("release {version} ({payload})"), e)),
        }
        progress.step();
    }
}

/// The platform manifest of `arch` (linux) of an index, else its first; a single image
/// as it is.
async fn one_platform(client: &Pullgate, name: &RepoName, top: Manifest, arch: &str) -> Result<Manifest, String> {
    if !top.is_index() {
        return Ok(top);
    }
    let wanted = ("linux".to_string(), arch.to_string());
    match platform_manifests(client, name, top.clone(), Some(&wanted)).await {
        Ok(mut m) => Ok(m.remove(0)),
        Err(_) => {
            let mut all = platform_manifests(client, name, top, None).await?;
            Ok(all.remove(0))
        }
    }
}

/// Runs `read` over a blob on the blocking pool, then reads the blob to its end so its
/// digest is checked: what `read` returned is only kept when the bytes were right.
async fn read_blob<T: Send + 'static>(
    client: &Pullgate,
    name: &RepoName,
    digest: &Digest,
    read: impl FnOnce(&mut BlobReader) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let mut reader = client.blob_reader(name, digest).await?;
    let d = digest.clone();
    tokio::task::spawn_blocking(move || {
        let value = read(&mut reader)?;
        reader.finish().map_err(|e| format!("blob {d}: {e}"))?;
        Ok(value)
    })
    .await
    .map_err(|e| format!("blob {digest}: {e}"))?
}

/// A release payload's digest (of the manifest named) and its `image-references`.
async fn release_contents(client: &Pullgate, payload: &str, arch: &str) -> Result<(Digest, ImageReferences), String> {
    let (name, reference) = parse_image(payload)?;
    let top = client.manifest(&name, &reference).await?;
    let release_digest = top.digest.clone();
    let manifest = one_platform(client, &name, top, arch).await?;
    let image = ImageManifest::parse(&manifest.bytes).map_err(|e| format!("payload manifest: {e}"))?;
    let last = image.layers.last().ok_or("the payload image has no layers")?;
    let digest = Digest::parse(&last.digest).map_err(|e| format!("payload layer {}: {e}", last.digest))?;
    let bytes = read_blob(client, &name, &digest, |r| {
        layers::read_file(r, release::IMAGE_REFERENCES, MAX_IMAGE_REFERENCES).map_err(|e| e.to_string())
    })
    .await?
    .ok_or_else(|| format!("the payload's last layer has no {}", release::IMAGE_REFERENCES))?;
    let references = release::parse_image_references(&bytes).map_err(|e| e.to_string())?;
    Ok((release_digest, references))
}

/// The file-based catalog of a catalog image, its layers read top-down as an overlay.
async fn read_catalog(client: &Pullgate, image: &str) -> Result<Catalog, String> {
    let (name, reference) = parse_image(image)?;
    let top = client.manifest(&name, &reference).await?;
    let manifest = one_platform(client, &name, top, "amd64").await?;
    let parsed = ImageManifest::parse(&manifest.bytes).map_err(|e| format!("catalog manifest: {e}"))?;
    let config = parsed.config.as_ref().ok_or("the catalog image has no config")?;
    let config = Digest::parse(&config.digest).map_err(|e| format!("config {}: {e}", config.digest))?;
    let config = read_blob(client, &name, &config, |r| {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(r, MAX_CONFIG + 1), &mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    })
    .await?;
    let root = configs_dir(&config)?;
    let mut state = Some((Overlay::new(&root), CatalogBuilder::new()));
    for layer in parsed.layers.iter().rev() {
        let digest = Digest::parse(&layer.digest).map_err(|e| format!("layer {}: {e}", layer.digest))?;
        let (mut overlay, mut builder) = state.take().ok_or("catalog state lost")?;
        state = Some(
            read_blob(client, &name, &digest, move |r| {
                overlay
                    .walk_layer(r, MAX_CATALOG_FILE, |path, size, file| {
                        let mut bytes = Vec::with_capacity(size.min(MAX_CATALOG_FILE) as usize);
                        std::io::Read::read_to_end(file, &mut bytes).map_err(|e| e.to_string())?;
                        builder.add_file(path, &bytes).map_err(|e| e.to_string())
                    })
                    .map_err(|e| e.to_string())?;
                Ok((overlay, builder))
            })
            .await?,
        );
    }
    let (_, builder) = state.ok_or("catalog state lost")?;
    builder.finish().map_err(|e| e.to_string())
}

/// The directory the config's label names (`/configs` when it names none).
fn configs_dir(config: &[u8]) -> Result<String, String> {
    let config: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("the catalog's image config is not JSON: {e}"))?;
    Ok(config
        .pointer("/config/Labels")
        .and_then(|l| l.get(CONFIGS_LABEL))
        .and_then(|v| v.as_str())
        .unwrap_or("/configs")
        .to_string())
}

/// What one `mirror.operators[]` entry selects: the number of bundles, and every image
/// they name (bundle images, then related images).
async fn catalog_images(
    client: &Pullgate,
    operator: &OperatorCatalog,
) -> Result<(usize, Vec<(String, &'static str)>), String> {
    let catalog = read_catalog(client, &operator.catalog).await?;
    let selected = catalog.select(operator).map_err(|e| e.to_string())?;
    let bundles: HashSet<&str> = selected.iter().map(|b| b.image.as_str()).collect();
    let images = catalog::images(&selected)
        .into_iter()
        .map(|i| {
            let kind = if bundles.contains(i.as_str()) {
                "bundle"
            } else {
                "related"
            };
            (i, kind)
        })
        .collect();
    Ok((selected.len(), images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_label_names_the_directory() {
        let config = br#"{"config":{"Labels":{"operators.operatorframework.io.index.configs.v1":"/catalog"}}}"#;
        assert_eq!(configs_dir(config).unwrap(), "/catalog");
        assert_eq!(configs_dir(br#"{"config":{}}"#).unwrap(), "/configs");
        assert!(configs_dir(b"not json").is_err());
    }
}
