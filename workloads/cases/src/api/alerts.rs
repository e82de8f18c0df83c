//! `/api/v1/alerts`: the stored alerts, filtered and paged.

use axum::extract::State;
use axum::Json;
use kastell_core::store::AlertFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::model::{Alert, AlertQuery, Page};
use super::{page, ApiState};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
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
        rule_id: query.rule,
        case_id: query.case,
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
    let Some(record) = state.store.get_alert(&id).await? else {
        return Err(ApiError::not_found("alert", id));
    };
    if let Some(case_id) = record.case_id {
        let case = state.store.get_case(case_id).await?;
        caller
            .visible(case, case_id)
            .map_err(|_| ApiError::not_found("alert", &id))?;
    }
    Ok(Json(record.into()))
}
