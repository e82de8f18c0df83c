//! Server-side apply under the operator's one field manager.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;
use crate::build::FIELD_MANAGER;

fn params() -> PatchParams {
    // Forced: the operator owns these fields; a person's `kubectl edit` is drift that the
    // next reconcile takes back.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies one namespaced object built by [`crate::build`].
pub async fn object<K>(client: &Client, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let what = || format!("{} {namespace}/{name}", K::kind(&()));
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&name, &params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            what: what(),
            source,
        })?;
    Ok(())
}

/// Applies the status of a Kastell resource (its status subresource).
pub async fn status<K>(client: &Client, object: &K, status: serde_json::Value) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &params(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Status {
            what: format!("{} {namespace}/{name}", K::kind(&())),
            source,
        })?;
    Ok(())
}
