//! The `pullgate` command line: `serve`, `check-config`, `doctor`, `cache
//! stats|ls|verify|evict|purge`, `prefetch` and `client-config`. The commands live here and are the only code that
//! prints; each hands its work to the layers (through [`crate::app`] for anything that
//! opens the cache or serves).

pub mod cache;
pub mod client_config;
mod client_config_openshift;
pub mod doctor;
pub mod prefetch;
mod serve;

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pullgate",
    version,
    about = "A caching pull-through proxy for container registries"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum CacheCommand {
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
        /// e.g. 30d: tags checked, and manifests and blobs last used, longer ago than this.
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
    crate::config::parse_duration(s)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Also reach what the configuration names over the network: each upstream's
        /// egress path, as `doctor` walks it, and the `s3` store's bucket (an object is
        /// written, read back and deleted under the prefix).
        #[arg(long)]
        online: bool,
    },
    /// Walk each upstream's egress path hop by hop (DNS, TCP, TLS, challenge, token,
    /// manifest, CDN redirect, blob, signatures) and say which firewall rule or setting
    /// is missing. Exit 0 when every hop passes, 1 otherwise.
    Doctor {
        #[arg(long, value_name = "FILE", default_value = "config/pullgate.toml")]
        config: PathBuf,
        /// Only this upstream (default: all).
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        /// The image pulled as a probe, REPOSITORY:TAG of the upstream (default: the
        /// upstream's probe_image; ubi9/ubi-minimal:latest for the Red Hat registries).
        #[arg(long, value_name = "REPOSITORY:TAG")]
        image: Option<String>,
        #[arg(long, value_enum, default_value_t = doctor::DoctorFormat::Text)]
        format: doctor::DoctorFormat,
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
        /// An oc-mirror ImageSetConfiguration (mirror.openshift.io/v2alpha1 or v1alpha2):
        /// its releases with their components and signatures, operator catalogs with the
        /// bundles they select, and additional images.
        #[arg(long, value_name = "FILE")]
        imageset: Option<PathBuf>,
        /// Print the images and the bytes their manifests name; fetch no blob.
        #[arg(long)]
        dry_run: bool,
        /// Requests to pullgate at once.
        #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
        /// Images such as registry.redhat.io/ubi9/ubi:latest or …@sha256:…
        images: Vec<String>,
    },
    /// Print the configuration that points a kind of client at pullgate.
    ClientConfig {
        /// podman (also skopeo, buildah, CRI-O), openshift, containerd or satellite (also AAP)
        #[arg(long = "for", value_name = "CLIENT", value_enum)]
        client: client_config::ClientKind,
        /// How clients reach pullgate, e.g. https://pullgate.example.com:5000
        #[arg(long, value_name = "URL")]
        url: String,
        /// Only this upstream (default: all)
        #[arg(long, value_name = "NAME")]
        upstream: Option<String>,
        #[arg(long, value_name = "FILE", default_value = "config/pullgate.toml")]
        config: PathBuf,
        /// openshift: an ImageSetConfiguration whose catalogs get tag mirrors and a
        /// CatalogSource each.
        #[arg(long, value_name = "FILE")]
        imageset: Option<PathBuf>,
        /// openshift-release-signatures: a release image (sha256:<hex> or a pullspec
        /// …@sha256:<hex>) whose signatures pullgate at --url serves; repeatable.
        #[arg(long, value_name = "DIGEST")]
        release: Vec<String>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config, online } => check_config(&config, online),
        Command::Doctor {
            config,
            upstream,
            image,
            format,
        } => match load_or_report(&config) {
            Some(config) => doctor::run(&config, upstream.as_deref(), image.as_deref(), format),
            None => ExitCode::from(2),
        },
        Command::Cache { command, config } => {
            let Some(config) = load_or_report(&config) else {
                return ExitCode::from(2);
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            // Written as the commands go (they stream), through one buffer.
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let result = runtime.block_on(async {
                match command {
                    CacheCommand::Stats => cache::stats(&config, &mut out).await,
                    CacheCommand::Ls { upstream, repo } => {
                        cache::ls(&config, upstream.as_deref(), repo.as_deref(), &mut out).await
                    }
                    CacheCommand::Verify => cache::verify(&config, &mut out).await,
                    CacheCommand::Evict { older_than, repo } => {
                        cache::evict(&config, older_than, repo.as_deref(), &mut out).await
                    }
                    CacheCommand::Purge => cache::purge(&config, &mut out).await,
                }
            });
            let flushed = std::io::Write::flush(&mut out).map_err(|e| format!("writing the output: {e}"));
            let result = result.and_then(|bad| flushed.map(|()| (String::new(), bad)));
            report(result)
        }
        Command::Prefetch {
            config,
            file,
            platform,
            creds,
            imageset,
            dry_run,
            jobs,
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
            if images.is_empty() && imageset.is_none() {
                eprintln!("pullgate: name images to prefetch, or --file, or --imageset");
                return ExitCode::from(2);
            }
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let options = prefetch::Options {
                images,
                imageset,
                platform,
                creds,
                jobs: jobs.into(),
                dry_run,
                progress: std::io::stderr().is_terminal(),
            };
            report(runtime.block_on(prefetch::run(&config, &options)))
        }
        Command::ClientConfig {
            client,
            url,
            upstream,
            config,
            imageset,
            release,
        } => {
            let rendered = Config::load(&config)
                .map_err(|e| format!("{}: {e}", config.display()))
                .and_then(|c| {
                    let extras = client_config_extras(client, &url, imageset.as_deref(), &release)?;
                    client_config::render_with(&c, client, &url, upstream.as_deref(), &extras)
                });
            report(rendered.map(|text| (text, 0)))
        }
        Command::Serve { config, log_format } => serve::serve(&config, log_format),
    }
}

/// What `client-config` reads besides the configuration: an image set's catalogs, and
/// release signatures from the pullgate at `url`.
fn client_config_extras(
    kind: client_config::ClientKind,
    url: &str,
    imageset: Option<&Path>,
    releases: &[String],
) -> Result<client_config::Extras, String> {
    let mut extras = client_config::Extras::default();
    if let Some(path) = imageset {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (set, warnings) =
            crate::openshift::imageset::ImageSet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for w in warnings {
            eprintln!("pullgate: {}: warning: {w}", path.display());
        }
        extras.catalogs = set.operators.iter().map(|o| o.catalog.clone()).collect();
    }
    if kind == client_config::ClientKind::OpenshiftReleaseSignatures {
        let digests = releases
            .iter()
            .map(|r| client_config_openshift::release_digest(r))
            .collect::<Result<Vec<_>, _>>()?;
        let base = url::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
        let runtime = runtime().ok_or("cannot start the runtime")?;
        extras.release_signatures = runtime.block_on(async {
            let pullgate = crate::prefetch::client::Pullgate::new(base, None)?;
            let mut out = Vec::new();
            for d in digests {
                let sigs = pullgate.release_signature_bytes(&d).await?;
                out.push((d, sigs));
            }
            Ok::<_, String>(out)
        })?;
    }
    Ok(extras)
}

/// Prints a command's output (exit 1 when it counted failures) or its error (exit 2).
fn report(result: Result<(String, usize), String>) -> ExitCode {
    match result {
        Ok((out, failed)) => {
            print!("{out}");
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

/// `check-config`: the effective configuration, once it and its secret files are valid
/// (and, `--online`, once the bucket it names takes and gives back an object).
fn check_config(path: &Path, online: bool) -> ExitCode {
    let config = match Config::load(path)
        .and_then(|c| c.read_secrets().map(|_| c))
        .and_then(|c| crate::app::check_cluster(&c).map(|_| c))
        .and_then(|c| crate::app::openshift_settings(&c).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pullgate: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // Each signature policy's keys, read as serve reads them, named by fingerprint.
    for u in &config.upstreams {
        match crate::app::signature_policy(u) {
            Ok(Some(policy)) => {
                let (openpgp, cosign) = policy.key_fingerprints();
                eprintln!(
                    "pullgate: upstream {}: signature_policy ({:?}, identities {}): OpenPGP keys [{}], cosign keys [{}]",
                    u.name,
                    policy.mode(),
                    policy.identities().join(", "),
                    openpgp.join(", "),
                    cosign.join(", ")
                );
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("pullgate: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if online {
        let settings = match crate::app::store_settings(&config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pullgate: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        if let crate::cache::StoreSettings::S3(s3) = settings {
            let at = format!("bucket {:?} at {}", s3.bucket, s3.endpoint.as_deref().unwrap_or("AWS"));
            match crate::cache::s3::S3BlobStore::check_bucket(&s3) {
                Ok(()) => eprintln!(
                    "pullgate: {at}: reachable, an object written, read back and deleted under {:?}",
                    s3.prefix
                ),
                Err(e) => {
                    eprintln!("pullgate: {at}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        // The egress path of every upstream, as `doctor` reports it (on stderr: stdout
        // is the effective configuration).
        let code = doctor::online(&config);
        if code != ExitCode::SUCCESS {
            return code;
        }
    }
    print!("{}", config.to_toml());
    ExitCode::SUCCESS
}

fn load_or_report(path: &Path) -> Option<Config> {
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
