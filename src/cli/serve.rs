//! `pullgate serve`: logging, the runtime with named threads, the shutdown signals, and
//! the application from [`crate::app`].

use super::LogFormat;
use crate::config::Config;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

pub fn serve(path: &Path, log_format: LogFormat) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pullgate: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    init_logging(log_format);
    // Named threads: `top -H` and profilers tell pullgate's work apart.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("pullgate")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pullgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::app::run(&config, shutdown_signal()));
    // A blocking task stuck in the database (its directory gone) must not keep the
    // process alive: the runtime waits for it a moment, not forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pullgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `PULLGATE_LOG` takes an env-filter (default `info`). Access lines
/// have the target `pullgate::access`, egress audit lines `pullgate::audit`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// SIGTERM or SIGINT: stop accepting and drain.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(target: crate::http::server::LIFECYCLE, "shutdown signal received");
}
