//! The listener: plain HTTP, or TLS with rustls and HTTP/2 by ALPN (the certificate
//! swappable while connections continue, for SIGHUP), with the connection and header
//! limits, and a graceful drain at shutdown.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The log target of the server's lifecycle lines (listening, reloads, repair, drain,
/// stop), kept stable for log filters such as `PULLGATE_LOG=warn,pullgate::server=info`.
pub const LIFECYCLE: &str = "pullgate::server";

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server certificate chain and key, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The limits the listener enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// On shutdown, how long in-flight responses may take to finish.
    pub drain_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: u64,
    /// Plain connections write warm blobs with sendfile ([`crate::zero_copy`]).
    pub sendfile: bool,
}

/// The TLS certificate in use, swappable while connections continue.
pub struct TlsState {
    files: TlsFiles,
    acceptor: RwLock<tokio_rustls::TlsAcceptor>,
}

impl TlsState {
    pub fn load(files: &TlsFiles) -> Result<TlsState, String> {
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

    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("tls.key {}: {e}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(server_crypto_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert / tls.key do not form a usable certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The suite is ours to choose (see `server_crypto_provider`), as Go's servers do.
    config.ignore_client_order = true;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// rustls' ring provider with its cipher suites in the order pullgate chooses from:
/// AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305, in TLS 1.3 and in 1.2. Clients
/// built on OpenSSL or rustls (Satellite, Ansible Automation Platform, curl) list
/// AES-256-GCM first, and an edge host that encrypts every blob it serves spends about
/// a third more CPU per byte on it (14 AES rounds instead of 10) for no protection that
/// matters against a 128-bit key. Go's servers (distribution, Quay, Harbor) choose the
/// same way, and Go's clients (podman, skopeo, CRI-O, containerd) ask for this order
/// anyway. Every x86-64 and arm64 server has AES instructions, which is why ChaCha20 is
/// last, not first, for clients that lack them.
pub fn server_crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::*;
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: rustls::CipherSuite| match suite {
        TLS13_AES_128_GCM_SHA256 | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384 | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    // Stable: within a rank, ring's order (TLS 1.3 first, ECDSA before RSA) stays.
    provider.cipher_suites.sort_by_key(|s| rank(s.suite()));
    provider
}

/// A router that gives each request its connection's peer address, as axum's
/// `ConnectInfo` (the status page lists who pulled what), and says whether the
/// connection's writer sends placeholder frames with sendfile.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: std::net::SocketAddr,
    kernel_copy: bool,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        if self.kernel_copy {
            req.extensions_mut().insert(crate::zero_copy::KernelCopyCapable);
        }
        self.inner.call(req)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and
/// drains in-flight responses for up to `limits.drain_timeout`, closing what is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<TlsState>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = limits.drain_timeout;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connection tasks, so the ones still running at the drain deadline can be closed.
    let mut connections_running = tokio::task::JoinSet::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) as usize);
    builder
        .http2()
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as u64) as u32);
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
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(target: LIFECYCLE, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let kernel_copy = limits.sendfile && tls.is_none();
                let service = hyper_util::service::TowerToHyperService::new(WithPeer { inner: app.clone(), peer, kernel_copy });
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
                        None if kernel_copy => {
                            let io = TokioIo::new(crate::zero_copy::KernelCopyStream::new(tcp));
                            let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
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
    info!(target: LIFECYCLE, "shutting down: draining in-flight responses");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!(
            target: LIFECYCLE,
            ?drain,
            "drain_timeout passed with responses still in flight; closing them"
        );
        connections_running.abort_all();
    }
    Ok(())
}
