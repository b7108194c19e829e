//! The TOML configuration: parsing (unknown keys are errors), human durations and
//! sizes, validation that names the offending key, and the secrets read from files.

pub use crate::cache::BlobStoreKind;
use crate::oci::pattern::RepoPatterns;
use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod openshift;
pub use openshift::{DEFAULT_SIGNATURE_STORE, DEFAULT_UPDATE_GRAPH, OpenShiftConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A duration written as `"500ms"`, `"30s"`, `"5m"`, `"2h"` or `"7d"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HumanDuration(pub Duration);

/// A size written as `"1024"`, `"64KiB"`, `"200GiB"`, `"10MB"` (binary and decimal units).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteSize(pub u64);

/// The longest duration pullgate takes: whole milliseconds must fit in a `u64`.
const MAX_DURATION: Duration = Duration::from_millis(u64::MAX);

/// Parses a duration such as `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"` (humantime's
/// syntax, so `"1h 30m"` works too). A bare number has no unit and is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like \"30s\", \"5m\", \"2h\": {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too long"));
    }
    Ok(d)
}

/// A duration as one whole unit when one divides it (`"5m"`, `"1500ms"`): the way
/// durations are written in the config, so `check-config` prints them back alike.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// Parses a size such as `"1024"`, `"64KiB"`, `"200GiB"`, `"10MB"` (binary and decimal
/// units, by the `bytesize` crate).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let size: bytesize::ByteSize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a size like \"512MiB\" or \"200GiB\": {e}"))?;
    // bytesize saturates on overflow.
    if size.as_u64() == u64::MAX {
        return Err(format!("{s:?} is too large"));
    }
    Ok(size.as_u64())
}

/// A size for people: `"1.5 GiB"`.
pub fn format_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

fn default_listen() -> String {
    "0.0.0.0:5000".to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_tag_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_body_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_upstream: Option<String>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub signatures: SignaturesConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Replicas that fetch each digest once for the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// OpenShift's release signatures and update graph, served to clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openshift: Option<OpenShiftConfig>,
}

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl: HumanDuration,
    #[serde(default)]
    pub blob_store: BlobStoreKind,
    /// What the cache may hold (blob bytes, manifest bytes and a fixed share per
    /// database record); least recently used blobs and manifests are evicted beyond it.
    /// None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Upstream blob downloads running at once; more wait for a slot.
    #[serde(default = "default_max_concurrent_fills")]
    pub max_concurrent_fills: usize,
    /// The S3-compatible bucket of `blob_store = "s3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

fn default_max_concurrent_fills() -> usize {
    64
}

/// `[cache.s3]`: the bucket replicas share (Ceph RGW / OpenShift Data Foundation, MinIO,
/// AWS S3, Garage).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The S3 endpoint URL; none: AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// A key prefix, so several pullgate fleets can share one bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Files holding the access key id and the secret access key; without them the
    /// standard `AWS_*` environment variables (or an injected web-identity token) apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint.
    #[serde(default)]
    pub allow_http: bool,
    /// Extra CA certificates (PEM) trusted for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Bytes per uploaded part (5MiB to 5GiB).
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// How often each replica reports what it used, heartbeats and reads the others'.
    #[serde(default = "default_report_interval")]
    pub report_interval: HumanDuration,
    /// How long a blob marked for eviction waits for a use that saves it.
    #[serde(default = "default_eviction_grace")]
    pub eviction_grace: HumanDuration,
}

fn default_report_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_eviction_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_part_size() -> ByteSize {
    ByteSize(8 << 20)
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl: default_tag_ttl(),
            blob_store: BlobStoreKind::Files,
            max_size: None,
            max_concurrent_fills: default_max_concurrent_fills(),
            s3: None,
        }
    }
}

/// TLS for clients (rustls; HTTP/2 and HTTP/1.1 by ALPN). SIGHUP reloads both files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_drain_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// The client-facing server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM, how long in-flight responses may take to finish before pullgate exits.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: HumanDuration,
    /// Client connections served at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send its request headers (slow clients cannot
    /// hold connections open by dribbling bytes).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Largest request head (request line and headers) accepted; larger answers 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
}

fn default_max_connections() -> usize {
    4096
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(64 * 1024)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: default_drain_timeout(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

/// Who may pull through pullgate. Anonymous by default (inside the network).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// An htpasswd file with bcrypt entries (`htpasswd -B`); clients then need Basic
    /// credentials (the `/sigstore/` lookaside and the health endpoints stay open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<PathBuf>,
}

/// How pullgate offers image signatures to clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Advertise `X-Registry-Supports-Signatures: 1` on `/v2/` and answer
    /// `/extensions/v2/<name>/signatures/<digest>`. containers/image and Pulp then use
    /// the extension API instead of a lookaside; the `/sigstore/` lookaside is served
    /// either way.
    #[serde(default = "default_true")]
    pub extension_api: bool,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig { extension_api: true }
    }
}

fn default_true() -> bool {
    true
}

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

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address like \"0.0.0.0:5000\"", self.listen),
            )
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.cache.max_concurrent_fills == 0 {
            return Err(invalid("cache.max_concurrent_fills", "must be at least 1"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.max_header_bytes.0 < 8192 {
            return Err(invalid("server.max_header_bytes", "must be at least 8KiB"));
        }
        if self.server.header_read_timeout.0.is_zero() {
            return Err(invalid("server.header_read_timeout", "must be greater than zero"));
        }
        self.validate_s3()?;
        if self.cache.max_size.is_some_and(|m| m.0 < 1024 * 1024) {
            return Err(invalid("cache.max_size", "must be at least 1MiB"));
        }
        if self.cache.tag_ttl.0 > Duration::from_secs(365 * 86_400) {
            return Err(invalid("cache.tag_ttl", "must be at most 365d"));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, u) in self.upstreams.iter().enumerate() {
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
                if !matches!(parsed.scheme(), "http" | "https")
                    || parsed.host_str().is_none()
                    || parsed.query().is_some()
                {
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
                let parsed =
                    url::Url::parse(proxy).map_err(|e| invalid(key("egress_proxy"), format!("{proxy:?}: {e}")))?;
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
        }
        self.validate_cluster()?;
        if let Some(o) = &self.openshift {
            o.validate()?;
        }
        if let Some(d) = &self.default_upstream
            && !self.upstreams.iter().any(|u| &u.name == d)
        {
            return Err(invalid(
                "default_upstream",
                format!("{d:?} is not the name of a configured [[upstream]]"),
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(c) = &self.cluster else { return Ok(()) };
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

    fn validate_s3(&self) -> Result<(), ConfigError> {
        let s3 = match (&self.cache.blob_store, &self.cache.s3) {
            (BlobStoreKind::S3, Some(s3)) => s3,
            (BlobStoreKind::S3, None) => {
                return Err(invalid(
                    "cache.s3",
                    "blob_store = \"s3\" needs a [cache.s3] table with its bucket",
                ));
            }
            (_, Some(_)) => return Err(invalid("cache.s3", "is set but blob_store is not \"s3\"")),
            (_, None) => return Ok(()),
        };
        let key = |k: &str| format!("cache.s3.{k}");
        if s3.bucket.is_empty()
            || !s3
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(invalid(key("bucket"), format!("{:?} is not a bucket name", s3.bucket)));
        }
        if let Some(endpoint) = &s3.endpoint {
            let url = url::Url::parse(endpoint).map_err(|e| invalid(key("endpoint"), format!("{endpoint:?}: {e}")))?;
            match url.scheme() {
                "https" => {}
                "http" if s3.allow_http => {}
                "http" => {
                    return Err(invalid(
                        key("endpoint"),
                        "is plain HTTP: set allow_http = true to use it",
                    ));
                }
                _ => return Err(invalid(key("endpoint"), format!("{endpoint:?} must be an http(s) URL"))),
            }
        }
        if s3.prefix.starts_with('/')
            || !s3
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        {
            return Err(invalid(
                key("prefix"),
                format!("{:?} must be a key prefix such as \"pullgate/\"", s3.prefix),
            ));
        }
        if !(5 << 20..=5 << 30).contains(&s3.part_size.0) {
            return Err(invalid(key("part_size"), "must be between 5MiB and 5GiB"));
        }
        if s3.report_interval.0 < Duration::from_millis(100) {
            return Err(invalid(key("report_interval"), "must be at least 100ms"));
        }
        let least = crate::cache::fleet::least_eviction_grace(s3.report_interval.0);
        if s3.eviction_grace.0 < least {
            return Err(invalid(
                key("eviction_grace"),
                format!(
                    "must be at least {} (twice report_interval plus 1s: a stream's use must reach the evictor before the deletion)",
                    humantime::format_duration(least)
                ),
            ));
        }
        if s3.access_key_id_file.is_some() != s3.secret_access_key_file.is_some() {
            return Err(invalid(
                key("access_key_id_file"),
                "access_key_id_file and secret_access_key_file go together",
            ));
        }
        Ok(())
    }

    /// The `[cache.s3]` credentials from their files, if configured.
    pub fn read_s3_credentials(&self) -> Result<Option<(Secret, Secret)>, ConfigError> {
        let Some(s3) = &self.cache.s3 else { return Ok(None) };
        let (Some(id), Some(secret)) = (&s3.access_key_id_file, &s3.secret_access_key_file) else {
            return Ok(None);
        };
        let read = |k: &str, p: &Path| {
            std::fs::read_to_string(p)
                .map(|v| Secret::new(v.trim()))
                .map_err(|e| invalid(format!("cache.s3.{k}"), format!("cannot read {}: {e}", p.display())))
        };
        Ok(Some((
            read("access_key_id_file", id)?,
            read("secret_access_key_file", secret)?,
        )))
    }

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

    /// The client htpasswd file's bcrypt entries, if client authentication is on.
    pub fn read_htpasswd(&self) -> Result<Option<Vec<(String, Secret)>>, ConfigError> {
        let Some(path) = &self.clients.htpasswd else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("clients.htpasswd", format!("cannot read {}: {e}", path.display())))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| invalid("clients.htpasswd", format!("line {}: expected user:hash", n + 1)))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(invalid(
                    "clients.htpasswd",
                    format!(
                        "line {}: user {user:?} is not a bcrypt entry (create it with htpasswd -B)",
                        n + 1
                    ),
                ));
            }
            entries.push((user.to_string(), Secret::new(hash)));
        }
        if entries.is_empty() {
            return Err(invalid(
                "clients.htpasswd",
                format!("{} has no entries", path.display()),
            ));
        }
        Ok(Some(entries))
    }

    /// The effective configuration as TOML (secrets are only ever file paths here).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml_str("[[upstream]]\nname = \"r.io\"\nurl = \"https://r.io\"\n").unwrap();
        assert_eq!(c.listen, "0.0.0.0:5000");
        assert_eq!(c.cache.tag_ttl.0, Duration::from_secs(300));
        assert_eq!(c.cache.blob_store, BlobStoreKind::Files);
        assert_eq!(c.upstreams[0].response_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| Config::from_toml_str(t).unwrap_err().to_string();
        assert!(err("bogus = 1").contains("bogus"));
        assert!(err("[cache]\ntag_ttl = \"5 parsecs\"").contains("tag_ttl"));
        assert!(err("[cache]\nblob_store = \"s3\"").contains("blob_store"));
        assert!(err("[cache]\nblob_store = \"nope\"").contains("blob_store"));
        assert!(err("[cache]\nblob_store = \"s3\"").contains("cache.s3"));
        assert!(
            err("[cache]\nblob_store = \"s3\"\n[cache.s3]\nbucket = \"b\"\nendpoint = \"http://x\"")
                .contains("allow_http")
        );
        assert!(
            err("[cache]\nblob_store = \"s3\"\n[cache.s3]\nbucket = \"b\"\npart_size = \"1MiB\"").contains("part_size")
        );
        assert!(err("[cache]\nblob_store = \"s3\"\n[cache.s3]\nbucket = \"b\"\nsurprise = 1").contains("surprise"));
        assert!(err("[cache.s3]\nbucket = \"b\"").contains("cache.s3"));
        assert!(err("listen = \"nope\"").contains("`listen`"));
        assert!(err("default_upstream = \"x\"").contains("default_upstream"));
        assert!(err("[[upstream]]\nname = \"a\"\nurl = \"ftp://a\"").contains("upstream[0].url"));
        assert!(err("[[upstream]]\nname = \"A B\"\nurl = \"https://a\"").contains("upstream[0].name"));
        assert!(err("[[upstream]]\nname = \"a\"\nurl = \"https://a\"\nusername = \"u\"").contains("password_file"));
        assert!(err("[[upstream]]\nname = \"a\"\nurl = \"https://a\"\nsurprise = 1").contains("surprise"));
        assert!(
            err("[[upstream]]\nname = \"a\"\nurl = \"https://a\"\n[[upstream]]\nname = \"a\"\nurl = \"https://b\"")
                .contains("twice")
        );
    }

    #[test]
    fn cluster_errors_name_the_key() {
        let err = |t: &str| {
            Config::from_toml_str(&format!("[cluster]\nsecret_file = \"/s\"\n{t}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("cluster.peers"));
        assert!(err("peers = [\"http://a:5000\"]\nself = \"http://b:5000\"").contains("own URL"));
        assert!(err("peers = [\"http://a:5000\", \"http://a:5000/\"]").contains("twice"));
        assert!(err("peers = [\"ftp://a\"]").contains("cluster.peers"));
        assert!(err("peers = [\"http://a:5000/x\"]").contains("base URL"));
        assert!(err("peers_dns = \"headless\"").contains("NAME:PORT"));
        assert!(err("peers_dns = \"h:5000\"\npeers = [\"http://a:5000\"]").contains("not both"));
        assert!(err("peers_dns = \"h:5000\"\npeer_timeout = \"0s\"").contains("peer_timeout"));
        assert!(err("peers_dns = \"h:5000\"\nsurprise = 1").contains("surprise"));
        let ok = Config::from_toml_str(
            "[cluster]\nsecret_file = \"/s\"\nself = \"http://a:5000\"\npeers = [\"http://a:5000\", \"http://b:5000\"]",
        )
        .unwrap();
        assert_eq!(ok.cluster.unwrap().peer_timeout.0, Duration::from_secs(5));
        let err = |t: &str| Config::from_toml_str(t).unwrap_err().to_string();
        assert!(
            err("[[upstream]]\nname = \"a\"\nurl = \"https://a\"\npullgate_upstream_by = \"ns\"")
                .contains("needs pullgate_upstream")
        );
        assert!(
            err("[[upstream]]\nname = \"a\"\nurl = \"https://a\"\npullgate_upstream = \"A B\"")
                .contains("pullgate_upstream")
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("999999999999d").is_err());
        assert_eq!(parse_size("200GiB"), Ok(200 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("1ZiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,30}") { let _ = parse_duration(&s); }

        #[test]
        fn size_parser_never_panics(s in "\\PC{0,30}") { let _ = parse_size(&s); }

        #[test]
        fn durations_roundtrip(n in 1u64..100_000, unit in prop::sample::select(vec!["ms", "s", "m", "h", "d"])) {
            let d = parse_duration(&format!("{n}{unit}")).unwrap();
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
