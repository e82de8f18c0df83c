//! `/api/v1/alerts`: the stored alerts, filtered and paged.

use axum::extract::State;
use axum::Json;
use kastell_core::store::{AlertFilter, AlertRecord, AlertTriage};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::model::{Alert, AlertQuery, IgnoreBody, Page};
use super::{page, ApiState, MAX_TEXT};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(ignore_alert))
}

/// List alerts, oldest event first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, description = "One page of alerts", body = Page<Alert>),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_alerts(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Json<Page<Alert>>, ApiError> {
    caller.require(Permission::Read)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    if let (Some(since), Some(until)) = (query.since, query.until) {
        if since >= until {
            return Err(ApiError::invalid_query(format!(
                "since ({}) must be before until ({})",
                since.to_rfc3339(),
                until.to_rfc3339()
            )));
        }
    }
    let filter = AlertFilter {
        level: query.level.map(Into::into),
        status: query.status.map(|s| s.as_str().to_owned()),
        rule_id: query.rule,
        case_id: query.case,
        observable: query.observable,
        since: query.since,
        until: query.until,
        max_tlp: Some(caller.tlp()),
        limit: Some(limit.into()),
        offset: Some(offset.into()),
    };
    let items = state.store.list_alerts(&filter).await?;
    Ok(Json(Page {
        items: items.into_iter().map(Alert::from).collect(),
        limit,
        offset,
    }))
}

/// Get one alert; an alert of a case above the caller's TLP ceiling is not found.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}",
    tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    responses(
        (status = 200, description = "The alert", body = Alert),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No alert has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn get_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Alert>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(visible_alert(&caller, &state, &id).await?.into()))
}

/// The alert, or 404 when it does not exist or its case is above the caller's TLP.
pub(super) async fn visible_alert(
    caller: &Caller,
    state: &ApiState,
    id: &str,
) -> Result<AlertRecord, ApiError> {
    let Some(record) = state.store.get_alert(id).await? else {
        return Err(ApiError::not_found("alert", id));
    };
    if let Some(case_id) = record.case_id {
        let case = state.store.get_case(case_id).await?;
        caller
            .visible(case, case_id)
            .map_err(|_| ApiError::not_found("alert", id))?;
    }
    Ok(record)
}

/// Acknowledge an alert: someone is looking at it (the time feeds the time to
/// acknowledge). Acknowledging twice changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/acknowledge",
    tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    responses(
        (status = 200, description = "The alert, acknowledged", body = Alert),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No alert has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn acknowledge_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Alert>, ApiError> {
    caller.require(Permission::Triage)?;
    visible_alert(&caller, &state, &id).await?;
    let alert = state
        .store
        .triage_alert(&id, &AlertTriage::Acknowledge, caller.name())
        .await?;
    Ok(Json(alert.into()))
}

/// Ignore an alert, with the reason it needs no work.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ignore",
    tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    request_body(content = IgnoreBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The alert, ignored", body = Alert),
        (status = 400, description = "The JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No alert has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The reason is missing, blank or too long", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn ignore_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IgnoreBody>,
) -> Result<Json<Alert>, ApiError> {
    caller.require(Permission::Triage)?;
    let reason = required_text("reason", &body.reason)?;
    visible_alert(&caller, &state, &id).await?;
    let triage = AlertTriage::Ignore { reason };
    let alert = state
        .store
        .triage_alert(&id, &triage, caller.name())
        .await?;
    Ok(Json(alert.into()))
}

/// A required free text, trimmed: not blank, at most [`MAX_TEXT`] characters.
pub(super) fn required_text(field: &str, text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::invalid_body(format!("{field} must not be blank")));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_body(format!(
            "{field} must be at most {MAX_TEXT} characters"
        )));
    }
    Ok(text.to_owned())
}
