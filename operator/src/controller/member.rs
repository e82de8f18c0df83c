//! The controllers of DetectionRule, Sensor, IntelFeed and Playbook (one generic
//! reconcile). A member's reconcile: read the namespace's residency policy,
//! validate with the stage's own compiler, write the verdict as conditions. Putting the
//! admitted resources into the stages' bundles is the platform controller's job, which
//! watches the members too.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryFuture};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::NamespaceResourceScope;
use kastell_crds::SecOpsPlatform;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{apply, failure_key, Context, Error};
use crate::admission::Member;
use crate::conditions::{merge, standard};
use crate::residency::EndpointPolicy;

/// How often an unchanged object is looked at again, so a policy change missed by a
/// watch is still picked up.
const RECHECK: Duration = Duration::from_secs(600);

pub async fn run<K>(context: Arc<Context>)
where
    K: Member
        + Resource<Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    // A platform's residency policy decides the members' verdicts.
    run_watching_platforms(context, reconcile::<K>).await;
}

/// Runs the controller of a kind whose objects depend on their namespace's SecOpsPlatform
/// (its residency policy, its case store): a change of a platform re-checks every object
/// of its namespace at once, instead of at the object's next periodic look.
pub(super) async fn run_watching_platforms<K, F, Fut>(context: Arc<Context>, reconcile: F)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: TryFuture<Ok = Action, Error = Error> + Send + 'static,
{
    let controller = Controller::new(
        Api::<K>::all(context.client.clone()),
        watcher::Config::default(),
    );
    let objects = controller.store();
    controller
        .watches(
            Api::<SecOpsPlatform>::all(context.client.clone()),
            watcher::Config::default(),
            move |platform| {
                let namespace = platform.namespace();
                objects
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace() == namespace)
                    .map(|o| ObjectRef::from_obj(&*o))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy::<K>, context)
        .for_each(|_| async {})
        .await;
}

#[tracing::instrument(skip_all, fields(kind = K::KIND, namespace = object.namespace(), name = object.name_any(), generation = object.meta().generation))]
async fn reconcile<K>(object: Arc<K>, context: Arc<Context>) -> Result<Action, Error>
where
    K: Member + Resource<Scope = NamespaceResourceScope> + DeserializeOwned + Debug,
{
    let started = Instant::now();
    let policy = read_policy(&context, &object.namespace().unwrap_or_default()).await?;

    let verdict = if object.depends_on_namespace() {
        let namespace = read_namespace_members::<K>(&context, &object).await?;
        object.admit_among(policy.as_ref(), &namespace)
    } else {
        object.admit(policy.as_ref())
    };

    let outcome = match &verdict.outcome {
        Ok(_) => Ok(admitted_message(K::KIND, policy.is_some())),
        Err(refused) => Err((refused.reason, refused.message.clone())),
    };
    let mut extra = serde_json::Map::new();
    if let Some((id, title)) = &verdict.rule {
        extra.insert("ruleId".into(), json!(id));
        extra.insert("ruleTitle".into(), json!(title));
    }
    write_status(
        &context,
        &*object,
        outcome
            .as_ref()
            .map(String::as_str)
            .map_err(|(r, m)| (*r, m.as_str())),
        extra,
    )
    .await?;
    if let Err(refused) = &verdict.outcome {
        tracing::info!(reason = refused.reason, message = %refused.message, "refused");
        context
            .warn(&*object, refused.reason, &refused.message)
            .await;
    }

    context.succeeded(&failure_key(&ObjectRef::from_obj(&*object)));
    context
        .metrics
        .reconciled(K::KIND, started.elapsed().as_secs_f64());
    Ok(Action::requeue(RECHECK))
}

/// The members of the object's kind in its namespace; the object itself as it was
/// handed to the reconcile, should the list not hold it yet.
async fn read_namespace_members<K>(context: &Context, object: &K) -> Result<Vec<K>, Error>
where
    K: Member + Resource<Scope = NamespaceResourceScope> + DeserializeOwned + Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let mut members = Api::<K>::namespaced(context.client.clone(), &namespace)
        .list(&Default::default())
        .await
        .map_err(|source| Error::Read {
            what: format!("the {}s of namespace {namespace}", K::KIND),
            source,
        })?
        .items;
    members.retain(|m| m.name_any() != object.name_any());
    members.push(object.clone());
    Ok(members)
}

fn admitted_message(kind: &str, has_policy: bool) -> String {
    if has_policy {
        format!("{kind} admitted into its stage's configuration")
    } else {
        format!(
            "{kind} is valid; no SecOpsPlatform in this namespace runs it yet, so its \
             endpoints were not checked against a residency policy"
        )
    }
}

/// The residency policy of the namespace's platform (the first by name when there are
/// several, which the platform controller reports).
pub(super) async fn read_policy(
    context: &Context,
    namespace: &str,
) -> Result<Option<EndpointPolicy>, Error> {
    let platforms = Api::<SecOpsPlatform>::namespaced(context.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map_err(|source| Error::Read {
            what: format!("the SecOpsPlatforms of namespace {namespace}"),
            source,
        })?;
    let mut items = platforms.items;
    items.sort_by_key(|p| p.name_any());
    Ok(items
        .first()
        .map(|p| EndpointPolicy::from_residency(&p.spec.residency).0))
}

/// Writes Ready/Reconciling/Stalled for an outcome, plus kind-specific status fields.
pub(super) async fn write_status<K>(
    context: &Context,
    object: &K,
    outcome: Result<&str, (&str, &str)>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + serde::Serialize,
{
    let previous = previous_conditions(object);
    let generation = object.meta().generation;
    let mut status = extra;
    status.insert(
        "conditions".into(),
        json!(merge(&previous, &standard(outcome), generation)),
    );
    status.insert("observedGeneration".into(), json!(generation));
    apply::status(&context.client, object, serde_json::Value::Object(status)).await
}

/// The conditions in an object's status, read generically.
pub(super) fn previous_conditions<K: serde::Serialize>(object: &K) -> Vec<Condition> {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| v.pointer("/status/conditions").cloned())
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

pub(super) fn error_policy<K>(object: Arc<K>, error: &Error, context: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&()).to_string();
    tracing::warn!(%kind, name = %object.meta().name.as_deref().unwrap_or(""), %error, "reconcile failed");
    context.metrics.failed(&kind, error.label());
    let delay = context.backoff(failure_key(&ObjectRef::from_obj(&*object)));
    Action::requeue(delay)
}
