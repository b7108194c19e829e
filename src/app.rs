//! The composition root: the only code that reads the [`Config`] and the secret files.
//! It turns them into each layer's own settings, builds the cache, the upstream clients
//! and the proxy, puts the HTTP router in front of them, and runs it until shutdown
//! (then drains, stops fills and flushes the database).

use crate::cache::fleet::FleetSettings;
use crate::cache::s3::S3Settings;
use crate::cache::{BlobStoreKind, Cache, CacheError, RepairReport, StoreSettings};
use crate::cluster::{Cluster, member_name};
use crate::config::{CLUSTER_SELF_ENV, ClusterConfig, Config, ConfigError, UpstreamConfig, UpstreamNaming};
use crate::http::auth::{ClientAuth, PeerSecret};
use crate::http::server::{LIFECYCLE, Limits, TlsFiles, TlsState};
use crate::http::status::activity::Activity;
use crate::http::status::{About, StatusState};
use crate::http::{AppState, AppStateParts, router};
use crate::metrics::Metrics;
use crate::oci::pattern::RepoPatterns;
use crate::proxy::openshift::OpenShift;
use crate::proxy::policy::{RoutePolicy, VerdictCounters};
use crate::proxy::{Proxy, ProxyError, ProxySettings, UpstreamRoute};
use crate::secret::Secret;
use crate::trust::{CosignKeys, Keyring, Policy};
use crate::upstream::openshift::{OpenShiftClient, OpenShiftSettings};
use crate::upstream::peer::{PeerClient, PeerSettings};
use crate::upstream::{Credentials, RemoteUpstream, SetupError, Upstream, UpstreamSettings};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Why pullgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Opening the cache failed; [`CacheError::Locked`] when another process has it.
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Upstream(#[from] SetupError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("{0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The process stopped because it cannot go on as it is (see
    /// [`crate::proxy::Proxy::needs_restart`]); started again, it will.
    #[error("{0}: stopped to be started again")]
    MustRestart(String),
}

/// The blob store the config names, with its settings and credentials read.
pub fn store_settings(config: &Config) -> Result<StoreSettings, ConfigError> {
    Ok(match (config.cache.blob_store, &config.cache.s3) {
        (BlobStoreKind::S3, Some(s3)) => StoreSettings::S3(Box::new(S3Settings {
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            prefix: s3.prefix.clone(),
            credentials: config.read_s3_credentials()?,
            allow_http: s3.allow_http,
            ca_pem: match &s3.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| ConfigError::Invalid {
                    key: "cache.s3.ca_file".into(),
                    reason: format!("{}: {e}", path.display()),
                })?),
                None => None,
            },
            part_size: s3.part_size.0 as usize,
            fleet: FleetSettings {
                report_interval: s3.report_interval.0,
                eviction_grace: s3.eviction_grace.0,
            },
        })),
        (kind, _) => kind.into(),
    })
}

/// Opens the cache in `config.data_dir` (the cache commands use it too).
pub fn open_cache(config: &Config) -> Result<(Cache, RepairReport), StartError> {
    Ok(Cache::open(&config.data_dir, store_settings(config)?)?)
}

/// One upstream's client settings, with its credentials and CA file read.
fn upstream_settings(
    u: &UpstreamConfig,
    credentials: Option<(String, Secret)>,
) -> Result<UpstreamSettings, ConfigError> {
    let key = |k: &str, reason: String| ConfigError::Invalid {
        key: format!("upstream {}: {k}", u.name),
        reason,
    };
    let url = |k: &str, s: &str| url::Url::parse(s).map_err(|e| key(k, format!("{s:?}: {e}")));
    let ca_pem = match &u.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| key("ca_file", format!("{}: {e}", path.display())))?),
        None => None,
    };
    let behind = u
        .pullgate_upstream
        .as_ref()
        .map(|name| match u.pullgate_upstream_by.unwrap_or_default() {
            UpstreamNaming::Path => RemoteUpstream::PathPrefix(name.clone()),
            UpstreamNaming::Ns => RemoteUpstream::Ns(name.clone()),
        });
    // Behind another pullgate, its lookaside serves the signatures by default.
    let sigstore = match (&u.sigstore, &u.pullgate_upstream) {
        (Some(s), _) => Some(url("sigstore", s)?),
        (None, Some(name)) => Some(url("url", &format!("{}/sigstore/{name}", u.url.trim_end_matches('/')))?),
        (None, None) => None,
    };
    Ok(UpstreamSettings {
        name: u.name.clone(),
        url: url("url", &u.url)?,
        sigstore,
        credentials: credentials.map(|(username, password)| Credentials { username, password }),
        ca_pem,
        egress_proxy: u.egress_proxy.clone(),
        allow_redirect_hosts: u.allow_redirect_hosts.clone(),
        allow_realm_hosts: u.allow_realm_hosts.clone(),
        connect_timeout: u.connect_timeout.0,
        response_timeout: u.response_timeout.0,
        body_idle_timeout: u.body_idle_timeout.0,
        behind,
        circuit_breaker: true,
    })
}

/// The Red Hat registries' probe image for `doctor` when none is configured.
const RED_HAT_PROBE_IMAGE: &str = "ubi9/ubi-minimal:latest";

/// Each configured upstream with its settings (credentials read from their files).
fn upstreams_with_settings(config: &Config) -> Result<Vec<(&UpstreamConfig, UpstreamSettings)>, ConfigError> {
    let secrets = config.read_secrets()?;
    config
        .upstreams
        .iter()
        .zip(secrets)
        .map(|(u, credentials)| Ok((u, upstream_settings(u, credentials)?)))
        .collect()
}

/// What `doctor` walks for one upstream: its settings, its probe image (configured, or
/// the default for the Red Hat registries) and its signature policy.
pub type DoctorTarget = (UpstreamSettings, Option<String>, Option<Policy>);

/// What `doctor` walks: every upstream (see [`DoctorTarget`]).
pub fn doctor_targets(config: &Config) -> Result<Vec<DoctorTarget>, StartError> {
    upstreams_with_settings(config)?
        .into_iter()
        .map(|(u, settings)| {
            let red_hat = matches!(
                settings.url.host_str(),
                Some("registry.redhat.io" | "registry.access.redhat.com")
            );
            let probe = u
                .probe_image
                .clone()
                .or_else(|| red_hat.then(|| RED_HAT_PROBE_IMAGE.to_string()));
            Ok((settings, probe, signature_policy(u)?))
        })
        .collect()
}

/// `[openshift]`'s client settings (its CA file read), when the section is set.
pub fn openshift_settings(config: &Config) -> Result<Option<OpenShiftSettings>, ConfigError> {
    let Some(o) = &config.openshift else { return Ok(None) };
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        key: format!("openshift.{key}"),
        reason,
    };
    let url = |key: &str, s: &str| url::Url::parse(s).map_err(|e| invalid(key, format!("{s:?}: {e}")));
    let ca_pem = match &o.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| invalid("ca_file", format!("{}: {e}", path.display())))?),
        None => None,
    };
    Ok(Some(OpenShiftSettings {
        signature_store: url("signature_store", &o.signature_store)?,
        update_graph: url("update_graph", &o.update_graph)?,
        ca_pem,
        egress_proxy: o.egress_proxy.clone(),
        connect_timeout: o.connect_timeout.0,
        response_timeout: o.response_timeout.0,
    }))
}

/// An upstream's signature policy with its key files read (a file that does not parse
/// is an error naming it).
pub fn signature_policy(u: &UpstreamConfig) -> Result<Option<Policy>, ConfigError> {
    let Some(p) = &u.signature_policy else { return Ok(None) };
    let invalid = |k: &str, e: crate::trust::KeyFileError| ConfigError::Invalid {
        key: format!("upstream {}: signature_policy.{k}", u.name),
        reason: e.to_string(),
    };
    let keyring = Keyring::from_files(&p.keys).map_err(|e| invalid("keys", e))?;
    let cosign = CosignKeys::from_files(&p.cosign_keys).map_err(|e| invalid("cosign_keys", e))?;
    Ok(Some(Policy::new(keyring, cosign, p.identities_or(&u.name), p.mode)))
}

/// The upstream clients and the client names that route to each.
fn routes(config: &Config, metrics: &Arc<Metrics>) -> Result<Vec<UpstreamRoute>, StartError> {
    upstreams_with_settings(config)?
        .into_iter()
        .map(|(u, settings)| {
            let patterns = |k: &str, p: &[String]| {
                RepoPatterns::new(p).map_err(|e| ConfigError::Invalid {
                    key: format!("upstream {}: {k}", u.name),
                    reason: e.to_string(),
                })
            };
            Ok(UpstreamRoute {
                upstream: Arc::new(Upstream::new(settings, metrics.clone())?),
                aliases: u.aliases.clone(),
                allow: patterns("allow", &u.allow)?,
                deny: patterns("deny", &u.deny)?,
                policy: signature_policy(u)?.map(|policy| {
                    Arc::new(RoutePolicy {
                        policy,
                        counters: VerdictCounters::new(metrics, &u.name),
                    })
                }),
            })
        })
        .collect()
}

/// Builds the application: the cache (opened here unless given), the upstreams, the
/// proxy and client authentication.
pub async fn build(config: &Config, cache: Option<Cache>) -> Result<AppState, StartError> {
    let htpasswd = config.read_htpasswd()?;
    let metrics = Arc::new(Metrics::new());
    let routes = routes(config, &metrics)?;
    let cache = match cache {
        Some(c) => c,
        None => {
            let (cache, report) = open_cache(config)?;
            if report.scanned {
                info!(target: LIFECYCLE, ?report, "scanned and repaired the cache after an unclean stop");
            } else {
                info!(target: LIFECYCLE, "opened the cache after a clean stop: nothing to scan");
            }
            cache
        }
    };
    let settings = ProxySettings {
        default_upstream: config.default_upstream.clone(),
        tag_ttl: config.cache.tag_ttl.0,
        max_concurrent_fills: config.cache.max_concurrent_fills,
        max_size: config.cache.max_size.map(|m| m.0),
        signatures_extension: config.signatures.extension_api,
    };
    let mut proxy = Proxy::new(settings, routes, cache, metrics.clone())?;
    if let (Some(settings), Some(o)) = (openshift_settings(config)?, &config.openshift) {
        proxy = proxy.with_openshift(OpenShift {
            client: OpenShiftClient::new(&settings, metrics.clone())?,
            graph_ttl: o.graph_ttl.0,
            missing_signature_ttl: o.missing_signature_ttl.0,
        });
    }
    let peers = match cluster(config)? {
        Some((cluster, secret)) => {
            proxy = proxy.with_cluster(cluster);
            Some(Arc::new(PeerSecret::new(&secret)))
        }
        None => None,
    };
    let status = status_page(config, htpasswd.as_deref())?;
    let clients = htpasswd.map(|entries| Arc::new(ClientAuth::new(entries)));
    Ok(AppState::new(AppStateParts {
        proxy: Arc::new(proxy),
        clients,
        peers,
        metrics,
        status,
    }))
}

/// The status page's state, unless `[status] enabled = false`; every `[status] users`
/// entry must be an htpasswd user.
fn status_page(config: &Config, htpasswd: Option<&[(String, Secret)]>) -> Result<Option<Arc<StatusState>>, StartError> {
    if !config.status.enabled {
        return Ok(None);
    }
    if let Some(entries) = htpasswd
        && let Some(missing) = config
            .status
            .users
            .iter()
            .find(|u| !entries.iter().any(|(e, _)| e == *u))
    {
        return Err(ConfigError::Invalid {
            key: "status.users".into(),
            reason: format!("{missing:?} is not a user of [clients] htpasswd"),
        }
        .into());
    }
    let doctor = doctor_targets(config)?
        .into_iter()
        .map(|(settings, probe, policy)| {
            (
                settings.name.clone(),
                crate::http::status::DoctorTarget {
                    settings,
                    probe,
                    policy,
                },
            )
        })
        .collect();
    Ok(Some(Arc::new(StatusState {
        activity: Activity::start(),
        users: config.status.users.clone(),
        about: About {
            version: env!("CARGO_PKG_VERSION"),
            listen: config.listen.clone(),
            bound: std::sync::OnceLock::new(),
            config_toml: config.to_toml(),
        },
        doctor,
        doctor_running: Arc::new(tokio::sync::Semaphore::new(1)),
    })))
}

/// `[cluster]`'s secret file and this replica's URL, as `serve` will read them (for
/// `check-config`).
pub fn check_cluster(config: &Config) -> Result<(), ConfigError> {
    if let Some(c) = &config.cluster {
        config.read_cluster_secret()?;
        cluster_self(c)?;
    }
    Ok(())
}

/// This replica's URL in the cluster: `cluster.self`, else `PULLGATE_CLUSTER_SELF`.
fn cluster_self(c: &ClusterConfig) -> Result<url::Url, ConfigError> {
    let (key, value) = match &c.self_url {
        Some(s) => ("cluster.self", s.clone()),
        None => (
            CLUSTER_SELF_ENV,
            std::env::var(CLUSTER_SELF_ENV).map_err(|_| ConfigError::Invalid {
                key: "cluster.self".into(),
                reason: format!("is not set and neither is the {CLUSTER_SELF_ENV} environment variable"),
            })?,
        ),
    };
    c.self_member(key, &value)
}

/// The cluster of `[cluster]` (its DNS members followed in the background) and the
/// shared secret.
fn cluster(config: &Config) -> Result<Option<(Arc<Cluster>, Secret)>, StartError> {
    let (Some(c), Some(secret)) = (&config.cluster, config.read_cluster_secret()?) else {
        return Ok(None);
    };
    let me = cluster_self(c)?;
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        key: key.into(),
        reason,
    };
    let ca_pem = match &c.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| invalid("cluster.ca_file", format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    // A peer answers once its own upstream has: its patience is added to ours.
    let longest =
        |f: fn(&UpstreamConfig) -> std::time::Duration| config.upstreams.iter().map(f).max().unwrap_or_default();
    let client = PeerClient::new(PeerSettings {
        self_url: member_name(&me),
        secret: secret.clone(),
        connect_timeout: c.peer_timeout.0,
        answer_timeout: c.peer_timeout.0 + longest(|u| u.response_timeout.0),
        idle_timeout: c.peer_timeout.0 + longest(|u| u.body_idle_timeout.0),
        ca_pem,
    })
    .map_err(|e| invalid("cluster.ca_file", e.to_string()))?;
    let members = c
        .peers
        .iter()
        .filter_map(|p| url::Url::parse(p).ok())
        .map(|u| member_name(&u))
        .collect();
    let cluster = Arc::new(Cluster::new(member_name(&me), members, client));
    if let Some(dns) = &c.peers_dns {
        tokio::spawn(
            cluster
                .clone()
                .follow_dns(dns.clone(), me.scheme().to_string(), c.peers_dns_refresh.0),
        );
    }
    info!(target: LIFECYCLE, member = %member_name(&me), members = ?cluster.members(), "a replica of a cluster");
    Ok(Some((cluster, secret)))
}

/// A server started in the background (tests, embedding, `prefetch`).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    /// Present when serving TLS: reload the certificate with [`TlsState::reload`].
    pub tls: Option<Arc<TlsState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, drains in-flight responses, stops fills, flushes the database.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// Binds `config.listen` and serves until `shutdown` resolves; SIGHUP reloads TLS.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let server = spawn(config).await?;
    // SIGHUP always has a handler (its default would kill the process): it reloads the
    // TLS certificate when TLS is on and is otherwise only logged.
    let tls = server.tls.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| StartError::Tls(format!("cannot install the SIGHUP handler: {e}")))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => info!(target: LIFECYCLE, "SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        warn!(target: LIFECYCLE, error = %e, "SIGHUP: TLS reload failed; keeping the current certificate")
                    }
                },
                None => info!(target: LIFECYCLE, "SIGHUP: nothing to reload (no [tls])"),
            }
        }
    });
    let proxy = server.proxy.clone();
    let restart = tokio::select! {
        () = shutdown => None,
        why = proxy.needs_restart() => Some(why),
    };
    let stopped = server.shutdown().await;
    match restart {
        Some(why) => {
            if let Err(e) = stopped {
                warn!(target: LIFECYCLE, error = %e, "the stop before the restart was not clean; the next start repairs");
            }
            Err(StartError::MustRestart(why))
        }
        None => stopped.map_err(StartError::Serve),
    }
}

/// Starts a server in the background on `config.listen` (use port 0 in tests).
pub async fn spawn(config: &Config) -> Result<RunningServer, StartError> {
    spawn_with_cache(config, None).await
}

/// [`spawn`] with a cache opened by the caller (e.g. with a wrapped blob store).
pub async fn spawn_with_cache(config: &Config, cache: Option<Cache>) -> Result<RunningServer, StartError> {
    let tls = config
        .tls
        .as_ref()
        .map(|t| {
            TlsState::load(&TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
            })
        })
        .transpose()
        .map_err(StartError::Tls)?
        .map(Arc::new);
    let state = build(config, cache).await?;
    let proxy = state.proxy.clone();
    let status = state.status.clone();
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(target: LIFECYCLE, store = proxy.store_name(), "listening on {scheme}://{addr}");
    if let Some(s) = &status {
        let _ = s.about.bound.set(format!("{scheme}://{addr}"));
    }
    let limits = Limits {
        drain_timeout: config.server.drain_timeout.0,
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout.0,
        max_header_bytes: config.server.max_header_bytes.0,
        sendfile: config.server.sendfile,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    let serving = crate::http::server::serve(listener, app, tls.clone(), limits, async move {
        let _ = rx.await;
    });
    let drain = config.server.drain_timeout.0;
    let task = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let housekeeping = tokio::spawn(proxy.clone().housekeeping());
            let sampling = status.map(|s| tokio::spawn(s.activity.clone().sample_every_minute(proxy.clone())));
            let served = serving.await;
            housekeeping.abort();
            if let Some(s) = sampling {
                s.abort();
            }
            info!(target: LIFECYCLE, "stopping fills and flushing the database");
            // Bounded like the drain: a database that cannot be flushed (its directory
            // gone) must not keep the process from exiting.
            match tokio::time::timeout(drain, proxy.shutdown()).await {
                Ok(result) => result.map_err(std::io::Error::other)?,
                Err(_) => {
                    warn!(target: LIFECYCLE, "the database did not flush within drain_timeout; exiting without it")
                }
            }
            served
        }
    });
    Ok(RunningServer {
        addr,
        proxy,
        tls,
        shutdown: Some(tx),
        task,
    })
}
