//! The standard conditions every Kastell resource reports, kept the Kubernetes way: a
//! condition's lastTransitionTime moves only when its status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub use kastell_crds::common::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED};
/// The platform's residency condition.
pub const CONDITION_RESIDENCY: &str = "ResidencyCompliant";

/// What a reconcile concluded about one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Observed {
            type_,
            status: if status { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Observed {
            type_,
            status: "Unknown",
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Ready, Reconciling and Stalled for an outcome: ready, or refused with a reason.
/// Kastell's reconciles are short, so Reconciling is always False once status is
/// written; Stalled is True exactly when the object cannot progress without a change.
pub fn standard(outcome: Result<&str, (&str, &str)>) -> Vec<Observed> {
    match outcome {
        Ok(message) => vec![
            Observed::new(CONDITION_READY, true, "Reconciled", message),
            Observed::new(CONDITION_RECONCILING, false, "Reconciled", ""),
            Observed::new(CONDITION_STALLED, false, "Reconciled", ""),
        ],
        Err((reason, message)) => vec![
            Observed::new(CONDITION_READY, false, reason, message),
            Observed::new(CONDITION_RECONCILING, false, reason, ""),
            Observed::new(CONDITION_STALLED, true, reason, message),
        ],
    }
}

/// The new condition list: observed conditions replace the previous ones of their type,
/// keeping the previous lastTransitionTime when the status did not change.
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| !observed.iter().any(|o| o.type_ == c.type_))
        .cloned()
        .collect();
    for o in observed {
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == o.type_ && c.status == o.status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        conditions.push(Condition {
            type_: o.type_.into(),
            status: o.status.into(),
            reason: o.reason.clone(),
            message: o.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = merge(&[], &standard(Ok("ok")), Some(1));
        let ready = |c: &[Condition]| c.iter().find(|c| c.type_ == "Ready").cloned().unwrap();
        let mut aged = first.clone();
        for c in &mut aged {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        let same = merge(&aged, &standard(Ok("still ok")), Some(2));
        assert_eq!(
            ready(&same).last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
        assert_eq!(ready(&same).observed_generation, Some(2));
        let changed = merge(&aged, &standard(Err(("CompileFailed", "bad"))), Some(3));
        assert_ne!(
            ready(&changed).last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
        assert_eq!(ready(&changed).status, "False");
        assert_eq!(changed.len(), 3);
    }
}
