//! File-based operator catalogs (FBC): the `olm.package`, `olm.channel` and `olm.bundle`
//! documents of a catalog image's configs directory (JSON streams or YAML documents,
//! `.indexignore` honoured as opm does), channel heads, and what one
//! ImageSetConfiguration `mirror.operators[]` entry selects from them. Reading the
//! directory into a catalog lives in `fbc`.

use super::imageset::{OperatorCatalog, PackageFilter};
use std::collections::{BTreeMap, BTreeSet, HashSet};

mod fbc;
pub use fbc::CatalogBuilder;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub packages: BTreeMap<String, Package>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub default_channel: Option<String>,
    pub channels: BTreeMap<String, Channel>,
    pub bundles: BTreeMap<String, Bundle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    /// The package the channel belongs to (for error messages).
    pub package: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub replaces: Option<String>,
    pub skips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub name: String,
    pub package: String,
    pub image: String,
    /// The `olm.package` property's version; None when absent or not semver.
    pub version: Option<semver::Version>,
    pub related_images: Vec<String>,
}

/// One bundle an ImageSetConfiguration selects, with the channel it was picked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedBundle {
    pub package: String,
    pub channel: String,
    pub name: String,
    pub version: Option<semver::Version>,
    pub image: String,
    pub related_images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog file {file}: {reason}")]
    File { file: String, reason: String },
    #[error("catalog file {file}, document {index}: {reason}")]
    Document { file: String, index: usize, reason: String },
    #[error("package {package}: defined twice (again in {file})")]
    DuplicatePackage { package: String, file: String },
    #[error("package {package}: channel {channel} defined twice (again in {file})")]
    DuplicateChannel {
        package: String,
        channel: String,
        file: String,
    },
    #[error("package {package}: bundle {bundle} defined twice (again in {file})")]
    DuplicateBundle {
        package: String,
        bundle: String,
        file: String,
    },
    #[error("package {package}, channel {channel}: no head (every entry is replaced or skipped by another)")]
    NoHead { package: String, channel: String },
    #[error("package {package}, channel {channel}: several heads: {}", heads.join(", "))]
    ManyHeads {
        package: String,
        channel: String,
        heads: Vec<String>,
    },
    #[error("package {package} is not in the catalog (which has {count} packages)")]
    UnknownPackage { package: String, count: usize },
    #[error("package {package} has no channel {channel}")]
    UnknownChannel { package: String, channel: String },
    #[error("package {0} has no defaultChannel; list the channels to mirror")]
    NoDefaultChannel(String),
    #[error("package {package}: defaultChannel {channel} is not one of its channels")]
    DefaultChannelMissing { package: String, channel: String },
    #[error("package {package}, channel {channel}: entry {entry} has no olm.bundle")]
    MissingBundle {
        package: String,
        channel: String,
        entry: String,
    },
}

impl Channel {
    /// The entry no other entry replaces or skips (opm's rule); an error naming the
    /// channel when there are none or several.
    pub fn head(&self) -> Result<&Entry, CatalogError> {
        let incoming: HashSet<&str> = self
            .entries
            .iter()
            .flat_map(|e| e.replaces.iter().chain(&e.skips))
            .map(String::as_str)
            .collect();
        let mut heads: Vec<&Entry> = Vec::new();
        for e in &self.entries {
            if !incoming.contains(e.name.as_str()) && !heads.iter().any(|h| h.name == e.name) {
                heads.push(e);
            }
        }
        match heads.as_slice() {
            [head] => Ok(head),
            [] => Err(CatalogError::NoHead {
                package: self.package.clone(),
                channel: self.name.clone(),
            }),
            many => Err(CatalogError::ManyHeads {
                package: self.package.clone(),
                channel: self.name.clone(),
                heads: many.iter().map(|e| e.name.clone()).collect(),
            }),
        }
    }
}

/// An inclusive version range; a missing bound is open.
#[derive(Clone, Copy)]
struct Range<'f> {
    min: Option<&'f semver::Version>,
    max: Option<&'f semver::Version>,
}

impl<'f> Range<'f> {
    fn of(min: &'f Option<semver::Version>, max: &'f Option<semver::Version>) -> Option<Range<'f>> {
        (min.is_some() || max.is_some()).then_some(Range {
            min: min.as_ref(),
            max: max.as_ref(),
        })
    }

    fn contains(&self, version: Option<&semver::Version>) -> bool {
        version.is_some_and(|v| self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m))
    }
}

impl Catalog {
    /// What one `mirror.operators[]` entry selects:
    /// - packages: the listed ones, else every package;
    /// - channels: the listed ones; else all of them when the package has a version range
    ///   or the catalog is `full`; else the default channel;
    /// - in each channel: every entry when `full`; the entries whose bundle version is in
    ///   the range (the channel's own range replaces the package's); else the head.
    ///
    /// A bundle picked in several channels appears once, with the first channel (listed
    /// order, else channel name order). Sorted by package, then version, then name.
    pub fn select(&self, filter: &OperatorCatalog) -> Result<Vec<SelectedBundle>, CatalogError> {
        let all = self.packages.keys().map(|name| (name.as_str(), None));
        let listed = filter.packages.iter().map(|p| (p.name.as_str(), Some(p)));
        let wanted: Vec<_> = if filter.packages.is_empty() {
            all.collect()
        } else {
            listed.collect()
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, pf) in wanted {
            let package = self.packages.get(name).ok_or_else(|| CatalogError::UnknownPackage {
                package: name.to_string(),
                count: self.packages.len(),
            })?;
            for (channel, range) in channels_of(package, pf, filter.full)? {
                for entry in pick(package, channel, range, filter.full)? {
                    if !seen.insert((package.name.as_str(), entry)) {
                        continue;
                    }
                    let bundle = bundle_of(package, channel, entry)?;
                    out.push(SelectedBundle {
                        package: package.name.clone(),
                        channel: channel.name.clone(),
                        name: bundle.name.clone(),
                        version: bundle.version.clone(),
                        image: bundle.image.clone(),
                        related_images: bundle.related_images.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.package, &a.version, &a.name).cmp(&(&b.package, &b.version, &b.name)));
        Ok(out)
    }
}

/// The channels of `package` a filter selects, each with the version range that applies.
fn channels_of<'c, 'f>(
    package: &'c Package,
    filter: Option<&'f PackageFilter>,
    full: bool,
) -> Result<Vec<(&'c Channel, Option<Range<'f>>)>, CatalogError> {
    let package_range = filter.and_then(|f| Range::of(&f.min_version, &f.max_version));
    if let Some(f) = filter.filter(|f| !f.channels.is_empty()) {
        return f
            .channels
            .iter()
            .map(|cf| {
                let channel = package
                    .channels
                    .get(&cf.name)
                    .ok_or_else(|| CatalogError::UnknownChannel {
                        package: package.name.clone(),
                        channel: cf.name.clone(),
                    })?;
                Ok((channel, Range::of(&cf.min_version, &cf.max_version).or(package_range)))
            })
            .collect();
    }
    if package_range.is_some() || full {
        return Ok(package.channels.values().map(|c| (c, package_range)).collect());
    }
    let default = package
        .default_channel
        .as_ref()
        .ok_or_else(|| CatalogError::NoDefaultChannel(package.name.clone()))?;
    let channel = package
        .channels
        .get(default)
        .ok_or_else(|| CatalogError::DefaultChannelMissing {
            package: package.name.clone(),
            channel: default.clone(),
        })?;
    Ok(vec![(channel, None)])
}

/// The entry names picked in one channel.
fn pick<'c>(
    package: &'c Package,
    channel: &'c Channel,
    range: Option<Range>,
    full: bool,
) -> Result<Vec<&'c str>, CatalogError> {
    if full {
        return Ok(channel.entries.iter().map(|e| e.name.as_str()).collect());
    }
    let Some(range) = range else {
        return Ok(vec![channel.head()?.name.as_str()]);
    };
    let mut picked = Vec::new();
    for entry in &channel.entries {
        if range.contains(bundle_of(package, channel, &entry.name)?.version.as_ref()) {
            picked.push(entry.name.as_str());
        }
    }
    Ok(picked)
}

fn bundle_of<'c>(package: &'c Package, channel: &Channel, entry: &str) -> Result<&'c Bundle, CatalogError> {
    package.bundles.get(entry).ok_or_else(|| CatalogError::MissingBundle {
        package: package.name.clone(),
        channel: channel.name.clone(),
        entry: entry.to_string(),
    })
}

/// Every image the selection names (bundle images and related images), unique, sorted.
pub fn images(selection: &[SelectedBundle]) -> Vec<String> {
    let all: BTreeSet<&str> = selection
        .iter()
        .flat_map(|b| std::iter::once(&b.image).chain(&b.related_images))
        .map(String::as_str)
        .filter(|i| !i.is_empty())
        .collect();
    all.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openshift::imageset::ChannelFilter;
    use proptest::prelude::*;

    pub(super) fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    pub(super) fn json_bundle(name: &str, version: &str) -> String {
        format!(
            r#"{{"schema":"olm.bundle","name":"alpha.v{version}","package":"alpha","image":"registry.example/alpha-bundle@sha256:{name}",
  "properties":[{{"type":"olm.gvk","value":{{"group":"a.io","kind":"A","version":"v1"}}}},
                {{"type":"olm.package","value":{{"packageName":"alpha","version":"{version}"}}}},
                {{"type":"olm.csv.metadata","value":{{"description":"long"}}}}],
  "relatedImages":[{{"name":"operator","image":"registry.example/alpha@sha256:{name}"}},
                   {{"name":"","image":"registry.example/kube-rbac-proxy@sha256:shared"}}]}}
"#
        )
    }

    /// Package `alpha`: a JSON stream, as `opm render` writes it.
    pub(super) fn alpha_json() -> String {
        let mut s = String::from(
            r#"{"schema":"olm.package","name":"alpha","defaultChannel":"stable","icon":{"base64data":"","mediatype":"image/svg+xml"}}
{"schema":"olm.channel","name":"stable","package":"alpha","entries":[
  {"name":"alpha.v1.0.0"},
  {"name":"alpha.v1.1.0","replaces":"alpha.v1.0.0"},
  {"name":"alpha.v1.1.1","replaces":"alpha.v1.1.0"},
  {"name":"alpha.v1.2.0","replaces":"alpha.v1.1.0","skips":["alpha.v1.1.1"],"skipRange":">=1.0.0 <1.2.0"}]}
{"schema":"olm.channel","name":"fast","package":"alpha","entries":[
  {"name":"alpha.v1.2.0"},{"name":"alpha.v1.3.0","replaces":"alpha.v1.2.0"}]}
{"schema":"olm.deprecations","package":"alpha","entries":[{"reference":{"schema":"olm.package"},"message":"old"}]}
"#,
        );
        for (name, version) in [
            ("a100", "1.0.0"),
            ("a110", "1.1.0"),
            ("a111", "1.1.1"),
            ("a120", "1.2.0"),
            ("a130", "1.3.0"),
        ] {
            s.push_str(&json_bundle(name, version));
        }
        s
    }

    /// Package `beta`: YAML documents.
    pub(super) const BETA_YAML: &str = r#"---
schema: olm.package
name: beta
defaultChannel: stable-v2
---
schema: olm.channel
name: stable-v1
package: beta
entries:
- name: beta.v1.0.0
- name: beta.v1.0.1
  replaces: beta.v1.0.0
---
schema: olm.channel
name: stable-v2
package: beta
entries:
- name: beta.v2.0.0
  skips:
  - beta.v1.0.1
- name: beta.v2.1.0
  replaces: beta.v2.0.0
---
schema: olm.bundle
name: beta.v1.0.0
package: beta
image: registry.example/beta-bundle@sha256:b100
properties:
- type: olm.package
  value: {packageName: beta, version: 1.0.0}
relatedImages:
- {name: operator, image: registry.example/beta@sha256:b100}
---
schema: olm.bundle
name: beta.v1.0.1
package: beta
image: registry.example/beta-bundle@sha256:b101
properties:
- type: olm.package
  value: {packageName: beta, version: 1.0.1}
---
schema: olm.bundle
name: beta.v2.0.0
package: beta
image: registry.example/beta-bundle@sha256:b200
properties:
- type: olm.package
  value: {packageName: beta, version: 2.0.0}
---
schema: olm.bundle
name: beta.v2.1.0
package: beta
image: registry.example/beta-bundle@sha256:b210
properties:
- type: olm.package
  value: {packageName: beta, version: 2.1.0-opr.1}
relatedImages:
- {name: operator, image: "registry.example/beta@sha256:b210"}
- {name: proxy, image: "registry.example/kube-rbac-proxy@sha256:shared"}
---
schema: olm.something-new
whatever: [1, 2]
"#;

    pub(super) fn catalog() -> Catalog {
        let mut b = CatalogBuilder::new();
        b.add_file("alpha/catalog.json", alpha_json().as_bytes()).unwrap();
        b.add_file("beta/index.yaml", BETA_YAML.as_bytes()).unwrap();
        b.add_file("beta/README.md", b"# not a catalog file { ").unwrap();
        b.finish().unwrap()
    }

    pub(super) fn filter(full: bool, packages: Vec<PackageFilter>) -> OperatorCatalog {
        OperatorCatalog {
            catalog: "registry.example/index:v1".into(),
            full,
            packages,
        }
    }

    pub(super) fn package(
        name: &str,
        min: Option<&str>,
        max: Option<&str>,
        channels: Vec<ChannelFilter>,
    ) -> PackageFilter {
        PackageFilter {
            name: name.into(),
            min_version: min.map(v),
            max_version: max.map(v),
            channels,
        }
    }

    pub(super) fn channel(name: &str, min: Option<&str>, max: Option<&str>) -> ChannelFilter {
        ChannelFilter {
            name: name.into(),
            min_version: min.map(v),
            max_version: max.map(v),
        }
    }

    /// `channel:bundle` of each selected bundle, in order.
    pub(super) fn picked(c: &Catalog, f: &OperatorCatalog) -> Vec<String> {
        c.select(f)
            .unwrap()
            .iter()
            .map(|b| format!("{}:{}", b.channel, b.name))
            .collect()
    }

    #[test]
    fn heads_of_default_channels_when_nothing_is_listed() {
        let c = catalog();
        assert_eq!(
            picked(&c, &filter(false, vec![])),
            ["stable:alpha.v1.2.0", "stable-v2:beta.v2.1.0"]
        );
        let f = filter(false, vec![package("beta", None, None, vec![])]);
        assert_eq!(picked(&c, &f), ["stable-v2:beta.v2.1.0"]);
    }

    #[test]
    fn heads_of_listed_channels() {
        let c = catalog();
        let f = filter(
            false,
            vec![package(
                "alpha",
                None,
                None,
                vec![channel("stable", None, None), channel("fast", None, None)],
            )],
        );
        assert_eq!(picked(&c, &f), ["stable:alpha.v1.2.0", "fast:alpha.v1.3.0"]);
    }

    #[test]
    fn a_channel_range_picks_entries_in_it() {
        let c = catalog();
        let f = filter(
            false,
            vec![package(
                "alpha",
                Some("1.0.0"),
                None,
                vec![
                    channel("stable", Some("1.1.0"), Some("1.1.1")),
                    channel("fast", None, None),
                ],
            )],
        );
        // fast has no range of its own, so the package's (>= 1.0.0) applies.
        assert_eq!(
            picked(&c, &f),
            [
                "stable:alpha.v1.1.0",
                "stable:alpha.v1.1.1",
                "fast:alpha.v1.2.0",
                "fast:alpha.v1.3.0"
            ]
        );
        let f = filter(
            false,
            vec![package(
                "beta",
                None,
                None,
                vec![channel("stable-v2", Some("2.1.0-opr.1"), None)],
            )],
        );
        assert_eq!(picked(&c, &f), ["stable-v2:beta.v2.1.0"]);
    }

    #[test]
    fn a_package_range_covers_all_its_channels_once_each() {
        let c = catalog();
        let f = filter(false, vec![package("alpha", Some("1.1.0"), Some("1.2.0"), vec![])]);
        // alpha.v1.2.0 is in both channels: reported once, in the first (by name) channel.
        assert_eq!(
            picked(&c, &f),
            ["stable:alpha.v1.1.0", "stable:alpha.v1.1.1", "fast:alpha.v1.2.0"]
        );
        let f = filter(false, vec![package("beta", None, Some("1.0.0"), vec![])]);
        assert_eq!(picked(&c, &f), ["stable-v1:beta.v1.0.0"]);
    }

    #[test]
    fn full_picks_everything() {
        let c = catalog();
        let got = c.select(&filter(true, vec![])).unwrap();
        assert_eq!(got.len(), 9);
        let f = filter(
            true,
            vec![package("beta", None, None, vec![channel("stable-v1", None, None)])],
        );
        assert_eq!(picked(&c, &f), ["stable-v1:beta.v1.0.0", "stable-v1:beta.v1.0.1"]);
    }

    #[test]
    fn images_are_unique_and_sorted() {
        let c = catalog();
        let f = filter(
            false,
            vec![
                package("alpha", Some("1.2.0"), None, vec![]),
                package("beta", None, None, vec![]),
            ],
        );
        assert_eq!(
            images(&c.select(&f).unwrap()),
            [
                "registry.example/alpha-bundle@sha256:a120",
                "registry.example/alpha-bundle@sha256:a130",
                "registry.example/alpha@sha256:a120",
                "registry.example/alpha@sha256:a130",
                "registry.example/beta-bundle@sha256:b210",
                "registry.example/beta@sha256:b210",
                "registry.example/kube-rbac-proxy@sha256:shared",
            ]
        );
    }

    #[test]
    fn unknown_packages_and_channels_are_errors() {
        let c = catalog();
        let e = c
            .select(&filter(false, vec![package("gamma", None, None, vec![])]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "package gamma is not in the catalog (which has 2 packages)"
        );
        let f = filter(
            false,
            vec![package("alpha", None, None, vec![channel("candidate", None, None)])],
        );
        assert_eq!(
            c.select(&f).unwrap_err().to_string(),
            "package alpha has no channel candidate"
        );
    }

    #[test]
    fn a_missing_default_channel_is_an_error() {
        let mut b = CatalogBuilder::new();
        let docs = r#"{"schema":"olm.package","name":"p"}
{"schema":"olm.package","name":"q","defaultChannel":"gone"}
{"schema":"olm.channel","name":"c","package":"q","entries":[]}"#;
        b.add_file("c.json", docs.as_bytes()).unwrap();
        let c = b.finish().unwrap();
        let e = c
            .select(&filter(false, vec![package("p", None, None, vec![])]))
            .unwrap_err();
        assert_eq!(e, CatalogError::NoDefaultChannel("p".into()));
        let e = c
            .select(&filter(false, vec![package("q", None, None, vec![])]))
            .unwrap_err();
        assert!(matches!(e, CatalogError::DefaultChannelMissing { .. }), "{e}");
        let e = c
            .select(&filter(
                false,
                vec![package("q", None, None, vec![channel("c", None, None)])],
            ))
            .unwrap_err();
        assert!(matches!(e, CatalogError::NoHead { .. }), "{e}");
    }

    #[test]
    fn a_channel_with_two_heads_is_an_error() {
        let mut b = CatalogBuilder::new();
        let docs = r#"{"schema":"olm.package","name":"p","defaultChannel":"c"}
{"schema":"olm.channel","name":"c","package":"p","entries":[{"name":"p.v1"},{"name":"p.v2"},{"name":"p.v3","replaces":"p.v1"}]}"#;
        b.add_file("p/catalog.json", docs.as_bytes()).unwrap();
        let e = b.finish().unwrap().select(&filter(false, vec![])).unwrap_err();
        assert_eq!(e.to_string(), "package p, channel c: several heads: p.v2, p.v3");
    }

    #[test]
    fn a_picked_entry_without_its_bundle_is_an_error() {
        let mut b = CatalogBuilder::new();
        b.add_file(
            "alpha/catalog.json",
            alpha_json()
                .replace(
                    "\"name\":\"alpha.v1.3.0\",\"package\"",
                    "\"name\":\"alpha.v9\",\"package\"",
                )
                .as_bytes(),
        )
        .unwrap();
        let c = b.finish().unwrap();
        let f = filter(
            false,
            vec![package("alpha", None, None, vec![channel("fast", None, None)])],
        );
        assert_eq!(
            c.select(&f).unwrap_err().to_string(),
            "package alpha, channel fast: entry alpha.v1.3.0 has no olm.bundle"
        );
    }

    proptest! {
        #[test]
        fn select_never_panics_on_catalogish_text(
            docs in proptest::collection::vec(
                (
                    prop_oneof![Just("olm.package"), Just("olm.channel"), Just("olm.bundle"), Just("olm.x")],
                    "[pq]",
                    proptest::collection::vec(("[pq]\\.v[0-9]", proptest::option::of("[pq]\\.v[0-9]")), 0..4),
                    "[0-9]\\.[0-9](\\.[0-9])?",
                ),
                0..8,
            ),
            full in any::<bool>(),
        ) {
            let mut text = String::new();
            for (schema, pkg, entries, version) in &docs {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(n, r)| match r {
                        Some(r) => format!(r#"{{"name":"{n}","replaces":"{r}"}}"#),
                        None => format!(r#"{{"name":"{n}"}}"#),
                    })
                    .collect();
                text.push_str(&format!(
                    r#"{{"schema":"{schema}","name":"{pkg}.v{}","package":"{pkg}","defaultChannel":"{pkg}.v1","entries":[{}],"properties":[{{"type":"olm.package","value":{{"version":"{version}"}}}}]}}"#,
                    &version[..1],
                    entries.join(","),
                ));
            }
            let mut b = CatalogBuilder::new();
            let _ = b.add_file("c.json", text.as_bytes());
            if let Ok(c) = b.finish() {
                let _ = c.select(&filter(full, vec![]));
                let _ = c.select(&filter(false, vec![package("p", Some("1.0.0"), None, vec![])]));
            }
        }
    }
}
