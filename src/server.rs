//! Wiring: opens the cache, builds the proxy and the HTTP router, binds the listener
//! (plain HTTP, or TLS with rustls and HTTP/2 by ALPN, reloaded on SIGHUP), and runs
//! until a shutdown signal, then drains up to `drain_timeout` and flushes the database.

use crate::config::{Config, ServerConfig, TlsConfig};
use crate::http::auth::ClientAuth;
use crate::http::{AppState, router};
use crate::proxy::Proxy;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server started in the background (tests, embedding).
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

    /// Stops accepting, drains in-flight responses, flushes the database.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// The TLS certificate in use, swappable while connections continue.
pub struct TlsState {
    files: TlsConfig,
    acceptor: RwLock<tokio_rustls::TlsAcceptor>,
}

impl TlsState {
    pub fn load(files: &TlsConfig) -> Result<TlsState, String> {
        Ok(TlsState {
            acceptor: RwLock::new(acceptor(files)?),
            files: files.clone(),
        })
    }

    /// Re-reads the certificate and key; on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = acceptor(&self.files)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn acceptor(files: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("tls.key {}: {e}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert / tls.key do not form a usable certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub async fn build(config: &Config, cache: Option<crate::cache::Cache>) -> Result<AppState, String> {
    let htpasswd = config.read_htpasswd().map_err(|e| e.to_string())?;
    let cache = match cache {
        Some(c) => c,
        None => {
            let (cache, report) = crate::cache::Cache::open(&config.data_dir, config.cache.blob_store)
                .map_err(|e| open_error(config, e))?;
            if report != Default::default() {
                info!(?report, "repaired the cache after an unclean stop");
            }
            cache
        }
    };
    let proxy = Arc::new(Proxy::new(config, cache)?);
    let clients = htpasswd.map(|entries| Arc::new(ClientAuth::new(entries)));
    Ok(AppState { proxy, clients })
}

/// sled's lock error, said plainly: another pullgate holds the database.
pub fn open_error(config: &Config, e: crate::cache::CacheError) -> String {
    let text = e.to_string();
    if text.contains("could not acquire lock") || text.contains("WouldBlock") {
        format!(
            "the database in {} is in use by another pullgate process; stop it first",
            config.data_dir.display()
        )
    } else {
        format!("cannot open the cache in {}: {text}", config.data_dir.display())
    }
}

/// Binds `config.listen` and serves until `shutdown` resolves; SIGHUP reloads TLS.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let server = spawn(config).await?;
    // SIGHUP always has a handler (its default would kill the process): it reloads the
    // TLS certificate when TLS is on and is otherwise only logged.
    let tls = server.tls.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => warn!(error = %e, "SIGHUP: TLS reload failed; keeping the current certificate"),
                },
                None => info!("SIGHUP: nothing to reload (no [tls])"),
            }
        }
    });
    shutdown.await;
    server.shutdown().await.map_err(|e| e.to_string())
}

/// Starts a server in the background on `config.listen` (use port 0 in tests).
pub async fn spawn(config: &Config) -> Result<RunningServer, String> {
    spawn_with_cache(config, None).await
}

/// [`spawn`] with a cache opened by the caller (e.g. with a wrapped blob store).
pub async fn spawn_with_cache(config: &Config, cache: Option<crate::cache::Cache>) -> Result<RunningServer, String> {
    let tls = config.tls.as_ref().map(TlsState::load).transpose()?.map(Arc::new);
    let state = build(config, cache).await?;
    let proxy = state.proxy.clone();
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = config.server.clone();
    let task = tokio::spawn(serve(listener, state, tls.clone(), limits, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        proxy,
        tls,
        shutdown: Some(tx),
        task,
    })
}

async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<TlsState>>,
    limits: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = limits.drain_timeout.0;
    let addr = listener.local_addr()?;
    let proxy = state.proxy.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(store = proxy.cache.store_name(), "listening on {scheme}://{addr}");
    let app = router(state);
    let started_ms = crate::cache::now_ms();
    let stats_saver = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tick += 1;
                // Blobs spared while clients read them are evicted once they are done.
                proxy.fills.enforce_limit(&proxy.cache).await;
                if tick.is_multiple_of(15) {
                    let _ = proxy.save_stats(started_ms).await;
                    let _ = proxy.cache.write_back_access().await;
                }
            }
        })
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connection tasks, so the ones still running at the drain deadline can be closed.
    let mut connections_running = tokio::task::JoinSet::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size(limits.max_header_bytes.0.max(8192) as usize);
    builder
        .http2()
        .max_header_list_size(limits.max_header_bytes.0.min(u32::MAX as u64) as u32);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // At max_connections, stop accepting: new connections wait in the backlog.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let tls = tls.as_ref().map(|t| t.current());
                while connections_running.try_join_next().is_some() {}
                connections_running.spawn(async move {
                    let _permit = permit;
                    match tls {
                        Some(acceptor) => {
                            let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                                return;
                            };
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        None => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    info!("shutting down: draining in-flight responses");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!(
            ?drain,
            "drain_timeout passed with responses still in flight; closing them"
        );
        connections_running.abort_all();
    }
    // Fills still running are stopped; their staged bytes are discarded, nothing half
    // published (a later request fetches the blob again).
    proxy.fills.stop_all(Duration::from_secs(5)).await;
    stats_saver.abort();
    let _ = proxy.save_stats(started_ms).await;
    let _ = proxy.cache.write_back_access().await;
    info!("flushing the database");
    proxy.cache.flush().await.map_err(std::io::Error::other)?;
    Ok(())
}
