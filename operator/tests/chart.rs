//! charts/kastell linted (strict) and rendered offline by helm-python-sdk
//! (tests/tools/helm-chart-check.py), every rendered object validated by
//! `kubernetes-validate --strict`, and the plain manifests/operator kept equal to the
//! chart rendered with its default values.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the chart check; `None` (after a SKIPPED line) when helm-python-sdk is absent.
fn render(test: &str, values: &str) -> Option<tempfile::TempDir> {
    let Ok(python) = std::env::var("KASTELL_HELM_PYTHON") else {
        eprintln!(
            "SKIPPED: {test}: KASTELL_HELM_PYTHON not set (run tests/tools/ensure-helm-python-sdk \
             and point it at the venv's python)"
        );
        return None;
    };
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(python)
        .arg(repo().join("tests/tools/helm-chart-check.py"))
        .arg(repo().join("charts/kastell"))
        .arg(out.path())
        .arg(values)
        .output()
        .expect("running helm-chart-check.py");
    assert!(
        output.status.success(),
        "chart lint or render failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(out)
}

fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

#[test]
fn the_chart_lints_renders_and_passes_kubernetes_validate() {
    let values = r#"{"residency": {"regions": ["eu-central-1", "europe-west3"]},
                     "secrets": {"namespaces": ["soc", "soc-lab"]}}"#;
    let Some(out) = render(
        "the_chart_lints_renders_and_passes_kubernetes_validate",
        values,
    ) else {
        return;
    };
    let deployment = documents(&out.path().join("kastell_templates_deployment.yaml"));
    let pod = &deployment[0]["spec"]["template"]["spec"];
    let term = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], "node-restriction.kubernetes.io/region");
    assert_eq!(term["values"][1], "europe-west3");
    assert_eq!(pod["containers"][0]["args"][0], "operator");

    let Ok(validator) = std::env::var("KASTELL_KUBERNETES_VALIDATE") else {
        eprintln!("SKIPPED: kubernetes-validate part: KASTELL_KUBERNETES_VALIDATE not set");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let count: usize = files.iter().map(|f| documents(f).len()).sum();
    let output = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.35"])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.matches(" passed for resource ").count(),
        count,
        "{stdout}"
    );
}

#[test]
fn the_plain_manifests_equal_the_chart_with_default_values() {
    let Some(out) = render(
        "the_plain_manifests_equal_the_chart_with_default_values",
        "{}",
    ) else {
        return;
    };
    for name in ["deployment", "rbac"] {
        let rendered = documents(&out.path().join(format!("kastell_templates_{name}.yaml")));
        let plain = documents(&repo().join(format!("manifests/operator/{name}.yaml")));
        assert_eq!(
            rendered, plain,
            "manifests/operator/{name}.yaml differs from the chart"
        );
    }
}

/// The rules of the rendered ClusterRole that name Secrets, and the namespaces that get a
/// Role reading them.
fn secret_access(out: &Path) -> (usize, Vec<String>) {
    let rbac = documents(&out.join("kastell_templates_rbac.yaml"));
    let names_secrets = |rule: &serde_yaml::Value| {
        rule["resources"]
            .as_sequence()
            .is_some_and(|r| r.iter().any(|r| r == "secrets"))
    };
    let cluster_rules = rbac
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .flat_map(|d| d["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|rule| names_secrets(rule))
        .count();
    let namespaces = rbac
        .iter()
        .filter(|d| d["kind"] == "Role")
        .filter(|d| {
            d["rules"]
                .as_sequence()
                .is_some_and(|r| r.iter().any(names_secrets))
        })
        .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_owned())
        .collect();
    (cluster_rules, namespaces)
}

#[test]
fn secrets_are_readable_only_where_the_values_say() {
    let test = "secrets_are_readable_only_where_the_values_say";
    let Some(default) = render(test, "{}") else {
        return;
    };
    assert_eq!(secret_access(default.path()), (0, vec![]));

    let listed = render(test, r#"{"secrets": {"namespaces": ["soc", "soc-lab"]}}"#).unwrap();
    assert_eq!(
        secret_access(listed.path()),
        (0, vec!["soc".to_owned(), "soc-lab".to_owned()])
    );
    let rbac = documents(&listed.path().join("kastell_templates_rbac.yaml"));
    let binding = rbac
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "soc")
        .expect("a RoleBinding in soc");
    assert_eq!(binding["subjects"][0]["name"], "kastell-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "kastell-system");

    let wide = render(
        test,
        r#"{"secrets": {"namespaces": ["soc"], "clusterWide": true}}"#,
    )
    .unwrap();
    assert_eq!(secret_access(wide.path()), (1, vec![]));
}
