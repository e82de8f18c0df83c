//! From a commit's documents to the objects the sync applies, and the inventory of what
//! it applied: pure functions, tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use kastell_crds::{Case, DetectionRule, IntelFeed, Playbook, Sensor};
use kube::api::{ApiResource, DynamicObject};

use super::fetch::Snapshot;

/// Annotation: the commit an object was applied from.
pub const ANNOTATION_COMMIT: &str = "kastell.eu/source-commit";
/// Annotation: the file (and document) inside the repository.
pub const ANNOTATION_PATH: &str = "kastell.eu/source-path";
/// Annotation: the commit's author, `Name <email>`.
pub const ANNOTATION_AUTHOR: &str = "kastell.eu/commit-author";
/// Annotation: the repository URL.
pub const ANNOTATION_REPOSITORY: &str = "kastell.eu/source-repository";
/// Label naming the platform whose sync applied the object; prune deletes nothing without
/// it.
pub const LABEL_SYNCED_BY: &str = "kastell.eu/synced-by";

/// The kinds the sync applies: the platform's members. Anything else in the repository
/// is refused, so a repository cannot make the operator create Roles, Secrets or Pods
/// with its own (wide) permissions.
pub fn syncable() -> [ApiResource; 5] {
    [
        ApiResource::erase::<DetectionRule>(&()),
        ApiResource::erase::<Sensor>(&()),
        ApiResource::erase::<IntelFeed>(&()),
        ApiResource::erase::<Playbook>(&()),
        ApiResource::erase::<Case>(&()),
    ]
}

/// One object the sync applies, and which kind it is.
#[derive(Debug, Clone)]
pub struct Desired {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Desired {
    pub fn key(&self) -> InventoryKey {
        InventoryKey {
            kind: self.resource.kind.clone(),
            name: self.object.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// An object the sync applied: its kind and name in the platform's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InventoryKey {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for InventoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// What the sync applied last, one `Kind/name` a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub keys: BTreeSet<InventoryKey>,
}

impl Inventory {
    pub fn parse(text: &str) -> Self {
        let keys = text
            .lines()
            .filter_map(|line| line.trim().split_once('/'))
            .map(|(kind, name)| InventoryKey {
                kind: kind.to_owned(),
                name: name.to_owned(),
            })
            .collect();
        Inventory { keys }
    }

    pub fn render(&self) -> String {
        self.keys.iter().map(|k| format!("{k}\n")).collect()
    }

    /// What is in `self` but no longer in `next`: the objects to prune.
    pub fn removed<'a>(&'a self, next: &'a Inventory) -> impl Iterator<Item = &'a InventoryKey> {
        self.keys.difference(&next.keys)
    }

    pub fn union(&self, other: &Inventory) -> Inventory {
        Inventory {
            keys: self.keys.union(&other.keys).cloned().collect(),
        }
    }
}

/// Where the objects go and what they are annotated with.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub platform: &'a str,
    pub repository: &'a str,
}

/// The objects of a commit, annotated with their provenance; or every problem found, in
/// which case nothing is applied (a partial view would prune what it could not read).
///
/// # Errors
///
/// One message per unreadable file, document of a kind the sync does not apply, object
/// without a name, object for another namespace, or object defined twice.
pub fn desired(snapshot: &Snapshot, target: &Target<'_>) -> Result<Vec<Desired>, Vec<String>> {
    let kinds = syncable();
    let mut problems = snapshot.unreadable.clone();
    let mut seen: BTreeMap<InventoryKey, String> = BTreeMap::new();
    let mut objects = Vec::new();
    for document in &snapshot.documents {
        let place = format!("{} document {}", document.path, document.index);
        let api_version = document.value["apiVersion"].as_str().unwrap_or("");
        let kind = document.value["kind"].as_str().unwrap_or("");
        let Some(resource) = kinds
            .iter()
            .find(|r| r.api_version == api_version && r.kind == kind)
        else {
            problems.push(format!(
                "{place}: {api_version} {kind} is not a kind the git sync applies \
                 (kastell.eu/v1alpha1 DetectionRule, Sensor, IntelFeed, Playbook, Case)"
            ));
            continue;
        };
        let mut object: DynamicObject = match serde_yaml::from_value(document.value.clone()) {
            Ok(object) => object,
            Err(error) => {
                problems.push(format!("{place}: {error}"));
                continue;
            }
        };
        let Some(name) = object.metadata.name.clone().filter(|n| !n.is_empty()) else {
            problems.push(format!("{place}: {kind} without metadata.name"));
            continue;
        };
        if let Some(namespace) = object.metadata.namespace.as_deref() {
            if namespace != target.namespace {
                problems.push(format!(
                    "{place}: {kind} {name} names namespace {namespace}; the sync only \
                     applies to the platform's namespace {}",
                    target.namespace
                ));
                continue;
            }
        }
        let key = InventoryKey {
            kind: kind.to_owned(),
            name: name.clone(),
        };
        if let Some(first) = seen.insert(key.clone(), place.clone()) {
            problems.push(format!("{place}: {key} is already defined in {first}"));
            continue;
        }
        annotate(&mut object, snapshot, target, &document.path);
        objects.push(Desired {
            resource: resource.clone(),
            object,
        });
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

fn annotate(object: &mut DynamicObject, snapshot: &Snapshot, target: &Target<'_>, path: &str) {
    let meta = &mut object.metadata;
    meta.namespace = Some(target.namespace.to_owned());
    // Server-owned fields in a committed `kubectl get -o yaml` would make the apply fail.
    meta.resource_version = None;
    meta.uid = None;
    meta.managed_fields = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(ANNOTATION_COMMIT.into(), snapshot.commit.clone());
    annotations.insert(ANNOTATION_PATH.into(), path.to_owned());
    annotations.insert(ANNOTATION_AUTHOR.into(), snapshot.author.clone());
    annotations.insert(ANNOTATION_REPOSITORY.into(), target.repository.to_owned());
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_SYNCED_BY.into(), target.platform.to_owned());
    // Status belongs to the controllers, not to git.
    if let Some(data) = object.data.as_object_mut() {
        data.remove("status");
    }
}

/// The `status.source` (`kastell_crds::SourceRevision`) of an annotated object.
pub fn status_source(object: &DynamicObject) -> serde_json::Value {
    let annotation = |key: &str| {
        object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let source = kastell_crds::SourceRevision {
        repository: annotation(ANNOTATION_REPOSITORY),
        commit: annotation(ANNOTATION_COMMIT),
        path: annotation(ANNOTATION_PATH),
        author: annotation(ANNOTATION_AUTHOR),
    };
    serde_json::to_value(source).unwrap_or_default()
}

/// The inventory of a set of desired objects.
pub fn inventory(objects: &[Desired]) -> Inventory {
    Inventory {
        keys: objects.iter().map(Desired::key).collect(),
    }
}

/// The API resource of an inventory entry's kind, if it is one the sync applies.
pub fn resource_of(kind: &str) -> Option<ApiResource> {
    syncable().into_iter().find(|r| r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitsync::fetch::split_documents;

    fn snapshot(files: &[(&str, &str)]) -> Snapshot {
        let (mut documents, mut unreadable) = (Vec::new(), Vec::new());
        for (path, text) in files {
            split_documents(path, text, &mut documents, &mut unreadable);
        }
        Snapshot {
            commit: "0123abc".into(),
            author: "Ada <ada@example.eu>".into(),
            signature: None,
            documents,
            unreadable,
        }
    }

    const TARGET: Target<'static> = Target {
        namespace: "soc",
        platform: "main",
        repository: "file:///repo",
    };

    const RULE: &str = "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\n\
        metadata: {name: r1}\nspec: {rule: 'title: x'}\nstatus: {observedGeneration: 3}\n";

    #[test]
    fn objects_are_annotated_labelled_and_placed_in_the_namespace() {
        let objects = desired(&snapshot(&[("rules/r1.yaml", RULE)]), &TARGET).unwrap();
        let meta = &objects[0].object.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("soc"));
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[ANNOTATION_COMMIT], "0123abc");
        assert_eq!(annotations[ANNOTATION_PATH], "rules/r1.yaml");
        assert_eq!(annotations[ANNOTATION_AUTHOR], "Ada <ada@example.eu>");
        assert_eq!(meta.labels.as_ref().unwrap()[LABEL_SYNCED_BY], "main");
        assert!(objects[0].object.data.get("status").is_none());
        assert_eq!(objects[0].key().to_string(), "DetectionRule/r1");
        let source = status_source(&objects[0].object);
        assert_eq!(source["commit"], "0123abc");
        assert_eq!(source["path"], "rules/r1.yaml");
        assert_eq!(source["repository"], "file:///repo");
    }

    #[test]
    fn foreign_kinds_namespaces_duplicates_and_bad_files_refuse_the_whole_commit() {
        let other_ns = RULE.replace("{name: r1}", "{name: r2, namespace: kube-system}");
        let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}\n";
        let files = [
            ("a.yaml", RULE),
            ("b.yaml", RULE),
            ("c.yaml", other_ns.as_str()),
            ("d.yaml", role),
            ("e.yaml", "a: ["),
        ];
        let problems = desired(&snapshot(&files), &TARGET).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("already defined in a.yaml")));
        assert!(problems.iter().any(|p| p.contains("namespace kube-system")));
        assert!(problems.iter().any(|p| p.contains("Role is not a kind")));
    }

    #[test]
    fn the_inventory_round_trips_and_names_what_was_removed() {
        let old = Inventory::parse("DetectionRule/a\nSensor/b\n");
        let new = Inventory::parse("DetectionRule/a\nPlaybook/c\n");
        assert_eq!(Inventory::parse(&old.render()), old);
        let removed: Vec<String> = old.removed(&new).map(|k| k.to_string()).collect();
        assert_eq!(removed, ["Sensor/b"]);
        assert_eq!(old.union(&new).keys.len(), 3);
        assert!(resource_of("Sensor").is_some());
        assert!(resource_of("Secret").is_none());
    }
}
