//! Every CRD in manifests/crds must pass `kubernetes-validate --strict`, which checks it
//! against the real Kubernetes OpenAPI schemas offline.
//!
//! `.ci/run` installs the validator into a virtualenv and points
//! `KASTELL_KUBERNETES_VALIDATE` at it; elsewhere the test looks for it on PATH and says
//! plainly when it is skipped.

use std::path::PathBuf;
use std::process::Command;

fn validator() -> Option<String> {
    if let Ok(path) = std::env::var("KASTELL_KUBERNETES_VALIDATE") {
        return Some(path);
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    on_path
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubernetes-validate".into())
}

#[test]
fn generated_crds_pass_kubernetes_validate_strict() {
    let Some(validator) = validator() else {
        eprintln!(
            "SKIPPED: generated_crds_pass_kubernetes_validate_strict: kubernetes-validate not \
             found (set KASTELL_KUBERNETES_VALIDATE or run .ci/run)"
        );
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let dir_out = tempfile::tempdir().unwrap();
    let written = kastell_crds::generate::write_all(dir_out.path()).unwrap();
    for files in [written, yaml_files(&dir)] {
        let output = Command::new(&validator)
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
            files.len(),
            "{stdout}"
        );
    }
}

fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}
