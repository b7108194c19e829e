//! The page itself, rendered on the server with maud: plain HTML that reads without
//! JavaScript (tables with headers, labelled bars), with ids the refresh script fills
//! from the JSON API. Nothing secret reaches it: the upstreams' URLs carry no
//! credentials (the configuration refuses them), the egress causes never carry a URL
//! (see `upstream::error`), and the configuration shown names secret files, not secrets.

use super::charts;
use super::format;
use super::snapshot::{Fleet, Pulls, Snapshot, Summary};
use super::{About, StatusState};
use crate::proxy::fill::FillView;
use crate::proxy::status::UpstreamStatus;
use maud::{DOCTYPE, Markup, html};

pub fn render(s: &Snapshot, status: &StatusState) -> Markup {
    let about = &status.about;
    let now = s.summary.now_ms;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "pullgate status" }
                link rel="stylesheet" href="/status/style.css";
                script src="/status/script.js" defer {}
            }
            body {
                header {
                    h1 { "pullgate" }
                    p.lede {
                        "Version " (about.version) " on " (about.listening_on())
                        ", up " span #uptime { (format::duration(s.summary.uptime_s)) }
                        ". Updated " time #updated datetime=(now) { (format::time(now)) } "."
                    }
                    nav aria-label="Sections" {
                        a href="#egress" { "Egress" } " · " a href="#now" { "Now" } " · "
                        a href="#cache" { "Cache" } " · " a href="#pulls" { "Recent pulls" } " · "
                        a href="#fleet" { "Fleet" } " · " a href="#signatures" { "Signatures" } " · "
                        a href="#about" { "About" }
                    }
                }
                main {
                    (egress(&s.egress, now, |name| status.doctor.contains_key(name)))
                    (fills(&s.fills))
                    (cache(&s.summary))
                    (pulls(&s.pulls, now))
                    (fleet(&s.fleet))
                    (signatures(&s.summary))
                    (about_section(about))
                }
            }
        }
    }
}

/// The rows of one upstream's hosts (also what the script renders from `egress`).
fn host_rows(u: &UpstreamStatus, now: u64) -> Markup {
    html! {
        @for h in &u.hosts {
            @let failing = h.last_failure.as_ref().is_some_and(|f| h.last_success_ms.is_none_or(|s| s < f.at_ms));
            tr.failing[failing] data-host=(h.host) {
                th scope="row" { code { (h.host) } }
                td { (h.role) }
                td { @match h.last_success_ms { Some(t) => { time datetime=(t) { (format::ago(t, now)) } }, None => { "never" } } }
                @match &h.last_failure {
                    Some(f) => {
                        td { time datetime=(f.at_ms) { (format::ago(f.at_ms, now)) } }
                        td.phase { (f.phase) }
                        td.cause { (f.cause) }
                        td.remedy { (f.remedy) }
                    }
                    None => { td { "none" } td.phase { "" } td.cause { "" } td.remedy { "" } }
                }
                td.num { (h.failures_last_hour) " of " (h.requests_last_hour) }
            }
        }
    }
}

fn egress(upstreams: &[UpstreamStatus], now: u64, walkable: impl Fn(&str) -> bool) -> Markup {
    html! {
        section #egress aria-labelledby="egress-h" {
            h2 #egress-h { "Egress" }
            p { "Each upstream and every host it has dialled: the registry, its token realm, the CDN hosts it redirects to, the signature store. A failure shows its phase, cause and what to do." }
            @for (i, u) in upstreams.iter().enumerate() {
                table.egress data-upstream=(u.name) {
                    caption {
                        strong { (u.name) } " " code { (u.url) }
                        span.paused id=(format!("paused-{i}")) {
                            @if let Some(p) = u.paused_for_s { " — requests paused for " (p) " s after repeated failures" }
                        }
                    }
                    thead { tr {
                        th scope="col" { "Host" } th scope="col" { "Role" } th scope="col" { "Last success" }
                        th scope="col" { "Last failure" } th scope="col" { "Phase" } th scope="col" { "Cause" }
                        th scope="col" { "Remedy" } th scope="col" { "Failures (last hour)" }
                    } }
                    tbody id=(format!("egress-body-{i}")) { (host_rows(u, now)) }
                }
                @if walkable(&u.name) {
                    form.doctor method="post" action=(format!("/status/doctor/{}", u.name)) data-upstream=(u.name) data-hops=(format!("hops-{i}")) {
                        button type="submit" { "Run the doctor for " (u.name) }
                    }
                    ol.hops id=(format!("hops-{i}")) aria-live="polite" {}
                }
            }
        }
    }
}

/// One running fill's row.
pub fn fill_row(f: &FillView) -> Markup {
    let size = f.size.map(format::bytes).unwrap_or_else(|| "?".into());
    let label = format!("{} {}: {} of {}", f.repo, f.digest, format::bytes(f.bytes), size);
    html! {
        tr data-digest=(f.digest) {
            th scope="row" { (f.upstream) "/" (f.repo) }
            td { code title=(f.digest) { (short_digest(&f.digest)) } }
            td {
                @match f.size {
                    Some(size) => { progress value=(f.bytes) max=(size) aria-label=(label) {} }
                    None => { progress aria-label=(label) {} }
                }
                " " span.num { (format::bytes(f.bytes)) " / " (size) }
            }
            td.num { (format::rate(f.rate)) }
            td.num.clients { (f.clients) }
            td { @match &f.from_peer { Some(m) => { "peer " (m) }, None => { "upstream" } } }
        }
    }
}

fn fills(fills: &[FillView]) -> Markup {
    html! {
        section #now aria-labelledby="now-h" {
            h2 #now-h { "Now" }
            table #fills {
                caption { "Fills in flight: each blob is fetched once, however many clients ask; the others join it." }
                thead { tr {
                    th scope="col" { "Repository" } th scope="col" { "Digest" } th scope="col" { "Progress" }
                    th scope="col" { "Rate" } th scope="col" { "Clients" } th scope="col" { "From" }
                } }
                tbody #fills-body {
                    @for f in fills { (fill_row(f)) }
                    @if fills.is_empty() { tr.empty { td colspan="6" { "No fill is running." } } }
                }
            }
        }
    }
}

fn cache(s: &Summary) -> Markup {
    let c = &s.cache;
    let deltas = &s.history;
    let served: Vec<u64> = deltas.iter().map(|d| d.served_bytes).collect();
    let ratio: Vec<u64> = deltas
        .iter()
        .map(|d| (d.hits * 1000).checked_div(d.lookups).unwrap_or(0))
        .collect();
    let evictions: Vec<u64> = deltas.iter().map(|d| d.evictions).collect();
    let usage: Vec<u64> = deltas.iter().map(|d| d.usage_bytes).collect();
    html! {
        section #cache aria-labelledby="cache-h" {
            h2 #cache-h { "Cache" }
            p {
                label for="usage" { "Held, as " code { "max_size" } " counts it:" } " "
                @match c.max_size_bytes {
                    Some(max) => {
                        meter #usage min="0" max=(max) value=(c.usage_bytes) high=(max / 10 * 9) {}
                        " " span #usage-text { (format::bytes(c.usage_bytes)) " of " (format::bytes(max)) }
                    }
                    None => { span #usage-text { (format::bytes(c.usage_bytes)) ", no max_size set" } }
                }
            }
            dl.figures {
                dt { "Objects" } dd #objects { (c.blobs) " blobs, " (c.manifests) " manifests, " (c.tags) " tags" }
                dt { "Hit ratio, last hour" } dd #hit-ratio { (s.hit_ratio_last_hour.map(format::percent).unwrap_or_else(|| "no lookups yet".into())) }
                dt { "Served, last hour" } dd #served { (format::bytes(s.served_bytes_last_hour)) }
                dt { "Evictions, last hour" } dd #evictions { (s.evictions_last_hour) }
                dt { "Blob store" } dd { (c.store) }
            }
            div.charts {
                (charts::bars("Served per minute", &served, format::bytes))
                (charts::bars("Hit ratio per minute", &ratio, |v| format!("{:.1} %", v as f64 / 10.0)))
                (charts::bars("Evictions per minute", &evictions, |v| v.to_string()))
                (charts::bars("Held", &usage, format::bytes))
            }
        }
    }
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => d.to_string(),
    }
}

fn pulls(p: &Pulls, now: u64) -> Markup {
    html! {
        section #pulls aria-labelledby="pulls-h" {
            h2 #pulls-h { "Recent pulls" }
            table #pulls-table {
                caption { "The last manifest and blob requests, the newest first." }
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Repository" } th scope="col" { "Reference" }
                    th scope="col" { "Client" } th scope="col" { "Cache" } th scope="col" { "Status" } th scope="col" { "Bytes" }
                } }
                tbody #pulls-body {
                    @for r in &p.recent {
                        tr {
                            td { time datetime=(r.at_ms) { (format::ago(r.at_ms, now)) } }
                            th scope="row" { (r.name) }
                            td { code { (short_digest(&r.reference)) } }
                            td { (r.client) @if let Some(u) = &r.user { " (" (u) ")" } }
                            td { (r.cache) }
                            td.num { (r.status) }
                            td.num { (format::bytes(r.bytes)) }
                        }
                    }
                    @if p.recent.is_empty() { tr.empty { td colspan="7" { "Nothing pulled yet." } } }
                }
            }
            table #top-table {
                caption { "Repositories by bytes, last hour" }
                thead { tr { th scope="col" { "Repository" } th scope="col" { "Bytes" } } }
                tbody #top-body {
                    @for t in &p.top_last_hour { tr { th scope="row" { (t.name) } td.num { (format::bytes(t.bytes)) } } }
                }
            }
        }
    }
}

fn fleet(f: &Fleet) -> Markup {
    html! {
        section #fleet aria-labelledby="fleet-h" {
            h2 #fleet-h { "Fleet" }
            @if f.clustered {
                table #fleet-table {
                    caption { "The replicas sharing one store; each digest is fetched by one of them." }
                    thead { tr { th scope="col" { "Member" } th scope="col" { "State" } } }
                    tbody #fleet-body {
                        @for m in &f.members { tr.down[m.state == "down"] { th scope="row" { (m.name) } td { (m.state) } } }
                    }
                }
            } @else {
                p { "This pullgate runs alone (no " code { "[cluster]" } ")." }
            }
        }
    }
}

fn signatures(s: &Summary) -> Markup {
    html! {
        section #signatures aria-labelledby="signatures-h" {
            h2 #signatures-h { "Signatures" }
            @if s.signatures.is_empty() {
                p { "No upstream has a signature policy." }
            } @else {
                table #signatures-table {
                    caption { "Signature policy verdicts since start" }
                    thead { tr { th scope="col" { "Upstream" } th scope="col" { "Mode" } th scope="col" { "Verdicts" } } }
                    tbody {
                        @for p in &s.signatures {
                            tr {
                                th scope="row" { (p.upstream) }
                                td { (p.mode) }
                                td { @for (v, n) in &p.verdicts { @if *n > 0 { span.verdict { (v) " " (n) } " " } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn about_section(about: &About) -> Markup {
    html! {
        section #about aria-labelledby="about-h" {
            h2 #about-h { "About" }
            dl.figures {
                dt { "Version" } dd { (about.version) }
                dt { "Listening on" } dd { code { (about.listening_on()) } }
            }
            details {
                summary { "The configuration, as " code { "pullgate check-config" } " prints it" }
                pre { code { (about.config_toml) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_row_labels_its_bar_and_escapes_what_it_shows() {
        let f = FillView {
            upstream: "rh".into(),
            repo: "ubi9/<ubi>".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: Some(100),
            bytes: 40,
            seconds: 2.0,
            rate: 20,
            clients: 2,
            from_peer: None,
        };
        let html = fill_row(&f).into_string();
        assert!(
            html.contains("<progress value=\"40\" max=\"100\" aria-label=\"ubi9/&lt;ubi&gt; sha256:"),
            "{html}"
        );
        assert!(html.contains("rh/ubi9/&lt;ubi&gt;"), "{html}");
        assert!(!html.contains("<ubi>"));
        assert!(html.contains("sha256:aaaaaaaaaaaa…"));
    }
}
