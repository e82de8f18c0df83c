//! The repository's own resources as the tests use them: the generated CRDs in
//! `manifests/crds` and the example resources in `examples/soc`, read from the files so
//! the tests check exactly what a user would apply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

use crate::error::HarnessError;

/// The field manager the harness applies CRDs with.
pub const FIELD_MANAGER: &str = "kastell-test-harness";

/// The API group of Kastell's custom resources.
pub const GROUP: &str = "kastell.eu";

/// How long a CRD may take to become Established; locally it takes well under a second.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// One YAML document from the repository, with the file it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file, for messages.
    pub path: PathBuf,
    /// The document as JSON, verbatim.
    pub object: Value,
}

impl Manifest {
    /// `kind`, or "" when missing.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`, or "" when missing.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// The repository's root directory (this crate lives in `tests/kube-harness`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Every CRD in `manifests/crds/*.yaml`, sorted by file name.
///
/// # Errors
///
/// [`HarnessError::Read`] or [`HarnessError::Parse`] for a file that cannot be loaded.
pub fn crd_manifests() -> Result<Vec<Manifest>, HarnessError> {
    let dir = repo_root().join("manifests/crds");
    let mut manifests = Vec::new();
    for path in yaml_files(&dir, false)? {
        manifests.extend(
            read_documents(&path)?
                .into_iter()
                .filter(|m| m.kind() == "CustomResourceDefinition"),
        );
    }
    Ok(manifests)
}

/// Every Kastell resource (apiVersion `kastell.eu/...`) in `examples/soc`, recursively,
/// sorted by path. Other YAML there (feed data, say) is not a resource and is left out.
///
/// # Errors
///
/// [`HarnessError::Read`] or [`HarnessError::Parse`] for a file that cannot be loaded.
pub fn example_resources() -> Result<Vec<Manifest>, HarnessError> {
    let dir = repo_root().join("examples/soc");
    let mut manifests = Vec::new();
    for path in yaml_files(&dir, true)? {
        let docs = read_documents(&path)?;
        manifests.extend(docs.into_iter().filter(|m| {
            m.object["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("{GROUP}/")))
        }));
    }
    Ok(manifests)
}

/// The resource a CRD serves, at its storage version, for building a dynamic [`Api`].
///
/// Returns `None` for a document that is not a complete CRD.
pub fn api_resource(crd: &Value) -> Option<ApiResource> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str()?;
    let versions = spec["versions"].as_array()?;
    let version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .or_else(|| versions.first())?["name"]
        .as_str()?;
    Some(ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{group}/{version}"),
        kind: spec["names"]["kind"].as_str()?.to_owned(),
        plural: spec["names"]["plural"].as_str()?.to_owned(),
    })
}

/// Applies every CRD in `manifests/crds` with server-side apply and waits until each is
/// Established. Returns the CRDs as the API server stored them.
///
/// Safe to run from several test processes at once: applying the same manifests under the
/// same field manager is idempotent.
///
/// # Errors
///
/// [`HarnessError::Api`] when the API server rejects a CRD (its message says why),
/// [`HarnessError::Timeout`] when one does not become Established.
pub async fn install_crds(client: &Client) -> Result<Vec<CustomResourceDefinition>, HarnessError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut installed = Vec::new();

    for manifest in crd_manifests()? {
        let name = manifest.name().to_owned();
        let action = format!("applying CRD {name} from {}", manifest.path.display());
        api.patch(&name, &params, &Patch::Apply(&manifest.object))
            .await
            .map_err(HarnessError::api(action))?;
    }

    for manifest in crd_manifests()? {
        let name = manifest.name();
        let action = format!("waiting for CRD {name} to become Established");
        let established = tokio::time::timeout(
            ESTABLISH_TIMEOUT,
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| HarnessError::Timeout {
            action: action.clone(),
            seconds: ESTABLISH_TIMEOUT.as_secs(),
        })?
        .map_err(|source| HarnessError::Wait { action, source })?;
        installed.extend(established);
    }
    tracing::debug!(count = installed.len(), "crds established");
    Ok(installed)
}

/// `*.yaml` and `*.yml` files in `dir` (and below it when `recursive`), sorted.
fn yaml_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, HarnessError> {
    let read_error = |source| HarnessError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.is_dir() {
            if recursive {
                files.extend(yaml_files(&path, true)?);
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every non-empty document of a (possibly multi-document) YAML file.
fn read_documents(path: &Path) -> Result<Vec<Manifest>, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).map_err(|e| HarnessError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !object.is_null() {
            documents.push(Manifest {
                path: path.to_owned(),
                object,
            });
        }
    }
    Ok(documents)
}
