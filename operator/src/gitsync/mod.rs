//! The operator's own git sync: for every SecOpsPlatform with `spec.git`, fetch the
//! repository, verify the commit's signature when allowed signers are listed, apply the
//! resources under the path with server-side apply, prune what an earlier sync applied and
//! git no longer holds, and record the outcome on `status.git`. Each platform has one loop
//! that syncs every `interval` (which also takes back drift) and at once when the push
//! webhook ([`webhook`]) or a spec change wakes it.
//!
//! Nothing else depends on it: Flux or Argo CD can apply the same resources instead.

pub mod desired;
pub mod fetch;
pub mod http;
pub mod verify;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kastell_crds::platform::{GitSource, GitSyncStatus};
use kastell_crds::SecOpsPlatform;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::controller::Context;
use crate::residency::EndpointPolicy;
use desired::{Desired, Inventory, Target, LABEL_SYNCED_BY};
use fetch::{Credentials, FetchError, Snapshot};
use verify::{AllowedSigners, SignatureError};

/// The field manager of what the sync applies, distinct from the controllers' so that
/// `kubectl get --show-managed-fields` tells git's fields from the operator's.
pub const FIELD_MANAGER: &str = "kastell-gitsync";
/// The shortest interval honoured, so a `1ms` typo cannot turn into a fetch loop.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Why a sync did not apply a commit.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Spec(String),
    #[error("reading Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("commit {commit} was not applied: {}", problems.join("; "))]
    Documents {
        commit: String,
        problems: Vec<String>,
    },
    #[error("{action} {what}: {source}")]
    Api {
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the fetch task failed: {0}")]
    Task(String),
}

/// What a successful sync applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub commit: String,
    pub applied: usize,
    pub pruned: Vec<String>,
}

/// What removing `spec.git` did with the resources the sync had applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Deleted (those still labelled as this platform's).
    Pruned(Vec<String>),
    /// Left in place, untracked (`pruneOnRemoval: false`).
    Kept(usize),
}

/// The per-platform sync loops and what they share.
pub struct Syncer {
    context: Arc<Context>,
    /// Where each platform's bare repository is cached, one directory per platform.
    cache: PathBuf,
    loops: Mutex<HashMap<(String, String), PlatformLoop>>,
}

struct PlatformLoop {
    generation: Option<i64>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let loops = self.loops.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, l) in loops.drain() {
            l.task.abort();
        }
    }
}

impl Syncer {
    /// The syncer; registers the HTTPS transport before any loop can fetch (see
    /// [`http::register`]).
    pub fn new(context: Arc<Context>, cache: PathBuf) -> Arc<Self> {
        if let Err(error) = http::register() {
            // Every https fetch reports it again, on the platform's status.
            tracing::error!(%error, "git https remotes cannot be fetched");
        }
        Arc::new(Syncer {
            context,
            cache,
            loops: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> kube::Client {
        self.context.client.clone()
    }

    /// Wakes a platform's loop for an immediate sync; false when there is no such loop.
    pub fn trigger(&self, namespace: &str, name: &str) -> bool {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        match loops.get(&(namespace.to_owned(), name.to_owned())) {
            Some(l) => {
                l.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Starts the loop of a platform seen for the first time; wakes it when the spec
    /// changed.
    fn observe(self: &Arc<Self>, platform: &SecOpsPlatform) {
        let key = (
            platform.namespace().unwrap_or_default(),
            platform.name_any(),
        );
        let generation = platform.meta().generation;
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = loops.get_mut(&key) {
            if existing.generation != generation && !existing.task.is_finished() {
                existing.generation = generation;
                existing.wake.notify_one();
                return;
            }
            if !existing.task.is_finished() {
                return;
            }
        }
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(platform_loop(self.clone(), key.clone(), wake.clone()));
        loops.insert(
            key,
            PlatformLoop {
                generation,
                wake,
                task,
            },
        );
    }

    fn forget(&self, platform: &SecOpsPlatform) {
        let key = (
            platform.namespace().unwrap_or_default(),
            platform.name_any(),
        );
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loops.remove(&key) {
            l.task.abort();
        }
    }

    /// One sync of a platform: read credentials, fetch, verify, apply, prune, record the
    /// inventory. The status is written by the caller.
    ///
    /// # Errors
    ///
    /// [`SyncError`] naming the step that failed; nothing is pruned after a failure.
    #[tracing::instrument(skip_all, fields(namespace = platform.namespace(), name = platform.name_any()))]
    pub async fn sync(&self, platform: &SecOpsPlatform) -> Result<Synced, SyncError> {
        let namespace = platform.namespace().unwrap_or_default();
        let name = platform.name_any();
        let git = platform
            .spec
            .git
            .clone()
            .ok_or_else(|| SyncError::Spec("spec.git is not set".into()))?;
        check_remote(platform, &git.url)?;
        let signers = AllowedSigners::parse(&git.allowed_signers)?;
        let credentials = self.credentials(&namespace, &git).await?;

        let snapshot = self.fetch(&namespace, &name, &git, credentials).await?;
        if !git.allowed_signers.is_empty() {
            let signer = signers.verify(&snapshot.commit, snapshot.signature.as_ref())?;
            tracing::debug!(commit = %snapshot.commit, signer, "signature verified");
        }
        let target = Target {
            namespace: &namespace,
            platform: &name,
            repository: &git.url,
        };
        let objects =
            desired::desired(&snapshot, &target).map_err(|problems| SyncError::Documents {
                commit: snapshot.commit.clone(),
                problems,
            })?;

        let previous = self.read_inventory(platform).await?;
        let next = desired::inventory(&objects);
        // Recorded before applying: a sync cut short leaves nothing it created untracked.
        self.write_inventory(platform, &previous.union(&next))
            .await?;
        for object in &objects {
            self.apply(&namespace, object).await?;
        }
        let pruned = self.prune(&namespace, &name, &previous, &next).await?;
        self.write_inventory(platform, &next).await?;
        tracing::info!(commit = %snapshot.commit, applied = objects.len(), pruned = pruned.len(), "git sync applied");
        Ok(Synced {
            commit: snapshot.commit,
            applied: objects.len(),
            pruned,
        })
    }

    async fn credentials(
        &self,
        namespace: &str,
        git: &GitSource,
    ) -> Result<Credentials, SyncError> {
        let Some(secret) = &git.credentials_secret else {
            return Ok(Credentials::default());
        };
        let data = read_secret(&self.context.client, namespace, secret).await?;
        Ok(Credentials::from_secret_data(&data))
    }

    async fn fetch(
        &self,
        namespace: &str,
        name: &str,
        git: &GitSource,
        credentials: Credentials,
    ) -> Result<Snapshot, SyncError> {
        let cache = self.cache.join(namespace).join(name);
        let git = git.clone();
        tokio::task::spawn_blocking(move || fetch::fetch(&cache, &git, &credentials))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))?
            .map_err(SyncError::from)
    }

    async fn apply(&self, namespace: &str, desired: &Desired) -> Result<(), SyncError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.context.client.clone(), namespace, &desired.resource);
        let name = desired.object.name_any();
        // Forced: git is the source of truth for these fields; another manager's change
        // is drift, taken back here.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let what = || format!("{} {namespace}/{name}", desired.resource.kind);
        let live = api
            .patch(&name, &params, &Patch::Apply(&desired.object))
            .await
            .map_err(|source| SyncError::Api {
                action: "applying",
                what: what(),
                source,
            })?;

        // status.source repeats the provenance where `kubectl get -o yaml` readers and
        // the controllers look; written only when it changed, so a re-apply of the same
        // commit costs no second request.
        let source = desired::status_source(&desired.object);
        if live.data.pointer("/status/source") != Some(&source) {
            let patch = json!({
                "apiVersion": desired.resource.api_version,
                "kind": desired.resource.kind,
                "status": {"source": source},
            });
            api.patch_status(&name, &params, &Patch::Apply(&patch))
                .await
                .map_err(|source| SyncError::Api {
                    action: "writing status.source of",
                    what: what(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Deletes what the previous inventory holds and the next does not, but only objects
    /// that still carry this platform's label: one re-created by hand is left alone.
    async fn prune(
        &self,
        namespace: &str,
        platform: &str,
        previous: &Inventory,
        next: &Inventory,
    ) -> Result<Vec<String>, SyncError> {
        let mut pruned = Vec::new();
        for key in previous.removed(next) {
            let Some(resource) = desired::resource_of(&key.kind) else {
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.context.client.clone(), namespace, &resource);
            let what = || format!("{key} in {namespace}");
            let live = api
                .get_opt(&key.name)
                .await
                .map_err(|source| SyncError::Api {
                    action: "reading",
                    what: what(),
                    source,
                })?;
            let ours = live.is_some_and(|o| {
                o.labels().get(LABEL_SYNCED_BY).map(String::as_str) == Some(platform)
            });
            if !ours {
                continue;
            }
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => pruned.push(key.to_string()),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(SyncError::Api {
                        action: "pruning",
                        what: what(),
                        source,
                    })
                }
            }
        }
        Ok(pruned)
    }

    /// After `spec.git` is removed: prunes what the last inventory holds, unless the last
    /// sync recorded `pruneOnRemoval: false`, then deletes the inventory and `status.git`.
    /// `None` when there is no inventory (nothing was synced, or it is released already).
    ///
    /// # Errors
    ///
    /// [`SyncError::Api`] naming the object; the inventory stays, so the next attempt
    /// finishes the job.
    #[tracing::instrument(skip_all, fields(namespace = platform.namespace(), name = platform.name_any()))]
    pub async fn release(&self, platform: &SecOpsPlatform) -> Result<Option<Released>, SyncError> {
        let namespace = platform.namespace().unwrap_or_default();
        let name = platform.name_any();
        let Some((inventory, prune)) = self.read_inventory_record(platform).await? else {
            return Ok(None);
        };
        let released = if prune {
            let pruned = self
                .prune(&namespace, &name, &inventory, &Inventory::default())
                .await?;
            Released::Pruned(pruned)
        } else {
            Released::Kept(inventory.keys.len())
        };

        let (api, config_map) = self.inventory_api(platform);
        match api.delete(&config_map, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(SyncError::Api {
                    action: "deleting",
                    what: format!("the inventory ConfigMap {config_map}"),
                    source,
                })
            }
        }
        // An apply that names no `git` drops the field this manager owned.
        let platforms: Api<SecOpsPlatform> = Api::namespaced(self.client(), &namespace);
        let patch = json!({
            "apiVersion": SecOpsPlatform::api_version(&()),
            "kind": "SecOpsPlatform",
            "status": {},
        });
        platforms
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| SyncError::Api {
                action: "clearing status.git of",
                what: format!("SecOpsPlatform {namespace}/{name}"),
                source,
            })?;
        tracing::info!(?released, "spec.git removed; git sync released");
        Ok(Some(released))
    }

    async fn read_inventory(&self, platform: &SecOpsPlatform) -> Result<Inventory, SyncError> {
        Ok(self
            .read_inventory_record(platform)
            .await?
            .map(|(inventory, _)| inventory)
            .unwrap_or_default())
    }

    /// The inventory and its `pruneOnRemoval` (true unless recorded false); `None` when
    /// the ConfigMap does not exist.
    async fn read_inventory_record(
        &self,
        platform: &SecOpsPlatform,
    ) -> Result<Option<(Inventory, bool)>, SyncError> {
        let (api, name) = self.inventory_api(platform);
        let found = api.get_opt(&name).await.map_err(|source| SyncError::Api {
            action: "reading",
            what: format!("the inventory ConfigMap {name}"),
            source,
        })?;
        Ok(found.map(|cm| {
            let mut data = cm.data.unwrap_or_default();
            let text = data.remove(INVENTORY_KEY).unwrap_or_default();
            let prune = data.get(PRUNE_ON_REMOVAL_KEY).map(String::as_str) != Some("false");
            (Inventory::parse(&text), prune)
        }))
    }

    async fn write_inventory(
        &self,
        platform: &SecOpsPlatform,
        inventory: &Inventory,
    ) -> Result<(), SyncError> {
        let (api, name) = self.inventory_api(platform);
        let owner = platform.controller_owner_ref(&());
        // Kept beside the inventory because, once `spec.git` is removed, this is the
        // only place the choice can be read from.
        let prune_on_removal = platform
            .spec
            .git
            .as_ref()
            .is_none_or(|git| git.prune_on_removal);
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {LABEL_SYNCED_BY: platform.name_any()},
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "data": {
                INVENTORY_KEY: inventory.render(),
                PRUNE_ON_REMOVAL_KEY: prune_on_removal.to_string(),
            },
        });
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&config_map),
        )
        .await
        .map_err(|source| SyncError::Api {
            action: "writing",
            what: format!("the inventory ConfigMap {name}"),
            source,
        })?;
        Ok(())
    }

    fn inventory_api(&self, platform: &SecOpsPlatform) -> (Api<ConfigMap>, String) {
        let namespace = platform.namespace().unwrap_or_default();
        (
            Api::namespaced(self.context.client.clone(), &namespace),
            inventory_name(&platform.name_any()),
        )
    }

    /// Writes `status.git` under the sync's own field manager, so the platform
    /// controller's status applies (which do not name `git`) leave it alone. A failure
    /// keeps the last applied revision and says why the new one was not applied.
    async fn write_status(
        &self,
        platform: &SecOpsPlatform,
        outcome: &Result<Synced, SyncError>,
    ) -> Result<(), kube::Error> {
        let previous = platform
            .status
            .as_ref()
            .and_then(|s| s.git.clone())
            .unwrap_or_default();
        let status = next_status(previous, outcome, chrono::Utc::now());
        let api: Api<SecOpsPlatform> = Api::namespaced(
            self.context.client.clone(),
            &platform.namespace().unwrap_or_default(),
        );
        let patch = json!({
            "apiVersion": SecOpsPlatform::api_version(&()),
            "kind": "SecOpsPlatform",
            "status": {"git": status},
        });
        api.patch_status(
            &platform.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
    }

    async fn record_release(&self, platform: &SecOpsPlatform, released: &Released) {
        let note = match released {
            Released::Pruned(pruned) if pruned.is_empty() => {
                "spec.git removed; nothing left to prune".to_owned()
            }
            Released::Pruned(pruned) => format!("spec.git removed; pruned {}", pruned.join(", ")),
            Released::Kept(n) => format!(
                "spec.git removed; {n} synced resources left in place (pruneOnRemoval: false)"
            ),
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "GitSyncRemoved".into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(error) = self
            .context
            .recorder
            .publish(&event, &platform.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "could not publish an event");
        }
    }

    async fn record_events(
        &self,
        platform: &SecOpsPlatform,
        before: Option<&str>,
        outcome: &Result<Synced, SyncError>,
    ) {
        match outcome {
            Err(error) => {
                self.context
                    .warn(platform, "GitSyncFailed", &error.to_string())
                    .await;
            }
            Ok(synced) if before != Some(synced.commit.as_str()) || !synced.pruned.is_empty() => {
                let mut note = format!(
                    "applied commit {} ({} resources)",
                    synced.commit, synced.applied
                );
                if !synced.pruned.is_empty() {
                    note.push_str(&format!("; pruned {}", synced.pruned.join(", ")));
                }
                let event = Event {
                    type_: EventType::Normal,
                    reason: "GitSynced".into(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Sync".into(),
                    secondary: None,
                };
                let reference = platform.object_ref(&());
                if let Err(error) = self.context.recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, "could not publish an event");
                }
            }
            Ok(_) => {}
        }
    }
}

const INVENTORY_KEY: &str = "inventory";
const PRUNE_ON_REMOVAL_KEY: &str = "pruneOnRemoval";

/// The ConfigMap holding what a platform's sync applied.
pub fn inventory_name(platform: &str) -> String {
    format!("{platform}-git-inventory")
}

/// `status.git` after a sync. `appliedAt` moves only when the revision does, so a sync
/// that re-applies the same commit writes an identical status and wakes no watcher.
pub fn next_status(
    previous: GitSyncStatus,
    outcome: &Result<Synced, SyncError>,
    now: chrono::DateTime<chrono::Utc>,
) -> GitSyncStatus {
    match outcome {
        Ok(synced) => {
            let same = previous.revision.as_deref() == Some(synced.commit.as_str());
            GitSyncStatus {
                revision: Some(synced.commit.clone()),
                applied_at: if same && previous.applied_at.is_some() {
                    previous.applied_at
                } else {
                    Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                },
                resources: Some(u32::try_from(synced.applied).unwrap_or(u32::MAX)),
                last_error: None,
            }
        }
        Err(error) => GitSyncStatus {
            last_error: Some(error.to_string().chars().take(2000).collect()),
            ..previous
        },
    }
}

/// The residency check of a remote: `file://` reaches no network and is allowed, every
/// other URL must name an allowed host or network.
///
/// # Errors
///
/// [`SyncError::Spec`] with the refusal.
pub fn check_remote(platform: &SecOpsPlatform, url: &str) -> Result<(), SyncError> {
    let (policy, _) = EndpointPolicy::from_residency(&platform.spec.residency);
    check_url(&policy, url).map_err(SyncError::Spec)
}

/// See [`check_remote`]; shared with the platform controller's validation.
///
/// # Errors
///
/// The refusal, as a message naming `spec.git.url`.
pub fn check_url(policy: &EndpointPolicy, url: &str) -> Result<(), String> {
    if url.starts_with("file://") {
        return Ok(());
    }
    policy
        .check(url)
        .map_err(|refusal| format!("spec.git.url: {refusal}"))
}

async fn read_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, SyncError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|source| match source {
        kube::Error::Api(status) if status.code == 403 => {
            SyncError::Spec(forbidden_secret(namespace, name))
        }
        source => SyncError::Secret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        },
    })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// What a platform is told when the operator's RBAC does not reach its Secrets.
pub fn forbidden_secret(namespace: &str, name: &str) -> String {
    format!(
        "reading Secret {namespace}/{name}: forbidden: the operator may only read the Secrets \
         of the namespaces listed in the chart's secrets.namespaces (docs/operator.md, RBAC)"
    )
}

/// One platform's loop: sync, write the status, sleep for the interval or until woken.
/// Ends when the platform is gone.
async fn platform_loop(syncer: Arc<Syncer>, key: (String, String), wake: Arc<Notify>) {
    let (namespace, name) = key;
    let api: Api<SecOpsPlatform> = Api::namespaced(syncer.client(), &namespace);
    loop {
        let platform = match api.get_opt(&name).await {
            Ok(Some(platform)) => platform,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, namespace, name, "reading the platform for git sync");
                tokio::time::sleep(MIN_INTERVAL).await;
                continue;
            }
        };
        let Some(git) = platform.spec.git.clone() else {
            match syncer.release(&platform).await {
                Ok(released) => {
                    if let Some(released) = released {
                        syncer.record_release(&platform, &released).await;
                    }
                    // Nothing to sync until the spec names a repository again.
                    wake.notified().await;
                }
                Err(error) => {
                    tracing::warn!(%error, namespace, name, "releasing the git sync");
                    syncer
                        .context
                        .warn(&platform, "GitSyncFailed", &error.to_string())
                        .await;
                    tokio::select! {
                        () = tokio::time::sleep(MIN_INTERVAL) => {}
                        () = wake.notified() => {}
                    }
                }
            }
            continue;
        };
        let before = platform
            .status
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .and_then(|g| g.revision.clone());
        let outcome = syncer.sync(&platform).await;
        if let Err(error) = &outcome {
            tracing::warn!(%error, namespace, name, "git sync failed");
        }
        syncer
            .record_events(&platform, before.as_deref(), &outcome)
            .await;
        if let Err(error) = syncer.write_status(&platform, &outcome).await {
            tracing::warn!(%error, namespace, name, "writing status.git");
        }
        let interval = kastell_crds::parse_duration(&git.interval)
            .unwrap_or(Duration::from_secs(60))
            .max(MIN_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
    }
}

/// Watches the SecOpsPlatforms of `namespace` (of every namespace when `None`) and keeps
/// one sync loop per platform, until the watch ends.
pub async fn run(syncer: Arc<Syncer>, namespace: Option<String>) {
    let api = match &namespace {
        Some(namespace) => Api::<SecOpsPlatform>::namespaced(syncer.client(), namespace),
        None => Api::<SecOpsPlatform>::all(syncer.client()),
    };
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => syncer.observe(&p),
            Ok(watcher::Event::Delete(p)) => syncer.forget(&p),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => {
                tracing::warn!(%error, "watching SecOpsPlatforms for git sync");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(commit: &str) -> Result<Synced, SyncError> {
        Ok(Synced {
            commit: commit.into(),
            applied: 3,
            pruned: vec![],
        })
    }

    #[test]
    fn applied_at_moves_with_the_revision_and_errors_keep_it() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let t1 = t0 + chrono::Duration::minutes(5);
        let first = next_status(GitSyncStatus::default(), &synced("a"), t0);
        assert_eq!(first.applied_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        let again = next_status(first.clone(), &synced("a"), t1);
        assert_eq!(again, first);
        let failed = next_status(
            again.clone(),
            &Err(SyncError::Spec("spec.git.url: refused".into())),
            t1,
        );
        assert_eq!(failed.revision.as_deref(), Some("a"));
        assert_eq!(failed.last_error.as_deref(), Some("spec.git.url: refused"));
        let next = next_status(failed, &synced("b"), t1);
        assert_eq!(next.applied_at.as_deref(), Some("2026-01-01T00:05:00Z"));
        assert_eq!(next.last_error, None);
    }

    #[test]
    fn file_urls_pass_residency_and_other_hosts_need_allowing() {
        let (policy, _) = EndpointPolicy::from_residency(&Default::default());
        assert!(check_url(&policy, "file:///srv/soc.git").is_ok());
        assert!(check_url(&policy, "https://git.example.eu/soc.git")
            .unwrap_err()
            .contains("spec.git.url"));
    }
}
