//! The key formats of the cache's sled trees, in one place: blobs and manifests by their
//! digest's hex; tag mappings, tag-list pages and signatures by upstream, repository and
//! what is asked (newline-separated: no name, tag or digest contains one); fills by
//! their id; the last-use index by (time, kind, digest), so it iterates oldest first.

use crate::oci::Digest;

/// Blob records and manifests: the digest's hex.
pub fn digest(d: &Digest) -> &[u8] {
    d.hex().as_bytes()
}

/// `upstream\nrepo\nitem`: tag mappings (item = tag) and tag-list pages (item = query).
pub fn scoped(upstream: &str, repo: &str, item: &str) -> Vec<u8> {
    format!("{upstream}\n{repo}\n{item}").into_bytes()
}

/// The parts of a [`scoped`] key.
pub fn parse_scoped(key: &[u8]) -> Option<(String, String, String)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.splitn(3, '\n');
    let (u, r, t) = (parts.next()?, parts.next()?, parts.next()?);
    Some((u.to_string(), r.to_string(), t.to_string()))
}

/// Lookaside signature `index` of `digest` in a repository.
pub fn signature(upstream: &str, repo: &str, digest: &Digest, index: u32) -> Vec<u8> {
    scoped(upstream, repo, &format!("{}/{index}", digest.hex()))
}

/// OpenShift release signature `index` of the release image `digest`. Upstream names
/// are lowercase registry names, so this prefix is no upstream's.
pub fn release_signature(digest: &Digest, index: u32) -> Vec<u8> {
    format!("[openshift]\nrelease\n{}/{index}", digest.hex()).into_bytes()
}

/// An update-graph query: channel, arch, id and version, each empty when absent (none of
/// them contains a newline: the HTTP layer checked their characters).
pub fn update_graph(query: &[Option<String>; 4]) -> Vec<u8> {
    let [channel, arch, id, version] = query;
    let mut key = update_graph_prefix(channel.as_deref(), arch.as_deref());
    key.extend_from_slice(format!("{}\n{}", id.as_deref().unwrap_or(""), version.as_deref().unwrap_or("")).as_bytes());
    key
}

/// The keys of every update-graph answer for `channel` and `arch`.
pub fn update_graph_prefix(channel: Option<&str>, arch: Option<&str>) -> Vec<u8> {
    format!("graph\n{}\n{}\n", channel.unwrap_or(""), arch.unwrap_or("")).into_bytes()
}

/// The last referrers answer for `digest` with the upstream query it was asked with.
pub fn referrers(upstream: &str, repo: &str, digest: &Digest, query: &str) -> Vec<u8> {
    format!("referrers\n{upstream}\n{repo}\n{digest}\n{query}").into_bytes()
}

/// Small named values (proxy statistics, the readiness probe's scratch value).
pub fn meta(name: &str) -> Vec<u8> {
    format!("meta\n{name}").into_bytes()
}

/// A running fill's journal entry.
pub fn fill(fill_id: u64) -> [u8; 8] {
    fill_id.to_be_bytes()
}

pub fn parse_fill(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// What a last-use index entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Blob => b'b',
            Kind::Manifest => b'm',
        }
    }
}

/// Length of a last-use index key: time, kind, digest hex.
const LRU_KEY_LEN: usize = 8 + 1 + 64;

/// The last-use index key of an entry used last at `ms`: big-endian time first, so the
/// tree's order is least recently used first.
pub fn lru(ms: u64, kind: Kind, d: &Digest) -> [u8; LRU_KEY_LEN] {
    let mut k = [0u8; LRU_KEY_LEN];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8] = kind.tag();
    k[9..].copy_from_slice(d.hex().as_bytes());
    k
}

/// The parts of an [`lru`] key.
pub fn parse_lru(key: &[u8]) -> Option<(u64, Kind, Digest)> {
    if key.len() != LRU_KEY_LEN {
        return None;
    }
    let ms = u64::from_be_bytes(key[..8].try_into().ok()?);
    let kind = match key[8] {
        b'b' => Kind::Blob,
        b'm' => Kind::Manifest,
        _ => return None,
    };
    Some((ms, kind, parse_digest(&key[9..])?))
}

/// A big-endian `u64` value (sizes, times).
pub fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// A digest from a [`digest`] key.
pub fn parse_digest(key: &[u8]) -> Option<Digest> {
    std::str::from_utf8(key).ok().and_then(|h| Digest::from_hex(h).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = scoped("registry.redhat.io", "ubi9/ubi", "latest");
        assert_eq!(
            parse_scoped(&k),
            Some(("registry.redhat.io".into(), "ubi9/ubi".into(), "latest".into()))
        );
        assert_eq!(parse_fill(&fill(42)), Some(42));
        let d = Digest::of(b"x");
        assert_eq!(parse_digest(digest(&d)), Some(d.clone()));
        assert_eq!(parse_digest(b"nope"), None);
        let older = lru(5, Kind::Blob, &d);
        let newer = lru(6, Kind::Manifest, &Digest::of(b"a"));
        assert!(older < newer, "oldest first");
        assert_eq!(parse_lru(&older), Some((5, Kind::Blob, d)));
        assert_eq!(parse_lru(b"short"), None);
    }
}
