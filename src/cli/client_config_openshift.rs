//! What `client-config --for openshift` adds for clusters that install and upgrade
//! through pullgate: digest mirrors for the release repositories on quay.io, tag
//! mirrors and a CatalogSource per catalog of an image set, the ClusterVersion patch
//! that points `signatureStores` and `upstream` at pullgate (with `[openshift]`), and,
//! for clusters without `signatureStores`, a release's signatures as the ConfigMap
//! oc-mirror writes (`--for openshift-release-signatures`).

use super::client_config::Endpoint;
use crate::config::Config;
use crate::oci::Digest;
use base64::Engine as _;
use bytes::Bytes;
use std::fmt::Write as _;

/// The repositories a release lives in on quay.io: payloads and their components.
pub const RELEASE_REPOSITORIES: [&str; 2] = [
    "quay.io/openshift-release-dev/ocp-release",
    "quay.io/openshift-release-dev/ocp-v4.0-art-dev",
];

/// The additions to the OpenShift output (each a YAML document after `---`).
pub fn render(config: &Config, ep: &Endpoint, catalogs: &[String]) -> Result<String, String> {
    let mut out = String::new();
    if config.upstreams.iter().any(|u| u.name == "quay.io") {
        let _ = writeln!(
            out,
            "---\n# Release payloads and their components, by digest, as the installer's and oc's\n# docs name them (install-config.yaml imageDigestSources takes the same pairs)."
        );
        let _ = writeln!(
            out,
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: pullgate-release\nspec:\n  imageDigestMirrors:"
        );
        for repo in RELEASE_REPOSITORIES {
            let _ = writeln!(
                out,
                "  - source: {repo}\n    mirrors:\n    - {}/{repo}\n    mirrorSourcePolicy: NeverContactSource",
                ep.host
            );
        }
    }
    if !catalogs.is_empty() {
        out.push_str(&catalog_documents(ep, catalogs)?);
    }
    if config.openshift.is_some() {
        let _ = writeln!(
            out,
            "---\n# Release signatures and the update graph from pullgate. Apply as a patch:\n#   oc patch clusterversion version --type merge --patch-file <this document>"
        );
        let _ = writeln!(
            out,
            "apiVersion: config.openshift.io/v1\nkind: ClusterVersion\nmetadata:\n  name: version\nspec:\n  upstream: {0}/openshift/graph\n  signatureStores:\n  - url: {0}/openshift/signatures",
            ep.url
        );
    }
    Ok(out)
}

/// An ImageTagMirrorSet with one entry per catalog repository, and a CatalogSource per
/// catalog image that pulls it through pullgate.
fn catalog_documents(ep: &Endpoint, catalogs: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "---\n# The operator catalogs of the image set, by tag.\napiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: pullgate-catalogs\nspec:\n  imageTagMirrors:"
    );
    let mut repos: Vec<&str> = Vec::new();
    for c in catalogs {
        let (repo, _) = split_tag(c)?;
        if !repos.contains(&repo) {
            repos.push(repo);
            let _ = writeln!(out, "  - source: {repo}\n    mirrors:\n    - {}/{repo}", ep.host);
        }
    }
    for c in catalogs {
        let (repo, tag) = split_tag(c)?;
        let _ = writeln!(
            out,
            "---\napiVersion: operators.coreos.com/v1alpha1\nkind: CatalogSource\nmetadata:\n  name: {}\n  namespace: openshift-marketplace\nspec:\n  sourceType: grpc\n  image: {}/{repo}:{tag}\n  displayName: \"{} {tag} (through pullgate)\"\n  publisher: pullgate",
            catalog_source_name(repo, tag),
            ep.host,
            repo.rsplit('/').next().unwrap_or(repo),
        );
    }
    Ok(out)
}

/// `registry/ns/name:tag` → (`registry/ns/name`, `tag`); a catalog is named by tag.
fn split_tag(image: &str) -> Result<(&str, &str), String> {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.contains('@') => Ok((repo, tag)),
        _ => Err(format!(
            "catalog {image:?} is not named by tag (registry/namespace/name:tag)"
        )),
    }
}

/// A Kubernetes name for a catalog: its repository's last segment and tag, lowercase,
/// other characters as `-`, at most 63 characters (`redhat-operator-index-v4-16`).
pub fn catalog_source_name(repo: &str, tag: &str) -> String {
    let raw = format!("{}-{tag}", repo.rsplit('/').next().unwrap_or(repo));
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// The ConfigMap oc-mirror writes for clusters that read release signatures from the
/// cluster (namespace `openshift-config-managed`, the verification label,
/// `binaryData` keys `sha256-<hex>-<N>`), one per release.
pub fn release_signatures(releases: &[(Digest, Vec<Bytes>)]) -> Result<String, String> {
    if releases.is_empty() {
        return Err("name the release image with --release sha256:<hex> (or a pullspec …@sha256:<hex>)".into());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Release signatures for clusters without spec.signatureStores: apply with oc apply -f.\n# The cluster-version operator reads them from these ConfigMaps."
    );
    for (i, (digest, signatures)) in releases.iter().enumerate() {
        if signatures.is_empty() {
            return Err(format!("pullgate has no release signature for {digest}"));
        }
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(
            out,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pullgate-sha256-{0}\n  namespace: openshift-config-managed\n  labels:\n    release.openshift.io/verification-signatures: \"\"\nbinaryData:",
            digest.hex()
        );
        for (n, sig) in signatures.iter().enumerate() {
            let _ = writeln!(
                out,
                "  sha256-{}-{}: {}",
                digest.hex(),
                n + 1,
                base64::engine::general_purpose::STANDARD.encode(sig)
            );
        }
    }
    Ok(out)
}

/// `--release` as given: `sha256:<hex>` or a pullspec ending in `@sha256:<hex>`.
pub fn release_digest(arg: &str) -> Result<Digest, String> {
    let digest = arg.rsplit_once('@').map_or(arg, |(_, d)| d);
    Digest::parse(digest).map_err(|e| format!("--release {arg:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_kubernetes_names() {
        assert_eq!(
            catalog_source_name("registry.redhat.io/redhat/redhat-operator-index", "v4.16"),
            "redhat-operator-index-v4-16"
        );
        let long = catalog_source_name(&"x".repeat(80), "v1");
        assert!(long.len() <= 63);
        assert!(split_tag("registry.redhat.io/redhat/redhat-operator-index").is_err());
        assert!(split_tag("host:5000/ns/cat").is_err());
        assert_eq!(split_tag("host:5000/ns/cat:v1").unwrap(), ("host:5000/ns/cat", "v1"));
    }

    #[test]
    fn release_signatures_are_a_configmap() {
        let d = Digest::of(b"release");
        let out = release_signatures(&[(
            d.clone(),
            vec![Bytes::from_static(b"sig-one"), Bytes::from_static(b"two")],
        )])
        .unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(v["metadata"]["namespace"], "openshift-config-managed");
        assert_eq!(
            v["metadata"]["labels"]["release.openshift.io/verification-signatures"],
            ""
        );
        assert_eq!(v["binaryData"][format!("sha256-{}-2", d.hex())], "dHdv");
        assert!(release_signatures(&[]).is_err());
        assert!(release_signatures(&[(d, vec![])]).is_err());
        assert_eq!(
            release_digest(&format!("quay.io/x/y@sha256:{}", "a".repeat(64)))
                .unwrap()
                .hex(),
            "a".repeat(64)
        );
        assert!(release_digest("4.16.3").is_err());
    }
}
