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

#[derive(Subcommand)]
enum CacheCommand {
    /// Size, entries, and the hit ratio of the last proxy run.
    Stats,
    /// Cached tags, optionally of one upstream or matching a repository pattern.
    Ls {
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long, value_name = "PATTERN")]
        repo: Option<String>,
    },
    /// Re-hash every blob and manifest; report and remove the bad ones (exit 1 if any).
    Verify,
    /// Remove content by age and/or repository pattern.
    Evict {
        /// e.g. 30d: tags checked and blobs cached longer ago than this.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        older_than: Option<std::time::Duration>,
        /// e.g. "registry.redhat.io/ubi8/*": those tags and what only they reach.
        #[arg(long, value_name = "PATTERN")]
        repo: Option<String>,
    },
    /// Remove everything from the cache.
    Purge,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    pullgate::config::parse_duration(s)
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
    /// Inspect and repair the cache (stop the proxy first: they open the database).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        #[arg(long, value_name = "FILE", global = true, default_value = "config/pullgate.toml")]
        config: PathBuf,
    },
    /// Warm the cache: pull images through pullgate ahead of time.
    Prefetch {
        #[arg(long, value_name = "FILE", default_value = "config/pullgate.toml")]
        config: PathBuf,
        /// A file with one image per line (blank lines and # comments are skipped).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Only this platform of multi-arch images, e.g. linux/amd64 (default: all).
        #[arg(long, value_name = "OS/ARCH")]
        platform: Option<String>,
        /// user:password for a running pullgate that requires client authentication.
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
        /// Images such as registry.redhat.io/ubi9/ubi:latest or …@sha256:…
        images: Vec<String>,
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
        Command::Cache { command, config } => {
            let Some(config) = load_or_report(&config) else {
                return ExitCode::from(2);
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let result = runtime.block_on(async {
                match command {
                    CacheCommand::Stats => pullgate::admin::stats(&config).await.map(|o| (o, 0)),
                    CacheCommand::Ls { upstream, repo } => {
                        pullgate::admin::ls(&config, upstream.as_deref(), repo.as_deref())
                            .await
                            .map(|o| (o, 0))
                    }
                    CacheCommand::Verify => pullgate::admin::verify(&config).await,
                    CacheCommand::Evict { older_than, repo } => {
                        pullgate::admin::evict(&config, older_than, repo.as_deref())
                            .await
                            .map(|o| (o, 0))
                    }
                    CacheCommand::Purge => pullgate::admin::purge(&config).await.map(|o| (o, 0)),
                }
            });
            match result {
                Ok((out, bad)) => {
                    print!("{out}");
                    if bad > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
                }
                Err(e) => {
                    eprintln!("pullgate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Prefetch {
            config,
            file,
            platform,
            creds,
            mut images,
        } => {
            let Some(config) = load_or_report(&config) else {
                return ExitCode::from(2);
            };
            if let Some(file) = file {
                match std::fs::read_to_string(&file) {
                    Ok(text) => images.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    ),
                    Err(e) => {
                        eprintln!("pullgate: {}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                }
            }
            if images.is_empty() {
                eprintln!("pullgate: name images to prefetch, or --file");
                return ExitCode::from(2);
            }
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let options = pullgate::prefetch::Options {
                images,
                platform,
                creds,
                progress: std::io::stderr().is_terminal(),
            };
            match runtime.block_on(pullgate::prefetch::run(&config, &options)) {
                Ok((summary, failed)) => {
                    print!("{summary}");
                    if failed > 0 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("pullgate: {e}");
                    ExitCode::from(2)
                }
            }
        }
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

fn load_or_report(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("pullgate: {}: {e}", path.display());
            None
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("pullgate: cannot start the runtime: {e}");
            None
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
