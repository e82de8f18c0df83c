//! The controllers: one per Kastell kind, each a short reconcile made of named steps
//! (read, validate, build, apply, update status), sharing one [`Context`].

mod apply;
mod case;
pub mod health;
pub mod leader;
mod member;
pub mod metrics;
pub mod ownership;
mod placement;
pub(crate) mod platform;
pub mod store_change;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};

pub use metrics::Metrics;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The stage image when a platform names none.
    pub stage_image: String,
    /// Consecutive failures per object, for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, stage_image: String, pod: String) -> Self {
        let reporter = Reporter {
            controller: crate::build::FIELD_MANAGER.into(),
            instance: Some(pod),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            stage_image,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes a Warning event on the object; an event that cannot be written is
    /// logged, never a reason to fail the reconcile.
    pub async fn warn<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &str, note: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

/// 2s, 4s, 8s ... capped at five minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    Duration::from_secs(2u64 << exponent).min(Duration::from_secs(300))
}

fn failure_key<K: Resource<DynamicType = ()>>(object: &ObjectRef<K>) -> String {
    format!("{}/{object}", K::kind(&()))
}

/// Why a reconcile failed; the variant names the step, and is the metric's `error` label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {what}: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of {what}: {source}")]
    Status {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Encode { .. } => "encode",
        }
    }
}

/// Runs every controller until they all stop (they do not, unless the watches end).
pub async fn run(context: Arc<Context>) {
    futures::join!(
        platform::run(context.clone()),
        member::run::<kastell_crds::DetectionRule>(context.clone()),
        member::run::<kastell_crds::Sensor>(context.clone()),
        member::run::<kastell_crds::IntelFeed>(context.clone()),
        member::run::<kastell_crds::Playbook>(context.clone()),
        case::run(context.clone()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(40), Duration::from_secs(300));
    }
}
