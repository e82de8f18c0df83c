//! Step runners: one per step type, each turning an action's stored parameters into the
//! side effect and the result recorded on the action. The stage picks the runner by the
//! action's `step_type`, so a new step type is a new runner registered here.

pub mod case;
pub mod client;
pub mod enrich;
pub mod http;
pub mod log;
pub mod notify;
pub mod quarantine;
pub mod wazuh;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kastell_core::store::{ActionRecord, ActionStatus};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Map, Value};

use crate::output::Outbox;

pub use self::case::CaseRunner;
pub use self::client::{Exchange, HttpClient};
pub use self::enrich::{EnrichRunner, IntelLookup, NoIntel};
pub use self::http::HttpRunner;
pub use self::log::LogRunner;
pub use self::notify::NotifyRunner;
pub use self::quarantine::QuarantineRunner;
pub use self::wazuh::WazuhRunner;
pub use self::webhook::{check_url, WebhookRunner};

/// Where a step's secrets come from. Steps name a secret; the value is looked up only
/// when the step runs, so it is never written to the action, its result or a log.
pub trait SecretSource: Send + Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// Secrets from the workload's environment (a Kubernetes Secret mounted with
/// `envFrom`), the way every other credential of the platform reaches it.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Secrets from a fixed map, for tests and for `kastell playbook test`.
#[derive(Debug, Clone, Default)]
pub struct MapSecrets(pub HashMap<String, String>);

impl SecretSource for MapSecrets {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// The side effects an action has already had, by idempotency key and call: a step
/// retried after a crash or a failed later call reuses the recorded answer instead of
/// calling again (a second AWX job, a second block).
///
/// [`Journal::new`] keeps it in memory; [`Journal::open`] also appends every entry to a
/// file (JSON lines, flushed to disk before the runner goes on) and reads the file back
/// at start, so a restarted stage does not repeat a side effect either. A plain file
/// rather than the case store: the runners record from inside a step, where the store
/// is not at hand, and an entry must be durable before the step's next call.
#[derive(Debug, Default)]
pub struct Journal {
    done: Mutex<HashMap<String, Value>>,
    file: Option<Mutex<std::fs::File>>,
}

/// The journal file could not be read or opened for appending.
#[derive(Debug, thiserror::Error)]
#[error("opening the side-effect journal {}", path.display())]
pub struct JournalError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One line of the journal file.
#[derive(serde::Serialize, serde::Deserialize)]
struct JournalEntry {
    key: String,
    answer: Value,
}

impl Journal {
    pub fn new() -> Self {
        Self::default()
    }

    /// The journal kept in `path` (created when missing), with the entries it holds.
    ///
    /// A last line cut short by a crash is skipped: its call's answer was never
    /// recorded, as if the process had stopped just before.
    ///
    /// # Errors
    /// When the file cannot be read or opened for appending.
    pub fn open(path: &std::path::Path) -> Result<Self, JournalError> {
        use std::io::{BufRead, BufReader};
        let error = |source| JournalError {
            path: path.to_owned(),
            source,
        };
        let mut done = HashMap::new();
        match std::fs::File::open(path) {
            Ok(file) => {
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(error)?;
                    match serde_json::from_str::<JournalEntry>(&line) {
                        Ok(entry) => {
                            done.insert(entry.key, entry.answer);
                        }
                        Err(e) if !line.trim().is_empty() => tracing::warn!(
                            file = %path.display(),
                            line = n + 1,
                            reason = %e,
                            "journal line unreadable, skipped"
                        ),
                        Err(_) => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(e)),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        tracing::info!(file = %path.display(), entries = done.len(), "side-effect journal opened");
        Ok(Journal {
            done: Mutex::new(done),
            file: Some(Mutex::new(file)),
        })
    }

    /// The answer recorded for `key`, if the call was made.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.lock().get(key).cloned()
    }

    /// Records the answer of a call that had its side effect; with a file, the entry is
    /// on disk when this returns (a failed write is logged: the entry is still kept in
    /// memory, so this process does not repeat the call).
    pub fn record(&self, key: &str, answer: Value) {
        if let Some(file) = &self.file {
            use std::io::Write;
            let entry = JournalEntry {
                key: key.to_owned(),
                answer: answer.clone(),
            };
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
                tracing::error!(key, reason = %e, "journal entry not written to disk");
            }
        }
        self.lock().insert(key.to_owned(), answer);
    }

    /// How many side effects are recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        // A poisoned lock only means a runner panicked; the recorded answers stand.
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a runner gets besides the action: where to record side effects and requests,
/// where to publish case operations, and the idempotency key of the trigger and step.
pub struct RunContext {
    pub journal: Arc<Journal>,
    pub outbox: Arc<dyn Outbox>,
    /// Stable per (playbook, step, alert): sent as `Idempotency-Key` and used as the
    /// Matrix transaction id, so a repeated call is recognised by the receiver too.
    pub idempotency_key: String,
    attempt: AtomicU32,
    requests: Mutex<Vec<Value>>,
}

impl RunContext {
    pub fn new(journal: Arc<Journal>, outbox: Arc<dyn Outbox>, idempotency_key: String) -> Self {
        RunContext {
            journal,
            outbox,
            idempotency_key,
            attempt: AtomicU32::new(1),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// The attempt running now, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt.load(Ordering::Relaxed)
    }

    pub(crate) fn set_attempt(&self, attempt: u32) {
        self.attempt.store(attempt, Ordering::Relaxed);
    }

    /// Records a request summary (method, redacted URL, status, timing) for the result.
    pub fn record_request(&self, summary: Value) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(summary);
    }

    /// The request summaries recorded so far, across attempts.
    pub fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The journal key of one call of this action.
    pub fn call_key(&self, call: &str) -> String {
        format!("{}:{call}", self.idempotency_key)
    }
}

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

    /// Performs the action from its stored parameters. Never returns an error: whatever
    /// goes wrong is a failed outcome with a reason.
    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome;

    /// The action that undoes this one, recorded beside a containment; `None` for steps
    /// that contain nothing.
    fn release(&self, _action: &ActionRecord) -> Option<Value> {
        None
    }

    /// Performs the release of a containment. `action` is the release action the case
    /// API recorded (see [`is_release`]): the containment's parameters, with
    /// `params.release_of` its id and `params.release` the release recorded on it.
    /// `None` for step types whose [`StepRunner::release`] is `None`.
    async fn run_release(&self, _action: &ActionRecord, _ctx: &RunContext) -> Option<StepOutcome> {
        None
    }

    /// What the action would do, reported instead of running it in a dry run.
    fn describe(&self, action: &ActionRecord) -> Value {
        let mut params = action.params.clone();
        if let Value::Object(map) = &mut params {
            for key in ["dry_run", "timeout_seconds", "retries", "backoff_seconds"] {
                map.remove(key);
            }
        }
        json!({ "type": self.step_type(), "params": crate::redact::json(&params) })
    }
}

/// Whether the action releases an earlier containment (`params.release_of`) rather than
/// performing its step.
pub fn is_release(action: &ActionRecord) -> bool {
    action.params.get("release_of").is_some_and(Value::is_i64)
}

/// Settings shared by the runners.
#[derive(Clone)]
pub struct RunnerSettings {
    /// Trust the system's CA certificates for HTTPS (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured), so an organisation's own CA works as it does for
    /// every other tool on the host.
    pub native_roots: bool,
    /// CA certificates trusted in addition (a private CA, a test server's).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Where secrets named by steps are read.
    pub secrets: Arc<dyn SecretSource>,
    /// The intel store `enrich` steps look observables up in.
    pub intel: Arc<dyn IntelLookup>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            native_roots: true,
            extra_roots: Vec::new(),
            secrets: Arc::new(EnvSecrets),
            intel: Arc::new(NoIntel),
        }
    }
}

impl std::fmt::Debug for RunnerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerSettings")
            .field("native_roots", &self.native_roots)
            .field("extra_roots", &self.extra_roots.len())
            .finish_non_exhaustive()
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
    #[error("building the SMTP client")]
    Smtp(String),
}

/// The runners by step type.
#[derive(Clone, Default)]
pub struct Runners {
    runners: BTreeMap<&'static str, Arc<dyn StepRunner>>,
}

impl Runners {
    /// The runners of every step type this version knows.
    ///
    /// # Errors
    /// When the HTTPS client cannot be built (see [`RunnerError`]).
    pub fn new(settings: &RunnerSettings) -> Result<Self, RunnerError> {
        let client = HttpClient::new(settings)?;
        let mut runners = Runners::empty();
        runners.register(Arc::new(LogRunner));
        runners.register(Arc::new(WebhookRunner::with_client(client.clone())));
        runners.register(Arc::new(NotifyRunner::new(
            client.clone(),
            settings.clone(),
        )));
        runners.register(Arc::new(HttpRunner::new(
            client.clone(),
            Arc::clone(&settings.secrets),
        )));
        runners.register(Arc::new(WazuhRunner::new(
            client.clone(),
            Arc::clone(&settings.secrets),
        )));
        runners.register(Arc::new(EnrichRunner::new(
            client,
            Arc::clone(&settings.secrets),
            Arc::clone(&settings.intel),
        )));
        runners.register(Arc::new(CaseRunner));
        runners.register(Arc::new(QuarantineRunner::new()));
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

/// The rendered `config` parameter of a typed step.
pub(crate) fn config(params: &Value) -> Result<&Map<String, Value>, String> {
    params
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| "the action has no config parameter".to_owned())
}

/// A string field of a config, required.
pub(crate) fn field<'a>(config: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    config
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the action's config has no {name}"))
}

/// A secret named by the config field `name`, looked up in `secrets`.
pub(crate) fn secret(
    secrets: &dyn SecretSource,
    config: &Map<String, Value>,
    name: &str,
) -> Result<String, String> {
    let secret_name = field(config, name)?;
    secrets
        .get(secret_name)
        .ok_or_else(|| format!("secret {secret_name:?} ({name}) is not set"))
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
