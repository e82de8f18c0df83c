//! A real Kubernetes API server for Kastell's tests, the way controller-runtime's envtest
//! does it: kube-apiserver and etcd, no kubelet, no scheduler, no controller manager.
//!
//! A test asks for a [`TestEnv`] with [`setup`]; it gets a [`kube::Client`], a fresh
//! namespace of its own, and Kastell's CRDs from `manifests/crds` installed and Established.
//! Where no API server can be had (no Go toolchain to build one), `setup` prints
//! `SKIPPED: <test>: ...` and returns `None`, and the test returns early:
//!
//! ```no_run
//! # async fn example() {
//! let Some(env) = kastell_kube_harness::setup("my_test").await else { return };
//! let client = env.client();
//! # }
//! ```
//!
//! Which API server is used is decided once per test process; see [`cluster`] and
//! docs/testing.md.

mod cluster;
mod error;
mod manifests;

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

pub use cluster::{cluster, ClusterSource};
pub use error::HarnessError;
pub use manifests::{
    api_resource, crd_manifests, example_resources, install_crds, repo_root, Manifest,
    FIELD_MANAGER, GROUP,
};

/// Label on every namespace the harness creates, so leftovers on a real cluster can be
/// found: `kubectl delete namespace -l kastell.eu/test`.
pub const TEST_LABEL: &str = "kastell.eu/test";

/// A test's view of the API server: a client and a namespace nobody else uses.
pub struct TestEnv {
    client: Client,
    namespace: String,
    source: ClusterSource,
}

impl TestEnv {
    /// A client for the test's cluster (cheap to clone).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The namespace created for this test.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Which cluster the test runs against.
    pub fn source(&self) -> &ClusterSource {
        &self.source
    }

    /// A typed API for a namespaced kind, in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned,
    {
        Api::namespaced(self.client(), &self.namespace)
    }

    /// A dynamic API for a namespaced kind, in the test's namespace.
    pub fn dynamic_api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client(), &self.namespace, resource)
    }
}

impl Drop for TestEnv {
    /// On a real cluster the test's namespace is deleted; the local control plane is
    /// thrown away whole by `tests/control-plane/stop`, and with no controller manager a
    /// deleted namespace would only sit in Terminating anyway.
    fn drop(&mut self) {
        if self.source.is_throwaway() {
            return;
        }
        let (source, namespace) = (self.source.clone(), self.namespace.clone());
        // Drop cannot await, and the test's runtime may be shutting down: use a thread
        // with a runtime of its own.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = source.client().await.map_err(std::io::Error::other)?;
                let api: Api<Namespace> = Api::all(client);
                api.delete(&namespace, &Default::default())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(namespace = %self.namespace, "could not delete the test namespace");
        }
    }
}

/// Prepares a test: finds (or starts) the API server, installs the CRDs once per process,
/// creates a fresh namespace, and returns the test's [`TestEnv`].
///
/// Returns `None` after printing `SKIPPED: <test>: no kube-apiserver (<reason>)` when there
/// is no API server to be had, unless `KASTELL_REQUIRE_CONTROL_PLANE=1`, which turns that
/// into a failure.
///
/// # Panics
///
/// When there is an API server but it will not take the CRDs or the namespace: that is a
/// real failure, not a reason to skip.
pub async fn setup(test: &str) -> Option<TestEnv> {
    install_rustls_provider();

    // Finding the cluster may mean building and starting it: blocking work, off the runtime.
    let found = tokio::task::spawn_blocking(cluster)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let source = match found {
        Ok(source) => source,
        Err(reason) => {
            if std::env::var("KASTELL_REQUIRE_CONTROL_PLANE").as_deref() == Ok("1") {
                panic!("{test}: no kube-apiserver ({reason}) and KASTELL_REQUIRE_CONTROL_PLANE=1");
            }
            // Straight to stderr, past the test harness's capture, so the skip is seen; one
            // write, so the line is not torn by the harness's own output.
            let line = format!("SKIPPED: {test}: no kube-apiserver ({reason})\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            return None;
        }
    };

    let client = source
        .client()
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    ensure_crds(&client)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let namespace = create_namespace(&client, test)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    tracing::info!(test, %namespace, cluster = %source, "test environment ready");
    Some(TestEnv {
        client,
        namespace,
        source,
    })
}

/// Installs the CRDs the first time any test of this process asks; later tests reuse that.
async fn ensure_crds(client: &Client) -> Result<(), HarnessError> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async { install_crds(client).await.map(drop) })
        .await?;
    Ok(())
}

/// Creates `kt-<test>-<unique>`, labelled [`TEST_LABEL`].
async fn create_namespace(client: &Client, test: &str) -> Result<String, HarnessError> {
    let name = namespace_name(test);
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { TEST_LABEL: "true" } },
    }))
    .expect("a literal Namespace deserializes");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(HarnessError::api(format!("creating namespace {name}")))?;
    Ok(name)
}

/// A DNS-label namespace name from the test's name, unique across processes and runs.
fn namespace_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let unique = (std::process::id() ^ nanos).wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("kt-{slug}-{unique:08x}")
}

/// kube's TLS is rustls; when the workspace's feature unification compiles in more than one
/// crypto provider, rustls wants the process to choose. Ring is the workspace's choice.
fn install_rustls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::namespace_name;

    #[test]
    fn namespace_names_are_dns_labels() {
        let name = namespace_name("status_Subresource::applies__/x");
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("kt-status-subresource--applies"), "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_ne!(namespace_name("a"), namespace_name("a"));
    }
}
