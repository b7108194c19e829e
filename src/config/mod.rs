//! The TOML configuration: parsing (unknown keys are errors), human durations and
//! sizes, validation that names the offending key, and the secrets read from files.

pub use crate::cache::BlobStoreKind;
use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;
mod openshift;
mod status;
mod upstream;
pub use cluster::{CLUSTER_SELF_ENV, ClusterConfig};
pub use openshift::{DEFAULT_SIGNATURE_STORE, DEFAULT_UPDATE_GRAPH, OpenShiftConfig};
pub use status::StatusConfig;
pub use upstream::{SignaturePolicyConfig, UpstreamConfig, UpstreamNaming};

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
    /// The operator's status page.
    #[serde(default)]
    pub status: StatusConfig,
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
    /// Send warm blobs of the `files` store on plain HTTP/1.x connections with
    /// sendfile(2), page cache to socket (src/zero_copy.rs). Off (the default): every
    /// blob is read into a buffer and written, which measured faster for one client and
    /// no dearer in server CPU per GB (benches/README.md, "sendfile or copy").
    #[serde(default = "default_sendfile")]
    pub sendfile: bool,
}

fn default_sendfile() -> bool {
    false
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
            sendfile: default_sendfile(),
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

pub(crate) fn default_true() -> bool {
    true
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
            u.validate(i, &mut names)?;
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if let Some(o) = &self.openshift {
            o.validate()?;
        }
        self.status.validate(self.clients.htpasswd.is_some())?;
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
