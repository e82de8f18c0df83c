//! The authenticated caller of a request, and the checks handlers make with it: the
//! role's permission (403 when missing) and the TLP ceiling (above it, a case is
//! answered as if it did not exist).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use kastell_core::store::CaseRecord;
use kastell_core::Tlp;

use super::error::ApiError;
use super::ApiState;
use crate::auth::{AuthError, Permission, Principal};

/// Every `/api/v1` handler takes this first, so a request without valid credentials is
/// answered 401 before anything else is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Principal);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match state.auth.authenticate(&parts.headers).await {
            Ok(principal) => Ok(Caller(principal)),
            Err(error) => {
                tracing::info!(reason = %error, path = %parts.uri.path(), "request not authenticated");
                Err(error.into())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                error.to_string(),
            ),
            AuthError::Revoked { .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "key_revoked", error.to_string())
            }
            _ => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                error.to_string(),
            ),
        }
    }
}

impl Caller {
    /// Who the audit log names.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn tlp(&self) -> Tlp {
        self.0.tlp
    }

    /// 403 unless the caller's role has `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "role {} lacks the {} permission this request needs",
                    self.0.role,
                    permission.as_str()
                ),
            ))
        }
    }

    /// The case, or 404 when it is above the caller's TLP ceiling: a 403 would confirm
    /// that a case with this id exists, which is already more than an AMBER reader may
    /// learn of a RED case.
    pub fn visible(&self, case: Option<CaseRecord>, id: i64) -> Result<CaseRecord, ApiError> {
        match case {
            Some(case) if case.tlp <= self.0.tlp => Ok(case),
            _ => Err(ApiError::not_found("case", id)),
        }
    }
}
