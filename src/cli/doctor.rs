//! `pullgate doctor`: walks each configured upstream's egress path hop by hop (and
//! `[openshift]`'s signature store and update graph) (the walk
//! itself is `upstream::doctor`) and prints every hop as PASS or FAIL with the remedy,
//! as text or JSON. Exit 0 when every hop passed, 1 when one failed, 2 for bad input.

use crate::config::Config;
use crate::trust::Policy;
use crate::upstream::UpstreamSettings;
use crate::upstream::doctor::{self, ProbeImage, Report};
use crate::upstream::openshift::OpenShiftSettings;
use std::fmt::Write as _;
use std::process::ExitCode;

/// How `doctor` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DoctorFormat {
    Text,
    Json,
}

/// Walks the upstreams of `config` (only `only`, if given) and prints what was found.
pub fn run(config: &Config, only: Option<&str>, image: Option<&str>, format: DoctorFormat) -> ExitCode {
    let targets = match crate::app::doctor_targets(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pullgate doctor: {e}");
            return ExitCode::from(2);
        }
    };
    // `--upstream openshift` walks only the [openshift] hosts.
    let openshift = match openshift_target(config, only) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut chosen = Vec::new();
    for (settings, configured, policy) in targets {
        if only.is_some_and(|name| name != settings.name) {
            continue;
        }
        let probe = match image.map(str::to_string).or(configured) {
            Some(p) => match ProbeImage::parse(&p) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("pullgate doctor: probe image {e}");
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        chosen.push((settings, probe, policy));
    }
    if chosen.is_empty() && openshift.is_none() {
        let mut names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        if config.openshift.is_some() {
            names.push("openshift");
        }
        eprintln!(
            "pullgate doctor: no upstream {:?} in the configuration (it has: {})",
            only.unwrap_or(""),
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let Some(reports) = walk_all(chosen, openshift) else {
        return ExitCode::from(2);
    };
    let passed = reports.iter().all(Report::passed);
    match format {
        DoctorFormat::Text => print!("{}", render_text(&reports)),
        DoctorFormat::Json => {
            let doc = serde_json::json!({"passed": passed, "upstreams": reports});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
    if passed { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `check-config --online`'s walk of every upstream (with its configured or default
/// probe image): the report on stderr, as stdout is the effective configuration.
pub fn online(config: &Config) -> ExitCode {
    let targets = match crate::app::doctor_targets(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pullgate: {e}");
            return ExitCode::from(2);
        }
    };
    let chosen = targets
        .into_iter()
        .map(|(settings, probe, policy)| (settings, probe.and_then(|p| ProbeImage::parse(&p).ok()), policy))
        .collect();
    let openshift = match openshift_target(config, None) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let Some(reports) = walk_all(chosen, openshift) else {
        return ExitCode::from(2);
    };
    eprint!("{}", render_text(&reports));
    if reports.iter().all(Report::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `[openshift]`'s hosts and probe channel, when configured and `only` allows them.
fn openshift_target(config: &Config, only: Option<&str>) -> Result<Option<(OpenShiftSettings, String)>, ExitCode> {
    if only.is_some_and(|name| name != "openshift") {
        return Ok(None);
    }
    match (crate::app::openshift_settings(config), &config.openshift) {
        (Ok(Some(settings)), Some(o)) => Ok(Some((settings, o.probe_channel.clone()))),
        (Ok(_), _) => Ok(None),
        (Err(e), _) => {
            eprintln!("pullgate: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The walks, one upstream after the other, then `[openshift]`'s two hosts (`None`: no
/// runtime).
fn walk_all(
    chosen: Vec<(UpstreamSettings, Option<ProbeImage>, Option<Policy>)>,
    openshift: Option<(OpenShiftSettings, String)>,
) -> Option<Vec<Report>> {
    let runtime = super::runtime()?;
    Some(runtime.block_on(async {
        let mut reports = Vec::new();
        for (settings, probe, policy) in chosen {
            reports.push(doctor::walk(settings, probe, policy.as_ref()).await);
        }
        if let Some((settings, channel)) = openshift {
            reports.extend(crate::upstream::openshift::doctor(&settings, &channel).await);
        }
        reports
    }))
}

/// The reports as an operator reads them: one line per hop, the remedy under a failure.
pub fn render_text(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "upstream {} ({})", r.upstream, r.url);
        if let Some(proxy) = &r.egress_proxy {
            let _ = writeln!(out, "  through egress_proxy {proxy}");
        }
        for hop in &r.hops {
            let verdict = if hop.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {verdict} {:<9} {:<28} {}",
                hop.phase.as_str(),
                hop.target,
                hop.detail
            );
            if let Some(remedy) = &hop.remedy {
                let _ = writeln!(out, "       → {remedy}");
            }
        }
        for note in &r.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(
        out,
        "{} upstream(s) checked: {}",
        reports.len(),
        match failed {
            0 => "every hop passed".to_string(),
            n => format!("{n} with a failing hop"),
        }
    );
    out
}
