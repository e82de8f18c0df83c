//! The terms a pending response action was created with — which roles may decide on it
//! and until when — and the check the case API makes before an approval or rejection.
//! The respond stage writes the terms into the action's `params.approval`; keeping the
//! format and the check here lets both stages agree on it without depending on each
//! other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::ActionRecord;

/// `params.approval` of an action that waits for a person.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApprovalTerms {
    /// The step's policy (`always`, `min-level`), for the person reading the action.
    pub policy: String,
    /// The level the trigger had, which `min-level` compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Roles that may decide; empty: any role allowed to decide on actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// After this an approval is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApprovalTerms {
    /// The terms an action carries; the defaults (anyone allowed, no expiry) for one
    /// created without them.
    pub fn of(action: &ActionRecord) -> Self {
        action
            .params
            .get("approval")
            .and_then(|terms| serde_json::from_value(terms.clone()).ok())
            .unwrap_or_default()
    }

    /// Whether `role` may decide on the action at `now`.
    ///
    /// # Errors
    /// The reason it may not: the role is not among those allowed, or the approval
    /// window has passed.
    pub fn allow(&self, role: &str, now: DateTime<Utc>) -> Result<(), ApprovalRefusal> {
        if !self.roles.is_empty() && !self.roles.iter().any(|r| r.eq_ignore_ascii_case(role)) {
            return Err(ApprovalRefusal::Role {
                role: role.to_owned(),
                allowed: self.roles.clone(),
            });
        }
        match self.expires_at {
            Some(expires_at) if now >= expires_at => Err(ApprovalRefusal::Expired { expires_at }),
            _ => Ok(()),
        }
    }
}

/// Why a person may not decide on an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefusal {
    #[error("role {role} may not decide on this action; its playbook allows {}", allowed.join(", "))]
    Role { role: String, allowed: Vec<String> },
    #[error("the action's approval expired at {}", expires_at.to_rfc3339())]
    Expired { expires_at: DateTime<Utc> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_expiry_are_enforced() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let terms = ApprovalTerms {
            policy: "always".into(),
            level: None,
            roles: vec!["lead".into()],
            expires_at: Some(at("2026-12-04T12:00:00Z")),
        };
        assert_eq!(terms.allow("Lead", at("2026-12-04T11:59:59Z")), Ok(()));
        assert!(matches!(
            terms.allow("responder", at("2026-12-04T11:00:00Z")),
            Err(ApprovalRefusal::Role { .. })
        ));
        let expired = terms.allow("lead", at("2026-12-04T12:00:00Z")).unwrap_err();
        assert!(expired
            .to_string()
            .contains("expired at 2026-12-04T12:00:00"));
        assert_eq!(
            ApprovalTerms::default().allow("analyst", at("2030-01-01T00:00:00Z")),
            Ok(())
        );
    }
}
