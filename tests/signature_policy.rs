//! Signature policy at the edge: manifests of an upstream with `signature_policy` are
//! served only when a signature by a configured key verifies them. Keys are made with
//! gpg here; signatures with `skopeo standalone-sign` (checked with `skopeo
//! standalone-verify`) or crafted with `gpg --sign` of hand-made JSON; cosign keys and
//! signatures with p256.

mod common;

use common::fake_upstream::{FakeImage, FakeIndex, FakeRedHat};
use common::lookaside::{Lookaside, sig_path, start_lookaside};
use common::signing::GpgKey;
use pullgate::config::Config;
use std::sync::Arc;

/// A pullgate on `fake` with the lookaside and a policy (`policy` is the inline table's
/// inside, e.g. `keys = ["…"]`).
struct World {
    fake: FakeRedHat,
    lookaside: Arc<Lookaside>,
    lookaside_url: String,
    dir: tempfile::TempDir,
    server: Option<pullgate::app::RunningServer>,
}

impl World {
    async fn start(policy: &str) -> World {
        let fake = FakeRedHat::start().await;
        let (lookaside, lookaside_url, _task) = start_lookaside().await;
        let dir = tempfile::tempdir().unwrap();
        let mut w = World {
            fake,
            lookaside,
            lookaside_url,
            dir,
            server: None,
        };
        w.serve(policy, "").await;
        w
    }

    fn config(&self, policy: &str, extra_top: &str) -> Config {
        let toml = common::config_toml(
            self.dir.path(),
            &self.fake.registry_url,
            extra_top,
            &format!(
                "sigstore = \"{}\"\nsignature_policy = {{ {policy} }}",
                self.lookaside_url
            ),
        );
        Config::from_toml_str(&toml).unwrap()
    }

    async fn serve(&mut self, policy: &str, extra_top: &str) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
        let config = self.config(policy, extra_top);
        self.server = Some(pullgate::app::spawn(&config).await.unwrap());
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        common::client()
            .get(format!("{}/v2/registry.redhat.io/{path}", self.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json")
            .send()
            .await
            .unwrap()
    }

    /// Puts signature `n` of `digest` in `repo` on the lookaside.
    fn publish(&self, repo: &str, digest: &str, n: u32, sig: Vec<u8>) {
        self.lookaside
            .files
            .lock()
            .unwrap()
            .insert(sig_path(repo, digest, n), sig);
    }

    async fn metrics(&self) -> String {
        common::metrics_text(&self.url()).await
    }
}

fn policy_with(key: &GpgKey) -> String {
    format!("keys = [\"{}\"]", key.public_key.display())
}

/// A simple-signing payload as containers/image writes it.
fn payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "type": "atomic container signature",
            "image": {"docker-manifest-digest": digest},
            "identity": {"docker-reference": reference},
        },
        "optional": {"creator": "pullgate tests"},
    }))
    .unwrap()
}

async fn status_and_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let code = v["errors"][0]["code"].as_str().unwrap_or_default().to_string();
    let message = v["errors"][0]["message"].as_str().unwrap_or_default().to_string();
    (status, code, message)
}

fn verdicts(metrics: &str, verdict: &str) -> u64 {
    let labels = ["upstream=\"registry.redhat.io\"", &format!("verdict=\"{verdict}\"")];
    common::metric_in(metrics, "pullgate_signature_verdicts_total", &labels).unwrap_or(0.0) as u64
}

fn image(fake: &FakeRedHat, repo: &str, tag: &str) -> FakeImage {
    fake.add_image(repo, tag, &[300])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_images_are_served_and_unsigned_ones_refused() {
    let key = GpgKey::generate("release");
    let w = World::start(&policy_with(&key)).await;
    let signed = image(&w.fake, "ubi9/signed", "latest");
    let unsigned = image(&w.fake, "ubi9/unsigned", "latest");
    let sig = key.sign(&signed.manifest, "registry.redhat.io/ubi9/signed:latest");
    // containers/image agrees the signature is good.
    key.standalone_verify(&signed.manifest, "registry.redhat.io/ubi9/signed:latest", &sig)
        .expect("skopeo standalone-verify accepts it");
    w.publish("ubi9/signed", &signed.manifest_digest, 1, sig);

    let r = w.get("ubi9/signed/manifests/latest").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], signed.manifest_digest.as_str());
    assert_eq!(
        w.get(&format!("ubi9/signed/manifests/{}", signed.manifest_digest))
            .await
            .status(),
        200
    );
    let (status, code, message) = status_and_code(w.get("ubi9/unsigned/manifests/latest").await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
    assert_eq!(
        message,
        format!(
            "signature policy of upstream registry.redhat.io: ubi9/unsigned@{} is unsigned",
            unsigned.manifest_digest
        )
    );
    let m = w.metrics().await;
    assert!(verdicts(&m, "verified") >= 2 && verdicts(&m, "unsigned") == 1, "{m}");
    // Blobs are not checked: they are addressed by verified manifests.
    let blob = &signed.layer_digests[0];
    let r = common::client()
        .get(format!("{}/v2/registry.redhat.io/ubi9/signed/blobs/{blob}", w.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Publishes `sigs` as signatures 1.. of `img` and returns the verdict a GET of
/// `path` gets (from the metrics' change).
async fn verdict_of(w: &World, img: &FakeImage, repo: &str, path: &str, sigs: Vec<Vec<u8>>) -> (u16, String) {
    for (i, s) in sigs.into_iter().enumerate() {
        w.publish(repo, &img.manifest_digest, i as u32 + 1, s);
    }
    let before = w.metrics().await;
    let (status, _, message) = status_and_code(w.get(path).await).await;
    let after = w.metrics().await;
    let verdict = pullgate::trust::Verdict::ALL
        .iter()
        .map(|v| v.as_str())
        .find(|v| verdicts(&after, v) > verdicts(&before, v))
        .unwrap_or("none")
        .to_string();
    if status != 200 {
        assert!(
            message.starts_with("signature policy of upstream registry.redhat.io:"),
            "{message}"
        );
    }
    (status, verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_payloads_are_judged_strictly() {
    let key = GpgKey::generate("release");
    let w = World::start(&policy_with(&key)).await;
    let critical_extra = |reference: &str, digest: &str| {
        serde_json::to_vec(&serde_json::json!({"critical": {
            "type": "atomic container signature",
            "image": {"docker-manifest-digest": digest},
            "identity": {"docker-reference": reference},
            "added-later": true,
        }}))
        .unwrap()
    };
    let wrong_type = |reference: &str, digest: &str| {
        serde_json::to_vec(&serde_json::json!({"critical": {
            "type": "cosign container image signature",
            "image": {"docker-manifest-digest": digest},
            "identity": {"docker-reference": reference},
        }}))
        .unwrap()
    };
    type Craft = Box<dyn Fn(&str, &str) -> Vec<u8>>;
    let other_digest = format!("sha256:{}", "e".repeat(64));
    let cases: Vec<(&str, Craft, bool, u16, &str)> = vec![
        ("unknown-critical", Box::new(critical_extra), true, 403, "bad_signature"),
        ("wrong-type", Box::new(wrong_type), true, 403, "bad_signature"),
        (
            "wrong-digest",
            Box::new(move |r, _| payload(r, &other_digest)),
            true,
            403,
            "wrong_digest",
        ),
        (
            "other-tag-by-tag",
            Box::new(|_, d| payload("registry.redhat.io/ubi9/other-tag-by-tag:9.4", d)),
            true,
            403,
            "wrong_identity",
        ),
        (
            "other-repo-by-digest",
            Box::new(|_, d| payload("registry.redhat.io/ubi9/elsewhere:latest", d)),
            false,
            403,
            "wrong_identity",
        ),
        (
            "other-tag-by-digest",
            Box::new(|_, d| payload("registry.redhat.io/ubi9/other-tag-by-digest:9.4", d)),
            false,
            200,
            "verified",
        ),
        (
            "other-registry",
            Box::new(|_, d| payload("quay.io/ubi9/other-registry:latest", d)),
            true,
            403,
            "wrong_identity",
        ),
        ("good", Box::new(payload), true, 200, "verified"),
    ];
    for (name, craft, by_tag, status, verdict) in cases {
        let repo = format!("ubi9/{name}");
        let img = image(&w.fake, &repo, "latest");
        let reference = format!("registry.redhat.io/{repo}:latest");
        let sig = key.sign_payload(&craft(&reference, &img.manifest_digest), None, None);
        let path = if by_tag {
            format!("{repo}/manifests/latest")
        } else {
            format!("{repo}/manifests/{}", img.manifest_digest)
        };
        let got = verdict_of(&w, &img, &repo, &path, vec![sig]).await;
        assert_eq!(got, (status, verdict.to_string()), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_expiry_revocation_and_signing_flags_are_checked() {
    // Expired before the signature was made: refused. Made while valid: verified.
    let expiring = GpgKey::generate_with("expiring", "sign", "never", Some("20200101T000000"));
    let early_key = GpgKey::generate_with("early", "sign", "1d", Some("20200101T000000"));
    let revoked = GpgKey::generate("revoked");
    let split = GpgKey::generate_with("split", "cert", "never", None);
    let subkey = split.add_signing_subkey();
    let keys = format!(
        "keys = [\"{}\", \"{}\", \"{}\", \"{}\"]",
        expiring.public_key.display(),
        early_key.public_key.display(),
        revoked.public_key.display(),
        split.public_key.display()
    );
    let mut w = World::start(&keys).await;
    let img = |name: &str| {
        let repo = format!("ubi9/{name}");
        let i = image(&w.fake, &repo, "latest");
        let p = payload(&format!("registry.redhat.io/{repo}:latest"), &i.manifest_digest);
        (repo, i, p)
    };
    let (exp_repo, exp_img, exp_payload) = img("expired");
    let (early_repo, early_img, early_payload) = img("signed-while-valid");
    let (rev_repo, rev_img, rev_payload) = img("revoked");
    let (sub_repo, sub_img, sub_payload) = img("subkey");
    let (flag_repo, flag_img, flag_payload) = img("subkey-not-signing");
    let exp_sig = expiring.sign_payload(&exp_payload, None, Some("20200103T000000"));
    // The key is given a one-day life after the signature was made.
    expiring.set_expiry("1d", "20200101T010000");
    let early_sig = early_key.sign_payload(&early_payload, None, Some("20200101T060000"));
    let rev_sig = revoked.sign_payload(&rev_payload, None, None);
    revoked.revoke();
    let sub_sig = split.sign_payload(&sub_payload, Some(&format!("{subkey}!")), None);
    let flag_sig = split.sign_payload(&flag_payload, Some(&format!("{subkey}!")), None);
    // The policy re-reads the keys as they are now (expiry, revocation) at restart.
    w.serve(&keys, "").await;
    let path = |repo: &str| format!("{repo}/manifests/latest");
    assert_eq!(
        verdict_of(&w, &exp_img, &exp_repo, &path(&exp_repo), vec![exp_sig]).await,
        (403, "expired_key".into())
    );
    assert_eq!(
        verdict_of(&w, &early_img, &early_repo, &path(&early_repo), vec![early_sig]).await,
        (200, "verified".into()),
        "expired now, valid when it signed"
    );
    assert_eq!(
        verdict_of(&w, &rev_img, &rev_repo, &path(&rev_repo), vec![rev_sig]).await,
        (403, "revoked_key".into())
    );
    assert_eq!(
        verdict_of(&w, &sub_img, &sub_repo, &path(&sub_repo), vec![sub_sig]).await,
        (200, "verified".into()),
        "a signing subkey"
    );
    split.drop_subkey_signing();
    w.serve(&keys, "").await;
    assert_eq!(
        verdict_of(&w, &flag_img, &flag_repo, &path(&flag_repo), vec![flag_sig]).await,
        (403, "untrusted_key".into()),
        "a subkey without the signing flag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_unknown_and_one_good_among_bad() {
    let key = GpgKey::generate("release");
    let stranger = GpgKey::generate("stranger");
    let w = World::start(&policy_with(&key)).await;
    let (repo, repo2) = ("ubi9/corrupted", "ubi9/mixed");
    let img = image(&w.fake, repo, "latest");
    let mut sig = key.sign_payload(
        &payload(&format!("registry.redhat.io/{repo}:latest"), &img.manifest_digest),
        None,
        None,
    );
    let n = sig.len();
    sig[n - 3] ^= 0x55; // inside the signature value
    assert_eq!(
        verdict_of(&w, &img, repo, &format!("{repo}/manifests/latest"), vec![sig]).await,
        (403, "bad_signature".into())
    );
    let img2 = image(&w.fake, repo2, "latest");
    let p = payload(&format!("registry.redhat.io/{repo2}:latest"), &img2.manifest_digest);
    let sigs = vec![
        stranger.sign_payload(&p, None, None),
        b"not a signature".to_vec(),
        key.sign_payload(&p, None, None),
    ];
    assert_eq!(
        verdict_of(&w, &img2, repo2, &format!("{repo2}/manifests/latest"), sigs).await,
        (200, "verified".into())
    );
    let img3 = image(&w.fake, "ubi9/strangers", "latest");
    let p3 = payload("registry.redhat.io/ubi9/strangers:latest", &img3.manifest_digest);
    let (status, _, message) = {
        w.publish(
            "ubi9/strangers",
            &img3.manifest_digest,
            1,
            stranger.sign_payload(&p3, None, None),
        );
        status_and_code(w.get("ubi9/strangers/manifests/latest").await).await
    };
    assert_eq!(status, 403);
    assert!(message.ends_with("(1 read: 1 by an unknown key)"), "{message}");
}

/// Signs a list and/or its children (`which`: "list", "children", "one child").
fn sign_list(key: &GpgKey, w: &World, repo: &str, list: &FakeIndex, which: &str) {
    let reference = format!("registry.redhat.io/{repo}:multi");
    if which == "list" {
        w.publish(repo, &list.digest, 1, key.sign(&list.bytes, &reference));
    }
    let children: Vec<&FakeImage> = match which {
        "children" => list.child_images.iter().collect(),
        "one child" => list.child_images.iter().take(1).collect(),
        _ => Vec::new(),
    };
    for child in children {
        w.publish(repo, &child.manifest_digest, 1, key.sign(&child.manifest, &reference));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_signed_whole_or_per_platform_or_mixed() {
    let key = GpgKey::generate("release");
    let w = World::start(&policy_with(&key)).await;
    for (repo, which, list_status) in [
        ("ubi9/list-signed", "list", 200),
        ("ubi9/children-signed", "children", 200),
        ("ubi9/mixed", "one child", 403),
    ] {
        let list = w.fake.add_docker_list(repo, "multi");
        sign_list(&key, &w, repo, &list, which);
        let (status, code, message) = status_and_code(w.get(&format!("{repo}/manifests/multi")).await).await;
        assert_eq!(status, list_status, "{repo}: {code} {message}");
        for (i, child) in list.child_images.iter().enumerate() {
            let r = w.get(&format!("{repo}/manifests/{}", child.manifest_digest)).await;
            let expected = match which {
                "one child" if i == 0 => 200,
                "one child" => 403,
                _ => 200,
            };
            assert_eq!(r.status(), expected, "{repo}: child {i} by digest");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_survive_restarts_a_new_key_decides_anew_and_audit_serves() {
    let key = GpgKey::generate("release");
    let other = GpgKey::generate("other");
    let mut w = World::start(&policy_with(&key)).await;
    let img = image(&w.fake, "ubi9/ubi", "latest");
    w.publish(
        "ubi9/ubi",
        &img.manifest_digest,
        1,
        key.sign(&img.manifest, "registry.redhat.io/ubi9/ubi:latest"),
    );
    let by_digest = format!("ubi9/ubi/manifests/{}", img.manifest_digest);
    assert_eq!(w.get(&by_digest).await.status(), 200);
    // Upstream and lookaside gone, pullgate restarted: the verdict stands.
    w.fake.stop();
    w.lookaside.files.lock().unwrap().clear();
    w.serve(&policy_with(&key), "").await;
    assert_eq!(w.get(&by_digest).await.status(), 200, "offline after a restart");
    // Another key: decided anew, from the kept signature, and refused.
    w.serve(&policy_with(&other), "").await;
    let (status, code, message) = status_and_code(w.get(&by_digest).await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(message.contains("by an unknown key"), "{message}");
    // Audit: served, and said.
    w.serve(&format!("{}, mode = \"audit\"", policy_with(&other)), "").await;
    assert_eq!(w.get(&by_digest).await.status(), 200);
    assert!(verdicts(&w.metrics().await, "untrusted_key") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_moves_to_an_unsigned_manifest_is_refused_not_served_stale() {
    let key = GpgKey::generate("release");
    let mut w = World::start(&policy_with(&key)).await;
    w.serve(&policy_with(&key), "[cache]\ntag_ttl = \"1s\"").await;
    let first = image(&w.fake, "ubi9/moving", "latest");
    w.publish(
        "ubi9/moving",
        &first.manifest_digest,
        1,
        key.sign(&first.manifest, "registry.redhat.io/ubi9/moving:latest"),
    );
    assert_eq!(w.get("ubi9/moving/manifests/latest").await.status(), 200);
    let _second = image(&w.fake, "ubi9/moving", "latest"); // the tag moves, unsigned
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, code, _) = status_and_code(w.get("ubi9/moving/manifests/latest").await).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));
}

/// A cosign key pair from a fixed scalar (no randomness needed): (signing key, PEM).
fn cosign_key(seed: u8) -> (p256::ecdsa::SigningKey, String) {
    use p256::pkcs8::EncodePublicKey as _;
    let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    (key, pem)
}

/// Stores a cosign signature manifest `sha256-<hex>.sig` for `img` in `repo`.
fn cosign_sign(fake: &FakeRedHat, repo: &str, img: &FakeImage, key: &p256::ecdsa::SigningKey, payload: &[u8]) {
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = key.sign(payload);
    let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
    let layer = fake.add_blob(payload.to_vec());
    let config = fake.add_blob(b"{}".to_vec());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": layer, "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": b64},
        }],
    });
    let tag = format!("sha256-{}.sig", img.manifest_digest.trim_start_matches("sha256:"));
    fake.put_manifest(
        repo,
        Some(&tag),
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest).unwrap(),
    );
}

fn cosign_payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"critical": {
        "identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature",
    }, "optional": null}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signatures_by_the_key_verify_others_do_not() {
    let (key, pem) = cosign_key(7);
    let (other, _) = cosign_key(9);
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("cosign.pub");
    std::fs::write(&pem_path, &pem).unwrap();
    let w = World::start(&format!("cosign_keys = [\"{}\"]", pem_path.display())).await;
    let cases = [
        ("good", 200, "verified"),
        ("tampered", 403, "bad_signature"),
        ("other-key", 403, "bad_signature"),
        ("other-repo", 403, "wrong_identity"),
    ];
    for (name, status, verdict) in cases {
        let repo = format!("ubi9/cosign-{name}");
        let img = image(&w.fake, &repo, "latest");
        let reference = match name {
            "other-repo" => "registry.redhat.io/ubi9/elsewhere".to_string(),
            _ => format!("registry.redhat.io/{repo}"),
        };
        let payload = cosign_payload(&reference, &img.manifest_digest);
        match name {
            "other-key" => cosign_sign(&w.fake, &repo, &img, &other, &payload),
            "tampered" => {
                // Signed, then the payload changed (same length).
                let mut changed = payload.clone();
                let at = changed.len() - 3;
                changed[at] = b'X';
                use base64::Engine as _;
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = key.sign(&payload);
                let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
                let layer = w.fake.add_blob(changed.clone());
                let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": w.fake.add_blob(b"{}".to_vec()), "size": 2},
                    "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": layer, "size": changed.len(),
                        "annotations": {"dev.cosignproject.cosign/signature": b64}}]});
                let tag = format!("sha256-{}.sig", img.manifest_digest.trim_start_matches("sha256:"));
                w.fake.put_manifest(
                    &repo,
                    Some(&tag),
                    "application/vnd.oci.image.manifest.v1+json",
                    serde_json::to_vec(&manifest).unwrap(),
                );
            }
            _ => cosign_sign(&w.fake, &repo, &img, &key, &payload),
        }
        let got = verdict_of(&w, &img, &repo, &format!("{repo}/manifests/latest"), vec![]).await;
        assert_eq!(got, (status, verdict.to_string()), "{name}");
    }
}

#[test]
fn a_key_file_that_does_not_parse_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-key.asc");
    std::fs::write(
        &bad,
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\ngarbage\n-----END PGP PUBLIC KEY BLOCK-----\n",
    )
    .unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[upstream]]\nname = \"registry.redhat.io\"\nurl = \"https://registry.redhat.io\"\n[upstream.signature_policy]\nkeys = [\"{}\"]\n",
        dir.path().join("data").display(),
        bad.display()
    );
    let config = dir.path().join("pullgate.toml");
    std::fs::write(&config, toml).unwrap();
    let out = common::pullgate(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("signature_policy.keys") && err.contains("not-a-key.asc"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_one_warn_line_and_the_access_line_carries_the_verdict() {
    let key = GpgKey::generate("release");
    let w = World::start(&policy_with(&key)).await;
    let unsigned = image(&w.fake, "rhel9/big", "latest");
    let signed = image(&w.fake, "ubi9/ubi", "latest");
    w.publish(
        "ubi9/ubi",
        &signed.manifest_digest,
        1,
        key.sign(&signed.manifest, "registry.redhat.io/ubi9/ubi:latest"),
    );
    let config = w.dir.path().join("serve.toml");
    let mut toml = w.config(&policy_with(&key), "").to_toml();
    toml = toml.replace(
        &format!("data_dir = \"{}\"", w.dir.path().join("data").display()),
        &format!("data_dir = \"{}\"", w.dir.path().join("data2").display()),
    );
    std::fs::write(&config, toml).unwrap();
    let server = common::ServeProcess::start(&config, &[]);
    let client = common::client();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}/v2/registry.redhat.io/{path}", server.url());
        async move { client.get(url).send().await.unwrap() }
    };
    let refused = get("rhel9/big/manifests/latest".into()).await;
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    eprintln!("--- what the client sees ---\n403 {body}");
    assert_eq!(get("ubi9/ubi/manifests/latest".into()).await.status(), 200);
    let (_, log) = server.stop();
    let warns: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("signature policy of upstream registry.redhat.io"))
        .collect();
    assert_eq!(warns.len(), 1, "{log:#?}");
    assert!(
        warns[0].contains(&format!("rhel9/big@{}", unsigned.manifest_digest)),
        "{}",
        warns[0]
    );
    eprintln!("--- the WARN line ---\n{}", warns[0]);
    let access = |name: &str, verdict: &str| {
        log.iter().any(|l| {
            l.contains("pullgate::access") && l.contains(name) && l.contains(&format!("verdict=\"{verdict}\""))
        })
    };
    assert!(access("rhel9/big", "unsigned"), "{log:#?}");
    assert!(access("ubi9/ubi", "verified"), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_verifies_the_probe_image_under_the_policy() {
    let key = GpgKey::generate("release");
    let w = World::start(&policy_with(&key)).await;
    let signed = image(&w.fake, "ubi9/ubi-minimal", "latest");
    image(&w.fake, "ubi9/unsigned", "latest");
    w.publish(
        "ubi9/ubi-minimal",
        &signed.manifest_digest,
        1,
        key.sign(&signed.manifest, "registry.redhat.io/ubi9/ubi-minimal:latest"),
    );
    let config = w.dir.path().join("doctor.toml");
    std::fs::write(
        &config,
        common::config_toml(
            w.dir.path(),
            &w.fake.registry_url,
            "",
            &format!(
                "sigstore = \"{}\"\nsignature_policy = {{ {} }}",
                w.lookaside_url,
                policy_with(&key)
            ),
        ),
    )
    .unwrap();
    let doctor = |image: &'static str| {
        let config = config.clone();
        async move {
            let out = tokio::process::Command::new(common::pullgate_bin())
                .args(["doctor", "--config", config.to_str().unwrap(), "--image", image])
                .output()
                .await
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let (code, out) = doctor("ubi9/ubi-minimal:latest").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("PASS signature") && l.contains("verified under the policy")),
        "{out}"
    );
    let (code, out) = doctor("ubi9/unsigned:latest").await;
    assert_eq!(code, Some(1), "{out}");
    let fail = out
        .lines()
        .find(|l| l.contains("FAIL signature"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(fail.contains("unsigned"), "{fail}");
    assert!(
        out.contains("check signature_policy of upstream registry.redhat.io"),
        "{out}"
    );
}
