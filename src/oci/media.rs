//! Manifest media types, the `Accept` list pullgate sends upstream, and the client's
//! `Accept` set (every header line, comma lists, parameters and `*/*`) that a tag
//! request is negotiated against.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What pullgate asks upstream for on every manifest request (schema 1 is not wanted:
/// Red Hat refuses it by digest and clients are moving off it).
pub const UPSTREAM_MANIFEST_ACCEPT: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// [`UPSTREAM_MANIFEST_ACCEPT`] as one comma-separated `Accept` header value.
pub fn upstream_manifest_accept() -> &'static str {
    static JOINED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| UPSTREAM_MANIFEST_ACCEPT.join(", "));
    &JOINED
}

/// Longest manifest body pullgate accepts (distribution's limit).
/// The media type of a cosign signature layer (a simple-signing payload).
pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries its cosign signature (base64).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_known_manifest(media_type: &str) -> bool {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_LIST,
        DOCKER_V1,
        DOCKER_V1_SIGNED,
    ]
    .contains(&media_type)
}

/// The media type without parameters, lowercased: `Content-Type` as pullgate stores it.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The media type of a manifest: the `Content-Type` upstream gave when it names a
/// manifest type, else the body's `mediaType` field (redirect hops and old registries
/// send `text/html` or `application/json`), else the given `Content-Type`.
pub fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let from_header = content_type.map(essence).unwrap_or_default();
    if is_known_manifest(&from_header) {
        return from_header;
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    if let Ok(probe) = serde_json::from_slice::<Probe>(body) {
        if let Some(mt) = probe.media_type {
            return essence(&mt);
        }
        // An OCI manifest or index may omit mediaType.
        if probe.schema_version == Some(2) {
            return if probe.manifests.is_some() {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            }
            .to_string();
        }
    }
    if from_header.is_empty() {
        "application/octet-stream".to_string()
    } else {
        from_header
    }
}

/// The set of media types a client accepts, from all of its `Accept` header lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptSet {
    types: Vec<String>,
    any: bool,
}

impl AcceptSet {
    /// Builds the set from every `Accept` header line. No header at all accepts anything,
    /// as distribution does for clients that do not negotiate.
    pub fn from_header_values<'a>(values: impl IntoIterator<Item = &'a str>) -> AcceptSet {
        let mut set = AcceptSet::default();
        let mut saw_header = false;
        for line in values {
            saw_header = true;
            for item in line.split(',') {
                let mut parts = item.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                if media.is_empty() || refused {
                    continue;
                }
                if media == "*/*" || media == "application/*" {
                    set.any = true;
                } else if !set.types.contains(&media) {
                    set.types.push(media);
                }
            }
        }
        if !saw_header {
            set.any = true;
        }
        set
    }

    pub fn accepts(&self, media_type: &str) -> bool {
        self.any || self.types.iter().any(|t| t == media_type)
    }

    /// `true` when the client takes some single-image manifest type.
    pub fn accepts_image_manifest(&self) -> bool {
        self.accepts(OCI_MANIFEST) || self.accepts(DOCKER_MANIFEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_collects_every_line() {
        let podman = [
            OCI_MANIFEST,
            DOCKER_MANIFEST,
            DOCKER_V1_SIGNED,
            DOCKER_V1,
            DOCKER_LIST,
            OCI_INDEX,
        ];
        let set = AcceptSet::from_header_values(podman);
        assert!(set.accepts(OCI_INDEX) && set.accepts(DOCKER_LIST));
        let one_line = format!("{DOCKER_MANIFEST}, {DOCKER_LIST};q=0.9, {OCI_MANIFEST}; q=0");
        let set = AcceptSet::from_header_values([one_line.as_str()]);
        assert!(set.accepts(DOCKER_LIST) && set.accepts(DOCKER_MANIFEST));
        assert!(!set.accepts(OCI_MANIFEST), "q=0 refuses");
        assert!(!set.accepts(OCI_INDEX));
        assert!(AcceptSet::from_header_values([format!("{DOCKER_MANIFEST}, */*").as_str()]).accepts(OCI_INDEX));
        assert!(AcceptSet::from_header_values(std::iter::empty()).accepts(OCI_INDEX));
        assert_eq!(
            upstream_manifest_accept(),
            format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}")
        );
    }

    #[test]
    fn media_type_falls_back_to_body() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            manifest_media_type(Some("text/html; charset=utf-8"), body),
            DOCKER_MANIFEST
        );
        assert_eq!(
            manifest_media_type(Some(&format!("{OCI_MANIFEST}; charset=utf-8")), b"{}"),
            OCI_MANIFEST
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(manifest_media_type(None, b"not json"), "application/octet-stream");
    }
}
