//! Deleting a SecOpsPlatform against a real kube-apiserver (tests/control-plane, or the
//! cluster in KASTELL_KUBECONFIG): what its git sync applied gets the platform's owner
//! reference, beside everything it built, so the garbage collector deletes both with the
//! platform, and nothing (no finalizer) holds the platform's own deletion up.
//!
//! NB: the test control plane runs no controller manager, so no garbage collector: what is
//! checked is what the collector acts on (the owner references, down to the uid) and that
//! the platform itself goes at once. On a real cluster (KASTELL_KUBECONFIG) the collector
//! then deletes the dependents; the test does not wait for that, as the local plane would
//! never do it.

use git2::{Repository, Signature};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kastell_crds::{Case, DetectionRule, SecOpsPlatform};
use kastell_kube_harness::{setup, TestEnv};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

mod support;
use support::{eventually, start_operator};

/// A repository holding the example SOC's SigmaHQ rules (examples/soc/rules) and one Case,
/// committed on `main`.
fn repository(namespace: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let examples = kastell_kube_harness::repo_root().join("examples/soc/rules");
    let mut rules = Vec::new();
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("namespace: soc\n", &format!("namespace: {namespace}\n"));
        let rule: DetectionRule = serde_yaml::from_str(&text).unwrap();
        rules.push(rule.name_any());
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::create_dir_all(dir.path().join("soc/rules")).unwrap();
        std::fs::write(dir.path().join("soc/rules").join(name), text).unwrap();
    }
    std::fs::write(
        dir.path().join("soc/case.yaml"),
        "apiVersion: kastell.eu/v1alpha1\nkind: Case\nmetadata: {name: phishing-wave}\n\
         spec: {title: Phishing wave against finance, severity: high}\n",
    )
    .unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = Signature::now("Ada Lovelace", "ada@soc.example.eu").unwrap();
    repo.commit(Some("refs/heads/main"), &who, &who, "rules", &tree, &[])
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
    (dir, rules)
}

fn owned_by(object: &impl Resource, uid: &str) -> bool {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid)
}

/// Every object of kind `K` named in `names` carries the platform's owner reference.
async fn all_owned<K>(env: &TestEnv, names: &[String], uid: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = env.api();
    for name in names {
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{} {name}: {e}", K::kind(&())));
        assert!(
            owned_by(&object, uid),
            "{} {name} is not owned",
            K::kind(&())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_platform_leaves_nothing_it_synced_or_built_unowned() {
    let Some(env) = setup("deleting_a_platform_leaves_nothing_it_synced_or_built_unowned").await
    else {
        return;
    };
    let (repo, rules) = repository(env.namespace());
    assert!(rules.len() > 10, "the example SOC's rules: {rules:?}");
    let _operator = start_operator(&env, "ownership-test");

    // A rule made by hand in the same namespace: the platform must not take it along.
    let rules_api: Api<DetectionRule> = env.api();
    let by_hand: DetectionRule = serde_yaml::from_str(
        "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\nmetadata: {name: by-hand}\n\
         spec:\n  sigma: |\n    title: Whoami\n    logsource: {product: linux}\n    detection:\n      \
         sel: {process.name: whoami}\n      condition: sel\n",
    )
    .unwrap();
    rules_api
        .create(&PostParams::default(), &by_hand)
        .await
        .unwrap();

    let platforms: Api<SecOpsPlatform> = env.api();
    let platform: SecOpsPlatform = serde_json::from_value(json!({
        "apiVersion": "kastell.eu/v1alpha1", "kind": "SecOpsPlatform",
        "metadata": {"name": "soc"},
        "spec": {
            "residency": {"jurisdiction": "EU"},
            "git": {"url": format!("file://{}", repo.path().display()), "path": "soc",
                    "interval": "5s"},
        },
    }))
    .unwrap();
    let platform = platforms
        .create(&PostParams::default(), &platform)
        .await
        .unwrap();
    let uid = platform.uid().unwrap();

    // The synced rules and Case: owned, without claiming control.
    for name in &rules {
        let rule = eventually(&format!("DetectionRule {name} owned"), || async {
            let rule = rules_api.get(name).await.map_err(|e| e.to_string())?;
            if owned_by(&rule, &uid) {
                Ok(rule)
            } else {
                Err(format!("{:?}", rule.metadata.owner_references))
            }
        })
        .await;
        let owner = &rule.owner_references()[0];
        assert_eq!(owner.kind, "SecOpsPlatform");
        assert_eq!(owner.controller, Some(false));
    }
    let cases: Api<Case> = env.api();
    eventually("Case phishing-wave owned", || async {
        let case = cases
            .get("phishing-wave")
            .await
            .map_err(|e| e.to_string())?;
        owned_by(&case, &uid)
            .then_some(())
            .ok_or_else(|| format!("{:?}", case.metadata.owner_references))
    })
    .await;
    assert!(!owned_by(&rules_api.get("by-hand").await.unwrap(), &uid));

    // What it built: every per-stage object, the platform-wide ones and the inventory.
    let stages = ["ingest", "correlate", "enrich", "cases", "respond"];
    let per_stage = |suffix: &str| -> Vec<String> {
        stages.iter().map(|s| format!("soc-{s}{suffix}")).collect()
    };
    // Applied last: the rest is there once it is.
    eventually("the respond Deployment", || async {
        env.api::<Deployment>()
            .get("soc-respond")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let mut config_maps = per_stage("-config");
    config_maps.push("soc-git-inventory".into());
    all_owned::<ConfigMap>(&env, &config_maps, &uid).await;
    all_owned::<ServiceAccount>(&env, &per_stage(""), &uid).await;
    all_owned::<Role>(&env, &per_stage(""), &uid).await;
    all_owned::<RoleBinding>(&env, &per_stage(""), &uid).await;
    all_owned::<Service>(&env, &per_stage(""), &uid).await;
    // With SQLite storage respond has no --data (docs/operator.md), so no claim: a
    // Deployment; ingest keeps its checkpoints on a claim per replica.
    all_owned::<StatefulSet>(
        &env,
        &["soc-ingest", "soc-correlate"].map(String::from),
        &uid,
    )
    .await;
    all_owned::<Deployment>(
        &env,
        &["soc-enrich", "soc-cases", "soc-respond"].map(String::from),
        &uid,
    )
    .await;
    all_owned::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
        &env,
        &["soc-cases-data".to_owned()],
        &uid,
    )
    .await;
    all_owned::<NetworkPolicy>(&env, &["soc-pipeline".to_owned()], &uid).await;

    // No finalizer: the platform is gone at once, its dependents left to the collector.
    platforms
        .delete("soc", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the platform deleted", || async {
        match platforms.get_opt("soc").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there, finalizers {:?}", p.finalizers())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_kept_on_removal_are_not_deleted_with_the_platform() {
    let Some(env) = setup("resources_kept_on_removal_are_not_deleted_with_the_platform").await
    else {
        return;
    };
    let (repo, rules) = repository(env.namespace());
    let _operator = start_operator(&env, "ownership-test");
    let platforms: Api<SecOpsPlatform> = env.api();
    let platform: SecOpsPlatform = serde_json::from_value(json!({
        "apiVersion": "kastell.eu/v1alpha1", "kind": "SecOpsPlatform",
        "metadata": {"name": "soc"},
        "spec": {
            "residency": {"jurisdiction": "EU"},
            "git": {"url": format!("file://{}", repo.path().display()), "path": "soc",
                    "interval": "5s"},
        },
    }))
    .unwrap();
    let uid = platforms
        .create(&PostParams::default(), &platform)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let rules_api: Api<DetectionRule> = env.api();
    let name = &rules[0];
    eventually("the first rule owned", || async {
        let rule = rules_api.get(name).await.map_err(|e| e.to_string())?;
        owned_by(&rule, &uid)
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;

    // Who asks to keep synced resources when the sync goes keeps them when the platform
    // goes: the reference is taken back, by the operator's own field manager only.
    platforms
        .patch(
            "soc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"git": {"pruneOnRemoval": false}}})),
        )
        .await
        .unwrap();
    eventually("the first rule released", || async {
        let rule = rules_api.get(name).await.map_err(|e| e.to_string())?;
        (!owned_by(&rule, &uid))
            .then_some(())
            .ok_or(format!("{:?}", rule.metadata.owner_references))
    })
    .await;
    let rule = rules_api.get(name).await.unwrap();
    assert_eq!(
        rule.labels()
            .get("kastell.eu/synced-by")
            .map(String::as_str),
        Some("soc"),
        "still the sync's: only the reference went"
    );
}
