//! What a signature claims, checked strictly: containers' simple signing payload
//! (containers-signature(5): `critical.type` "atomic container signature", the
//! manifest digest and the identity; any other key under `critical` rejects it;
//! `optional` is ignored), cosign's payload ("cosign container image signature", the
//! repository), and the identity rule containers/image applies by default
//! (`matchRepoDigestOrExact`).

use serde_json::Value;

/// The image a client asked for, as the upstream names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested<'a> {
    /// `ubi9/ubi`
    pub repo: &'a str,
    /// The tag asked for; `None` when asked by digest.
    pub tag: Option<&'a str>,
    /// `sha256:…` of the manifest served.
    pub digest: &'a str,
}

/// Why a payload does not vouch for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Not the format (wrong type, a critical key not known, not JSON).
    Malformed,
    /// For another manifest.
    WrongDigest,
    /// For another image name.
    WrongIdentity,
}

/// The critical section's parts both formats share.
struct Critical {
    kind: String,
    reference: String,
    digest: String,
}

fn critical(payload: &[u8], allowed: &[&str]) -> Result<Critical, Mismatch> {
    let v: Value = serde_json::from_slice(payload).map_err(|_| Mismatch::Malformed)?;
    let c = v
        .get("critical")
        .and_then(Value::as_object)
        .ok_or(Mismatch::Malformed)?;
    if c.keys().any(|k| !allowed.contains(&k.as_str())) {
        return Err(Mismatch::Malformed);
    }
    let str_at = |pointer: &str| v.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    // The identity and image objects are closed too.
    for (section, key) in [("identity", "docker-reference"), ("image", "docker-manifest-digest")] {
        let obj = c.get(section).and_then(Value::as_object).ok_or(Mismatch::Malformed)?;
        if obj.keys().any(|k| k != key) {
            return Err(Mismatch::Malformed);
        }
    }
    Ok(Critical {
        kind: str_at("/critical/type").ok_or(Mismatch::Malformed)?,
        reference: str_at("/critical/identity/docker-reference").ok_or(Mismatch::Malformed)?,
        digest: str_at("/critical/image/docker-manifest-digest").ok_or(Mismatch::Malformed)?,
    })
}

/// `registry/ns/name:tag`, `…@sha256:…` or `…` → (name, tag).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    if let Some((name, _digest)) = reference.split_once('@') {
        return (name, None);
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    }
}

/// containers/image's `matchRepoDigestOrExact`: asked by tag, the signed reference must
/// be `<identity>/<repo>:<tag>` exactly; asked by digest, it must name the same
/// repository (any tag).
pub fn identity_matches(signed: &str, requested: &Requested<'_>, identities: &[String]) -> bool {
    let (name, tag) = split_reference(signed);
    identities.iter().any(|identity| {
        let expected = format!("{identity}/{}", requested.repo);
        match requested.tag {
            Some(t) => !signed.contains('@') && name == expected && tag == Some(t),
            None => name == expected,
        }
    })
}

/// A simple signing payload vouching for `requested` under one of `identities`.
pub fn check_simple_signing(payload: &[u8], requested: &Requested<'_>, identities: &[String]) -> Result<(), Mismatch> {
    let c = critical(payload, &["type", "image", "identity"])?;
    if c.kind != "atomic container signature" {
        return Err(Mismatch::Malformed);
    }
    if c.digest != requested.digest {
        return Err(Mismatch::WrongDigest);
    }
    if !identity_matches(&c.reference, requested, identities) {
        return Err(Mismatch::WrongIdentity);
    }
    Ok(())
}

/// A cosign payload for `requested`'s digest naming its repository under one of
/// `identities` (cosign signs the repository, not a tag).
pub fn check_cosign(payload: &[u8], requested: &Requested<'_>, identities: &[String]) -> Result<(), Mismatch> {
    let c = critical(payload, &["type", "image", "identity"])?;
    if c.kind != "cosign container image signature" {
        return Err(Mismatch::Malformed);
    }
    if c.digest != requested.digest {
        return Err(Mismatch::WrongDigest);
    }
    let (name, _) = split_reference(&c.reference);
    if !identities.iter().any(|i| name == format!("{i}/{}", requested.repo)) {
        return Err(Mismatch::WrongIdentity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn payload(kind: &str, reference: &str, digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {"type": kind, "image": {"docker-manifest-digest": digest}, "identity": {"docker-reference": reference}},
            "optional": {"creator": "test", "anything": [1, 2]},
        }))
        .unwrap()
    }

    fn ids() -> Vec<String> {
        vec!["registry.redhat.io".into(), "registry.access.redhat.com".into()]
    }

    #[test]
    fn simple_signing_by_tag_needs_the_exact_reference() {
        let by_tag = Requested {
            repo: "ubi9/ubi",
            tag: Some("latest"),
            digest: D,
        };
        let ok = payload("atomic container signature", "registry.redhat.io/ubi9/ubi:latest", D);
        assert_eq!(check_simple_signing(&ok, &by_tag, &ids()), Ok(()));
        let other_tag = payload("atomic container signature", "registry.redhat.io/ubi9/ubi:9.4", D);
        assert_eq!(
            check_simple_signing(&other_tag, &by_tag, &ids()),
            Err(Mismatch::WrongIdentity)
        );
        let other_registry = payload("atomic container signature", "quay.io/ubi9/ubi:latest", D);
        assert_eq!(
            check_simple_signing(&other_registry, &by_tag, &ids()),
            Err(Mismatch::WrongIdentity)
        );
        let alias = payload(
            "atomic container signature",
            "registry.access.redhat.com/ubi9/ubi:latest",
            D,
        );
        assert_eq!(
            check_simple_signing(&alias, &by_tag, &ids()),
            Ok(()),
            "any configured identity"
        );
    }

    #[test]
    fn simple_signing_by_digest_needs_the_repository() {
        let by_digest = Requested {
            repo: "ubi9/ubi",
            tag: None,
            digest: D,
        };
        for r in [
            "registry.redhat.io/ubi9/ubi:9.4",
            "registry.redhat.io/ubi9/ubi",
            &format!("registry.redhat.io/ubi9/ubi@{D}"),
        ] {
            let p = payload("atomic container signature", r, D);
            assert_eq!(check_simple_signing(&p, &by_digest, &ids()), Ok(()), "{r}");
        }
        let other = payload(
            "atomic container signature",
            "registry.redhat.io/ubi9/ubi-minimal:9.4",
            D,
        );
        assert_eq!(
            check_simple_signing(&other, &by_digest, &ids()),
            Err(Mismatch::WrongIdentity)
        );
    }

    #[test]
    fn simple_signing_is_strict() {
        let req = Requested {
            repo: "ubi9/ubi",
            tag: Some("latest"),
            digest: D,
        };
        let wrong_digest = payload(
            "atomic container signature",
            "registry.redhat.io/ubi9/ubi:latest",
            &D.replace('1', "2"),
        );
        assert_eq!(
            check_simple_signing(&wrong_digest, &req, &ids()),
            Err(Mismatch::WrongDigest)
        );
        let wrong_type = payload(
            "cosign container image signature",
            "registry.redhat.io/ubi9/ubi:latest",
            D,
        );
        assert_eq!(
            check_simple_signing(&wrong_type, &req, &ids()),
            Err(Mismatch::Malformed)
        );
        let unknown_critical = br#"{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"D"},"identity":{"docker-reference":"registry.redhat.io/ubi9/ubi:latest"},"extra":1}}"#;
        assert_eq!(
            check_simple_signing(unknown_critical, &req, &ids()),
            Err(Mismatch::Malformed)
        );
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"critical":[]}"#,
            br#"{"critical":{"type":"atomic container signature"}}"#,
        ] {
            assert_eq!(check_simple_signing(bad, &req, &ids()), Err(Mismatch::Malformed));
        }
    }

    #[test]
    fn cosign_names_the_repository() {
        let req = Requested {
            repo: "ubi9/ubi",
            tag: Some("latest"),
            digest: D,
        };
        let ok = payload("cosign container image signature", "registry.redhat.io/ubi9/ubi", D);
        assert_eq!(check_cosign(&ok, &req, &ids()), Ok(()));
        let other = payload("cosign container image signature", "registry.redhat.io/ubi8/ubi", D);
        assert_eq!(check_cosign(&other, &req, &ids()), Err(Mismatch::WrongIdentity));
        let simple = payload("atomic container signature", "registry.redhat.io/ubi9/ubi", D);
        assert_eq!(check_cosign(&simple, &req, &ids()), Err(Mismatch::Malformed));
    }
}
