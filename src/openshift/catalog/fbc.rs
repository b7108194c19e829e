//! Reading a configs directory into a [`Catalog`]: JSON streams and YAML documents, the
//! three schemas pullgate uses, and `.indexignore` files applied once every file is in.

use super::{Bundle, Catalog, CatalogError, Channel, Entry, Package};
use crate::openshift::layers::normalize;
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;

/// The documents pullgate keeps from one file.
enum Meta {
    Package {
        name: String,
        default_channel: Option<String>,
    },
    Channel(Channel),
    Bundle(Bundle),
}

struct ParsedFile {
    path: String,
    /// Kept rather than returned: a `.indexignore` read later may exclude the file.
    parsed: Result<Vec<Meta>, CatalogError>,
}

struct IndexIgnore {
    /// The directory holding the `.indexignore`, relative to the configs root ("" for it).
    dir: String,
    matcher: Gitignore,
}

/// Collects the files of a configs directory in any order; `finish` builds the catalog.
#[derive(Default)]
pub struct CatalogBuilder {
    files: Vec<ParsedFile>,
    ignores: Vec<IndexIgnore>,
}

const INDEX_IGNORE: &str = ".indexignore";

impl CatalogBuilder {
    pub fn new() -> CatalogBuilder {
        CatalogBuilder::default()
    }

    /// One file of the configs directory, by its path relative to that directory (from
    /// `Overlay::walk_layer`). `.indexignore` files are recognised by name; `*.json` files
    /// are JSON streams, `*.yaml`/`*.yml` YAML documents, other files are ignored.
    ///
    /// A malformed `.indexignore` is an error here. Parse errors of catalog files name the
    /// file (and the document index) but surface from `finish`, because an `.indexignore`
    /// that arrives later may exclude the file.
    pub fn add_file(&mut self, path: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let Some(path) = normalize(path) else {
            return Err(CatalogError::File {
                file: path.to_string(),
                reason: "not a path inside the configs directory".to_string(),
            });
        };
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == INDEX_IGNORE {
            let matcher = index_ignore(&path, bytes)?;
            self.ignores.push(IndexIgnore {
                dir: dir.to_string(),
                matcher,
            });
            return Ok(());
        }
        let format = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => return Ok(()),
        };
        // Parsed even when the `.indexignore` files so far exclude it: a deeper one that
        // arrives later can take the exclusion back with `!pattern`.
        let parsed = parse_file(&path, format, bytes);
        self.files.push(ParsedFile { path, parsed });
        Ok(())
    }

    /// The catalog of every file no `.indexignore` excludes; the first parse error of
    /// such a file, or a package, channel or bundle defined twice, is an error.
    pub fn finish(self) -> Result<Catalog, CatalogError> {
        let CatalogBuilder { files, ignores } = self;
        let mut catalog = Catalog::default();
        let mut defined = HashSet::new();
        for file in files {
            if is_ignored(&ignores, &file.path) {
                continue;
            }
            for meta in file.parsed? {
                add_meta(&mut catalog, &mut defined, &file.path, meta)?;
            }
        }
        Ok(catalog)
    }
}

/// Whether `ignores` exclude `path`: the deepest `.indexignore` that has an opinion
/// decides, so a nested `!pattern` can take back a parent's pattern.
fn is_ignored(ignores: &[IndexIgnore], path: &str) -> bool {
    let mut applicable: Vec<(&IndexIgnore, &str)> = ignores
        .iter()
        .filter_map(|ig| {
            if ig.dir.is_empty() {
                Some((ig, path))
            } else {
                path.strip_prefix(ig.dir.as_str())?
                    .strip_prefix('/')
                    .map(|rel| (ig, rel))
            }
        })
        .collect();
    applicable.sort_by_key(|(ig, _)| std::cmp::Reverse(ig.dir.len()));
    for (ig, rel) in applicable {
        match ig.matcher.matched_path_or_any_parents(rel, false) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
    }
    false
}

fn package_mut<'c>(catalog: &'c mut Catalog, name: &str) -> &'c mut Package {
    catalog.packages.entry(name.to_string()).or_insert_with(|| Package {
        name: name.to_string(),
        ..Package::default()
    })
}

fn add_meta(catalog: &mut Catalog, defined: &mut HashSet<String>, file: &str, meta: Meta) -> Result<(), CatalogError> {
    match meta {
        Meta::Package { name, default_channel } => {
            if defined.contains(&name) {
                return Err(CatalogError::DuplicatePackage {
                    package: name,
                    file: file.to_string(),
                });
            }
            package_mut(catalog, &name).default_channel = default_channel;
            defined.insert(name);
        }
        Meta::Channel(channel) => {
            let package = package_mut(catalog, &channel.package);
            if package.channels.contains_key(&channel.name) {
                return Err(CatalogError::DuplicateChannel {
                    package: channel.package.clone(),
                    channel: channel.name.clone(),
                    file: file.to_string(),
                });
            }
            package.channels.insert(channel.name.clone(), channel);
        }
        Meta::Bundle(bundle) => {
            let package = package_mut(catalog, &bundle.package);
            if package.bundles.contains_key(&bundle.name) {
                return Err(CatalogError::DuplicateBundle {
                    package: bundle.package.clone(),
                    bundle: bundle.name.clone(),
                    file: file.to_string(),
                });
            }
            package.bundles.insert(bundle.name.clone(), bundle);
        }
    }
    Ok(())
}

fn index_ignore(path: &str, bytes: &[u8]) -> Result<Gitignore, CatalogError> {
    let bad = |reason: String| CatalogError::File {
        file: path.to_string(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".to_string()))?;
    // Root "." matches paths as given: callers hand in paths relative to the file's directory.
    let mut builder = GitignoreBuilder::new(".");
    for line in text.lines() {
        builder.add_line(None, line).map_err(|e| bad(e.to_string()))?;
    }
    builder.build().map_err(|e| bad(e.to_string()))
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

fn parse_file(path: &str, format: Format, bytes: &[u8]) -> Result<Vec<Meta>, CatalogError> {
    let doc_error = |index, reason: String| CatalogError::Document {
        file: path.to_string(),
        index,
        reason,
    };
    let mut metas = Vec::new();
    match format {
        Format::Json => {
            // One document at a time, so a large catalog.json is never all Values at once.
            let stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
            for (index, doc) in stream.enumerate() {
                let doc = doc.map_err(|e| doc_error(index, format!("not valid JSON: {e}")))?;
                metas.extend(meta_of(doc).map_err(|reason| doc_error(index, reason))?);
            }
        }
        Format::Yaml => {
            let text = std::str::from_utf8(bytes).map_err(|_| CatalogError::File {
                file: path.to_string(),
                reason: "not UTF-8".to_string(),
            })?;
            let docs =
                serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options(text.len())).map_err(|e| {
                    CatalogError::File {
                        file: path.to_string(),
                        reason: format!("not valid YAML: {e}"),
                    }
                })?;
            for (index, doc) in docs.into_iter().enumerate() {
                metas.extend(meta_of(doc).map_err(|reason| doc_error(index, reason))?);
            }
        }
    }
    Ok(metas)
}

/// serde-saphyr's default budget is sized for configuration files: 1,024 documents and
/// 250,000 nodes, which one large operator package in YAML exceeds. The caller already
/// bounds the file's size, so those counts go. What stops amplification stays, tighter:
/// opm never writes anchors, so 100,000 events of them is plenty.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    const ANCHORED_EVENTS: usize = 100_000;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = usize::MAX;
    budget.max_nodes = usize::MAX;
    budget.max_events = usize::MAX;
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    budget.max_recorded_anchor_events = ANCHORED_EVENTS;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = ANCHORED_EVENTS;
    options
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPackage {
    name: String,
    default_channel: Option<String>,
}

#[derive(Deserialize)]
struct RawChannel {
    name: String,
    package: String,
    entries: Option<Vec<RawEntry>>,
}

#[derive(Deserialize)]
struct RawEntry {
    name: String,
    replaces: Option<String>,
    skips: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    name: String,
    package: String,
    image: Option<String>,
    properties: Option<Vec<RawProperty>>,
    related_images: Option<Vec<RawRelatedImage>>,
}

#[derive(Deserialize)]
struct RawProperty {
    #[serde(rename = "type")]
    kind: String,
    value: Option<Value>,
}

#[derive(Deserialize)]
struct RawRelatedImage {
    image: Option<String>,
}

/// The document as pullgate keeps it; None for schemas it does not read.
fn meta_of(doc: Value) -> Result<Option<Meta>, String> {
    let schema = match &doc {
        Value::Null => return Ok(None),
        Value::Object(map) => match map.get("schema") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("schema is not a string".to_string()),
            None => return Err("has no schema".to_string()),
        },
        _ => return Err("is not an object".to_string()),
    };
    let shape = |e: serde_json::Error| format!("{schema}: {e}");
    let meta = match schema.as_str() {
        "olm.package" => {
            let raw: RawPackage = serde_json::from_value(doc).map_err(shape)?;
            Meta::Package {
                name: raw.name,
                default_channel: raw.default_channel.filter(|c| !c.is_empty()),
            }
        }
        "olm.channel" => {
            let raw: RawChannel = serde_json::from_value(doc).map_err(shape)?;
            Meta::Channel(Channel {
                name: raw.name,
                package: raw.package,
                entries: raw
                    .entries
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| Entry {
                        name: e.name,
                        replaces: e.replaces.filter(|r| !r.is_empty()),
                        skips: e.skips.unwrap_or_default(),
                    })
                    .collect(),
            })
        }
        "olm.bundle" => {
            let raw: RawBundle = serde_json::from_value(doc).map_err(shape)?;
            Meta::Bundle(Bundle {
                version: bundle_version(raw.properties.as_deref().unwrap_or_default()),
                name: raw.name,
                package: raw.package,
                image: raw.image.unwrap_or_default(),
                related_images: raw
                    .related_images
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.image.filter(|i| !i.is_empty()))
                    .collect(),
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(meta))
}

/// The `olm.package` property's `version`, when it is semver; a bundle without one is in
/// no version range but can still be a channel head.
fn bundle_version(properties: &[RawProperty]) -> Option<semver::Version> {
    let value = properties.iter().find(|p| p.kind == "olm.package")?.value.as_ref()?;
    let version = match value.get("version")? {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    semver::Version::parse(&version).ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{BETA_YAML, alpha_json, catalog, filter, v};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_both_formats() {
        let c = catalog();
        assert_eq!(c.packages.keys().collect::<Vec<_>>(), ["alpha", "beta"]);
        let alpha = &c.packages["alpha"];
        assert_eq!(alpha.default_channel.as_deref(), Some("stable"));
        assert_eq!(alpha.channels.len(), 2);
        assert_eq!(alpha.bundles.len(), 5);
        let b = &alpha.bundles["alpha.v1.2.0"];
        assert_eq!(b.version, Some(v("1.2.0")));
        assert_eq!(b.related_images.len(), 2);
        assert_eq!(alpha.channels["stable"].entries[3].skips, ["alpha.v1.1.1"]);
        let beta = &c.packages["beta"];
        assert_eq!(beta.bundles["beta.v2.1.0"].version, Some(v("2.1.0-opr.1")));
        assert_eq!(beta.channels["stable-v2"].head().unwrap().name, "beta.v2.1.0");
        assert_eq!(alpha.channels["stable"].head().unwrap().name, "alpha.v1.2.0");
    }

    #[test]
    fn indexignore_applies_to_files_read_before_it() {
        let mut b = CatalogBuilder::new();
        b.add_file("alpha/catalog.json", alpha_json().as_bytes()).unwrap();
        // Broken, and a second definition of alpha: both fine once ignored.
        b.add_file("alpha/notes.yaml", b"key: [unclosed").unwrap();
        b.add_file("alpha/old/catalog.json", alpha_json().as_bytes()).unwrap();
        b.add_file("beta/index.yaml", BETA_YAML.as_bytes()).unwrap();
        b.add_file("beta/keep.json", br#"{"schema":"olm.package","name":"kept"}"#)
            .unwrap();
        b.add_file("alpha/.indexignore", b"# comments are fine\nnotes.yaml\nold/\n")
            .unwrap();
        b.add_file(".indexignore", b"beta/*.json\nkept-too.json\n").unwrap();
        b.add_file("beta/.indexignore", b"!keep.json\n").unwrap();
        b.add_file("beta/later.json", br#"{"schema":"olm.package","name":"beta"}"#)
            .unwrap();
        // Excluded by the top `.indexignore` when it arrives, taken back by a later, deeper one.
        b.add_file(
            "beta/sub/kept-too.json",
            br#"{"schema":"olm.package","name":"kept-too"}"#,
        )
        .unwrap();
        b.add_file("beta/sub/.indexignore", b"!kept-too.json\n").unwrap();
        let c = b.finish().unwrap();
        assert_eq!(
            c.packages.keys().collect::<Vec<_>>(),
            ["alpha", "beta", "kept", "kept-too"]
        );
    }

    #[test]
    fn parse_errors_name_the_file_and_document() {
        let finish = |path: &str, bytes: &[u8]| {
            let mut b = CatalogBuilder::new();
            b.add_file(path, bytes).unwrap();
            b.finish().unwrap_err().to_string()
        };
        let e = finish(
            "p/catalog.json",
            b"{\"schema\":\"olm.package\",\"name\":\"p\"}\n{\"name\":\"x\"}",
        );
        assert_eq!(e, "catalog file p/catalog.json, document 1: has no schema");
        let e = finish("p/catalog.json", b"{\"schema\":\"olm.package\",\"name\":\"p\"} {oops");
        assert!(
            e.starts_with("catalog file p/catalog.json, document 1: not valid JSON"),
            "{e}"
        );
        let e = finish("p/catalog.yaml", b"schema: olm.channel\nname: c\n");
        assert!(
            e.starts_with("catalog file p/catalog.yaml, document 0: olm.channel: missing field `package`"),
            "{e}"
        );
        let e = finish("p/c.yml", b"a: [\n");
        assert!(e.starts_with("catalog file p/c.yml: not valid YAML"), "{e}");
        let e = finish("p/c.json", b"[1]");
        assert_eq!(e, "catalog file p/c.json, document 0: is not an object");
        let mut b = CatalogBuilder::new();
        assert!(b.add_file("../x.json", b"{}").is_err());
    }

    #[test]
    fn duplicates_are_errors() {
        let mut b = CatalogBuilder::new();
        b.add_file("a.json", alpha_json().as_bytes()).unwrap();
        b.add_file("b.json", alpha_json().as_bytes()).unwrap();
        assert_eq!(
            b.finish().unwrap_err(),
            CatalogError::DuplicatePackage {
                package: "alpha".into(),
                file: "b.json".into()
            }
        );
    }

    #[test]
    fn many_yaml_documents_parse_but_alias_bombs_do_not() {
        let mut text = String::from("schema: olm.package\nname: p\n");
        for i in 0..1500 {
            text.push_str(&format!(
                "---\nschema: olm.bundle\nname: p.v{i}\npackage: p\nimage: i{i}\n"
            ));
        }
        let mut b = CatalogBuilder::new();
        b.add_file("p/index.yaml", text.as_bytes()).unwrap();
        assert_eq!(b.finish().unwrap().packages["p"].bundles.len(), 1500);

        let mut bomb = String::from("schema: olm.x\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..7 {
            let refs = vec![format!("*a{}", i - 1); 20].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let mut b = CatalogBuilder::new();
        b.add_file("p/bomb.yaml", bomb.as_bytes()).unwrap();
        let e = b.finish().unwrap_err().to_string();
        assert!(e.starts_with("catalog file p/bomb.yaml: not valid YAML"), "{e}");
    }

    proptest! {
        #[test]
        fn add_file_never_panics(
            name in "(a/)?(catalog\\.json|index\\.yaml|x\\.yml|\\.indexignore|other\\.txt)",
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut b = CatalogBuilder::new();
            let _ = b.add_file(&name, &bytes);
            if let Ok(c) = b.finish() {
                let _ = c.select(&filter(false, vec![]));
            }
        }
    }
}
