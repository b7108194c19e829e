//! `deploy/clients/` holds `pullgate client-config` output for `deploy/pullgate.toml`
//! and http://pullgate.example.com:5000. This test keeps them identical; regenerate with
//! `UPDATE_DEPLOY=1 cargo test --test client_examples`.

use pullgate::cli::client_config::{ClientKind, Extras, render, render_with, split_files};
use pullgate::config::Config;
use std::path::{Path, PathBuf};

const URL: &str = "http://pullgate.example.com:5000";

fn expected_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&root.join("deploy/pullgate.toml")).expect("deploy/pullgate.toml is valid");
    let dir = root.join("deploy/clients");
    let mut out = Vec::new();
    for (kind, name) in [(ClientKind::Podman, "podman"), (ClientKind::Containerd, "containerd")] {
        let text = render(&config, kind, URL, None).unwrap();
        for (path, body) in split_files(&text) {
            out.push((dir.join(name).join(path.trim_start_matches('/')), body));
        }
    }
    // With the example image set's catalogs (deploy/openshift/imageset-config.yaml).
    let imageset = std::fs::read_to_string(root.join("deploy/openshift/imageset-config.yaml")).unwrap();
    let (set, warnings) = pullgate::openshift::imageset::ImageSet::parse(&imageset).unwrap();
    assert!(warnings.is_empty(), "the example image set is read whole: {warnings:?}");
    let extras = Extras {
        catalogs: set.operators.iter().map(|o| o.catalog.clone()).collect(),
        ..Extras::default()
    };
    out.push((
        dir.join("openshift/pullgate-mirrors.yaml"),
        render_with(&config, ClientKind::Openshift, URL, None, &extras).unwrap(),
    ));
    out.push((
        dir.join("satellite/pullgate-satellite-aap.toml"),
        render(&config, ClientKind::Satellite, URL, None).unwrap(),
    ));
    out
}

#[test]
fn deploy_client_examples_match_client_config_output() {
    let update = std::env::var_os("UPDATE_DEPLOY").is_some();
    for (path, body) in expected_files() {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &body).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate with UPDATE_DEPLOY=1)", path.display()));
        assert_eq!(
            on_disk,
            body,
            "{} differs from client-config output (regenerate with UPDATE_DEPLOY=1)",
            path.display()
        );
    }
}
