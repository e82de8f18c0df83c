//! Who may call the cases API: API keys and OIDC bearer tokens, each resolving to a
//! [`Principal`] with a [`Role`] and a TLP ceiling.
//!
//! - [`apikey`] makes keys (`kastell apikey create`) and checks them against their argon2
//!   hashes in the case store;
//! - [`oidc`] verifies JWTs against a JWKS and reads the role from a configurable claim;
//! - [`Authenticator`] picks one of the two from the `Authorization` header.
//!
//! The permission matrix is [`Role::allows`]; `docs/cases-api.md` ("Access control")
//! prints it.

pub mod apikey;
pub mod oidc;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use kastell_core::{CaseStore, Tlp};
use serde::{Deserialize, Serialize};

pub use apikey::{ApiKeys, NewKey, KEY_PREFIX};
pub use oidc::{Oidc, OidcConfig, OidcError};

/// The roles of the access-control matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Triages alerts and works cases.
    Analyst,
    /// An analyst who also decides on response actions.
    Responder,
    /// Manages cases: assigns them, sets their TLP and PAP, closes them; decides on
    /// response actions.
    Lead,
    /// Reads everything, the audit log included, and changes nothing.
    Auditor,
    /// Everything.
    Admin,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read alerts, cases and actions (within the TLP ceiling).
    Read,
    /// Change alerts and cases: title, description, severity, tags, open or in progress.
    Triage,
    /// Assign cases, set their TLP and PAP, close them.
    Manage,
    /// Approve or reject response actions.
    Respond,
    /// Read the audit log.
    Audit,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Analyst,
        Role::Responder,
        Role::Lead,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Responder => "responder",
            Role::Lead => "lead",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// The permission matrix.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Analyst => matches!(permission, Read | Triage),
            Role::Responder => matches!(permission, Read | Triage | Respond),
            Role::Lead => !matches!(permission, Audit),
            Role::Admin => true,
            Role::Auditor => matches!(permission, Read | Audit),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected analyst, responder, lead, auditor or admin")
            })
    }
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Triage => "triage",
            Permission::Manage => "manage",
            Permission::Respond => "respond",
            Permission::Audit => "audit",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name the audit log records: `apikey:<name>` or `oidc:<subject>`.
    pub name: String,
    pub role: Role,
    /// The most restricted TLP this caller may read.
    pub tlp: Tlp,
}

/// Why a request is not authenticated; each is answered 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: send `Authorization: Bearer <API key or OIDC token>` (or `X-API-Key`)"
    )]
    Missing,
    #[error("the Authorization header must be `Bearer <credential>`")]
    Malformed,
    #[error("the API key is not valid")]
    BadKey,
    #[error("the API key was revoked at {at}")]
    Revoked { at: chrono::DateTime<chrono::Utc> },
    #[error("the bearer token is not valid: {0}")]
    BadToken(String),
    #[error("the case store could not check the credentials: {0}")]
    Store(String),
}

/// Checks the credentials of a request.
pub struct Authenticator {
    keys: ApiKeys,
    oidc: Option<Oidc>,
}

impl Authenticator {
    /// API keys from `store`; OIDC tokens only when `oidc` is given.
    pub fn new(store: Arc<dyn CaseStore>, oidc: Option<Oidc>) -> Self {
        Authenticator {
            keys: ApiKeys::new(store),
            oidc,
        }
    }

    /// The caller of a request with these headers.
    ///
    /// # Errors
    /// [`AuthError`] when the credentials are missing, malformed or wrong.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let credential = credential(headers)?;
        if credential.starts_with(KEY_PREFIX) {
            return self.keys.verify(credential).await;
        }
        match &self.oidc {
            Some(oidc) => oidc.verify(credential),
            // Anything else is neither a key nor, without OIDC, a token we could check.
            None => Err(AuthError::BadKey),
        }
    }
}

/// The credential of `Authorization: Bearer …` (what thehive4py sends) or `X-API-Key`.
fn credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        return Ok(rest.trim());
    }
    if let Some(value) = headers.get("x-api-key") {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
        if !value.is_empty() {
            return Ok(value);
        }
    }
    Err(AuthError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_gives_each_role_its_permissions() {
        use Permission::*;
        let allowed = |role: Role| {
            [Read, Triage, Manage, Respond, Audit]
                .into_iter()
                .filter(|p| role.allows(*p))
                .map(Permission::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(allowed(Role::Analyst), "read,triage");
        assert_eq!(allowed(Role::Responder), "read,triage,respond");
        assert_eq!(allowed(Role::Lead), "read,triage,manage,respond");
        assert_eq!(allowed(Role::Auditor), "read,audit");
        assert_eq!(allowed(Role::Admin), "read,triage,manage,respond,audit");
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn credentials_come_from_bearer_or_x_api_key() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let bearer = headers(&[("authorization", "Bearer kst_a_b")]);
        assert_eq!(credential(&bearer), Ok("kst_a_b"));
        let key = headers(&[("x-api-key", "kst_a_b")]);
        assert_eq!(credential(&key), Ok("kst_a_b"));
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(credential(&basic), Err(AuthError::Malformed));
        assert_eq!(credential(&HeaderMap::new()), Err(AuthError::Missing));
    }
}
