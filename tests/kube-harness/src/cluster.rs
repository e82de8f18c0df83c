//! Decides which API server the tests talk to, once per test process.
//!
//! In order: the cluster in `KASTELL_KUBECONFIG` (what `.ci/run` exports), the developer's
//! own kubeconfig only when `KASTELL_TEST_USE_KUBECONFIG=1`, otherwise the local control
//! plane from `tests/control-plane`, built and started on demand. A plain `KUBECONFIG` is
//! never used without that opt-in, so a test run cannot touch a real cluster by accident.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::HarnessError;
use crate::manifests::repo_root;

/// Exit status of `tests/control-plane/ensure` when no Go toolchain can build the API server.
const EXIT_NO_TOOLCHAIN: i32 = 3;

/// Where the API server the tests use comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSource {
    /// A kubeconfig file: the one `KASTELL_KUBECONFIG` names, or the local control plane's.
    Kubeconfig {
        path: PathBuf,
        /// True for the throwaway control plane from `tests/control-plane`.
        local: bool,
    },
    /// The developer's own kubeconfig (`KUBECONFIG` or `~/.kube/config`), opted into with
    /// `KASTELL_TEST_USE_KUBECONFIG=1`.
    Ambient,
}

impl ClusterSource {
    /// True when the cluster is the harness's own throwaway control plane, whose contents
    /// nobody else sees and which is never cleaned up object by object.
    pub fn is_throwaway(&self) -> bool {
        matches!(self, Self::Kubeconfig { local: true, .. })
    }

    /// A client for this cluster, made in the caller's runtime.
    ///
    /// Each test builds its own: a client's connections belong to the runtime that made
    /// them, and every `#[tokio::test]` has a runtime of its own.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Kubeconfig`] when the kubeconfig cannot be read or used.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        let error = |message: String| HarnessError::Kubeconfig {
            cluster: self.to_string(),
            message,
        };
        let config = match self {
            Self::Kubeconfig { path, .. } => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| error(e.to_string()))?
            }
            Self::Ambient => Config::infer().await.map_err(|e| error(e.to_string()))?,
        };
        Client::try_from(config).map_err(|e| error(e.to_string()))
    }
}

impl std::fmt::Display for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubeconfig { path, local: true } => {
                write!(f, "the local control plane ({})", path.display())
            }
            Self::Kubeconfig { path, local: false } => write!(f, "{}", path.display()),
            Self::Ambient => write!(f, "the current kubeconfig context"),
        }
    }
}

/// The cluster for this test process, found (and if need be started) on first use.
///
/// `Err` carries the reason there is none, for the skip message. Blocks while the control
/// plane is built or started; every other caller waits for that one attempt.
pub fn cluster() -> Result<ClusterSource, String> {
    static CLUSTER: OnceLock<Result<ClusterSource, String>> = OnceLock::new();
    CLUSTER.get_or_init(locate).clone()
}

fn locate() -> Result<ClusterSource, String> {
    if let Some(path) = env_nonempty("KASTELL_KUBECONFIG") {
        // Whoever set this promised a cluster; a missing file is their error, not a skip.
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KASTELL_KUBECONFIG={} is not a file",
            path.display()
        );
        return Ok(ClusterSource::Kubeconfig { path, local: false });
    }
    if env_nonempty("KASTELL_TEST_USE_KUBECONFIG").as_deref() == Some("1") {
        return Ok(ClusterSource::Ambient);
    }
    if env_nonempty("KASTELL_NO_CONTROL_PLANE").as_deref() == Some("1") {
        return Err("KASTELL_NO_CONTROL_PLANE=1".to_owned());
    }
    start_local_control_plane()
}

/// Runs `tests/control-plane/ensure`, which builds or reuses the binaries and starts or
/// reuses the control plane, and prints the kubeconfig path.
fn start_local_control_plane() -> Result<ClusterSource, String> {
    let script = repo_root().join("tests/control-plane/ensure");
    tracing::info!(script = %script.display(), "starting the local control plane");

    // The script's progress goes straight to the terminal: a cold build takes many
    // minutes, and a silent test run that long looks hung.
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;

    match output.status.code() {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let path = stdout.lines().last().unwrap_or_default().trim();
            if path.is_empty() {
                return Err(format!("{} printed no kubeconfig path", script.display()));
            }
            Ok(ClusterSource::Kubeconfig {
                path: PathBuf::from(path),
                local: true,
            })
        }
        Some(EXIT_NO_TOOLCHAIN) => Err("go toolchain not found".to_owned()),
        other => Err(format!(
            "tests/control-plane/ensure failed with exit status {}; its messages are above",
            other.map_or_else(|| "none (killed)".to_owned(), |c| c.to_string())
        )),
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
