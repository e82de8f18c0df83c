//! Proof that the harness is real: Kastell's CRDs and example resources go through an actual
//! kube-apiserver, which accepts what is valid, rejects what is not in its own words, and
//! keeps status behind the status subresource.
//!
//! Each test skips (prints `SKIPPED: ...` and passes) where no API server can be had.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kastell_kube_harness::{api_resource, crd_manifests, example_resources, setup, Manifest};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

/// The field manager these tests write resources with.
const MANAGER: &str = "kastell-test";

#[tokio::test]
async fn every_crd_is_accepted_and_established() {
    let Some(env) = setup("every_crd_is_accepted_and_established").await else {
        return;
    };
    let manifests = crd_manifests().expect("manifests/crds loads");
    assert!(!manifests.is_empty(), "manifests/crds holds no CRD");

    let api: Api<CustomResourceDefinition> = Api::all(env.client());
    for manifest in &manifests {
        let crd = api
            .get(manifest.name())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.name()));
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["NamesAccepted", "Established"] {
            let condition = conditions.iter().find(|c| c.type_ == wanted);
            assert_eq!(
                condition.map(|c| c.status.as_str()),
                Some("True"),
                "{} ({}): {wanted} is {condition:?}",
                manifest.name(),
                manifest.path.display()
            );
        }
        // A CRD that is Established but not served could not be used: list it to be sure.
        let resource = api_resource(&manifest.object).expect("a complete CRD");
        env.dynamic_api(&resource)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("listing {}: {e}", resource.plural));
    }
}

#[tokio::test]
async fn valid_examples_are_accepted() {
    let Some(env) = setup("valid_examples_are_accepted").await else {
        return;
    };
    let examples = examples_with_crds();
    assert!(
        !examples.is_empty(),
        "examples/soc holds no Kastell resource"
    );

    for (example, resource) in &examples {
        let applied = apply(&env.dynamic_api(resource), example, env.namespace())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} ({}) rejected: {e}",
                    example.name(),
                    example.path.display()
                )
            });
        assert!(
            applied.metadata.uid.is_some(),
            "{} was not stored",
            example.name()
        );
    }
}

#[tokio::test]
async fn a_missing_required_field_is_rejected_by_the_api_server() {
    let Some(env) = setup("a_missing_required_field_is_rejected_by_the_api_server").await else {
        return;
    };
    let mut tried = 0;

    for (example, resource) in examples_with_crds() {
        let schema = spec_schema(&crd_for(&resource));
        // A required field with a default would be filled in before validation.
        let Some(field) = string_array(&schema["required"]).into_iter().find(|f| {
            example.object["spec"].get(f).is_some()
                && schema["properties"][f].get("default").is_none()
        }) else {
            continue;
        };
        let mut object = example.object.clone();
        object["spec"]
            .as_object_mut()
            .expect("spec is an object")
            .remove(&field);

        let status =
            create_expecting_rejection(&env.dynamic_api(&resource), &object, env.namespace()).await;
        assert_invalid(&status, &format!("spec.{field}"), "Required value");
        tried += 1;
    }
    assert!(
        tried > 0,
        "no example in examples/soc has a required spec field without a default"
    );
}

#[tokio::test]
async fn a_wrong_enum_value_is_rejected_by_the_api_server() {
    let Some(env) = setup("a_wrong_enum_value_is_rejected_by_the_api_server").await else {
        return;
    };
    let mut tried = 0;

    for (example, resource) in examples_with_crds() {
        let schema = spec_schema(&crd_for(&resource));
        let Some(path) = enum_paths(&schema, &[])
            .into_iter()
            .find(|path| lookup(&example.object["spec"], path).is_some())
        else {
            continue;
        };
        let mut object = example.object.clone();
        *lookup_mut(&mut object["spec"], &path).expect("present") = json!("not-a-kastell-value");

        let status =
            create_expecting_rejection(&env.dynamic_api(&resource), &object, env.namespace()).await;
        assert_invalid(
            &status,
            &format!("spec.{}", path.join(".")),
            "Unsupported value",
        );
        assert!(
            status.message.contains("not-a-kastell-value"),
            "{}",
            status.message
        );
        tried += 1;
    }
    assert!(
        tried > 0,
        "no example in examples/soc sets a spec field that has an enum"
    );
}

#[tokio::test]
async fn status_is_applied_through_the_status_subresource() {
    let Some(env) = setup("status_is_applied_through_the_status_subresource").await else {
        return;
    };
    let (example, resource) = examples_with_crds()
        .into_iter()
        .next()
        .expect("an example resource");
    let api = env.dynamic_api(&resource);
    let name = example.name().to_owned();

    // Status sent with the main resource is dropped: that is what the subresource means.
    let mut with_status = example.object.clone();
    with_status["status"] = json!({ "observedGeneration": 42 });
    let created = apply(
        &api,
        &Manifest {
            object: with_status,
            ..example.clone()
        },
        env.namespace(),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    assert!(
        created.data.get("status").is_none_or(Value::is_null),
        "status was stored: {created:?}"
    );
    let generation = created.metadata.generation.expect("a generation");

    let status = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": { "name": name },
        "status": {
            "observedGeneration": generation,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "HarnessCheck",
                "message": "written by the test harness through the status subresource",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": generation,
            }],
        },
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap_or_else(|e| panic!("applying the status of {name}: {e}"));

    let stored = api
        .get_status(&name)
        .await
        .expect("the resource reads back");
    assert_eq!(
        stored.data["status"]["observedGeneration"],
        json!(generation)
    );
    assert_eq!(stored.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(stored.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        stored.data["spec"], created.data["spec"],
        "a status write changed the spec"
    );
    assert_eq!(
        stored.metadata.generation,
        Some(generation),
        "a status write bumped the generation"
    );

    // The API server records the status write as its own, subresource-scoped ownership.
    let owners = stored.metadata.managed_fields.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|m| m.manager.as_deref() == Some(MANAGER)
                && m.subresource.as_deref() == Some("status")),
        "no status-subresource field manager in {owners:?}"
    );
}

/// Every Kastell example in examples/soc whose kind has a CRD in manifests/crds.
fn examples_with_crds() -> Vec<(Manifest, ApiResource)> {
    let resources: Vec<ApiResource> = crd_manifests()
        .expect("manifests/crds loads")
        .iter()
        .filter_map(|m| api_resource(&m.object))
        .collect();
    example_resources()
        .expect("examples/soc loads")
        .into_iter()
        .filter_map(|example| {
            let resource = resources.iter().find(|r| {
                r.kind == example.kind()
                    && example.object["apiVersion"].as_str() == Some(&r.api_version)
            })?;
            Some((example, resource.clone()))
        })
        .collect()
}

/// The CRD manifest that serves `resource`.
fn crd_for(resource: &ApiResource) -> Value {
    crd_manifests()
        .expect("manifests/crds loads")
        .into_iter()
        .map(|m| m.object)
        .find(|crd| api_resource(crd).as_ref() == Some(resource))
        .expect("the CRD the resource came from")
}

/// The OpenAPI schema of `spec` at the CRD's storage version.
fn spec_schema(crd: &Value) -> Value {
    let version = api_resource(crd).expect("a complete CRD").version;
    crd["spec"]["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|v| v["name"] == version.as_str()))
        .map(|v| v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone())
        .unwrap_or(Value::Null)
}

/// Paths (below `spec`, through objects only) of string properties that have an enum.
fn enum_paths(schema: &Value, prefix: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let Some(properties) = schema["properties"].as_object() else {
        return paths;
    };
    for (name, property) in properties {
        let path: Vec<String> = prefix.iter().cloned().chain([name.clone()]).collect();
        if property.get("enum").is_some() && property["type"] == "string" {
            paths.push(path.clone());
        }
        paths.extend(enum_paths(property, &path));
    }
    paths
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn lookup_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

fn string_array(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Server-side applies an example into the test's namespace.
async fn apply(
    api: &Api<DynamicObject>,
    example: &Manifest,
    namespace: &str,
) -> Result<DynamicObject, kube::Error> {
    let mut object = example.object.clone();
    object["metadata"]["namespace"] = json!(namespace);
    api.patch(
        example.name(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
}

/// Creates `object` in the test's namespace and returns the API server's refusal.
async fn create_expecting_rejection(
    api: &Api<DynamicObject>,
    object: &Value,
    namespace: &str,
) -> kube::core::Status {
    let mut object: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
    object.metadata.namespace = Some(namespace.to_owned());
    match api.create(&PostParams::default(), &object).await {
        Ok(stored) => panic!("the API server accepted an invalid object: {stored:?}"),
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected the API server's refusal, got {other}"),
    }
}

/// The refusal is the API server's validation error (422 Invalid) naming `field`.
fn assert_invalid(status: &kube::core::Status, field: &str, kind_of_error: &str) {
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(status.reason, "Invalid", "{status:?}");
    assert!(
        status.message.contains(field) && status.message.contains(kind_of_error),
        "expected `{field}` and `{kind_of_error}` in the API server's message: {}",
        status.message
    );
}
