//! The SecOpsPlatform controller. A reconcile: read the namespace's members and the live
//! bundles, validate the platform, admit the members and assemble the bundles, build the
//! platform's objects, apply them, gather the residency evidence, write the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kastell_crds::{Case, DetectionRule, IntelFeed, Playbook, SecOpsPlatform, Sensor};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::member::{error_policy, previous_conditions};
use super::placement;
use super::store_change;
use super::{apply, failure_key, Context, Error};
use crate::admission::{Member, Verdict};
use crate::build::{self, BuildInput, Bundle, BundleEntry, PlatformObjects, Stage};
use crate::conditions::{merge, standard, Observed, CONDITION_RESIDENCY};
use crate::residency::EndpointPolicy;

const KIND: &str = "SecOpsPlatform";
/// Placement is re-checked this often even without a watch event.
const RECHECK: Duration = Duration::from_secs(300);

pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let controller = Controller::new(
        Api::<SecOpsPlatform>::all(client.clone()),
        watcher::Config::default(),
    );
    let platforms = controller.store();
    let in_namespace = move |namespace: Option<String>| {
        platforms
            .state()
            .into_iter()
            .filter(|p| p.namespace() == namespace)
            .map(|p| ObjectRef::from_obj(&*p))
            .collect::<Vec<_>>()
    };
    let (a, b, c, d, e) = (
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
    );
    let pods = watcher::Config::default().labels("app.kubernetes.io/name=kastell");
    controller
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<NetworkPolicy>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<DetectionRule>::all(client.clone()),
            watcher::Config::default(),
            move |o| a(o.namespace()),
        )
        .watches(
            Api::<Sensor>::all(client.clone()),
            watcher::Config::default(),
            move |o| b(o.namespace()),
        )
        .watches(
            Api::<IntelFeed>::all(client.clone()),
            watcher::Config::default(),
            move |o| c(o.namespace()),
        )
        .watches(
            Api::<Playbook>::all(client.clone()),
            watcher::Config::default(),
            move |o| d(o.namespace()),
        )
        // Cases are in no bundle, but the platform owns the synced ones and reports
        // whether their case ids belong to the store it names.
        .watches(
            Api::<Case>::all(client.clone()),
            watcher::Config::default(),
            move |o| e(o.namespace()),
        )
        .watches(
            Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone()),
            pods,
            |pod| {
                let platform = pod.labels().get("app.kubernetes.io/instance").cloned();
                platform
                    .map(|name| ObjectRef::new(&name).within(&pod.namespace().unwrap_or_default()))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy::<SecOpsPlatform>, context)
        .for_each(|_| async {})
        .await;
}

#[tracing::instrument(skip_all, fields(namespace = platform.namespace(), name = platform.name_any(), generation = platform.meta().generation))]
async fn reconcile(platform: Arc<SecOpsPlatform>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = platform.namespace().unwrap_or_default();
    let members = read_members(&context, &namespace).await?;
    let live = read_live_bundles(&context, &platform).await?;

    let (policy, regions) = match validate(&platform) {
        Ok(valid) => valid,
        Err(message) => return refuse(&context, &platform, &message, started).await,
    };

    let verdicts = members.admit(&policy);
    let bundles = crate::assemble::bundles(&platform_entry(&platform)?, &verdicts, &live);
    let owner = platform
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Encode {
            what: format!("the owner reference of {namespace}/{}", platform.name_any()),
            message: "the platform has no uid yet".into(),
        })?;
    let objects = build::platform_objects(&BuildInput {
        platform: &platform,
        owner,
        default_image: &context.stage_image,
        regions: &regions,
        bundles: &bundles,
    });

    apply_all(&context, &objects).await?;
    retire_replaced_workloads(&context, &platform, &objects).await?;
    super::ownership::reconcile(&context, &platform).await?;

    let placement = placement::observe(&context, &platform, &regions).await?;
    let residency = residency_condition(&verdicts, &placement);

    let mut summary = summary(&verdicts);
    for gap in build::wiring::cluster_gaps(&platform) {
        summary.push_str("; ");
        summary.push_str(gap);
    }
    let store = case_store_change(&context, &platform).await?;
    write_status(&context, &platform, Ok(&summary), residency, Some(store)).await?;
    context.succeeded(&failure_key(&ObjectRef::from_obj(&*platform)));
    context
        .metrics
        .reconciled(KIND, started.elapsed().as_secs_f64());
    Ok(Action::requeue(RECHECK))
}

/// The namespace's bundle members.
struct Members {
    rules: Vec<DetectionRule>,
    sensors: Vec<Sensor>,
    feeds: Vec<IntelFeed>,
    playbooks: Vec<Playbook>,
}

impl Members {
    fn admit(&self, policy: &EndpointPolicy) -> Vec<Verdict> {
        let p = Some(policy);
        let mut verdicts: Vec<Verdict> = self.rules.iter().map(|m| m.admit(p)).collect();
        crate::admission::check_correlations(&self.rules, &mut verdicts);
        verdicts.extend(self.sensors.iter().map(|m| m.admit(p)));
        verdicts.extend(self.feeds.iter().map(|m| m.admit(p)));
        verdicts.extend(self.playbooks.iter().map(|m| m.admit(p)));
        verdicts
    }
}

async fn list<
    K: Member
        + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
>(
    context: &Context,
    namespace: &str,
) -> Result<Vec<K>, Error> {
    Api::<K>::namespaced(context.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .map_err(|source| Error::Read {
            what: format!("the {}s of namespace {namespace}", K::KIND),
            source,
        })
}

async fn read_members(context: &Context, namespace: &str) -> Result<Members, Error> {
    Ok(Members {
        rules: list(context, namespace).await?,
        sensors: list(context, namespace).await?,
        feeds: list(context, namespace).await?,
        playbooks: list(context, namespace).await?,
    })
}

/// The bundles in the stages' ConfigMaps now, so a refused resource keeps its last good
/// entry.
async fn read_live_bundles(
    context: &Context,
    platform: &SecOpsPlatform,
) -> Result<BTreeMap<Stage, Bundle>, Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(context.client.clone(), &namespace);
    let mut live = BTreeMap::new();
    for stage in Stage::ALL {
        let name = format!(
            "{}-config",
            build::stage_object_name(&platform.name_any(), stage)
        );
        let found = api.get_opt(&name).await.map_err(|source| Error::Read {
            what: format!("ConfigMap {namespace}/{name}"),
            source,
        })?;
        if let Some(data) = found.and_then(|cm| cm.data) {
            live.insert(stage, Bundle { entries: data });
        }
    }
    Ok(live)
}

/// The platform's own problems: a policy that names no region, networks that are not
/// CIDRs, a git remote outside the allowed hosts.
pub(crate) fn validate(
    platform: &SecOpsPlatform,
) -> Result<(EndpointPolicy, BTreeSet<String>), String> {
    let residency = &platform.spec.residency;
    let regions = crate::regions::allowed_regions(residency);
    if regions.is_empty() {
        return Err(
            "spec.residency allows no region: set jurisdiction (EU or EEA) or list \
                    regions, so the workloads can be pinned to nodes"
                .into(),
        );
    }
    let (policy, errors) = EndpointPolicy::from_residency(residency);
    if let Some(error) = errors.first() {
        return Err(format!("spec.residency: {error}"));
    }
    if let Some(problem) = endpoint_problems(&policy, platform).into_iter().next() {
        return Err(problem);
    }
    Ok((policy, regions))
}

/// The platform's own outbound endpoints held to its residency policy, one message per
/// refused endpoint, in the order git remote, NATS servers, PostgreSQL host. The one check
/// the controller and `kastell validate` both make, so a pull request is refused for
/// exactly the endpoints the operator refuses.
///
/// The git remote goes through [`crate::gitsync::check_url`] (a `file://` remote reaches no
/// network and is allowed). The NATS servers and the PostgreSQL server are outbound
/// endpoints like a feed URL: one outside the allowed hosts and networks would carry every
/// event and case out of the allowed regions. A Service of the cluster is allowed, since
/// the cluster's own nodes are what the residency evidence checks.
pub(crate) fn endpoint_problems(policy: &EndpointPolicy, platform: &SecOpsPlatform) -> Vec<String> {
    let spec = &platform.spec;
    let git = spec
        .git
        .as_ref()
        .map(|git| crate::gitsync::check_url(policy, &git.url));
    let bus = spec
        .bus
        .url
        .as_deref()
        .map(build::network::bus_url_endpoints)
        .unwrap_or_default()
        .into_iter()
        .map(|endpoint| check_host(policy, "spec.bus.url", &endpoint.host));
    let store = spec
        .storage
        .postgresql
        .as_ref()
        .map(|postgres| check_host(policy, "spec.storage.postgresql.host", &postgres.host));
    git.into_iter()
        .chain(bus)
        .chain(store)
        .filter_map(Result::err)
        .collect()
}

fn check_host(policy: &EndpointPolicy, field: &str, host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_err() && build::network::in_cluster(host) {
        return Ok(());
    }
    policy
        .check_host(host)
        .map_err(|refusal| format!("{field}: {refusal}"))
}

async fn refuse(
    context: &Context,
    platform: &SecOpsPlatform,
    message: &str,
    started: Instant,
) -> Result<Action, Error> {
    tracing::info!(message, "platform refused");
    context.warn(platform, "InvalidSpec", message).await;
    let residency = Observed::new(CONDITION_RESIDENCY, false, "InvalidSpec", message);
    write_status(
        context,
        platform,
        Err(("InvalidSpec", message)),
        residency,
        None,
    )
    .await?;
    context
        .metrics
        .reconciled(KIND, started.elapsed().as_secs_f64());
    // Nothing changes until the platform does.
    Ok(Action::await_change())
}

fn platform_entry(platform: &SecOpsPlatform) -> Result<BundleEntry, Error> {
    let value = json!({
        "apiVersion": SecOpsPlatform::api_version(&()),
        "kind": KIND,
        "metadata": {"name": platform.name_any(), "namespace": platform.namespace()},
        "spec": platform.spec,
    });
    let yaml = serde_yaml::to_string(&value).map_err(|e| Error::Encode {
        what: format!("SecOpsPlatform {}", platform.name_any()),
        message: e.to_string(),
    })?;
    Ok(BundleEntry {
        key: format!("{KIND}.{}.yaml", platform.name_any()),
        yaml,
    })
}

/// ConfigMaps first, so a Deployment rolled by a new hash finds its new bundle.
async fn apply_all(context: &Context, objects: &PlatformObjects) -> Result<(), Error> {
    let client = &context.client;
    for o in &objects.config_maps {
        apply::object(client, o).await?;
    }
    for o in &objects.service_accounts {
        apply::object::<ServiceAccount>(client, o).await?;
    }
    for o in &objects.roles {
        apply::object::<Role>(client, o).await?;
    }
    for o in &objects.role_bindings {
        apply::object::<RoleBinding>(client, o).await?;
    }
    for o in &objects.volume_claims {
        apply::object(client, o).await?;
    }
    for o in &objects.network_policies {
        apply::object(client, o).await?;
    }
    for o in &objects.services {
        apply::object(client, o).await?;
    }
    for workload in &objects.workloads {
        match workload {
            build::Workload::Deployment(o) => apply::object(client, o).await?,
            build::Workload::StatefulSet(o) => apply::object(client, o).await?,
        }
    }
    Ok(())
}

/// A stage that changed kind (correlate, and ingest and respond with a persistent
/// `--data`, became StatefulSets; a stage set to `emptyDir` goes back to a Deployment)
/// would otherwise run twice: the object of the other kind is deleted, but only when this
/// platform controls it.
async fn retire_replaced_workloads(
    context: &Context,
    platform: &SecOpsPlatform,
    objects: &PlatformObjects,
) -> Result<(), Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let uid = platform.uid().unwrap_or_default();
    for workload in &objects.workloads {
        let name = workload.name();
        match workload {
            build::Workload::Deployment(_) => {
                retire::<StatefulSet>(context, &namespace, name, &uid).await?
            }
            build::Workload::StatefulSet(_) => {
                retire::<Deployment>(context, &namespace, name, &uid).await?
            }
        }
    }
    Ok(())
}

async fn retire<K>(context: &Context, namespace: &str, name: &str, owner: &str) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(context.client.clone(), namespace);
    let what = || format!("{} {namespace}/{name}", K::kind(&()));
    let found = api.get_opt(name).await.map_err(|source| Error::Read {
        what: what(),
        source,
    })?;
    let controlled = found.is_some_and(|o| {
        o.owner_references()
            .iter()
            .any(|r| r.uid == owner && r.controller == Some(true))
    });
    if !controlled {
        return Ok(());
    }
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(
                kind = K::kind(&()).as_ref(),
                name,
                "replaced workload deleted"
            );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            what: format!("deleting the replaced {}", what()),
            source,
        }),
    }
}

fn summary(verdicts: &[Verdict]) -> String {
    let refused: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.outcome.is_err())
        .map(|v| v.key.trim_end_matches(".yaml"))
        .collect();
    let admitted = verdicts.len() - refused.len();
    if refused.is_empty() {
        format!("5 stages applied with {admitted} resources")
    } else {
        format!(
            "5 stages applied with {admitted} resources; refused (see their conditions): {}",
            refused.join(", ")
        )
    }
}

fn residency_condition(verdicts: &[Verdict], placement: &placement::Placement) -> Observed {
    let refused: Vec<String> = verdicts
        .iter()
        .filter_map(|v| {
            v.outcome
                .as_ref()
                .err()
                .filter(|r| r.is_residency())
                .map(|r| format!("{}: {}", v.key.trim_end_matches(".yaml"), r.message))
        })
        .collect();
    if !refused.is_empty() {
        return Observed::new(
            CONDITION_RESIDENCY,
            false,
            "EndpointNotAllowed",
            format!("outbound endpoints refused: {}", refused.join("; ")),
        );
    }
    placement.condition()
}

/// Whether the namespace's Cases hold ids of another case store than the one named now;
/// a Warning Event when that starts.
async fn case_store_change(
    context: &Context,
    platform: &SecOpsPlatform,
) -> Result<(Option<String>, Observed), Error> {
    let namespace = platform.namespace().unwrap_or_default();
    let cases: Vec<Case> = list_cases(context, &namespace).await?;
    let with_ids = cases
        .iter()
        .filter(|c| c.status.as_ref().is_some_and(|s| s.case_id.is_some()))
        .count();
    let (recorded, condition) = store_change::assess(platform, with_ids);
    let was = previous_conditions(platform)
        .iter()
        .find(|c| c.type_ == store_change::CONDITION_CASE_STORE_CHANGED)
        .map(|c| c.status.clone());
    if condition.status == "True" && was.as_deref() != Some("True") {
        tracing::info!(message = %condition.message, "case store changed");
        context
            .warn(platform, &condition.reason, &condition.message)
            .await;
    }
    Ok((recorded, condition))
}

async fn list_cases(context: &Context, namespace: &str) -> Result<Vec<Case>, Error> {
    Api::<Case>::namespaced(context.client.clone(), namespace)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .map_err(|source| Error::Read {
            what: format!("the Cases of namespace {namespace}"),
            source,
        })
}

/// `store`: the case store to record and its condition; `None` (a refused platform)
/// leaves both as they are.
async fn write_status(
    context: &Context,
    platform: &SecOpsPlatform,
    outcome: Result<&str, (&str, &str)>,
    residency: Observed,
    store: Option<(Option<String>, Observed)>,
) -> Result<(), Error> {
    let generation = platform.meta().generation;
    let mut observed = standard(outcome);
    let compliant = match residency.status {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    };
    observed.push(residency);
    let previous = previous_conditions(platform);
    let recorded = match store {
        Some((recorded, condition)) => {
            observed.push(condition);
            recorded
        }
        // A refused platform: the condition stays as it was (merge keeps it).
        None => platform
            .status
            .as_ref()
            .and_then(|s| s.case_store_url.clone()),
    };
    let mut status = json!({
        "conditions": merge(&previous, &observed, generation),
        "observedGeneration": generation,
        "residencyCompliant": compliant,
    });
    if let Some(url) = recorded {
        status["caseStoreUrl"] = json!(url);
    }
    apply::status(&context.client, platform, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(extra: &str) -> SecOpsPlatform {
        let yaml = format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\nmetadata: {{name: soc, namespace: secops}}\nspec:\n  residency:\n    jurisdiction: EU\n    allowedHosts: [nats.cert.example.eu]\n    allowedNetworks: [10.20.0.0/16]\n{extra}"
        );
        serde_yaml::from_str(&yaml).expect("test platform parses")
    }

    #[test]
    fn bus_and_store_hosts_are_held_to_the_residency_policy() {
        let allowed = [
            "  bus: {type: nats, url: 'tls://nats.soc.svc:4222,nats-1:4222'}\n",
            "  bus: {type: nats, url: 'tls://nats.cert.example.eu:4222'}\n",
            "  bus: {type: nats, url: '10.20.3.4:4222'}\n",
            "  storage: {type: postgresql, postgresql: {host: pg.soc.svc.cluster.local, database: kastell, user: kastell, passwordSecret: {name: pg, key: password}}}\n",
            "  storage: {type: postgresql, postgresql: {host: 10.20.0.9, database: kastell, user: kastell, passwordSecret: {name: pg, key: password}}}\n",
        ];
        for extra in allowed {
            let platform = platform(extra);
            assert!(
                validate(&platform).is_ok(),
                "refused: {extra}: {:?}",
                validate(&platform).err()
            );
        }
        let refused = [
            ("  bus: {type: nats, url: 'tls://nats.soc.svc:4222,tls://nats.example.com:4222'}\n", "spec.bus.url"),
            ("  bus: {type: nats, url: '192.0.2.7:4222'}\n", "spec.bus.url"),
            ("  storage: {type: postgresql, postgresql: {host: db.example.com, database: kastell, user: kastell, passwordSecret: {name: pg, key: password}}}\n", "spec.storage.postgresql.host"),
            ("  storage: {type: postgresql, postgresql: {host: '2001:db8::5', database: kastell, user: kastell, passwordSecret: {name: pg, key: password}}}\n", "spec.storage.postgresql.host"),
        ];
        for (extra, field) in refused {
            let message = validate(&platform(extra)).expect_err(extra);
            assert!(message.starts_with(field), "{extra}: {message}");
        }
    }
}
