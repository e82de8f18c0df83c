//! NIS2 (art. 23) significant incidents: whether a case is one
//! (`/api/v1/cases/{id}/significant-incident`). The flag is a field of the case in the
//! store; the compliance report (`kastell report`) lists the flagged cases with their
//! reporting deadlines.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::ApiState;
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(significant_incident, set_significant_incident))
}

/// Whether a case is a significant incident under NIS2 (art. 23).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignificantIncident {
    pub case_id: i64,
    pub significant_incident: bool,
}

/// Body of `PUT /api/v1/cases/{id}/significant-incident`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignificantIncidentBody {
    /// `true` flags the case as a significant incident, `false` takes the flag away.
    pub significant_incident: bool,
}

/// Whether the case is flagged as a significant incident.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/significant-incident",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    responses(
        (status = 200, description = "The flag", body = SignificantIncident),
        (status = 400, description = "The id is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn significant_incident(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<SignificantIncident>, ApiError> {
    caller.require(Permission::Read)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let significant_incident = state.store.significant_incident(id).await?;
    Ok(Json(SignificantIncident {
        case_id: id,
        significant_incident,
    }))
}

/// Flag a case as a significant incident under NIS2 (art. 23), or take the flag away.
/// Declaring an incident significant starts the reporting deadlines the compliance
/// report shows, so it needs the `manage` permission (lead, admin).
#[utoipa::path(
    put,
    path = "/api/v1/cases/{id}/significant-incident",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = SignificantIncidentBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The flag as it now is", body = SignificantIncident),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the manage permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The body is not a flag", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn set_significant_incident(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SignificantIncidentBody>,
) -> Result<Json<SignificantIncident>, ApiError> {
    caller.require(Permission::Manage)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let significant_incident = state
        .store
        .set_significant_incident(id, body.significant_incident, caller.name())
        .await?;
    tracing::info!(
        case_id = id,
        significant_incident,
        by = %caller.name(),
        "case significant-incident flag set"
    );
    Ok(Json(SignificantIncident {
        case_id: id,
        significant_incident,
    }))
}
