//! `[openshift]`: the two hosts besides the registries that clusters need, release
//! signatures and the update graph, with their defaults and validation.

use super::{ConfigError, HumanDuration, default_connect_timeout, default_response_timeout, invalid};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where OpenShift publishes release signatures (the cluster-version operator's store
/// protocol: `<store>/sha256=<hex>/signature-<N>`).
pub const DEFAULT_SIGNATURE_STORE: &str = "https://mirror.openshift.com/pub/openshift-v4/signatures/openshift/release";
/// OpenShift's update graph (Cincinnati).
pub const DEFAULT_UPDATE_GRAPH: &str = "https://api.openshift.com/api/upgrades_info/v1/graph";

fn default_signature_store() -> String {
    DEFAULT_SIGNATURE_STORE.into()
}
fn default_update_graph() -> String {
    DEFAULT_UPDATE_GRAPH.into()
}
fn default_graph_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_missing_signature_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_probe_channel() -> String {
    "stable-4.18".into()
}

/// `[openshift]`: what clusters need besides images: release signatures (for
/// ClusterVersion `signatureStores`) and the update graph (for `spec.upstream`), fetched
/// from these two hosts only, cached, and served when they are unreachable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenShiftConfig {
    #[serde(default = "default_signature_store")]
    pub signature_store: String,
    #[serde(default = "default_update_graph")]
    pub update_graph: String,
    /// How long one graph query's answer is served without asking again.
    #[serde(default = "default_graph_ttl")]
    pub graph_ttl: HumanDuration,
    /// How long a signature the store does not have is not asked for again.
    #[serde(default = "default_missing_signature_ttl")]
    pub missing_signature_ttl: HumanDuration,
    /// The channel `pullgate doctor` asks the graph for.
    #[serde(default = "default_probe_channel")]
    pub probe_channel: String,
    /// Extra CA certificates (PEM) trusted for both hosts; the system roots stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// An HTTP(S) proxy both hosts are reached through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
}

impl Default for OpenShiftConfig {
    fn default() -> Self {
        OpenShiftConfig {
            signature_store: default_signature_store(),
            update_graph: default_update_graph(),
            graph_ttl: default_graph_ttl(),
            missing_signature_ttl: default_missing_signature_ttl(),
            probe_channel: default_probe_channel(),
            ca_file: None,
            egress_proxy: None,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
        }
    }
}

impl OpenShiftConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let o = self;
        for (k, u) in [
            ("openshift.signature_store", &o.signature_store),
            ("openshift.update_graph", &o.update_graph),
        ] {
            let parsed = url::Url::parse(u).map_err(|e| invalid(k, format!("{u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.host_str().is_none()
                || parsed.query().is_some()
                || !parsed.username().is_empty()
                || parsed.password().is_some()
            {
                return Err(invalid(
                    k,
                    format!("{u:?} must be an http(s) URL without a query or credentials"),
                ));
            }
        }
        if let Some(proxy) = &o.egress_proxy {
            let parsed =
                url::Url::parse(proxy).map_err(|e| invalid("openshift.egress_proxy", format!("{proxy:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(
                    "openshift.egress_proxy",
                    format!("{proxy:?} must be an http:// or https:// proxy URL"),
                ));
            }
        }
        for (k, d) in [
            ("openshift.graph_ttl", o.graph_ttl),
            ("openshift.missing_signature_ttl", o.missing_signature_ttl),
            ("openshift.connect_timeout", o.connect_timeout),
            ("openshift.response_timeout", o.response_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(k, "must be greater than zero"));
            }
        }
        if o.probe_channel.is_empty()
            || !o
                .probe_channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(
                "openshift.probe_channel",
                format!("{:?} must be a channel name such as \"stable-4.18\"", o.probe_channel),
            ));
        }
        Ok(())
    }
}
