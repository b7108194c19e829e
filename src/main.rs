//! The `pullgate` command line: `serve` and `check-config`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use pullgate::config::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pullgate",
    version,
    about = "A caching pull-through proxy for container registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log lines as human-readable text or as JSON objects, one per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the configuration that points a kind of client at pullgate.
    ClientConfig {
        /// podman (also skopeo, buildah, CRI-O), openshift, containerd or satellite (also AAP)
        #[arg(long = "for", value_name = "CLIENT")]
        client: pullgate::client_config::ClientKind,
        /// How clients reach pullgate, e.g. https://pullgate.example.com:5000
        #[arg(long, value_name = "URL")]
        url: String,
        /// Only this upstream (default: all)
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        #[arg(long, value_name = "FILE", default_value = "config/pullgate.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config).and_then(|c| c.read_secrets().map(|_| c)) {
            Ok(c) => {
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pullgate: {}: {e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::ClientConfig {
            client,
            url,
            upstream,
            config,
        } => {
            let rendered = Config::load(&config)
                .map_err(|e| format!("{}: {e}", config.display()))
                .and_then(|c| pullgate::client_config::render(&c, client, &url, upstream.as_deref()));
            match rendered {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pullgate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { config, log_format } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pullgate: {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            init_logging(log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("pullgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pullgate::server::run(&config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("pullgate: {e}");
                    ExitCode::FAILURE
                }
            }
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
    tracing::info!("shutdown signal received");
}
