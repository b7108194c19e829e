//! `[cluster]`: the replicas that share the work of fetching (their URLs or a DNS name,
//! the shared secret, timeouts), with its validation.

use super::{Config, ConfigError, HumanDuration, invalid};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that gives this replica's URL when `cluster.self` is not
/// set (a Kubernetes Deployment sets it from the pod IP).
pub const CLUSTER_SELF_ENV: &str = "PULLGATE_CLUSTER_SELF";

fn default_peer_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_peers_dns_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[cluster]`: replicas that agree on an owner per digest (rendezvous hashing), so the
/// fleet fetches each blob and manifest from upstream once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's URL as the others reach it, e.g. `http://10.0.0.5:5000`; none:
    /// the `PULLGATE_CLUSTER_SELF` environment variable.
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub self_url: Option<String>,
    /// Every member's URL, this one's included (one list serves every replica).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Instead of `peers`: `name:port` whose A/AAAA records are the replicas (a
    /// headless Service), resolved again every `peers_dns_refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_dns: Option<String>,
    #[serde(default = "default_peers_dns_refresh")]
    pub peers_dns_refresh: HumanDuration,
    /// A file holding the secret every member shares; peer requests carry it.
    pub secret_file: PathBuf,
    /// How long to wait for a peer to accept a connection, and for its answer beyond
    /// the time upstream itself may take.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout: HumanDuration,
    /// Extra CA certificates (PEM) trusted for peers served over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// A replica's base URL as `key` gives it (a member of `peers`, `self`, or the
/// environment variable that stands for `self`).
fn member_url(key: &str, s: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(s).map_err(|e| invalid(key, format!("{s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(invalid(
            key,
            format!("{s:?} must be a replica's base URL such as \"http://10.0.0.5:5000\""),
        ));
    }
    Ok(url)
}

impl ClusterConfig {
    /// This replica's URL, as `key` gives it (`cluster.self`, or the environment
    /// variable when that is not set): a replica's base URL, and one of `peers` when
    /// they are listed.
    pub fn self_member(&self, key: &str, value: &str) -> Result<url::Url, ConfigError> {
        let me = member_url(key, value)?;
        let listed = self
            .peers
            .iter()
            .filter_map(|p| url::Url::parse(p).ok())
            .any(|p| p == me);
        if !self.peers.is_empty() && !listed {
            return Err(invalid(
                "cluster.peers",
                format!(
                    "must include this replica's own URL {:?} (one list serves every replica)",
                    me.as_str()
                ),
            ));
        }
        Ok(me)
    }
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        match (c.peers.is_empty(), &c.peers_dns) {
            (true, None) => return Err(invalid("cluster.peers", "set peers (every member's URL) or peers_dns")),
            (false, Some(_)) => return Err(invalid("cluster.peers_dns", "use either peers or peers_dns, not both")),
            (_, Some(dns)) => {
                let port = dns.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p));
                if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                    return Err(invalid(
                        "cluster.peers_dns",
                        format!("{dns:?} must be NAME:PORT, e.g. \"pullgate-headless.pullgate.svc:5000\""),
                    ));
                }
            }
            (false, None) => {}
        }
        let mut members = Vec::new();
        for p in &c.peers {
            let url = member_url("cluster.peers", p)?;
            if members.contains(&url) {
                return Err(invalid("cluster.peers", format!("{p:?} is listed twice")));
            }
            members.push(url);
        }
        if let Some(me) = &c.self_url {
            c.self_member("cluster.self", me)?;
        }
        if c.peer_timeout.0.is_zero() {
            return Err(invalid("cluster.peer_timeout", "must be greater than zero"));
        }
        if c.peers_dns_refresh.0 < Duration::from_secs(1) {
            return Err(invalid("cluster.peers_dns_refresh", "must be at least 1s"));
        }
        Ok(())
    }
}

impl Config {
    /// The `[cluster]` shared secret from its file.
    pub fn read_cluster_secret(&self) -> Result<Option<Secret>, ConfigError> {
        let Some(c) = &self.cluster else { return Ok(None) };
        let text = std::fs::read_to_string(&c.secret_file).map_err(|e| {
            invalid(
                "cluster.secret_file",
                format!("cannot read {}: {e}", c.secret_file.display()),
            )
        })?;
        let secret = text.trim();
        if secret.len() < 16 {
            return Err(invalid(
                "cluster.secret_file",
                format!(
                    "{} must hold a secret of at least 16 characters",
                    c.secret_file.display()
                ),
            ));
        }
        Ok(Some(Secret::new(secret)))
    }
}
