//! The committed CRD YAML must be exactly what the types generate, so a change to a type
//! without `kastell crdgen` fails here instead of in a cluster.

use std::path::PathBuf;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

#[test]
fn committed_crds_match_the_generated_ones() {
    check_dir(manifests_dir());
}

#[test]
fn the_helm_chart_carries_the_same_crds() {
    check_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/kastell/crds"));
}

fn check_dir(dir: PathBuf) {
    let generated = kastell_crds::generate::rendered().unwrap();
    assert_eq!(generated.len(), 6);
    for (name, text) in &generated {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
            panic!(
                "{}/{name} missing ({e}); run `kastell crdgen`",
                dir.display()
            )
        });
        assert!(
            committed == *text,
            "{}/{name} differs from the types; run `kastell crdgen`",
            dir.display()
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = generated.into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "manifests/crds holds a CRD no type generates"
    );
}

#[test]
fn every_crd_is_namespaced_v1alpha1_with_a_status_subresource() {
    for crd in kastell_crds::generate::all_crds() {
        assert_eq!(crd.spec.group, "kastell.eu");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        assert!(
            spec.description.is_some(),
            "{} spec has no description",
            crd.spec.names.kind
        );
    }
}

#[test]
fn committed_resource_reference_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/resources.md");
    let committed =
        std::fs::read_to_string(&path).expect("docs/resources.md; run `kastell crdgen`");
    assert!(
        committed == kastell_crds::reference::markdown(),
        "docs/resources.md differs from the types; run `kastell crdgen`"
    );
}
