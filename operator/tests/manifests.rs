//! Every file in manifests/ (what `kubectl apply -k manifests/` installs) must pass
//! `kubernetes-validate --strict`, and the kustomization must list every one of them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading manifests/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            manifest_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            found.push(path);
        }
    }
}

fn all_manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    manifest_files(&repo().join("manifests"), &mut files);
    files.sort();
    files
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let root = repo().join("manifests");
    let text = std::fs::read_to_string(root.join("kustomization.yaml")).unwrap();
    let kustomization: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut listed: Vec<PathBuf> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| root.join(r.as_str().unwrap()))
        .collect();
    listed.sort();
    assert_eq!(listed, all_manifests());
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let validator = match std::env::var("KASTELL_KUBERNETES_VALIDATE") {
        Ok(path) => path,
        Err(_) => {
            eprintln!(
                "SKIPPED: every_manifest_passes_kubernetes_validate_strict: \
                 KASTELL_KUBERNETES_VALIDATE not set (run tests/tools/ensure-kubernetes-validate)"
            );
            return;
        }
    };
    let files = all_manifests();
    let documents: usize = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.split("\n---").filter(|d| d.contains("kind:")).count()
        })
        .sum();
    let output = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.35"])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches(" passed for resource ").count(),
        documents,
        "{stdout}"
    );
}
