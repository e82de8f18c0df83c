//! Reading a directory (a git checkout, a mounted ConfigMap) of resource YAML into typed
//! resources, with one error per bad document instead of one bad file stopping the rest.

use std::path::{Path, PathBuf};

use kube::core::Resource;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::{Case, DetectionRule, IntelFeed, Playbook, SecOpsPlatform, Sensor};

/// The apiVersion every Kastell resource carries.
pub const API_VERSION: &str = "kastell.eu/v1alpha1";

/// A resource and where it was read from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub object: T,
    /// The file it came from.
    pub file: PathBuf,
    /// The 0-based position of its document in a multi-document file.
    pub document: usize,
}

impl<T: Resource> Loaded<T> {
    /// `namespace/name`, the way alerts and logs refer to the resource.
    pub fn key(&self) -> String {
        let meta = self.object.meta();
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or("")
        )
    }

    /// Resolves a path written in the resource relative to the file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            return path.to_owned();
        }
        self.file
            .parent()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| path.to_owned())
    }
}

/// Every Kastell resource found in a directory.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    pub platforms: Vec<Loaded<SecOpsPlatform>>,
    pub sensors: Vec<Loaded<Sensor>>,
    pub rules: Vec<Loaded<DetectionRule>>,
    pub feeds: Vec<Loaded<IntelFeed>>,
    pub playbooks: Vec<Loaded<Playbook>>,
    pub cases: Vec<Loaded<Case>>,
}

impl ResourceSet {
    pub fn len(&self) -> usize {
        self.platforms.len()
            + self.sensors.len()
            + self.rules.len()
            + self.feeds.len()
            + self.playbooks.len()
            + self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One file that cannot be read or is not UTF-8 text; the other files still load.
    #[error("{path}: cannot be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path} document {document}: not valid YAML: {reason}")]
    Yaml {
        path: PathBuf,
        document: usize,
        reason: String,
    },
    #[error("{path} document {document}: not a Kubernetes object (apiVersion and kind needed)")]
    NotAnObject { path: PathBuf, document: usize },
    #[error("{path} document {document}: {kind} {name}: {reason}")]
    Invalid {
        path: PathBuf,
        document: usize,
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{path} document {document}: unknown kind {kind} in {API_VERSION}")]
    UnknownKind {
        path: PathBuf,
        document: usize,
        kind: String,
    },
}

/// Reads every `*.yaml` and `*.yml` file under `dir`, in path order.
///
/// Objects of other API groups are skipped, so a repository may hold Namespaces or
/// Secrets beside Kastell's resources. The returned errors name file and document.
pub fn load_dir(dir: &Path) -> Result<(ResourceSet, Vec<LoadError>), LoadError> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)?;
    files.sort();
    let mut set = ResourceSet::default();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut set, &mut errors),
            Err(e) => errors.push(LoadError::Unreadable {
                path: file,
                reason: e.to_string(),
            }),
        }
    }
    Ok((set, errors))
}

impl LoadError {
    /// The file (or, for [`LoadError::Read`], the directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Unreadable { path, .. }
            | Self::Yaml { path, .. }
            | Self::NotAnObject { path, .. }
            | Self::Invalid { path, .. }
            | Self::UnknownKind { path, .. } => path,
        }
    }

    /// The message without the leading path, for reports that name the file already.
    pub fn detail(&self) -> String {
        let full = self.to_string();
        let path = self.path().display().to_string();
        match full.strip_prefix(&path) {
            Some(rest) => rest.trim_start_matches([':', ' ']).to_owned(),
            None => full,
        }
    }
}

/// Adds the resources of one file's text to `set`.
pub fn load_text(file: &Path, text: &str, set: &mut ResourceSet, errors: &mut Vec<LoadError>) {
    for (document, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde::Deserialize::deserialize(de) {
            Ok(Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                errors.push(LoadError::Yaml {
                    path: file.to_owned(),
                    document,
                    reason: e.to_string(),
                });
                // A syntax error leaves the rest of the stream unreadable.
                break;
            }
        };
        if let Err(e) = add_document(file, document, value, set) {
            errors.push(e);
        }
    }
}

fn add_document(
    file: &Path,
    document: usize,
    value: Value,
    set: &mut ResourceSet,
) -> Result<(), LoadError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = value.get("kind").and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(LoadError::NotAnObject {
            path: file.to_owned(),
            document,
        });
    };
    if !api_version.starts_with("kastell.eu/") {
        return Ok(());
    }
    let ctx = DocContext {
        file,
        document,
        kind: &kind,
        api_version: &api_version,
    };
    match kind.as_str() {
        "SecOpsPlatform" => set.platforms.push(ctx.parse(value)?),
        "Sensor" => set.sensors.push(ctx.parse(value)?),
        "DetectionRule" => set.rules.push(ctx.parse(value)?),
        "IntelFeed" => set.feeds.push(ctx.parse(value)?),
        "Playbook" => set.playbooks.push(ctx.parse(value)?),
        "Case" => set.cases.push(ctx.parse(value)?),
        _ => {
            return Err(LoadError::UnknownKind {
                path: file.to_owned(),
                document,
                kind,
            })
        }
    }
    Ok(())
}

struct DocContext<'a> {
    file: &'a Path,
    document: usize,
    kind: &'a str,
    api_version: &'a str,
}

impl DocContext<'_> {
    fn parse<T: DeserializeOwned + Resource>(&self, value: Value) -> Result<Loaded<T>, LoadError> {
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let invalid = |reason: String| LoadError::Invalid {
            path: self.file.to_owned(),
            document: self.document,
            kind: self.kind.to_owned(),
            name: name.clone(),
            reason,
        };
        if self.api_version != API_VERSION {
            return Err(invalid(format!(
                "apiVersion {} is not served; use {API_VERSION}",
                self.api_version
            )));
        }
        if name.is_empty() {
            return Err(invalid("metadata.name is required".into()));
        }
        let mut object: T = serde_yaml::from_value(value).map_err(|e| invalid(e.to_string()))?;
        if object.meta().namespace.is_none() {
            object.meta_mut().namespace = Some("default".into());
        }
        Ok(Loaded {
            object,
            file: self.file.to_owned(),
            document: self.document,
        })
    }
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| LoadError::Read {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (ResourceSet, Vec<LoadError>) {
        let mut set = ResourceSet::default();
        let mut errors = Vec::new();
        load_text(Path::new("/repo/x.yaml"), text, &mut set, &mut errors);
        (set, errors)
    }

    #[test]
    fn loads_several_documents_and_skips_other_groups() {
        let (set, errors) = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: soc}\n---\n\
             apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {name: ids, namespace: soc}\n\
             spec: {format: suricata-eve, transport: {type: file, path: eve.json}}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.sensors.len(), 1);
        assert_eq!(set.sensors[0].key(), "soc/ids");
        assert_eq!(
            set.sensors[0].resolve("eve.json"),
            Path::new("/repo/eve.json")
        );
    }

    #[test]
    fn a_bad_enum_value_names_the_file_kind_and_field() {
        let (set, errors) = load(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {name: ids}\n\
             spec: {format: pcap, transport: {type: file}}\n",
        );
        assert!(set.is_empty());
        let message = errors[0].to_string();
        assert!(
            message.contains("/repo/x.yaml document 0: Sensor ids"),
            "{message}"
        );
        assert!(message.contains("unknown variant `pcap`"), "{message}");
    }

    #[test]
    fn missing_required_fields_and_names_are_errors() {
        let (_, errors) = load(
            "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\nmetadata: {name: r}\nspec: {}\n\
             ---\napiVersion: kastell.eu/v1alpha1\nkind: Case\nmetadata: {}\n\
             spec: {title: t, severity: high}\n---\nfoo: bar\n",
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            messages[0].contains("missing field `sigma`"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("metadata.name is required"),
            "{messages:?}"
        );
        assert!(
            messages[2].contains("not a Kubernetes object"),
            "{messages:?}"
        );
    }

    #[test]
    fn unknown_kinds_and_versions_are_reported() {
        let (_, errors) = load(
            "apiVersion: kastell.eu/v1alpha1\nkind: Widget\nmetadata: {name: w}\n---\n\
             apiVersion: kastell.eu/v2\nkind: Case\nmetadata: {name: c}\n\
             spec: {title: t, severity: high}\n",
        );
        assert!(errors[0].to_string().contains("unknown kind Widget"));
        assert!(errors[1]
            .to_string()
            .contains("apiVersion kastell.eu/v2 is not served"));
    }

    #[test]
    fn a_file_that_is_not_text_is_one_error_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), b"\xff\xfe\x00binary").unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {name: ids, namespace: soc}\n\
             spec: {format: suricata-eve, transport: {type: file, path: eve.json}}\n",
        )
        .unwrap();
        let (set, errors) = load_dir(dir.path()).unwrap();
        assert_eq!(set.sensors.len(), 1);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path(), dir.path().join("a.yaml"));
        assert!(
            errors[0].detail().starts_with("cannot be read: "),
            "{}",
            errors[0].detail()
        );
        assert!(
            !errors[0].detail().contains("a.yaml"),
            "{}",
            errors[0].detail()
        );
    }
}
