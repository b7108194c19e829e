//! `[[upstream]]`: one registry, its credentials (a password file or a containers
//! auth.json), CA, egress proxy, allowed hosts and timeouts, with its validation.

use super::{
    Config, ConfigError, HumanDuration, default_body_idle_timeout, default_connect_timeout, default_response_timeout,
    invalid,
};
use crate::oci::pattern::RepoPatterns;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: String,
    /// Other path prefixes (and `ns` values) that mean this upstream, e.g. `rh` for an
    /// OpenShift mirror `pullgate.example/rh/ubi8` of `registry.redhat.io/ubi8`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The upstream's signature lookaside (sigstore) base URL, e.g.
    /// `https://registry.redhat.io/containers/sigstore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Credentials from a containers auth.json (as `podman login` writes it), looked up
    /// by the upstream's host. An alternative to `username` + `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for this upstream, e.g. a corporate root for
    /// a TLS-inspecting egress; the system roots stay trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// An HTTP(S) proxy every request for this upstream (registry, realm, CDN,
    /// lookaside) goes through, for DMZs that reach the internet through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<String>,
    /// Repository patterns clients may pull (`*` matches anything); empty allows all.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Repository patterns refused even when allowed.
    #[serde(default)]
    pub deny: Vec<String>,
    /// `REPOSITORY:TAG` that `pullgate doctor` pulls the manifest and config blob of;
    /// none: `ubi9/ubi-minimal:latest` for the Red Hat registries, else no probe image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_image: Option<String>,
    #[serde(default)]
    pub allow_redirect_hosts: Vec<String>,
    /// Hosts other than the upstream's own that may serve its token realm.
    #[serde(default)]
    pub allow_realm_hosts: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    #[serde(default = "default_body_idle_timeout")]
    pub body_idle_timeout: HumanDuration,
    /// When `url` is another pullgate (a site cache in front of the DMZ's): the name of
    /// the upstream there, e.g. `registry.redhat.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pullgate_upstream: Option<String>,
    /// How `pullgate_upstream` is named in requests: as a path prefix (`path`, the
    /// default) or as `?ns=` (`ns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pullgate_upstream_by: Option<UpstreamNaming>,
    /// Serve this upstream's manifests only when a signature by one of these keys
    /// verifies them (an inline table or an `[upstream.signature_policy]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_policy: Option<SignaturePolicyConfig>,
}

/// `signature_policy`: the keys an upstream's manifests must be signed with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicyConfig {
    /// OpenPGP public key files (armored or binary), e.g. Red Hat's
    /// `/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PathBuf>,
    /// cosign public keys (PEM, ECDSA P-256).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosign_keys: Vec<PathBuf>,
    /// The registry names a signature's identity may carry; default: the upstream's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// `enforce` (refuse what no signature verifies) or `audit` (serve it, log it).
    #[serde(default)]
    pub mode: crate::trust::Mode,
}

impl SignaturePolicyConfig {
    /// The identities, or the upstream's name when none are given.
    pub fn identities_or(&self, upstream: &str) -> Vec<String> {
        if self.identities.is_empty() {
            vec![upstream.to_string()]
        } else {
            self.identities.clone()
        }
    }
}

/// How a site pullgate names the DMZ pullgate's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamNaming {
    #[default]
    Path,
    Ns,
}

/// Credentials for `upstream_url` from a containers auth.json: the entry keyed by its
/// host (with port, if any), optionally with a scheme.
fn auth_file_credentials(path: &Path, upstream_url: &str) -> Result<Option<(String, Secret)>, String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let url = url::Url::parse(upstream_url).map_err(|e| e.to_string())?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let auths = json
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| format!("{} has no \"auths\"", path.display()))?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k == host || k.split('/').next() == Some(host.as_str())
    });
    let Some((_, entry)) = entry else {
        return Err(format!("{} has no entry for {host}", path.display()));
    };
    let auth = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .ok_or_else(|| format!("the {host} entry has no \"auth\""))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| format!("the {host} entry's auth is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("the {host} entry's auth is not text"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the {host} entry's auth is not user:password"))?;
    Ok(Some((user.to_string(), Secret::new(password))))
}

impl UpstreamConfig {
    /// Checks one `[[upstream]]` (the `i`th), with the names and aliases of those before it.
    pub(super) fn validate<'a>(&'a self, i: usize, names: &mut Vec<&'a str>) -> Result<(), ConfigError> {
        let u = self;
        let key = |k: &str| format!("upstream[{i}].{k}");
        if crate::oci::RepoName::parse(&u.name).is_err() {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} must be a lowercase registry name such as \"registry.redhat.io\"",
                    u.name
                ),
            ));
        }
        if names.contains(&u.name.as_str()) {
            return Err(invalid(key("name"), format!("{:?} is configured twice", u.name)));
        }
        names.push(&u.name);
        for alias in &u.aliases {
            if crate::oci::RepoName::parse(alias).is_err() {
                return Err(invalid(
                    key("aliases"),
                    format!("{alias:?} must be a lowercase repository path prefix such as \"rh\""),
                ));
            }
            if names.contains(&alias.as_str()) {
                return Err(invalid(
                    key("aliases"),
                    format!("{alias:?} already names another upstream or alias"),
                ));
            }
            names.push(alias);
        }
        if let Some(sigstore) = &u.sigstore {
            let parsed =
                url::Url::parse(sigstore).map_err(|e| invalid(key("sigstore"), format!("{sigstore:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || parsed.query().is_some() {
                return Err(invalid(
                    key("sigstore"),
                    format!("{sigstore:?} must be an http(s) base URL without a query"),
                ));
            }
        }
        let url = url::Url::parse(&u.url).map_err(|e| invalid(key("url"), format!("{:?}: {e}", u.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                key("url"),
                format!("{:?} must be an http(s) URL with a host", u.url),
            ));
        }
        if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                key("url"),
                "must not carry a query string or credentials (use username and password_file)",
            ));
        }
        if let Some(proxy) = &u.egress_proxy {
            let parsed = url::Url::parse(proxy).map_err(|e| invalid(key("egress_proxy"), format!("{proxy:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(
                    key("egress_proxy"),
                    format!("{proxy:?} must be an http:// or https:// proxy URL"),
                ));
            }
        }
        if u.auth_file.is_some() && u.username.is_some() {
            return Err(invalid(
                key("auth_file"),
                "use either auth_file or username + password_file, not both",
            ));
        }
        for (k, patterns) in [("allow", &u.allow), ("deny", &u.deny)] {
            RepoPatterns::new(patterns).map_err(|e| invalid(key(k), e.to_string()))?;
        }
        match (&u.username, &u.password_file) {
            (Some(_), None) => return Err(invalid(key("password_file"), "is required when username is set")),
            (None, Some(_)) => return Err(invalid(key("username"), "is required when password_file is set")),
            _ => {}
        }
        if let Some(probe) = &u.probe_image {
            let repo = probe.rsplit_once(':').map(|(r, _)| r).unwrap_or_default();
            if !probe.ends_with(|c: char| c != ':') || crate::oci::RepoName::parse(repo).is_err() {
                return Err(invalid(
                    key("probe_image"),
                    format!("{probe:?} must be REPOSITORY:TAG, e.g. ubi9/ubi-minimal:latest"),
                ));
            }
        }
        for (k, hosts) in [
            ("allow_redirect_hosts", &u.allow_redirect_hosts),
            ("allow_realm_hosts", &u.allow_realm_hosts),
        ] {
            for h in hosts.iter() {
                if h.is_empty() || h.contains(['/', '@', ' ', '*']) {
                    return Err(invalid(
                        key(k),
                        format!("{h:?} must be a host name, optionally with :port"),
                    ));
                }
            }
        }
        if let Some(remote) = &u.pullgate_upstream
            && crate::oci::RepoName::parse(remote).is_err()
        {
            return Err(invalid(
                key("pullgate_upstream"),
                format!("{remote:?} must be an upstream name of the other pullgate, e.g. \"registry.redhat.io\""),
            ));
        }
        if u.pullgate_upstream_by.is_some() && u.pullgate_upstream.is_none() {
            return Err(invalid(key("pullgate_upstream_by"), "needs pullgate_upstream"));
        }
        for (k, d) in [
            ("connect_timeout", u.connect_timeout),
            ("response_timeout", u.response_timeout),
            ("body_idle_timeout", u.body_idle_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(key(k), "must be greater than zero"));
            }
        }
        if let Some(p) = &u.signature_policy {
            if p.keys.is_empty() && p.cosign_keys.is_empty() {
                return Err(invalid(key("signature_policy"), "needs keys or cosign_keys"));
            }
            for identity in &p.identities {
                if crate::oci::RepoName::parse(identity).is_err() {
                    return Err(invalid(
                        key("signature_policy.identities"),
                        format!("{identity:?} must be a registry name such as \"registry.redhat.io\""),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// Reads every upstream's credentials (`password_file` or `auth_file`), so a missing
    /// or unreadable secret fails at startup. Returns (username, password) per upstream.
    pub fn read_secrets(&self) -> Result<Vec<Option<(String, Secret)>>, ConfigError> {
        self.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if let (Some(user), Some(p)) = (&u.username, &u.password_file) {
                    let password = std::fs::read_to_string(p).map_err(|e| {
                        invalid(
                            format!("upstream[{i}].password_file"),
                            format!("cannot read {}: {e}", p.display()),
                        )
                    })?;
                    return Ok(Some((
                        user.clone(),
                        Secret::new(password.trim_end_matches(['\r', '\n'])),
                    )));
                }
                match &u.auth_file {
                    Some(p) => auth_file_credentials(p, &u.url)
                        .map_err(|reason| invalid(format!("upstream[{i}].auth_file"), reason)),
                    None => Ok(None),
                }
            })
            .collect()
    }
}
