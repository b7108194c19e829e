//! What pullgate reads inside manifests: the platform entries of an index (OCI index or
//! Docker manifest list) and the config and layer descriptors of an image manifest.
//! One parser for the proxy's negotiation, `prefetch` and the cache tooling.

use super::Digest;

/// A platform entry of an index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: String,
    pub media_type: String,
    pub os: Option<String>,
    pub architecture: Option<String>,
}

/// The entries of an OCI index or Docker manifest list (empty when it is not one).
pub fn index_entries(body: &[u8]) -> Vec<IndexEntry> {
    #[derive(serde::Deserialize)]
    struct Platform {
        os: Option<String>,
        architecture: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        digest: String,
        #[serde(rename = "mediaType", default)]
        media_type: String,
        platform: Option<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    serde_json::from_slice::<Index>(body)
        .map(|i| {
            i.manifests
                .into_iter()
                .map(|e| IndexEntry {
                    digest: e.digest,
                    media_type: e.media_type,
                    os: e.platform.as_ref().and_then(|p| p.os.clone()),
                    architecture: e.platform.and_then(|p| p.architecture),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A content descriptor as an image manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Descriptor {
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

/// The blobs an image manifest (OCI or Docker schema 2) names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ImageManifest {
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    pub fn parse(body: &[u8]) -> Result<ImageManifest, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The config then the layers, as digests with their announced sizes; an invalid
    /// digest is an error naming it.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>, String> {
        self.config
            .iter()
            .chain(&self.layers)
            .map(|d| {
                Digest::parse(&d.digest)
                    .map(|digest| (digest, d.size))
                    .map_err(|e| format!("{}: {e}", d.digest))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_index_entries() {
        let body = br#"{"manifests":[{"digest":"sha256:aa","mediaType":"m","platform":{"os":"linux","architecture":"amd64"}},{"digest":"sha256:bb"}]}"#;
        let e = index_entries(body);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].architecture.as_deref(), Some("amd64"));
        assert_eq!(e[1].os, None);
        assert!(index_entries(b"[]").is_empty());
    }

    #[test]
    fn reads_image_blobs() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let body =
            format!(r#"{{"config":{{"digest":"sha256:{a}","size":3}},"layers":[{{"digest":"sha256:{b}","size":9}}]}}"#);
        let image = ImageManifest::parse(body.as_bytes()).unwrap();
        let blobs = image.blobs().unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!((blobs[0].0.hex(), blobs[0].1), (a.as_str(), 3));
        assert_eq!(blobs[1].1, 9);
        let index = ImageManifest::parse(br#"{"manifests":[]}"#).unwrap();
        assert!(index.config.is_none() && index.layers.is_empty());
        let bad = ImageManifest::parse(br#"{"layers":[{"digest":"sha256:zz"}]}"#).unwrap();
        assert!(bad.blobs().is_err());
    }
}
