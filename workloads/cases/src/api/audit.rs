//! `/api/v1/audit`: the audit log, for auditors, in chain order.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiQuery, ErrorBody};
use super::model::{AuditEntry, AuditQuery};
use super::{page, ApiState};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// List audit entries after a sequence number, oldest first. Entries are not filtered by
/// TLP: the audit permission (auditor, admin) covers the whole record.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries in chain order", body = Vec<AuditEntry>),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the audit permission", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_audit(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller.require(Permission::Audit)?;
    let (limit, _) = page(query.limit, None)?;
    let entries = state
        .store
        .audit_entries(query.after.unwrap_or(0), limit.into())
        .await?;
    Ok(Json(entries.into_iter().map(Into::into).collect()))
}
