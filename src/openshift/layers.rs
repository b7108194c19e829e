//! Image layers read as tar streams: decompression by magic bytes, one file out of a
//! layer, and the files an image shows under a directory once every layer's whiteouts
//! are applied (read top layer first, one streaming pass per layer).

use std::collections::HashSet;
use std::io::{Cursor, Read};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("zstd-compressed layers are not supported yet")]
    Zstd,
    #[error("reading the layer: {0}")]
    Io(#[source] std::io::Error),
    #[error("reading {path} in the layer: {source}")]
    Entry {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} in the layer is {size} bytes, over the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError<E> {
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The visitor's own error, as it returned it.
    #[error("{0}")]
    Visit(E),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT: &str = ".wh.";

/// Wraps a layer's bytes as a tar stream: gzip (magic 1f 8b) is decompressed, a plain tar
/// passes through; zstd (magic 28 b5 2f fd) is an error saying zstd layers are not
/// supported yet. Applying it to an already opened stream is harmless.
pub fn open_layer<'a, R: Read + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LayerError::Io(e)),
        }
    }
    let seen = &magic[..n];
    if seen == ZSTD_MAGIC {
        return Err(LayerError::Zstd);
    }
    let stream = Cursor::new(magic).take(n as u64).chain(r);
    if seen.starts_with(&GZIP_MAGIC) {
        // Multi-member, as pigz and some builders write layers.
        Ok(Box::new(flate2::read::MultiGzDecoder::new(stream)))
    } else {
        Ok(Box::new(stream))
    }
}

/// The bytes of one regular file of a layer (`layer`: its bytes, compressed or not):
/// `path` is compared after stripping a leading `./` or `/` from entry names. At most
/// `limit` bytes: larger is an error naming the path. None when absent. The first regular
/// file at that path is taken.
pub fn read_file<R: Read>(layer: R, path: &str, limit: u64) -> Result<Option<Vec<u8>>, LayerError> {
    let Some(wanted) = normalize(path) else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(open_layer(layer)?);
    for entry in archive.entries().map_err(LayerError::Io)? {
        let entry = entry.map_err(LayerError::Io)?;
        let Some(name) = entry_path(&entry) else { continue };
        if name != wanted || !is_regular(&entry) {
            continue;
        }
        return read_limited(entry, &name, limit).map(Some);
    }
    Ok(None)
}

fn read_limited<R: Read>(entry: tar::Entry<'_, R>, path: &str, limit: u64) -> Result<Vec<u8>, LayerError> {
    let size = entry.size();
    let too_large = |size| LayerError::TooLarge {
        path: path.to_string(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
    entry
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| LayerError::Entry {
            path: path.to_string(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The entry's path, normalised; None for names that are not UTF-8, escape with `..`,
/// or name the root itself.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Option<String> {
    normalize(std::str::from_utf8(&entry.path_bytes()).ok()?)
}

fn is_regular<R: Read>(entry: &tar::Entry<'_, R>) -> bool {
    let kind = entry.header().entry_type();
    // Old tars mark directories as regular files whose name ends with a slash.
    (kind.is_file() || kind.is_contiguous()) && !entry.path_bytes().ends_with(b"/")
}

/// `./a//b/` → `a/b`; None when a component is `..` (the entry would escape) or when
/// nothing is left.
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// The visible files under a directory of an image, read layer by layer from the top
/// (last) layer down, so each layer is read once, streaming.
///
/// Applies OCI/AUFS whiteouts: `.wh.<name>` hides `<name>` of lower layers in that
/// directory, `.wh..wh..opq` hides everything of lower layers in that directory, a
/// non-directory at a path hides that path and everything under it in lower layers, and
/// any path seen in an upper layer (a directory too, even one only implied by the files
/// under it) hides a non-directory at the same path below. Whiteouts in a layer apply
/// only to layers below it, never to entries of the same layer. What an entry hides
/// does not depend on whether an upper layer hid the entry itself: applying layers
/// bottom-up, its effect happened before the upper layer's.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// `configs` for `/configs/`; empty for the whole image.
    root: String,
    hides: Hides,
}

/// What the layers read so far hide in the layers below them.
#[derive(Debug, Clone, Default)]
struct Hides {
    /// The path and everything under it.
    subtree: HashSet<String>,
    /// Everything under the directory, not the directory itself (`""`: the image root).
    below: HashSet<String>,
    /// A non-directory at exactly this path.
    exact: HashSet<String>,
}

impl Hides {
    fn merge(&mut self, other: Hides) {
        self.subtree.extend(other.subtree);
        self.below.extend(other.below);
        self.exact.extend(other.exact);
    }

    /// Whether an entry at `path` (a non-directory) is hidden.
    fn hides(&self, path: &str) -> bool {
        if self.exact.contains(path) || self.subtree.contains(path) || self.below.contains("") {
            return true;
        }
        ancestors(path).any(|dir| self.subtree.contains(dir) || self.below.contains(dir))
    }
}

/// `a/b/c` → `a`, `a/b` (strict ancestors, shortest first).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

impl Overlay {
    /// `root`: the directory, as an image label gives it (`/configs`, `configs/`,
    /// `./configs` all mean `configs`; `/` means the whole image).
    pub fn new(root: &str) -> Overlay {
        Overlay {
            root: normalize(root).unwrap_or_default(),
            hides: Hides::default(),
        }
    }

    /// Whether `path` can matter for the root: at, under, or above it.
    fn relevant(&self, path: &str) -> bool {
        let root = self.root.as_str();
        root.is_empty() || path.is_empty() || is_at_or_under(path, root) || is_at_or_under(root, path)
    }

    /// `path` relative to the root, when it is strictly under it.
    fn relative<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.root.is_empty() {
            return Some(path);
        }
        path.strip_prefix(self.root.as_str())?.strip_prefix('/')
    }

    fn record(&self, set: &mut HashSet<String>, path: &str) {
        if self.relevant(path) {
            set.insert(path.to_string());
        }
    }

    /// Walks one layer (`tar`: its bytes, compressed or not; call it for the last layer
    /// first, then the one before, …). For each regular file under the root that no upper
    /// layer hid, calls `visit(relative_path, size, reader)` (`relative_path` without the
    /// root prefix, e.g. `my-operator/catalog.json`); a visible file larger than `limit`
    /// is an error naming it. Symlinks and hard links are not followed (they still hide
    /// lower paths); entries whose path escapes with `..` or is not UTF-8 are skipped.
    pub fn walk_layer<R: Read, E>(
        &mut self,
        tar: R,
        limit: u64,
        mut visit: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), E>,
    ) -> Result<(), OverlayError<E>> {
        let mut archive = tar::Archive::new(open_layer(tar)?);
        let mut pending = Hides::default();
        for entry in archive.entries().map_err(LayerError::Io)? {
            let mut entry = entry.map_err(LayerError::Io)?;
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
            ) {
                continue;
            }
            let Some(path) = entry_path(&entry) else { continue };
            // Every ancestor is a directory in this layer: it replaces a lower non-directory.
            for dir in ancestors(&path) {
                self.record(&mut pending.exact, dir);
            }
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == OPAQUE {
                self.record(&mut pending.below, dir);
                continue;
            }
            if let Some(target) = name.strip_prefix(WHITEOUT) {
                // `.wh..wh.*` other than the opaque marker are AUFS bookkeeping.
                if !target.is_empty() && target != ".." && target != "." && !target.starts_with(WHITEOUT) {
                    let hidden = if dir.is_empty() {
                        target.to_string()
                    } else {
                        format!("{dir}/{target}")
                    };
                    self.record(&mut pending.subtree, &hidden);
                }
                continue;
            }
            if kind.is_dir() || (kind.is_file() && entry.path_bytes().ends_with(b"/")) {
                self.record(&mut pending.exact, &path);
                continue;
            }
            self.record(&mut pending.subtree, &path);
            if !is_regular(&entry) || self.hides.hides(&path) {
                continue;
            }
            let Some(relative) = self.relative(&path) else { continue };
            let size = entry.size();
            if size > limit {
                return Err(LayerError::TooLarge { path, size, limit }.into());
            }
            visit(relative, size, &mut entry).map_err(OverlayError::Visit)?;
        }
        self.hides.merge(pending);
        Ok(())
    }
}

fn is_at_or_under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::io::Write as _;

    #[derive(Debug, Clone)]
    enum T<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str),
        HardLink(&'a str),
    }

    /// A tar with names written raw, so `..` and absolute names can be tested.
    fn tar(entries: &[T]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data, kind): (&str, &[u8], _) = match e {
                T::File(n, d) => (n, d, tar::EntryType::Regular),
                T::Dir(n) => (n, b"", tar::EntryType::Directory),
                T::Symlink(n) => (n, b"", tar::EntryType::Symlink),
                T::HardLink(n) => (n, b"", tar::EntryType::Link),
            };
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if matches!(e, T::Symlink(_) | T::HardLink(_)) {
                h.set_link_name("target").unwrap();
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    /// Walks `layers` (given bottom first) top-down; what was visited, by relative path.
    fn overlay(root: &str, layers: &[Vec<u8>]) -> BTreeMap<String, Vec<u8>> {
        let mut o = Overlay::new(root);
        let mut seen = BTreeMap::new();
        for layer in layers.iter().rev() {
            o.walk_layer(layer.as_slice(), 1 << 20, |path, size, r| {
                let bytes = read_all(r);
                assert_eq!(bytes.len() as u64, size);
                assert!(seen.insert(path.to_string(), bytes).is_none(), "{path} visited twice");
                Ok::<(), String>(())
            })
            .unwrap();
        }
        seen
    }

    #[test]
    fn open_layer_detects_compression() {
        let plain = tar(&[T::File("a", b"1")]);
        assert_eq!(read_all(open_layer(plain.as_slice()).unwrap()), plain);
        assert_eq!(read_all(open_layer(gzip(&plain).as_slice()).unwrap()), plain);
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0];
        let e = open_layer(&zstd[..]).err().unwrap();
        assert_eq!(e.to_string(), "zstd-compressed layers are not supported yet");
        assert!(read_all(open_layer(&b""[..]).unwrap()).is_empty());
        assert_eq!(read_all(open_layer(&b"\x1f"[..]).unwrap()), b"\x1f");
    }

    #[test]
    fn read_file_finds_the_file_in_plain_and_gzip_layers() {
        let layer = tar(&[
            T::Dir("./release-manifests/"),
            T::File("./release-manifests/0000_x.yaml", b"x"),
            T::File("./release-manifests/image-references", b"{\"kind\":\"ImageStream\"}"),
        ]);
        for bytes in [layer.clone(), gzip(&layer)] {
            let got = read_file(bytes.as_slice(), "release-manifests/image-references", 100).unwrap();
            assert_eq!(got.as_deref(), Some(&b"{\"kind\":\"ImageStream\"}"[..]));
            assert_eq!(
                read_file(bytes.as_slice(), "/release-manifests/missing", 100).unwrap(),
                None
            );
            assert_eq!(
                read_file(bytes.as_slice(), "release-manifests", 100).unwrap(),
                None,
                "a directory"
            );
        }
        let abs = tar(&[T::File("/etc/release", b"r")]);
        assert_eq!(
            read_file(abs.as_slice(), "etc/release", 1).unwrap().as_deref(),
            Some(&b"r"[..])
        );
    }

    #[test]
    fn read_file_over_the_limit_names_the_path() {
        let layer = tar(&[T::File("release-manifests/image-references", b"0123456789")]);
        let e = read_file(layer.as_slice(), "release-manifests/image-references", 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "release-manifests/image-references in the layer is 10 bytes, over the limit of 9"
        );
        assert!(
            read_file(layer.as_slice(), "release-manifests/image-references", 10)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn read_file_of_garbage_is_an_error_or_absent() {
        let _ = read_file(&b"not a tar at all, not even close to 512 bytes"[..], "a", 10);
        assert!(read_file(gzip(b"junk").as_slice(), "a", 10).is_err());
    }

    #[test]
    fn overlay_applies_whiteouts_across_three_layers() {
        let bottom = tar(&[
            T::File("configs/a/catalog.json", b"a0"),
            T::File("configs/b/catalog.json", b"b0"),
            T::File("configs/c/catalog.json", b"c0"),
            T::Dir("configs/d/"),
            T::File("configs/d/x.json", b"d0"),
            T::File("configs/e/catalog.json", b"e0"),
            T::File("configs/x.yaml", b"x0"),
            T::File("configs/f.json", b"f0"),
            T::File("configs/g.json", b"g0"),
            T::File("other/y.json", b"y0"),
        ]);
        let middle = tar(&[
            T::File("configs/.wh.b", b""),
            T::File("configs/c/.wh..wh..opq", b""),
            T::File("configs/c/new.json", b"c1"),
            T::File("configs/d", b"d1"),
            T::HardLink("configs/g.json"),
        ]);
        let top = tar(&[
            T::File("./configs/e/catalog.json", b"e2"),
            T::File("configs/.wh.e", b""),
            T::File("configs/a/catalog.json", b"a2"),
            T::File("../configs/evil.json", b"evil"),
            T::File("configs/../../configs/evil2.json", b"evil"),
            T::Symlink("configs/x.yaml"),
        ]);
        let got = overlay("/configs", &[bottom, middle, top]);
        let want: BTreeMap<String, Vec<u8>> = [
            ("a/catalog.json", &b"a2"[..]),
            ("c/new.json", b"c1"),
            ("d", b"d1"),
            ("e/catalog.json", b"e2"),
            ("f.json", b"f0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_directory_above_hides_a_file_below() {
        let bottom = tar(&[T::File("configs/p", b"file"), T::File("configs/q", b"file")]);
        let top = tar(&[T::File("configs/p/catalog.json", b"p"), T::Dir("configs/q")]);
        let got = overlay("configs/", &[bottom, top]);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["p/catalog.json"]);
    }

    #[test]
    fn root_spellings_agree_and_whole_image_works() {
        let layer = tar(&[T::File("configs/p/c.json", b"1"), T::File("etc/os-release", b"2")]);
        for root in ["/configs", "configs/", "./configs", "configs"] {
            assert_eq!(
                overlay(root, std::slice::from_ref(&layer)).keys().collect::<Vec<_>>(),
                ["p/c.json"]
            );
        }
        assert_eq!(overlay("/", &[layer]).len(), 2);
    }

    #[test]
    fn an_opaque_or_whiteout_above_the_root_hides_it() {
        let bottom = tar(&[T::File("configs/p.json", b"1")]);
        assert!(overlay("configs", &[bottom.clone(), tar(&[T::File(".wh.configs", b"")])]).is_empty());
        assert!(overlay("configs", &[bottom.clone(), tar(&[T::File(".wh..wh..opq", b"")])]).is_empty());
        assert!(overlay("configs", &[bottom.clone(), tar(&[T::Symlink("configs")])]).is_empty());
        assert_eq!(
            overlay("configs", &[bottom, tar(&[T::File("other/.wh..wh..opq", b"")])]).len(),
            1
        );
    }

    #[test]
    fn visible_files_over_the_limit_are_errors_hidden_ones_are_not() {
        let bottom = tar(&[T::File("configs/big.json", &[b'x'; 64])]);
        let top = tar(&[
            T::File("configs/.wh.big.json", b""),
            T::File("configs/big2.json", &[b'y'; 64]),
        ]);
        let mut o = Overlay::new("configs");
        let e = o
            .walk_layer(top.as_slice(), 63, |_, _, _| Ok::<(), String>(()))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configs/big2.json in the layer is 64 bytes, over the limit of 63"
        );
        let mut o = Overlay::new("configs");
        o.walk_layer(
            tar(&[T::File("configs/.wh.big.json", b"")]).as_slice(),
            63,
            |_, _, _| Ok::<(), String>(()),
        )
        .unwrap();
        o.walk_layer(bottom.as_slice(), 63, |p, _, _| Err(format!("visited {p}")))
            .unwrap();
    }

    #[test]
    fn visitor_errors_come_back_as_they_are() {
        let layer = gzip(&tar(&[T::File("configs/a.json", b"1")]));
        let mut o = Overlay::new("configs");
        let e = o
            .walk_layer(layer.as_slice(), 10, |p, _, _| Err(format!("no {p}")))
            .unwrap_err();
        assert!(matches!(e, OverlayError::Visit(ref s) if s == "no a.json"));
    }

    // The naive model: apply layers bottom-up into a map, then list the files under the root.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        File,
        Dir,
        Symlink,
        Whiteout,
        Opaque,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Node {
        Dir,
        File(Vec<u8>),
        Other,
    }

    const DIRS: [&str; 5] = ["", "configs", "configs/a", "configs/a/b", "other"];
    const NAMES: [&str; 4] = ["a", "b", "x", "configs"];

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    }

    fn under(path: &str, dir: &str) -> bool {
        dir.is_empty() || path.starts_with(&format!("{dir}/"))
    }

    /// (tar path, kind, target) for one layer, dropping what a single tar could not hold.
    fn sanitize(raw: &[(usize, usize, Kind)]) -> Vec<(String, Kind, String)> {
        let mut kept: Vec<(String, Kind, String)> = Vec::new();
        for &(d, n, kind) in raw {
            let (dir, name) = (DIRS[d], NAMES[n]);
            let target = join(dir, name);
            let path = match kind {
                Kind::Whiteout => join(dir, &format!(".wh.{name}")),
                Kind::Opaque => join(dir, ".wh..wh..opq"),
                _ => target.clone(),
            };
            let non_dir = |k: Kind| k != Kind::Dir;
            let conflict = kept
                .iter()
                .any(|(p, k, _)| *p == path || (non_dir(*k) && under(&path, p)) || (non_dir(kind) && under(p, &path)));
            if !conflict {
                kept.push((path, kind, target));
            }
        }
        kept
    }

    fn model(root: &str, layers: &[Vec<(String, Kind, String)>]) -> BTreeMap<String, Vec<u8>> {
        let mut map: BTreeMap<String, Node> = BTreeMap::new();
        for (i, layer) in layers.iter().enumerate() {
            for (path, kind, target) in layer {
                match kind {
                    Kind::Whiteout => map.retain(|p, _| p != target && !under(p, target)),
                    Kind::Opaque => {
                        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                        map.retain(|p, _| !under(p, &dir));
                    }
                    _ => {}
                }
            }
            for (path, kind, _) in layer {
                let parts: Vec<&str> = path.split('/').collect();
                for k in 1..parts.len() {
                    let anc = parts[..k].join("/");
                    if map.get(&anc).is_some_and(|n| *n != Node::Dir) {
                        map.remove(&anc);
                    }
                    map.insert(anc, Node::Dir);
                }
                let node = match kind {
                    Kind::Whiteout | Kind::Opaque => continue,
                    Kind::Dir => Node::Dir,
                    Kind::File => Node::File(format!("L{i}:{path}").into_bytes()),
                    Kind::Symlink => Node::Other,
                };
                if node == Node::Dir {
                    if map.get(path).is_some_and(|n| *n != Node::Dir) {
                        map.remove(path);
                    }
                } else {
                    map.retain(|p, _| p != path && !under(p, path));
                }
                map.insert(path.clone(), node);
            }
        }
        map.into_iter()
            .filter_map(|(p, n)| match n {
                Node::File(c) if under(&p, root) && p != root => Some((p[root.len() + 1..].to_string(), c)),
                _ => None,
            })
            .collect()
    }

    fn build(i: usize, layer: &[(String, Kind, String)]) -> Vec<u8> {
        let contents: Vec<Vec<u8>> = layer.iter().map(|(p, _, _)| format!("L{i}:{p}").into_bytes()).collect();
        let entries: Vec<T> = layer
            .iter()
            .zip(&contents)
            .map(|((p, kind, _), c)| match kind {
                Kind::File => T::File(p, c),
                Kind::Dir => T::Dir(p),
                Kind::Symlink => T::Symlink(p),
                Kind::Whiteout | Kind::Opaque => T::File(p, b""),
            })
            .collect();
        tar(&entries)
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            4 => Just(Kind::File),
            2 => Just(Kind::Dir),
            1 => Just(Kind::Symlink),
            2 => Just(Kind::Whiteout),
            1 => Just(Kind::Opaque),
        ]
    }

    proptest! {
        #[test]
        fn overlay_matches_the_naive_model(
            raw in proptest::collection::vec(
                proptest::collection::vec((0..DIRS.len(), 0..NAMES.len(), kind()), 0..10),
                1..5,
            )
        ) {
            let layers: Vec<Vec<(String, Kind, String)>> = raw.iter().map(|l| sanitize(l)).collect();
            let tars: Vec<Vec<u8>> = layers.iter().enumerate().map(|(i, l)| build(i, l)).collect();
            prop_assert_eq!(overlay("configs", &tars), model("configs", &layers));
        }

        #[test]
        fn garbage_layers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_file(bytes.as_slice(), "a", 100);
            let mut o = Overlay::new("/");
            let _ = o.walk_layer(bytes.as_slice(), 100, |_, _, _| Ok::<(), ()>(()));
        }

        #[test]
        fn corrupted_tars_never_panic(pos in 0usize..2048, byte in any::<u8>()) {
            let mut layer = tar(&[T::File("configs/a.json", b"12345"), T::File("configs/.wh.b", b"")]);
            let len = layer.len();
            layer[pos % len] = byte;
            let _ = read_file(layer.as_slice(), "configs/a.json", 100);
            let mut o = Overlay::new("configs");
            let _ = o.walk_layer(layer.as_slice(), 100, |_, _, _| Ok::<(), ()>(()));
        }
    }
}
