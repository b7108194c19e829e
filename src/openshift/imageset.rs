//! oc-mirror's ImageSetConfiguration (`mirror.openshift.io/v2alpha1` and `v1alpha2`):
//! the part pullgate acts on (release channels, operator catalogs and their package
//! filters, additional and blocked images), and one warning for every field it does not.

use serde::Deserialize;
use std::fmt::Write as _;

/// What an ImageSetConfiguration asks pullgate to prefetch.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub platform: Platform,
    pub operators: Vec<OperatorCatalog>,
    /// `mirror.additionalImages[].name`.
    pub additional_images: Vec<String>,
    /// `mirror.blockedImages[].name`.
    pub blocked_images: Vec<BlockedImage>,
}

/// `mirror.platform`.
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    pub channels: Vec<ReleaseChannel>,
    /// `["amd64"]` when absent or empty, as oc-mirror defaults it.
    pub architectures: Vec<String>,
    /// `mirror.platform.release`: one release pullspec.
    pub release: Option<String>,
}

/// `mirror.platform.channels[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseChannel {
    pub name: String,
    pub min_version: Option<semver::Version>,
    pub max_version: Option<semver::Version>,
    pub shortest_path: bool,
    pub full: bool,
}

/// `mirror.operators[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCatalog {
    pub catalog: String,
    pub full: bool,
    pub packages: Vec<PackageFilter>,
}

/// `mirror.operators[].packages[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageFilter {
    pub name: String,
    pub min_version: Option<semver::Version>,
    pub max_version: Option<semver::Version>,
    pub channels: Vec<ChannelFilter>,
}

/// `mirror.operators[].packages[].channels[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFilter {
    pub name: String,
    pub min_version: Option<semver::Version>,
    pub max_version: Option<semver::Version>,
}

/// `mirror.blockedImages[].name`: an unanchored regular expression, as in oc-mirror v2.
#[derive(Debug, Clone)]
pub struct BlockedImage {
    pub pattern: String,
    regex: regex::Regex,
}

impl PartialEq for BlockedImage {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl BlockedImage {
    /// Compiles `pattern`; `path` names the field in errors.
    pub fn new(path: &str, pattern: &str) -> Result<BlockedImage, ImageSetError> {
        let regex = regex::Regex::new(pattern).map_err(|e| ImageSetError::Regex {
            path: path.to_string(),
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        Ok(BlockedImage {
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// True when the pattern matches anywhere in `image`.
    pub fn matches(&self, image: &str) -> bool {
        self.regex.is_match(image)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageSetError {
    #[error("the ImageSetConfiguration is not valid YAML of the expected shape: {0}")]
    Yaml(String),
    #[error("kind is {0}, expected ImageSetConfiguration")]
    Kind(String),
    #[error("apiVersion is {0}, expected mirror.openshift.io/v2alpha1 or mirror.openshift.io/v1alpha2")]
    ApiVersion(String),
    #[error("{path}: {value:?} is not a version like 4.16.0")]
    Version { path: String, value: String },
    #[error("{path}: {pattern:?} is not a valid regular expression: {reason}")]
    Regex {
        path: String,
        pattern: String,
        reason: String,
    },
    #[error("{0} is required")]
    Missing(String),
    #[error("{catalog}: full: true cannot be combined with a version range ({range} is set)")]
    FullWithRange { catalog: String, range: String },
}

const API_VERSIONS: [&str; 2] = ["mirror.openshift.io/v2alpha1", "mirror.openshift.io/v1alpha2"];

// The raw document: only the fields pullgate reads. Everything else reaches serde_ignored,
// which reports its path; `Option` everywhere so that `key:` with no value is accepted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    kind: Option<String>,
    api_version: Option<String>,
    mirror: Option<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMirror {
    platform: Option<RawPlatform>,
    operators: Option<Vec<RawOperator>>,
    additional_images: Option<Vec<RawImage>>,
    blocked_images: Option<Vec<RawImage>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    channels: Option<Vec<RawReleaseChannel>>,
    architectures: Option<Vec<String>>,
    release: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReleaseChannel {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    shortest_path: Option<bool>,
    full: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOperator {
    catalog: Option<String>,
    full: Option<bool>,
    packages: Option<Vec<RawPackage>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPackage {
    name: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    channels: Option<Vec<RawChannelFilter>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawChannelFilter {
    name: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Deserialize)]
struct RawImage {
    name: Option<String>,
}

/// Fields oc-mirror defines that pullgate knows and deliberately does not act on, with
/// why when it is not obvious. Paths have their list indexes written as `[]`.
const KNOWN_IGNORED: &[(&str, &str)] = &[
    ("archiveSize", ""),
    ("storageConfig", ""),
    (
        "mirror.platform.graph",
        " (pullgate serves the graph at /openshift/graph)",
    ),
    ("mirror.platform.platforms", ""),
    ("mirror.platform.kubeVirtContainer", ""),
    ("mirror.operators[].targetCatalog", " (images keep their source names)"),
    ("mirror.operators[].targetTag", " (images keep their source names)"),
    ("mirror.operators[].targetCatalogSourceTemplate", ""),
    ("mirror.operators[].skipDependencies", ""),
    ("mirror.operators[].platforms", ""),
    ("mirror.operators[].packages[].defaultChannel", ""),
    ("mirror.operators[].packages[].bundles", ""),
    (
        "mirror.additionalImages[].targetRepo",
        " (images keep their source names)",
    ),
    (
        "mirror.additionalImages[].targetTag",
        " (images keep their source names)",
    ),
    ("mirror.additionalImages[].platforms", ""),
    ("mirror.helm", ""),
    ("mirror.samples", ""),
];

impl ImageSet {
    /// Parses the YAML text. Returns the image set and one warning per field it does not act on.
    pub fn parse(yaml: &str) -> Result<(ImageSet, Vec<String>), ImageSetError> {
        let mut ignored = Vec::new();
        let raw: RawConfig = serde_saphyr::with_deserializer_from_str(yaml, |de| {
            serde_ignored::deserialize(de, |path| ignored.push(render_path(&path)))
        })
        .map_err(|e| ImageSetError::Yaml(e.to_string()))?;
        // `metadata` (name, labels, …) is accepted silently: it is the document's own business.
        let mut warnings: Vec<String> = ignored
            .iter()
            .filter(|p| *p != "metadata")
            .map(|p| ignored_warning(p))
            .collect();

        check_header(raw.kind.as_deref(), raw.api_version.as_deref())?;
        let mirror = raw.mirror.unwrap_or(RawMirror {
            platform: None,
            operators: None,
            additional_images: None,
            blocked_images: None,
        });
        let platform = convert_platform(mirror.platform, &mut warnings)?;
        let operators = mirror
            .operators
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, op)| convert_operator(i, op))
            .collect::<Result<Vec<_>, _>>()?;
        let additional_images = mirror
            .additional_images
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, img)| required(img.name, || format!("mirror.additionalImages[{i}].name")))
            .collect::<Result<Vec<_>, _>>()?;
        let blocked_images = mirror
            .blocked_images
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, img)| {
                let path = format!("mirror.blockedImages[{i}].name");
                let pattern = required(img.name, || path.clone())?;
                BlockedImage::new(&path, &pattern)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let set = ImageSet {
            platform,
            operators,
            additional_images,
            blocked_images,
        };
        Ok((set, warnings))
    }

    /// True when a blockedImages pattern matches `image` (a pullspec; a leading `docker://`
    /// is stripped first, as oc-mirror does).
    pub fn is_blocked(&self, image: &str) -> bool {
        let image = image.strip_prefix("docker://").unwrap_or(image);
        self.blocked_images.iter().any(|b| b.matches(image))
    }
}

fn check_header(kind: Option<&str>, api_version: Option<&str>) -> Result<(), ImageSetError> {
    match kind {
        Some("ImageSetConfiguration") => {}
        Some(other) => return Err(ImageSetError::Kind(format!("{other:?}"))),
        None => return Err(ImageSetError::Kind("missing".to_string())),
    }
    match api_version {
        Some(v) if API_VERSIONS.contains(&v) => Ok(()),
        Some(other) => Err(ImageSetError::ApiVersion(format!("{other:?}"))),
        None => Err(ImageSetError::ApiVersion("missing".to_string())),
    }
}

fn convert_platform(raw: Option<RawPlatform>, warnings: &mut Vec<String>) -> Result<Platform, ImageSetError> {
    let Some(raw) = raw else {
        return Ok(Platform {
            channels: Vec::new(),
            architectures: vec!["amd64".to_string()],
            release: None,
        });
    };
    let mut channels = Vec::new();
    for (i, ch) in raw.channels.unwrap_or_default().into_iter().enumerate() {
        let path = format!("mirror.platform.channels[{i}]");
        if let Some(kind) = ch.kind.as_deref().filter(|k| *k != "ocp") {
            warnings.push(format!(
                "{path}.type {kind:?} is ignored by pullgate (only ocp channels are supported; the channel is read as ocp)"
            ));
        }
        channels.push(ReleaseChannel {
            name: required(ch.name, || format!("{path}.name"))?,
            min_version: version(&format!("{path}.minVersion"), ch.min_version)?,
            max_version: version(&format!("{path}.maxVersion"), ch.max_version)?,
            shortest_path: ch.shortest_path.unwrap_or(false),
            full: ch.full.unwrap_or(false),
        });
    }
    let architectures = match raw.architectures {
        Some(a) if !a.is_empty() => a,
        _ => vec!["amd64".to_string()],
    };
    Ok(Platform {
        channels,
        architectures,
        release: raw.release,
    })
}

fn convert_operator(i: usize, raw: RawOperator) -> Result<OperatorCatalog, ImageSetError> {
    let path = format!("mirror.operators[{i}]");
    let catalog = required(raw.catalog, || format!("{path}.catalog"))?;
    let full = raw.full.unwrap_or(false);
    let mut packages = Vec::new();
    for (j, pkg) in raw.packages.unwrap_or_default().into_iter().enumerate() {
        let ppath = format!("{path}.packages[{j}]");
        let mut channels = Vec::new();
        for (k, ch) in pkg.channels.unwrap_or_default().into_iter().enumerate() {
            let cpath = format!("{ppath}.channels[{k}]");
            channels.push(ChannelFilter {
                name: required(ch.name, || format!("{cpath}.name"))?,
                min_version: version(&format!("{cpath}.minVersion"), ch.min_version)?,
                max_version: version(&format!("{cpath}.maxVersion"), ch.max_version)?,
            });
        }
        packages.push(PackageFilter {
            name: required(pkg.name, || format!("{ppath}.name"))?,
            min_version: version(&format!("{ppath}.minVersion"), pkg.min_version)?,
            max_version: version(&format!("{ppath}.maxVersion"), pkg.max_version)?,
            channels,
        });
    }
    if full && let Some(range) = first_range(&path, &packages) {
        return Err(ImageSetError::FullWithRange { catalog: path, range });
    }
    Ok(OperatorCatalog {
        catalog,
        full,
        packages,
    })
}

/// The path of the first minVersion/maxVersion set in a catalog's packages, if any.
fn first_range(path: &str, packages: &[PackageFilter]) -> Option<String> {
    for (j, pkg) in packages.iter().enumerate() {
        if pkg.min_version.is_some() {
            return Some(format!("{path}.packages[{j}].minVersion"));
        }
        if pkg.max_version.is_some() {
            return Some(format!("{path}.packages[{j}].maxVersion"));
        }
        for (k, ch) in pkg.channels.iter().enumerate() {
            if ch.min_version.is_some() {
                return Some(format!("{path}.packages[{j}].channels[{k}].minVersion"));
            }
            if ch.max_version.is_some() {
                return Some(format!("{path}.packages[{j}].channels[{k}].maxVersion"));
            }
        }
    }
    None
}

fn required(value: Option<String>, path: impl FnOnce() -> String) -> Result<String, ImageSetError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ImageSetError::Missing(path())),
    }
}

/// A full semantic version; `4.16` is refused rather than guessed at, since oc-mirror
/// would read it differently depending on its version.
fn version(path: &str, value: Option<String>) -> Result<Option<semver::Version>, ImageSetError> {
    let Some(value) = value else {
        return Ok(None);
    };
    semver::Version::parse(value.trim())
        .map(Some)
        .map_err(|_| ImageSetError::Version {
            path: path.to_string(),
            value,
        })
}

/// Renders serde_ignored's path as the document spells it: `mirror.operators[0].targetCatalog`.
fn render_path(path: &serde_ignored::Path) -> String {
    fn walk(path: &serde_ignored::Path, out: &mut String) {
        use serde_ignored::Path;
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                let _ = write!(out, "[{index}]");
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut out = String::new();
    walk(path, &mut out);
    out
}

fn ignored_warning(path: &str) -> String {
    // Match against the known list with indexes erased: `a[3].b` → `a[].b`.
    let mut generic = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                generic.push('[');
            }
            ']' => {
                in_index = false;
                generic.push(']');
            }
            _ if in_index => {}
            _ => generic.push(c),
        }
    }
    match KNOWN_IGNORED.iter().find(|(known, _)| *known == generic) {
        Some((_, why)) => format!("{path} is ignored by pullgate{why}"),
        None => format!("{path} is ignored by pullgate (not an ImageSetConfiguration field pullgate knows)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
mirror:
  platform:
    channels:
    - name: stable-4.16
      minVersion: 4.16.0
      maxVersion: 4.16.3
      shortestPath: true
    graph: true
  operators:
  - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.16
    packages:
    - name: aws-load-balancer-operator
      channels:
      - name: stable-v1
    - name: node-observability-operator
      minVersion: 0.2.0
  additionalImages:
  - name: registry.redhat.io/ubi9/ubi:latest
  blockedImages:
  - name: registry.redhat.io/ubi9/ubi-minimal.*
"#;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn parse_err(yaml: &str) -> ImageSetError {
        ImageSet::parse(yaml).unwrap_err()
    }

    #[test]
    fn parses_the_v2alpha1_example() {
        let (set, warnings) = ImageSet::parse(EXAMPLE).unwrap();
        assert_eq!(
            set.platform.channels,
            vec![ReleaseChannel {
                name: "stable-4.16".into(),
                min_version: Some(v("4.16.0")),
                max_version: Some(v("4.16.3")),
                shortest_path: true,
                full: false,
            }]
        );
        assert_eq!(set.platform.architectures, vec!["amd64"]);
        assert_eq!(set.platform.release, None);
        assert_eq!(set.operators.len(), 1);
        let op = &set.operators[0];
        assert_eq!(op.catalog, "registry.redhat.io/redhat/redhat-operator-index:v4.16");
        assert!(!op.full);
        assert_eq!(
            op.packages,
            vec![
                PackageFilter {
                    name: "aws-load-balancer-operator".into(),
                    min_version: None,
                    max_version: None,
                    channels: vec![ChannelFilter {
                        name: "stable-v1".into(),
                        min_version: None,
                        max_version: None
                    }],
                },
                PackageFilter {
                    name: "node-observability-operator".into(),
                    min_version: Some(v("0.2.0")),
                    max_version: None,
                    channels: vec![],
                },
            ]
        );
        assert_eq!(set.additional_images, vec!["registry.redhat.io/ubi9/ubi:latest"]);
        assert_eq!(set.blocked_images.len(), 1);
        assert_eq!(set.blocked_images[0].pattern, "registry.redhat.io/ubi9/ubi-minimal.*");
        assert_eq!(
            warnings,
            vec!["mirror.platform.graph is ignored by pullgate (pullgate serves the graph at /openshift/graph)"]
        );
    }

    #[test]
    fn parses_v1alpha2_with_the_same_meaning() {
        let yaml = EXAMPLE
            .replace("v2alpha1", "v1alpha2")
            .replace("mirror:\n", "storageConfig:\n  local:\n    path: /tmp/x\nmirror:\n");
        let (set, warnings) = ImageSet::parse(&yaml).unwrap();
        let (expected, _) = ImageSet::parse(EXAMPLE).unwrap();
        assert_eq!(set, expected);
        assert!(warnings.contains(&"storageConfig is ignored by pullgate".to_string()));
    }

    #[test]
    fn every_ignored_field_warns_with_its_path() {
        let yaml = r#"kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
metadata:
  name: quiet
archiveSize: 4
mirror:
  platform:
    architectures: [arm64, amd64]
    release: quay.io/openshift-release-dev/ocp-release:4.16.3-x86_64
    graph: true
    kubeVirtContainer: true
    platforms: [x]
    channels:
    - name: okd-4.16
      type: okd
      full: true
  operators:
  - catalog: c1
    full: true
    targetCatalog: mine/c1
    targetTag: v1
    skipDependencies: true
    platforms: [linux/amd64]
    targetCatalogSourceTemplate: t.yaml
    packages:
    - name: p
      defaultChannel: stable
      bundles: [{name: p.v1}]
      colour: blue
  additionalImages:
  - name: a
    targetRepo: r
    targetTag: t
    platforms: [x]
  helm:
    repositories: []
  samples: []
  surprise: 1
unknownTop: true
"#;
        let (set, warnings) = ImageSet::parse(yaml).unwrap();
        assert_eq!(set.platform.architectures, vec!["arm64", "amd64"]);
        assert!(set.platform.channels[0].full);
        assert_eq!(
            set.platform.release.as_deref(),
            Some("quay.io/openshift-release-dev/ocp-release:4.16.3-x86_64")
        );
        let expected = [
            "archiveSize",
            "mirror.platform.graph",
            "mirror.platform.kubeVirtContainer",
            "mirror.platform.platforms",
            "mirror.operators[0].targetCatalog",
            "mirror.operators[0].targetTag",
            "mirror.operators[0].skipDependencies",
            "mirror.operators[0].platforms",
            "mirror.operators[0].targetCatalogSourceTemplate",
            "mirror.operators[0].packages[0].defaultChannel",
            "mirror.operators[0].packages[0].bundles",
            "mirror.operators[0].packages[0].colour",
            "mirror.additionalImages[0].targetRepo",
            "mirror.additionalImages[0].targetTag",
            "mirror.additionalImages[0].platforms",
            "mirror.helm",
            "mirror.samples",
            "mirror.surprise",
            "unknownTop",
        ];
        for path in expected {
            let prefix = format!("{path} is ignored by pullgate");
            assert!(
                warnings.iter().any(|w| w.starts_with(&prefix)),
                "no warning for {path} in {warnings:#?}"
            );
        }
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("mirror.platform.channels[0].type \"okd\""))
        );
        assert_eq!(warnings.len(), expected.len() + 1, "{warnings:#?}");
        assert!(!warnings.iter().any(|w| w.contains("metadata")));
        assert!(warnings.contains(&"mirror.helm is ignored by pullgate".to_string()));
        assert!(
            warnings
                .iter()
                .any(|w| w.ends_with("(not an ImageSetConfiguration field pullgate knows)")
                    && w.starts_with("unknownTop"))
        );
    }

    #[test]
    fn channel_type_ocp_is_quiet() {
        let yaml = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\n\
                    mirror:\n  platform:\n    channels:\n    - name: stable-4.16\n      type: ocp\n";
        let (_, warnings) = ImageSet::parse(yaml).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn wrong_kind_or_api_version_is_an_error_naming_it() {
        let e = parse_err(&EXAMPLE.replace("kind: ImageSetConfiguration", "kind: ImageSetConfig"));
        assert!(e.to_string().contains("\"ImageSetConfig\""), "{e}");
        let e = parse_err(&EXAMPLE.replace("v2alpha1", "v3"));
        assert!(e.to_string().contains("mirror.openshift.io/v3"), "{e}");
        let e = parse_err("apiVersion: mirror.openshift.io/v2alpha1\n");
        assert_eq!(e, ImageSetError::Kind("missing".into()));
        let e = parse_err("kind: ImageSetConfiguration\n");
        assert_eq!(e, ImageSetError::ApiVersion("missing".into()));
    }

    #[test]
    fn a_short_version_is_an_error_naming_the_field() {
        let yaml = EXAMPLE.replace("minVersion: 0.2.0", "minVersion: 4.10");
        assert_eq!(
            parse_err(&yaml).to_string(),
            "mirror.operators[0].packages[1].minVersion: \"4.10\" is not a version like 4.16.0"
        );
        let yaml = EXAMPLE.replace("maxVersion: 4.16.3", "maxVersion: latest");
        assert_eq!(
            parse_err(&yaml),
            ImageSetError::Version {
                path: "mirror.platform.channels[0].maxVersion".into(),
                value: "latest".into()
            }
        );
        let yaml = EXAMPLE.replace(
            "- name: stable-v1",
            "- name: stable-v1\n        maxVersion: 1.2.0-opr.1",
        );
        let (set, _) = ImageSet::parse(&yaml).unwrap();
        assert_eq!(
            set.operators[0].packages[0].channels[0].max_version,
            Some(v("1.2.0-opr.1"))
        );
    }

    #[test]
    fn a_bad_regex_is_an_error_naming_it() {
        let yaml = EXAMPLE.replace("ubi-minimal.*", "ubi-minimal(");
        match parse_err(&yaml) {
            ImageSetError::Regex { path, pattern, .. } => {
                assert_eq!(path, "mirror.blockedImages[0].name");
                assert_eq!(pattern, "registry.redhat.io/ubi9/ubi-minimal(");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn full_with_a_range_is_an_error() {
        let yaml = EXAMPLE.replace(
            "  - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.16\n",
            "  - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.16\n    full: true\n",
        );
        let e = parse_err(&yaml);
        assert!(
            e.to_string().contains("mirror.operators[0].packages[1].minVersion"),
            "{e}"
        );
    }

    #[test]
    fn missing_names_are_errors() {
        let yaml = EXAMPLE.replace("  - name: registry.redhat.io/ubi9/ubi:latest", "  - targetTag: x");
        assert_eq!(
            parse_err(&yaml),
            ImageSetError::Missing("mirror.additionalImages[0].name".into())
        );
    }

    #[test]
    fn defaults_when_mirror_is_empty() {
        let (set, warnings) =
            ImageSet::parse("kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v1alpha2\nmirror: {}\n")
                .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(set.platform.architectures, vec!["amd64"]);
        assert!(set.operators.is_empty() && set.additional_images.is_empty() && set.blocked_images.is_empty());
        let (set, _) = ImageSet::parse(
            "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\n\
             mirror:\n  platform:\n    architectures: []\n",
        )
        .unwrap();
        assert_eq!(set.platform.architectures, vec!["amd64"]);
    }

    #[test]
    fn blocked_images_match_unanchored_with_or_without_docker_scheme() {
        let (set, _) = ImageSet::parse(EXAMPLE).unwrap();
        assert!(set.is_blocked("registry.redhat.io/ubi9/ubi-minimal:latest"));
        assert!(set.is_blocked("docker://registry.redhat.io/ubi9/ubi-minimal@sha256:abc"));
        assert!(set.is_blocked("mirror.example/registry.redhat.io/ubi9/ubi-minimal:1"));
        assert!(!set.is_blocked("registry.redhat.io/ubi9/ubi:latest"));
        assert!(!set.is_blocked("docker://registry.redhat.io/ubi9/ubi:latest"));
        let anchored = BlockedImage::new("x", "^docker://").unwrap();
        assert!(anchored.matches("docker://a"));
        let set = ImageSet {
            blocked_images: vec![anchored],
            ..set
        };
        assert!(!set.is_blocked("docker://a"), "docker:// is stripped before matching");
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_an_error() {
        assert!(matches!(parse_err("- a\n- b\n"), ImageSetError::Yaml(_)));
        assert!(matches!(parse_err("kind: [\n"), ImageSetError::Yaml(_)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = ImageSet::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_yamlish_input(
            lines in proptest::collection::vec(
                "( {0,6})(kind|apiVersion|mirror|platform|channels|operators|packages|name|minVersion|- name|full|blockedImages|additionalImages|graph)(: )?([a-z0-9.\\[\\]{}*(-]{0,12})",
                0..16,
            )
        ) {
            let s = format!(
                "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\n{}\n",
                lines.join("\n")
            );
            let _ = ImageSet::parse(&s);
        }
    }
}
