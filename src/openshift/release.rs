//! A release payload's `release-manifests/image-references`: the ImageStream that names
//! every component image of an OpenShift release, each pinned by digest.

use crate::oci::Digest;
use serde::Deserialize;

/// Where the image references live inside the payload's last layer.
pub const IMAGE_REFERENCES: &str = "release-manifests/image-references";

/// The component images of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReferences {
    /// `metadata.name`: the release version, e.g. `4.16.3`.
    pub version: Option<String>,
    pub components: Vec<Component>,
}

/// One `spec.tags[]` entry whose `from.kind` is `DockerImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// `tags[].name`, e.g. `cli`.
    pub name: String,
    /// `tags[].from.name`, pinned by digest.
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{IMAGE_REFERENCES} is not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{IMAGE_REFERENCES} has kind {0}, expected ImageStream")]
    Kind(String),
    #[error("{IMAGE_REFERENCES}: tag {tag:?} names {image:?}, which is not pinned by a sha256 digest")]
    NotPinned { tag: String, image: String },
    #[error("{IMAGE_REFERENCES}: tag {0:?} is a DockerImage without a name")]
    NoImage(String),
}

#[derive(Deserialize)]
struct RawStream {
    kind: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
struct RawMetadata {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawSpec {
    tags: Option<Vec<RawTag>>,
}

#[derive(Deserialize)]
struct RawTag {
    name: String,
    from: Option<RawFrom>,
}

#[derive(Deserialize)]
struct RawFrom {
    kind: Option<String>,
    name: Option<String>,
}

/// Parses the ImageStream. Tags that do not come from a `DockerImage` are skipped; a
/// `DockerImage` that is not pinned by `@sha256:<64 hex>` is an error naming the tag, since
/// a release mirrored by tag would not be the release that was signed.
pub fn parse_image_references(json: &[u8]) -> Result<ImageReferences, ReleaseError> {
    let raw: RawStream = serde_json::from_slice(json)?;
    match raw.kind.as_deref() {
        Some("ImageStream") => {}
        Some(other) => return Err(ReleaseError::Kind(format!("{other:?}"))),
        None => return Err(ReleaseError::Kind("missing".to_string())),
    }
    let mut components = Vec::new();
    for tag in raw.spec.and_then(|s| s.tags).unwrap_or_default() {
        let Some(from) = tag.from else { continue };
        if from.kind.as_deref() != Some("DockerImage") {
            continue;
        }
        let Some(image) = from.name else {
            return Err(ReleaseError::NoImage(tag.name));
        };
        if !is_pinned(&image) {
            return Err(ReleaseError::NotPinned { tag: tag.name, image });
        }
        components.push(Component { name: tag.name, image });
    }
    Ok(ImageReferences {
        version: raw.metadata.and_then(|m| m.name),
        components,
    })
}

fn is_pinned(image: &str) -> bool {
    match image.rsplit_once('@') {
        Some((repo, digest)) => !repo.is_empty() && Digest::parse(digest).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn stream(kind: &str, third: &str) -> String {
        format!(
            r#"{{"kind":"{kind}","apiVersion":"image.openshift.io/v1",
              "metadata":{{"name":"4.16.3","creationTimestamp":null,
                "annotations":{{"release.openshift.io/from-image-stream":"ocp/4.16-art-latest"}}}},
              "spec":{{"lookupPolicy":{{"local":false}},"tags":[
                {{"name":"cli","annotations":{{"io.openshift.build.commit.id":"abc"}},
                  "from":{{"kind":"DockerImage","name":"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D1}"}},
                  "generation":null,"importPolicy":{{}},"referencePolicy":{{"type":""}}}},
                {{"name":"installer","from":{{"kind":"DockerImage","name":"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D2}"}}}},
                {{"name":"machine-os-content","from":{{"kind":"DockerImage","name":"{third}"}}}},
                {{"name":"local","from":{{"kind":"ImageStreamTag","name":"other:latest"}}}}
              ]}},"status":{{"dockerImageRepository":""}}}}"#
        )
    }

    #[test]
    fn parses_a_realistic_image_stream() {
        let third = format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D3}");
        let refs = parse_image_references(stream("ImageStream", &third).as_bytes()).unwrap();
        assert_eq!(refs.version.as_deref(), Some("4.16.3"));
        let names: Vec<&str> = refs.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cli", "installer", "machine-os-content"]);
        assert_eq!(refs.components[2].image, third);
    }

    #[test]
    fn an_image_by_tag_is_an_error_naming_the_tag() {
        let e = parse_image_references(stream("ImageStream", "quay.io/x/y:4.16").as_bytes()).unwrap_err();
        assert!(matches!(&e, ReleaseError::NotPinned { tag, .. } if tag == "machine-os-content"));
        assert!(e.to_string().contains("\"machine-os-content\""), "{e}");
        let short = "quay.io/x/y@sha256:1234";
        assert!(parse_image_references(stream("ImageStream", short).as_bytes()).is_err());
        let upper = format!("quay.io/x/y@sha256:{}", "A".repeat(64));
        assert!(parse_image_references(stream("ImageStream", &upper).as_bytes()).is_err());
        assert!(parse_image_references(stream("ImageStream", &format!("@{D3}")).as_bytes()).is_err());
    }

    #[test]
    fn wrong_kind_or_not_json_is_an_error() {
        let third = format!("q/x@{D3}");
        let e = parse_image_references(stream("ImageStreamList", &third).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "release-manifests/image-references has kind \"ImageStreamList\", expected ImageStream"
        );
        assert!(matches!(parse_image_references(b"{}"), Err(ReleaseError::Kind(_))));
        assert!(matches!(
            parse_image_references(b"not json"),
            Err(ReleaseError::Json(_))
        ));
    }

    #[test]
    fn a_stream_without_tags_has_no_components() {
        let refs = parse_image_references(br#"{"kind":"ImageStream","spec":{}}"#).unwrap();
        assert_eq!(
            refs,
            ImageReferences {
                version: None,
                components: vec![]
            }
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_image_references(&bytes);
        }
    }
}
