//! Step runners: one per step type, each turning an action's stored parameters into the
//! side effect and the result recorded on the action. The stage picks the runner by the
//! action's `step_type`, so a new step type is a new runner registered here.

pub mod log;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kastell_core::store::{ActionRecord, ActionStatus};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Map, Value};

pub use self::log::LogRunner;
pub use self::webhook::{check_url, WebhookRunner};

/// How a step ended: `Succeeded` or `Failed`, and the result stored on the action.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub status: ActionStatus,
    pub result: Value,
}

impl StepOutcome {
    pub fn succeeded(result: Value) -> Self {
        StepOutcome {
            status: ActionStatus::Succeeded,
            result,
        }
    }

    /// A failure whose result is `{"error": error}`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self::failed_with(error, Map::new())
    }

    /// A failure whose result is `{"error": error}` plus `details`.
    pub fn failed_with(error: impl Into<String>, mut details: Map<String, Value>) -> Self {
        details.insert("error".into(), Value::String(error.into()));
        StepOutcome {
            status: ActionStatus::Failed,
            result: Value::Object(details),
        }
    }
}

/// Runs the actions of one step type.
#[async_trait]
pub trait StepRunner: Send + Sync {
    /// The `step_type` of the actions this runner runs.
    fn step_type(&self) -> &'static str;

    /// Performs the action from its stored parameters. Never panics and never returns
    /// an error: whatever goes wrong is a failed outcome with a reason.
    async fn run(&self, action: &ActionRecord) -> StepOutcome;

    /// What the action would do, reported instead of running it in a dry run.
    fn describe(&self, action: &ActionRecord) -> Value {
        let mut params = action.params.clone();
        if let Value::Object(map) = &mut params {
            map.remove("dry_run");
        }
        json!({ "type": self.step_type(), "params": params })
    }
}

/// Settings shared by the runners.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Trust the system's CA certificates for HTTPS (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured), so an organisation's own CA works as it does for
    /// every other tool on the host.
    pub native_roots: bool,
    /// CA certificates trusted in addition (a private CA, a test server's).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            native_roots: true,
            extra_roots: Vec::new(),
        }
    }
}

/// A runner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("building the TLS 1.3 client configuration")]
    Tls(#[source] rustls::Error),
    #[error("adding a trusted CA certificate")]
    Certificate(#[source] rustls::Error),
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// The runners by step type.
#[derive(Clone, Default)]
pub struct Runners {
    runners: BTreeMap<&'static str, Arc<dyn StepRunner>>,
}

impl Runners {
    /// The runners of every step type this version knows: `log` and `webhook`.
    ///
    /// # Errors
    /// When the HTTPS client cannot be built (see [`RunnerError`]).
    pub fn new(settings: &RunnerSettings) -> Result<Self, RunnerError> {
        let mut runners = Runners::empty();
        runners.register(Arc::new(LogRunner));
        runners.register(Arc::new(WebhookRunner::new(settings)?));
        Ok(runners)
    }

    pub fn empty() -> Self {
        Runners::default()
    }

    /// Adds a runner, replacing any earlier one of the same step type.
    pub fn register(&mut self, runner: Arc<dyn StepRunner>) {
        self.runners.insert(runner.step_type(), runner);
    }

    pub fn get(&self, step_type: &str) -> Option<&Arc<dyn StepRunner>> {
        self.runners.get(step_type)
    }

    pub fn step_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.runners.keys().copied()
    }
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.runners.keys()).finish()
    }
}

/// The error and its causes on one line: reqwest's own message hides the cause
/// ("connection refused", "received fatal alert: ProtocolVersion") in its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// The `timeout_seconds` parameter, defaulting to the resource's default of 10.
pub(crate) fn param_timeout(params: &Value) -> std::time::Duration {
    let seconds = params
        .get("timeout_seconds")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .unwrap_or(10);
    std::time::Duration::from_secs(seconds)
}
