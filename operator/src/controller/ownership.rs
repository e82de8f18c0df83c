//! The platform's ownership of what its git sync applied. The synced DetectionRules,
//! Sensors, IntelFeeds, Playbooks and Cases are objects of the cluster, so an owner
//! reference to the platform is enough for the garbage collector to delete them with the
//! platform: no finalizer, which would block the platform's deletion on the operator
//! (the issue reserves finalizers for what lives outside the cluster).
//!
//! The platform owns an object while its sync does: the object carries the sync's
//! `kastell.eu/synced-by: <platform>` label, the platform has `spec.git`, and
//! `pruneOnRemoval` is not `false` (who keeps synced resources when the sync goes keeps
//! them when the platform goes too). Otherwise the reference is taken back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kastell_crds::SecOpsPlatform;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::build::FIELD_MANAGER;
use crate::gitsync::desired::{syncable, LABEL_SYNCED_BY};

/// What to do with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Add the platform's owner reference.
    Adopt,
    /// Take the platform's owner reference back.
    Release,
    /// Nothing to change.
    Keep,
}

/// The reference a synced object carries: not a controller reference, since the member
/// controllers, not the platform's, reconcile these objects.
pub fn owner_reference(platform: &SecOpsPlatform) -> Option<OwnerReference> {
    let mut owner = platform.controller_owner_ref(&())?;
    owner.controller = Some(false);
    Some(owner)
}

/// Whether the platform should own `object`, from the platform and the object alone.
pub fn decide(platform: &SecOpsPlatform, object: &DynamicObject) -> Ownership {
    let uid = platform.uid().unwrap_or_default();
    let synced = object.labels().get(LABEL_SYNCED_BY) == Some(&platform.name_any());
    let keeps_on_removal = platform
        .spec
        .git
        .as_ref()
        .is_some_and(|git| !git.prune_on_removal);
    let wanted = synced && platform.spec.git.is_some() && !keeps_on_removal;
    let owned = object.owner_references().iter().any(|r| r.uid == uid);
    match (wanted, owned) {
        (true, false) => Ownership::Adopt,
        (false, true) => Ownership::Release,
        _ => Ownership::Keep,
    }
}

/// Adds or takes back the platform's owner reference on every synced kind's objects in
/// its namespace. Applied under the operator's field manager, which sets nothing else on
/// these objects (the member controllers write their status only), so an apply without
/// the reference removes exactly it.
pub async fn reconcile(context: &Context, platform: &SecOpsPlatform) -> Result<(), Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let Some(owner) = owner_reference(platform) else {
        return Ok(());
    };
    for resource in syncable() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(context.client.clone(), &namespace, &resource);
        let objects = api
            .list(&Default::default())
            .await
            .map_err(|source| Error::Read {
                what: format!("the {}s of namespace {namespace}", resource.kind),
                source,
            })?;
        for object in objects.items {
            let owners = match decide(platform, &object) {
                Ownership::Keep => continue,
                Ownership::Adopt => vec![owner.clone()],
                Ownership::Release => Vec::new(),
            };
            apply_owners(&api, &resource, &object.name_any(), owners, &namespace).await?;
        }
    }
    Ok(())
}

async fn apply_owners(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    name: &str,
    owners: Vec<OwnerReference>,
    namespace: &str,
) -> Result<(), Error> {
    let adopt = !owners.is_empty();
    let mut metadata = json!({ "name": name });
    if adopt {
        metadata["ownerReferences"] = json!(owners);
    }
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
    });
    match api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(kind = %resource.kind, name, adopt, "synced resource ownership");
            Ok(())
        }
        // Pruned by the sync in the meantime: nothing left to own.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            what: format!(
                "the owner reference of {} {namespace}/{name}",
                resource.kind
            ),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(git: &str) -> SecOpsPlatform {
        serde_yaml::from_str(&format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\nmetadata: {{name: soc, \
             namespace: secops, uid: 6d2b9a44-1111-4222-8333-444455556666}}\nspec:\n  \
             residency: {{jurisdiction: EU}}\n{git}"
        ))
        .unwrap()
    }

    fn object(label: Option<&str>, owned_by: Option<&str>) -> DynamicObject {
        let mut value = json!({
            "apiVersion": "kastell.eu/v1alpha1", "kind": "DetectionRule",
            "metadata": {"name": "r", "namespace": "secops"},
        });
        if let Some(platform) = label {
            value["metadata"]["labels"] = json!({LABEL_SYNCED_BY: platform});
        }
        if let Some(uid) = owned_by {
            value["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "kastell.eu/v1alpha1", "kind": "SecOpsPlatform", "name": "soc",
                "uid": uid,
            }]);
        }
        serde_json::from_value(value).unwrap()
    }

    const UID: &str = "6d2b9a44-1111-4222-8333-444455556666";

    #[test]
    fn the_platform_owns_what_its_sync_applied_while_the_sync_would_prune_it() {
        let syncing = platform("  git: {url: 'file:///srv/soc.git'}\n");
        assert_eq!(
            decide(&syncing, &object(Some("soc"), None)),
            Ownership::Adopt
        );
        assert_eq!(
            decide(&syncing, &object(Some("soc"), Some(UID))),
            Ownership::Keep
        );
        // Made by hand, or by another platform's sync: not ours.
        assert_eq!(decide(&syncing, &object(None, None)), Ownership::Keep);
        assert_eq!(
            decide(&syncing, &object(Some("other"), None)),
            Ownership::Keep
        );
        // Relabelled by hand after being adopted: given back.
        assert_eq!(
            decide(&syncing, &object(None, Some(UID))),
            Ownership::Release
        );
        // Another owner's reference is never touched.
        assert_eq!(
            decide(&syncing, &object(None, Some("another-uid"))),
            Ownership::Keep
        );

        let keeping = platform("  git: {url: 'file:///srv/soc.git', pruneOnRemoval: false}\n");
        assert_eq!(
            decide(&keeping, &object(Some("soc"), None)),
            Ownership::Keep
        );
        assert_eq!(
            decide(&keeping, &object(Some("soc"), Some(UID))),
            Ownership::Release
        );

        let removed = platform("");
        assert_eq!(
            decide(&removed, &object(Some("soc"), Some(UID))),
            Ownership::Release
        );
        assert_eq!(
            decide(&removed, &object(Some("soc"), None)),
            Ownership::Keep
        );
    }

    #[test]
    fn the_reference_does_not_claim_control() {
        let owner = owner_reference(&platform("")).unwrap();
        assert_eq!(owner.uid, UID);
        assert_eq!(owner.controller, Some(false));
        assert_eq!(owner.kind, "SecOpsPlatform");
    }
}
