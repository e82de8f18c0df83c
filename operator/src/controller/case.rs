//! The Case controller: mirrors each Case into the case store of its namespace's platform
//! (`spec.caseStore`) and reports the store's state in the Case's status. The steps: read
//! the platform, check the spec and the endpoint, read the API key, open the case or
//! write a changed spec to it, read it back, write the status. The direction rules are in
//! [`crate::casemirror`] and docs/operator.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kastell_crds::common::SecretKeyRef;
use kastell_crds::platform::CaseStoreSpec;
use kastell_crds::{Case, SecOpsPlatform};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Map, Value};

use super::member::{previous_conditions, run_watching_platforms};
use super::{apply, failure_key, Context, Error};
use crate::casemirror::{self, CasesClient, ClientError, StoreCase};
use crate::conditions::{
    merge, standard, Observed, CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED,
};
use crate::residency::EndpointPolicy;

/// How often a mirrored case is read back from the store, so analysts' changes reach
/// its status.
const REFRESH: Duration = Duration::from_secs(60);
/// How soon a refused Case is tried again: the Secret or the API key may have been fixed
/// without any change the controller watches.
const RETRY_REFUSED: Duration = Duration::from_secs(120);
/// The status fields this controller owns besides the conditions; an apply that leaves
/// one out would delete it, so a failed reconcile carries the previous values over.
const MIRROR_FIELDS: [&str; 6] = [
    "caseId",
    "alertCount",
    "storeStatus",
    "observableCount",
    "updatedAt",
    "mirroredGeneration",
];

pub async fn run(context: Arc<Context>) {
    // Adding or changing `spec.caseStore` must reach the namespace's Cases at once.
    run_watching_platforms::<Case, _, _>(context, reconcile).await;
}

/// What one reconcile concluded.
enum Outcome {
    /// No platform in the namespace names a case store.
    NotMirrored(String),
    Mirrored {
        // Boxed: the store's case is most of the enum's size.
        stored: Box<StoreCase>,
        observables: i64,
    },
    /// Cannot progress until the Case, the platform, the Secret or the key changes.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// The store did not answer or failed on its side; retried with backoff.
    Failed {
        reason: &'static str,
        message: String,
    },
}

#[tracing::instrument(skip_all, fields(kind = "Case", namespace = case.namespace(), name = case.name_any(), generation = case.meta().generation))]
async fn reconcile(case: Arc<Case>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = case.namespace().unwrap_or_default();
    let target = read_target(&context, &namespace).await?;
    let case = match target {
        Some(_) => fresh_unless_opened(&context, case).await?,
        None => case,
    };

    let mut opened = None;
    let outcome = match target {
        None => Outcome::NotMirrored(
            "case recorded; not mirrored: no SecOpsPlatform in this namespace names \
             spec.caseStore"
                .into(),
        ),
        Some(target) => mirror(&context, &case, &target, &mut opened).await?,
    };

    let action = match &outcome {
        Outcome::NotMirrored(_) => Action::await_change(),
        Outcome::Mirrored { stored, .. } => {
            tracing::debug!(case_id = stored.id, status = %stored.status, "mirrored");
            context.succeeded(&failure_key(&ObjectRef::from_obj(&*case)));
            Action::requeue(REFRESH)
        }
        Outcome::Refused { reason, message } => {
            tracing::info!(reason, %message, "case not mirrored");
            context.warn(&*case, reason, message).await;
            Action::requeue(RETRY_REFUSED)
        }
        Outcome::Failed { reason, message } => {
            tracing::warn!(reason, %message, "case store failed");
            context.warn(&*case, reason, message).await;
            context.metrics.failed("Case", "store");
            Action::requeue(context.backoff(failure_key(&ObjectRef::from_obj(&*case))))
        }
    };
    write_status(&context, &case, &outcome, opened).await?;
    context
        .metrics
        .reconciled("Case", started.elapsed().as_secs_f64());
    Ok(action)
}

/// The Case as the API server holds it now when the watched copy names no case id yet.
/// NB: the watch may not have delivered the status of the reconcile before this one, and
/// opening a case on a stale copy would open a second one.
async fn fresh_unless_opened(context: &Context, case: Arc<Case>) -> Result<Arc<Case>, Error> {
    if case.status.as_ref().is_some_and(|s| s.case_id.is_some()) {
        return Ok(case);
    }
    let namespace = case.namespace().unwrap_or_default();
    let name = case.name_any();
    let api: Api<Case> = Api::namespaced(context.client.clone(), &namespace);
    match api.get_opt(&name).await {
        Ok(Some(fresh)) => Ok(Arc::new(fresh)),
        Ok(None) => Ok(case),
        Err(source) => Err(Error::Read {
            what: format!("Case {namespace}/{name}"),
            source,
        }),
    }
}

/// Where the namespace's Cases are mirrored: the first platform by name (as for the
/// residency policy) with `spec.caseStore`.
struct Target {
    platform: String,
    store: CaseStoreSpec,
    policy: EndpointPolicy,
}

async fn read_target(context: &Context, namespace: &str) -> Result<Option<Target>, Error> {
    let platforms = Api::<SecOpsPlatform>::namespaced(context.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map_err(|source| Error::Read {
            what: format!("the SecOpsPlatforms of namespace {namespace}"),
            source,
        })?;
    let mut items = platforms.items;
    items.sort_by_key(|p| p.name_any());
    Ok(items.into_iter().next().and_then(|platform| {
        let store = platform.spec.case_store.clone()?;
        Some(Target {
            platform: platform.name_any(),
            policy: EndpointPolicy::from_residency(&platform.spec.residency).0,
            store,
        })
    }))
}

/// `opened` receives the id of a case this reconcile opened, so that the status keeps it
/// whatever happens next.
async fn mirror(
    context: &Context,
    case: &Case,
    target: &Target,
    opened: &mut Option<i64>,
) -> Result<Outcome, Error> {
    let namespace = case.namespace().unwrap_or_default();
    let refused = |reason, message: String| Ok(Outcome::Refused { reason, message });

    if let Err(message) = casemirror::check(&case.spec) {
        return refused("InvalidSpec", message);
    }
    let url = match &target.store.url {
        Some(url) => {
            if let Err(refusal) = target.policy.check(url) {
                return refused(
                    "EndpointNotAllowed",
                    format!(
                        "SecOpsPlatform {}: spec.caseStore.url: {refusal}",
                        target.platform
                    ),
                );
            }
            url.clone()
        }
        None => format!("https://{}-cases.{namespace}.svc:8080", target.platform),
    };
    let key = match read_secret_key(context, &namespace, &target.store.api_key_secret).await? {
        Ok(key) => key,
        Err((reason, message)) => return refused(reason, message),
    };
    let ca = match &target.store.ca_secret {
        Some(reference) => match read_secret_key(context, &namespace, reference).await? {
            Ok(pem) => Some(pem),
            Err((reason, message)) => return refused(reason, message),
        },
        None => None,
    };
    let client = match CasesClient::new(&url, &String::from_utf8_lossy(&key), ca.as_deref()) {
        Ok(client) => client,
        Err(error) => {
            return refused(
                "InvalidSpec",
                format!(
                    "SecOpsPlatform {}: spec.caseStore: {error}",
                    target.platform
                ),
            )
        }
    };

    Ok(match sync(context, case, &client, opened).await? {
        Ok((stored, observables)) => Outcome::Mirrored {
            stored: Box::new(stored),
            observables,
        },
        Err(error) if error.is_not_found() => Outcome::Refused {
            reason: "CaseNotInStore",
            message: format!(
                "{error}; the case is gone from the store or above the API key's TLP \
                 ceiling. It is not opened again: delete status.caseId (or re-create \
                 the Case) to open a new one"
            ),
        },
        Err(error) if error.is_refusal() => Outcome::Refused {
            reason: "CaseStoreRefused",
            message: error.to_string(),
        },
        Err(error) => Outcome::Failed {
            reason: "CaseStoreUnavailable",
            message: error.to_string(),
        },
    })
}

/// Opens the case, or writes a new generation's declared fields to it, and reads back its
/// state. The outer error is the API server's, the inner the store's.
async fn sync(
    context: &Context,
    case: &Case,
    client: &CasesClient,
    opened: &mut Option<i64>,
) -> Result<Result<(StoreCase, i64), ClientError>, Error> {
    let status = case.status.clone().unwrap_or_default();
    let generation = case.meta().generation;
    let mut stored = match status.case_id {
        Some(id) => match client.get(id).await {
            Ok(stored) => stored,
            Err(error) => return Ok(Err(error)),
        },
        None => {
            let key = key_tag(case);
            // A Case without an id may still have its case: its status was lost, or it
            // was deleted and re-created. The key tag finds it before a second is opened.
            let found = match client.find_tagged(&key).await {
                Ok(found) => found,
                Err(error) => return Ok(Err(error)),
            };
            let note = if found.is_some() {
                "case found in the store by its key tag"
            } else {
                "case opened in the store"
            };
            let created = match found {
                Some(found) => {
                    tracing::info!(
                        case_id = found.id,
                        key,
                        "case found in the store by its key tag"
                    );
                    found
                }
                None => match client
                    .create(&casemirror::create_body(&case.spec, &key))
                    .await
                {
                    Ok(created) => {
                        tracing::info!(case_id = created.id, "case opened in the store");
                        created
                    }
                    Err(error) => return Ok(Err(error)),
                },
            };
            *opened = Some(created.id);
            // Recorded at once: a failure between here and the final status write must
            // not open a second case on the retry.
            let mut fields = carried(case);
            fields.insert("caseId".into(), json!(created.id));
            fields.remove("mirroredGeneration");
            let observed = reconciling("Mirroring", note);
            apply_status(context, case, &observed, fields).await?;
            created
        }
    };

    let written = status.case_id.is_some() && status.mirrored_generation == generation;
    if !written {
        let plan = casemirror::plan(&case.spec, &stored, &key_tag(case));
        if !plan.update.is_empty() {
            let fields: Vec<&String> = plan.update.keys().collect();
            tracing::info!(
                case_id = stored.id,
                ?fields,
                "writing the Case's spec to the store"
            );
            match client
                .update(stored.id, &Value::Object(plan.update.clone()))
                .await
            {
                Ok(updated) => stored = updated,
                Err(error) => return Ok(Err(error)),
            }
        }
        if let Some(body) = &plan.close {
            tracing::info!(case_id = stored.id, "closing the case in the store");
            match client.close(stored.id, body).await {
                Ok(closed) => stored = closed,
                Err(error) => return Ok(Err(error)),
            }
        }
    }
    let observables = match client.observable_count(stored.id).await {
        Ok(n) => n,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok((stored, observables)))
}

fn key_tag(case: &Case) -> String {
    casemirror::key_tag(&case.namespace().unwrap_or_default(), &case.name_any())
}

/// One key of a Secret in `namespace`; a missing or forbidden one is a refusal (reason,
/// message), which the Case's status shows.
async fn read_secret_key(
    context: &Context,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<Result<Vec<u8>, (&'static str, String)>, Error> {
    let api: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let secret = match api.get_opt(&reference.name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            let message = crate::gitsync::forbidden_secret(namespace, &reference.name);
            return Ok(Err(("SecretForbidden", message)));
        }
        Err(source) => {
            return Err(Error::Read {
                what: format!("Secret {namespace}/{}", reference.name),
                source,
            })
        }
    };
    let value = secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(&reference.key))
        .map(|bytes| bytes.0);
    Ok(value.ok_or_else(|| {
        let message = format!(
            "Secret {} has no key {} (spec.caseStore of the namespace's SecOpsPlatform)",
            reference.name, reference.key
        );
        ("SecretNotFound", message)
    }))
}

/// The mirror fields of the Case's current status.
fn carried(case: &Case) -> Map<String, Value> {
    let status = serde_json::to_value(&case.status).unwrap_or(Value::Null);
    MIRROR_FIELDS
        .iter()
        .filter_map(|field| {
            let value = status.get(*field).filter(|v| !v.is_null())?;
            Some(((*field).to_owned(), value.clone()))
        })
        .collect()
}

fn reconciling(reason: &str, message: &str) -> Vec<Observed> {
    vec![
        Observed::new(CONDITION_READY, false, reason, message),
        Observed::new(CONDITION_RECONCILING, true, reason, message),
        Observed::new(CONDITION_STALLED, false, reason, ""),
    ]
}

async fn write_status(
    context: &Context,
    case: &Case,
    outcome: &Outcome,
    opened: Option<i64>,
) -> Result<(), Error> {
    let mut fields = carried(case);
    if let Some(id) = opened {
        fields.insert("caseId".into(), json!(id));
        // What was opened has not had the whole spec written to it yet.
        fields.remove("mirroredGeneration");
    }
    let observed = match outcome {
        Outcome::NotMirrored(message) => standard(Ok(message)),
        Outcome::Mirrored {
            stored,
            observables,
        } => {
            fields.insert("caseId".into(), json!(stored.id));
            fields.insert("alertCount".into(), json!(stored.alert_count));
            fields.insert("storeStatus".into(), json!(stored.status));
            fields.insert("observableCount".into(), json!(observables));
            fields.insert("updatedAt".into(), json!(stored.updated_at));
            fields.insert("mirroredGeneration".into(), json!(case.meta().generation));
            standard(Ok(&format!(
                "mirrored to case {} in the store ({})",
                stored.id, stored.status
            )))
        }
        Outcome::Refused { reason, message } => standard(Err((reason, message))),
        Outcome::Failed { reason, message } => reconciling(reason, message),
    };
    apply_status(context, case, &observed, fields).await
}

async fn apply_status(
    context: &Context,
    case: &Case,
    observed: &[Observed],
    mut fields: Map<String, Value>,
) -> Result<(), Error> {
    let generation = case.meta().generation;
    fields.insert(
        "conditions".into(),
        json!(merge(&previous_conditions(case), observed, generation)),
    );
    fields.insert("observedGeneration".into(), json!(generation));
    apply::status(&context.client, case, Value::Object(fields)).await
}
