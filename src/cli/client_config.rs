//! `pullgate client-config`: the ready-to-apply configuration that points each kind of
//! client at pullgate, rendered from the running configuration. `deploy/clients/` holds
//! these outputs for an example URL; tests apply them to real clients or replay them.

use crate::config::{Config, UpstreamConfig};
use std::fmt::Write as _;

/// The kinds of client `client-config --for` renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// podman, skopeo, buildah and CRI-O (`registries.conf`)
    Podman,
    /// OpenShift (ImageDigestMirrorSet, ImageTagMirrorSet, ImageContentSourcePolicy)
    Openshift,
    /// containerd (`hosts.toml`)
    Containerd,
    /// Red Hat Satellite and Ansible Automation Platform
    Satellite,
    /// Another pullgate (a site cache) whose upstream is this one (`[[upstream]]`)
    Pullgate,
    /// OpenShift clusters without `signatureStores`: a release's signatures as the
    /// ConfigMap oc-mirror writes, read from pullgate (`--release`)
    OpenshiftReleaseSignatures,
}

/// What some outputs need besides the configuration: an image set's catalogs
/// (`--imageset`), and release signatures read from pullgate (`--release`).
#[derive(Debug, Default)]
pub struct Extras {
    /// The catalog images of an ImageSetConfiguration (`image:tag`).
    pub catalogs: Vec<String>,
    /// Release image digests with their signatures, in order.
    pub release_signatures: Vec<(crate::oci::Digest, Vec<bytes::Bytes>)>,
}

/// The marker line that starts each file in a multi-file output.
pub fn file_marker(path: &str) -> String {
    format!("# ==> {path} <==")
}

/// Where clients reach pullgate.
pub(super) struct Endpoint {
    /// `http://pullgate.example:5000` (no trailing slash).
    pub url: String,
    /// `pullgate.example:5000`: the registry host as clients name it.
    pub host: String,
    pub insecure: bool,
}

fn endpoint(url: &str) -> Result<Endpoint, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "--url {url:?} must be an http(s) URL such as https://pullgate.example.com:5000"
        ));
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(format!(
            "--url {url:?} must not have a path or query: clients need pullgate's root"
        ));
    }
    let host = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_string(),
    };
    Ok(Endpoint {
        url: url.trim_end_matches('/').to_string(),
        host,
        insecure: parsed.scheme() == "http",
    })
}

/// Renders the configuration for `kind`, for one upstream or all of them.
pub fn render(config: &Config, kind: ClientKind, url: &str, upstream: Option<&str>) -> Result<String, String> {
    render_with(config, kind, url, upstream, &Extras::default())
}

/// [`render`] with what `--imageset` and `--release` brought.
pub fn render_with(
    config: &Config,
    kind: ClientKind,
    url: &str,
    upstream: Option<&str>,
    extras: &Extras,
) -> Result<String, String> {
    let ep = endpoint(url)?;
    if kind == ClientKind::OpenshiftReleaseSignatures {
        return super::client_config_openshift::release_signatures(&extras.release_signatures);
    }
    let upstreams: Vec<&UpstreamConfig> = match upstream {
        Some(name) => vec![
            config
                .upstreams
                .iter()
                .find(|u| u.name == name)
                .ok_or_else(|| format!("--upstream {name:?} is not a configured [[upstream]] name"))?,
        ],
        None => config.upstreams.iter().collect(),
    };
    if upstreams.is_empty() {
        return Err("the configuration has no [[upstream]]".into());
    }
    Ok(match kind {
        ClientKind::Podman => podman(&ep, &upstreams) + &podman_policy(&upstreams),
        ClientKind::Openshift => {
            let mut out = openshift(&ep, &upstreams);
            out.push_str(&super::client_config_openshift::render(config, &ep, &extras.catalogs)?);
            out
        }
        ClientKind::OpenshiftReleaseSignatures => String::new(),
        ClientKind::Containerd => containerd(&ep, &upstreams),
        ClientKind::Satellite => satellite(config, &ep, &upstreams),
        ClientKind::Pullgate => site_pullgate(config, &ep, &upstreams),
    })
}

fn podman(ep: &Endpoint, upstreams: &[&UpstreamConfig]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        file_marker("/etc/containers/registries.conf.d/50-pullgate.conf")
    );
    let _ = writeln!(
        out,
        "# podman, skopeo, buildah and CRI-O pull these registries through pullgate."
    );
    let _ = writeln!(
        out,
        "# Set blocked = true where the source must never be contacted directly."
    );
    for u in upstreams {
        let _ = writeln!(out, "\n[[registry]]\nprefix = \"{0}\"\nlocation = \"{0}\"", u.name);
        let _ = writeln!(out, "\n[[registry.mirror]]\nlocation = \"{}/{}\"", ep.host, u.name);
        if ep.insecure {
            let _ = writeln!(out, "insecure = true");
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        file_marker("/etc/containers/registries.d/50-pullgate.yaml")
    );
    let _ = writeln!(
        out,
        "# Signatures of images pulled through the mirror are looked up by the mirror's"
    );
    let _ = writeln!(
        out,
        "# name, so RHEL's default signedBy policy needs this entry. pullgate also offers"
    );
    let _ = writeln!(
        out,
        "# the registry signature API, which clients prefer when /v2/ advertises it."
    );
    let _ = writeln!(
        out,
        "docker:\n  {}:\n    lookaside: {}/sigstore\n    use-sigstore-attachments: true",
        ep.host, ep.url
    );
    out
}

/// `policy.json` for clients that verify too, when an upstream has a signature policy:
/// the same keys, for the registry's own name (clients apply policy to the name they
/// pull, not to the mirror). The key files must be on the clients at the same paths
/// (Red Hat's is at /etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release on RHEL).
fn podman_policy(upstreams: &[&UpstreamConfig]) -> String {
    let mut docker = serde_json::Map::new();
    for u in upstreams {
        let Some(p) = &u.signature_policy else { continue };
        let mut requirements = Vec::new();
        let paths: Vec<String> = p.keys.iter().map(|k| k.display().to_string()).collect();
        match paths.as_slice() {
            [] => {}
            [one] => requirements.push(serde_json::json!({"type": "signedBy", "keyType": "GPGKeys", "keyPath": one})),
            many => requirements.push(serde_json::json!({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": many})),
        }
        for key in &p.cosign_keys {
            requirements.push(serde_json::json!({"type": "sigstoreSigned", "keyPath": key.display().to_string(), "signedIdentity": {"type": "matchRepository"}}));
        }
        docker.insert(u.name.clone(), serde_json::Value::Array(requirements));
    }
    if docker.is_empty() {
        return String::new();
    }
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": docker, "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}},
    });
    format!(
        "\n{}\n{}\n",
        file_marker("/etc/containers/policy.json"),
        serde_json::to_string_pretty(&policy).unwrap_or_default()
    )
}

fn openshift(ep: &Endpoint, upstreams: &[&UpstreamConfig]) -> String {
    let mirrors = || {
        let mut s = String::new();
        for u in upstreams {
            let _ = write!(
                s,
                "  - source: {0}\n    mirrors:\n    - {1}/{0}\n    mirrorSourcePolicy: NeverContactSource\n",
                u.name, ep.host
            );
            for alias in &u.aliases {
                let _ = writeln!(
                    s,
                    "  # namespace mapping through the alias {alias:?}: source {0}/<namespace> mirrors to {1}/{alias}/<namespace>",
                    u.name, ep.host
                );
            }
        }
        s
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# OpenShift 4.13+: images referenced by digest (ImageDigestMirrorSet) and by tag"
    );
    let _ = writeln!(
        out,
        "# (ImageTagMirrorSet) are pulled through pullgate. Apply with `oc apply -f`."
    );
    let _ = writeln!(
        out,
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: pullgate\nspec:\n  imageDigestMirrors:"
    );
    out.push_str(&mirrors());
    let _ = writeln!(
        out,
        "---\napiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: pullgate\nspec:\n  imageTagMirrors:"
    );
    out.push_str(&mirrors());
    let _ = writeln!(out, "---\n# Clusters before 4.13 (legacy): digest mirrors only.");
    let _ = writeln!(
        out,
        "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata:\n  name: pullgate\nspec:\n  repositoryDigestMirrors:"
    );
    for u in upstreams {
        let _ = writeln!(out, "  - source: {0}\n    mirrors:\n    - {1}/{0}", u.name, ep.host);
    }
    if ep.insecure {
        let _ = writeln!(out, "---\n# pullgate is reached over plain HTTP: let CRI-O use it.");
        let _ = writeln!(
            out,
            "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata:\n  name: cluster\nspec:\n  registrySources:\n    insecureRegistries:\n    - {}",
            ep.host
        );
    }
    out
}

fn containerd(ep: &Endpoint, upstreams: &[&UpstreamConfig]) -> String {
    let mut out = String::new();
    for u in upstreams {
        let _ = writeln!(
            out,
            "{}",
            file_marker(&format!("/etc/containerd/certs.d/{}/hosts.toml", u.name))
        );
        let _ = writeln!(
            out,
            "# containerd sends ?ns={} with every request; pullgate routes by it.",
            u.name
        );
        let _ = writeln!(out, "server = \"{}\"\n", u.url);
        let _ = writeln!(
            out,
            "[host.\"{}/v2/{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
            ep.url, u.name
        );
    }
    let _ = writeln!(
        out,
        "# In /etc/containerd/config.toml (CRI): config_path = \"/etc/containerd/certs.d\""
    );
    out
}

/// The `[[upstream]]` blocks of a site pullgate in front of this one: the same names and
/// aliases (the site's clients keep their mirror configuration), each reaching this
/// pullgate's upstream of that name.
fn site_pullgate(config: &Config, ep: &Endpoint, upstreams: &[&UpstreamConfig]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# For the pullgate.toml of a site pullgate whose upstream is the pullgate at {}.",
        ep.url
    );
    let _ = writeln!(
        out,
        "# Content is verified again at the site; signatures come from this pullgate's lookaside."
    );
    for u in upstreams {
        let _ = writeln!(
            out,
            "\n[[upstream]]\nname = \"{0}\"\nurl = \"{1}\"\npullgate_upstream = \"{0}\"",
            u.name, ep.url
        );
        if !u.aliases.is_empty() {
            let aliases: Vec<String> = u.aliases.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(out, "aliases = [{}]", aliases.join(", "));
        }
        if config.clients.htpasswd.is_some() {
            let _ = writeln!(
                out,
                "# This pullgate wants Basic credentials: a user of its [clients] htpasswd file."
            );
            let _ = writeln!(
                out,
                "username = \"site\"\npassword_file = \"/etc/pullgate/upstream-password\""
            );
        }
        if !ep.insecure {
            let _ = writeln!(
                out,
                "# The CA that signed this pullgate's certificate, unless the system trusts it:"
            );
            let _ = writeln!(out, "# ca_file = \"/etc/pullgate/upstream-ca.crt\"");
        }
    }
    out
}

fn satellite(config: &Config, ep: &Endpoint, upstreams: &[&UpstreamConfig]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Settings for Red Hat Satellite 6 and Ansible Automation Platform's private"
    );
    let _ = writeln!(
        out,
        "# automation hub (both sync with Pulp), written as TOML so scripts can read them."
    );
    let _ = writeln!(
        out,
        "\n# Satellite: Content > Products > (product) > New Repository, type docker."
    );
    let _ = writeln!(out, "[satellite]\nregistry_url = \"{}\"", ep.url);
    let _ = writeln!(
        out,
        "upstream_authentication = \"none\"   # pullgate holds the registry credentials"
    );
    let _ = writeln!(out, "verify_ssl = {}", !ep.insecure);
    if config.signatures.extension_api {
        let _ = writeln!(
            out,
            "# pullgate advertises the registry signature API: leave the sigstore URL empty."
        );
        let _ = writeln!(out, "sigstore_url = \"\"");
    } else {
        let _ = writeln!(out, "sigstore_url = \"{}/sigstore\"", ep.url);
    }
    let _ = writeln!(
        out,
        "# Upstream Repository Name: <upstream>/<repository>, one repository each."
    );
    for u in upstreams {
        let _ = writeln!(
            out,
            "\n[[satellite.repository]]\nupstream_name = \"{}/ubi9/ubi\"",
            u.name
        );
    }
    let _ = writeln!(
        out,
        "\n# AAP hub: Execution Environments > Remote Registries > Add remote registry, then"
    );
    let _ = writeln!(
        out,
        "# per execution environment its upstream name. \"Index execution environments\""
    );
    let _ = writeln!(out, "# needs catalog.redhat.com and is unavailable through pullgate.");
    let _ = writeln!(out, "[aap_hub]\nremote_registry_url = \"{}\"", ep.url);
    let _ = writeln!(
        out,
        "example_upstream_name = \"{}/ansible-automation-platform-25/ee-minimal-rhel9\"",
        upstreams[0].name
    );
    let _ = writeln!(out, "\n# The same with the Pulp CLI:");
    let _ = writeln!(
        out,
        "# pulp container remote create --name ubi9 --url {} --upstream-name {}/ubi9/ubi",
        ep.url, upstreams[0].name
    );
    out
}

/// Splits a multi-file output on its marker lines: (path, content) pairs.
pub fn split_files(output: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in output.lines() {
        if let Some(path) = line.strip_prefix("# ==> ").and_then(|l| l.strip_suffix(" <==")) {
            files.push((path.to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            "[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"https://registry.redhat.io\"\naliases = [\"rh\"]\n[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n",
        )
        .unwrap()
    }

    #[test]
    fn podman_output_has_a_mirror_and_lookaside_per_host() {
        let out = render(
            &config(),
            ClientKind::Podman,
            "http://pg.example:5000",
            Some("registry.redhat.io"),
        )
        .unwrap();
        let files = split_files(&out);
        assert_eq!(files.len(), 2);
        let conf: toml::Value = toml::from_str(&files[0].1).unwrap();
        assert_eq!(
            conf["registry"][0]["mirror"][0]["location"].as_str(),
            Some("pg.example:5000/registry.redhat.io")
        );
        assert_eq!(conf["registry"][0]["mirror"][0]["insecure"].as_bool(), Some(true));
        assert!(files[1].1.contains("lookaside: http://pg.example:5000/sigstore"));
    }

    #[test]
    fn podman_gets_a_policy_json_for_upstreams_with_a_policy() {
        let config = Config::from_toml_str(
            "[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"https://registry.redhat.io\"\nsignature_policy = { keys = [\"/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release\"] }\n[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n",
        )
        .unwrap();
        let out = render(&config, ClientKind::Podman, "http://pg.example:5000", None).unwrap();
        let files = split_files(&out);
        let (path, body) = files.last().unwrap();
        assert_eq!(path, "/etc/containers/policy.json");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["transports"]["docker"]["registry.redhat.io"][0]["keyPath"],
            "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"
        );
        assert!(v["transports"]["docker"].get("quay.io").is_none());
        let plain = render(
            &self::tests::config(),
            ClientKind::Podman,
            "http://pg.example:5000",
            None,
        )
        .unwrap();
        assert!(!plain.contains("policy.json"));
    }

    #[test]
    fn containerd_output_is_valid_toml_per_upstream() {
        let out = render(&config(), ClientKind::Containerd, "https://pg.example", None).unwrap();
        let files = split_files(&out);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].0, "/etc/containerd/certs.d/quay.io/hosts.toml");
        let hosts: toml::Value = toml::from_str(&files[0].1).unwrap();
        assert_eq!(
            hosts["host"]["https://pg.example/v2/registry.redhat.io"]["override_path"].as_bool(),
            Some(true)
        );
    }

    #[test]
    fn a_site_pullgate_block_is_a_valid_upstream() {
        let out = render(&config(), ClientKind::Pullgate, "https://dmz.example:5000", None).unwrap();
        let site = Config::from_toml_str(&out).unwrap();
        assert_eq!(site.upstreams.len(), config().upstreams.len());
        for (site, dmz) in site.upstreams.iter().zip(&config().upstreams) {
            assert_eq!(site.name, dmz.name);
            assert_eq!(site.url, "https://dmz.example:5000");
            assert_eq!(site.pullgate_upstream.as_deref(), Some(dmz.name.as_str()));
            assert_eq!(site.aliases, dmz.aliases);
        }
    }

    #[test]
    fn satellite_output_is_toml() {
        let out = render(&config(), ClientKind::Satellite, "https://pg.example", None).unwrap();
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(v["satellite"]["registry_url"].as_str(), Some("https://pg.example"));
        assert_eq!(
            v["satellite"]["repository"][1]["upstream_name"].as_str(),
            Some("quay.io/ubi9/ubi")
        );
    }

    #[test]
    fn bad_arguments_are_clear() {
        assert!(
            render(&config(), ClientKind::Podman, "pg.example:5000", None)
                .unwrap_err()
                .contains("--url")
        );
        assert!(
            render(&config(), ClientKind::Podman, "http://pg/x", None)
                .unwrap_err()
                .contains("path")
        );
        assert!(
            render(&config(), ClientKind::Podman, "http://pg", Some("nope"))
                .unwrap_err()
                .contains("--upstream")
        );
        use clap::ValueEnum as _;
        assert!(ClientKind::from_str("docker", false).is_err());
        assert_eq!(ClientKind::from_str("podman", false), Ok(ClientKind::Podman));
    }
}
