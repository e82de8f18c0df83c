//! The harness's one error type: what was being done, and with which file or object.

use std::path::PathBuf;

/// Everything that can go wrong while preparing a test's API server, namespace or resources.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A manifest or example could not be read from the repository.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A manifest or example is not the YAML it should be.
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },

    /// The kubeconfig could not be loaded or turned into a client.
    #[error("loading the kubeconfig for {cluster}: {message}")]
    Kubeconfig { cluster: String, message: String },

    /// The API server answered a request with an error.
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// Watching an object for a condition failed.
    #[error("{action}: {source}")]
    Wait {
        action: String,
        #[source]
        source: kube::runtime::wait::Error,
    },

    /// Something did not happen within the time the harness allows for it.
    #[error("{action}: still not done after {seconds}s")]
    Timeout { action: String, seconds: u64 },
}

impl HarnessError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }
}
