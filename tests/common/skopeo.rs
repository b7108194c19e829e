#![allow(dead_code)]
//! The real `skopeo` client for interop tests, fully isolated from the machine's
//! configuration (own HOME, XDG dirs, auth file, policy, registries.conf, registries.d and
//! tmpdir), so it can be pointed at a mirror with a registries.conf written by the test;
//! and readers of what it copied (`dir:` layouts, index children). A missing `skopeo` makes
//! the test panic ([`require_tool`]).

use super::registry::{require_tool, sha256_digest, yaml_str};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tempfile::TempDir;

/// Runs the real `skopeo`, isolated from the machine's configuration: HOME,
/// XDG dirs, auth file, policy, registries.conf, registries.d and tmpdir all
/// live in a private tempdir; the environment is cleared otherwise.
pub struct Skopeo {
    workdir: TempDir,
    bin: PathBuf,
    current_conf: Mutex<PathBuf>,
    conf_counter: AtomicU64,
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

impl Skopeo {
    /// Checks that skopeo is installed (panics otherwise) and lays out the
    /// private workdir, with an empty registries.conf as the current one.
    pub fn new() -> Skopeo {
        let bin = require_tool("skopeo");
        let workdir = tempfile::Builder::new()
            .prefix("pullgate-skopeo-")
            .tempdir()
            .expect("create skopeo workdir");
        let root = workdir.path();
        for dir in ["home/.config", "home/.local/share", "run", "tmp", "registries.d"] {
            fs::create_dir_all(root.join(dir)).expect("create skopeo workdir subdir");
        }
        fs::write(root.join("auth.json"), "{\"auths\":{}}\n").expect("write auth.json");
        fs::write(root.join("containers.conf"), "").expect("write containers.conf");
        // Keep even the (read-only) signature lookaside inside the workdir
        // instead of the built-in /var/lib/containers/sigstore.
        let lookaside = format!("file://{}", root.join("sigstore").display());
        fs::write(
            root.join("registries.d/default.yaml"),
            format!("default-docker:\n  lookaside: {}\n", yaml_str(&lookaside)),
        )
        .expect("write registries.d/default.yaml");
        let skopeo = Skopeo {
            workdir,
            bin,
            current_conf: Mutex::new(PathBuf::new()),
            conf_counter: AtomicU64::new(0),
        };
        skopeo.write_registries_conf("");
        skopeo.policy_insecure();
        skopeo
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Writes `body` to a new registries.conf in the workdir, makes it the
    /// one [`Self::copy`] uses, and returns its path.
    pub fn write_registries_conf(&self, body: &str) -> PathBuf {
        let n = self.conf_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.workdir.path().join(format!("registries-{n}.conf"));
        fs::write(&path, body).expect("write registries.conf");
        *self.current_conf.lock().expect("conf lock") = path.clone();
        path
    }

    /// The registries.conf last written by [`Self::write_registries_conf`].
    pub fn current_registries_conf(&self) -> PathBuf {
        self.current_conf.lock().expect("conf lock").clone()
    }

    /// policy.json accepting anything (no signature checks).
    pub fn policy_insecure(&self) -> PathBuf {
        let path = self.workdir.path().join("policy.json");
        fs::write(&path, "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n").expect("write policy.json");
        path
    }

    fn global_args(&self, registries_conf: &Path) -> Vec<OsString> {
        let root = self.workdir.path();
        vec![
            "--registries-conf".into(),
            registries_conf.into(),
            "--registries.d".into(),
            root.join("registries.d").into(),
            "--policy".into(),
            root.join("policy.json").into(),
            "--tmpdir".into(),
            root.join("tmp").into(),
            "--command-timeout".into(),
            "180s".into(),
        ]
    }

    fn env(&self, registries_conf: &Path) -> Vec<(&'static str, OsString)> {
        let root = self.workdir.path();
        vec![
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
            ("HOME", root.join("home").into()),
            ("XDG_RUNTIME_DIR", root.join("run").into()),
            ("XDG_CONFIG_HOME", root.join("home/.config").into()),
            ("XDG_DATA_HOME", root.join("home/.local/share").into()),
            ("REGISTRY_AUTH_FILE", root.join("auth.json").into()),
            ("CONTAINERS_REGISTRIES_CONF", registries_conf.into()),
            ("CONTAINERS_CONF", root.join("containers.conf").into()),
            ("TMPDIR", root.join("tmp").into()),
            // As root, c/image keeps its blob-info cache in
            // /var/lib/containers/cache no matter what; this (c/image's own
            // rootless marker) moves it to $XDG_DATA_HOME/containers/cache
            // inside the workdir. It changes nothing else for docker:/dir:.
            ("_CONTAINERS_ROOTLESS_UID", "65534".into()),
        ]
    }

    /// An isolated `skopeo <global flags>` command; append the subcommand.
    pub fn command(&self, registries_conf: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .envs(self.env(registries_conf))
            .args(self.global_args(registries_conf))
            .current_dir(self.workdir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Async twin of [`Self::command`] (use it when the server under test
    /// runs on the same tokio runtime as the test).
    pub fn command_async(&self, registries_conf: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.env_clear()
            .envs(self.env(registries_conf))
            .args(self.global_args(registries_conf))
            .current_dir(self.workdir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `skopeo <isolation flags> copy <args...>` with the current
    /// registries.conf. Blocking: don't call it on a current-thread runtime
    /// that also serves the registry under test (use [`Self::copy_async`]).
    pub fn copy(&self, args: &[&str]) -> Output {
        self.copy_with_conf(&self.current_registries_conf(), args)
    }

    /// `skopeo <isolation flags> copy <args...>` with `registries_conf`.
    pub fn copy_with_conf(&self, registries_conf: &Path, args: &[&str]) -> Output {
        self.command(registries_conf)
            .arg("copy")
            .args(args)
            .output()
            .expect("run skopeo copy")
    }

    /// Async `skopeo copy <args...>` with `registries_conf`.
    pub async fn copy_async(&self, registries_conf: &Path, args: &[&str]) -> Output {
        self.command_async(registries_conf)
            .arg("copy")
            .args(args)
            .output()
            .await
            .expect("run skopeo copy")
    }

    /// `skopeo copy --all <src> dir:<dest_dir>` (blocking).
    pub fn copy_all_to_dir(&self, registries_conf: &Path, src: &str, dest_dir: &Path) -> Output {
        let dest = format!("dir:{}", dest_dir.display());
        self.copy_with_conf(registries_conf, &["--all", src, &dest])
    }

    /// `skopeo copy --all <src> dir:<dest_dir>` (async).
    pub async fn copy_all_to_dir_async(&self, registries_conf: &Path, src: &str, dest_dir: &Path) -> Output {
        let dest = format!("dir:{}", dest_dir.display());
        self.copy_async(registries_conf, &["--all", src, &dest]).await
    }
}

/// Panics with skopeo's stdout/stderr unless `output` succeeded.
pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Contents of a `dir:` destination written by `skopeo copy --all`.
#[derive(Clone, Debug)]
pub struct DirCopy {
    /// `sha256:` of the top-level `manifest.json` (the index/list itself).
    pub manifest_digest: String,
    /// Bytes of the top-level `manifest.json`.
    pub manifest: Vec<u8>,
    /// Digests of the per-instance manifests (`<hex>.manifest.json`),
    /// sorted; each file's content was checked against its name.
    pub instance_digests: Vec<String>,
    /// Digests of the blob files (`<hex>`), sorted; content checked.
    pub blobs: Vec<String>,
}

/// Reads a `dir:` copy made with `--all`. skopeo 1.9.3 (Debian 12) writes
/// the list as `manifest.json`, each instance manifest as
/// `<hex>.manifest.json`, blobs as `<hex>`, plus `version`; a
/// `sha256:<hex>.manifest.json` spelling is accepted too. Panics if a file's
/// content doesn't match the digest in its name.
pub fn inspect_dir_copy(dir: &Path) -> DirCopy {
    let manifest =
        fs::read(dir.join("manifest.json")).unwrap_or_else(|e| panic!("read {}/manifest.json: {e}", dir.display()));
    let mut instance_digests = Vec::new();
    let mut blobs = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let (hex_part, is_manifest) = match name.strip_suffix(".manifest.json") {
            Some(stem) => (stem.strip_prefix("sha256:").unwrap_or(stem), true),
            None => (name.as_str(), false),
        };
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue; // manifest.json, version, signature files, ...
        }
        let digest = format!("sha256:{hex_part}");
        let content = fs::read(entry.path()).expect("read dir entry");
        assert_eq!(
            sha256_digest(&content),
            digest,
            "{} does not hash to its name",
            entry.path().display()
        );
        if is_manifest {
            instance_digests.push(digest);
        } else {
            blobs.push(digest);
        }
    }
    instance_digests.sort();
    blobs.sort();
    DirCopy {
        manifest_digest: sha256_digest(&manifest),
        manifest,
        instance_digests,
        blobs,
    }
}

/// Parses a manifest and returns its `manifests[].digest` (empty for an
/// image manifest).
pub fn index_child_digests(bytes: &[u8]) -> Vec<String> {
    let value: Value = serde_json::from_slice(bytes).expect("manifest JSON");
    value["manifests"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
