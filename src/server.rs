//! Wiring: opens the cache, builds the proxy and the HTTP router, binds the listener,
//! and runs until a shutdown signal, then drains and flushes the database.

use crate::cache::Cache;
use crate::config::Config;
use crate::http::{AppState, router};
use crate::proxy::Proxy;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

/// A server started in the background (tests, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, drains in-flight responses, flushes the database.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

pub async fn build(config: &Config) -> Result<Arc<Proxy>, String> {
    let (cache, report) = Cache::open(&config.data_dir, config.cache.blob_store)
        .map_err(|e| format!("cannot open the cache in {}: {e}", config.data_dir.display()))?;
    if report != Default::default() {
        info!(?report, "repaired the cache after an unclean stop");
    }
    Ok(Arc::new(Proxy::new(config, cache)?))
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let proxy = build(config).await?;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    serve(listener, proxy, shutdown).await.map_err(|e| e.to_string())
}

async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(store = proxy.cache.store_name(), "listening on http://{addr}");
    let app = router(AppState { proxy: proxy.clone() });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    info!("shutting down: flushing the database");
    proxy.cache.flush().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Starts a server in the background on `config.listen` (use port 0 in tests).
pub async fn spawn(config: &Config) -> Result<RunningServer, String> {
    let proxy = build(config).await?;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, proxy.clone(), async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        proxy,
        shutdown: Some(tx),
        task,
    })
}
