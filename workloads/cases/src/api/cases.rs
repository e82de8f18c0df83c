//! `/api/v1/cases`: cases, and one case with its alerts and actions.

use axum::extract::State;
use axum::Json;
use kastell_core::store::{ActionFilter, AlertFilter, CaseFilter};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::model::{Case, CaseDetail, CaseQuery, Page};
use super::{page, ApiState, MAX_LIMIT};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_cases))
        .routes(routes!(get_case))
}

/// List cases, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/cases",
    tag = "cases",
    params(CaseQuery),
    responses(
        (status = 200, description = "One page of cases", body = Page<Case>),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_cases(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<CaseQuery>,
) -> Result<Json<Page<Case>>, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = CaseFilter {
        status: query.status.map(Into::into),
        limit: Some(limit.into()),
        offset: Some(offset.into()),
    };
    let items = state.store.list_cases(&filter).await?;
    Ok(Json(Page {
        items: items.into_iter().map(Case::from).collect(),
        limit,
        offset,
    }))
}

/// Get a case with its earliest 1000 alerts and all its response actions.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    responses(
        (status = 200, description = "The case", body = CaseDetail),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No case has this id", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn get_case(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<CaseDetail>, ApiError> {
    let alerts = AlertFilter {
        case_id: Some(id),
        limit: Some(MAX_LIMIT.into()),
        ..AlertFilter::default()
    };
    let actions = ActionFilter {
        status: None,
        case_id: Some(id),
    };
    // The three reads run on separate store connections; for an unknown id the two
    // lists are empty and cheap.
    let (case, alerts, actions) = tokio::try_join!(
        state.store.get_case(id),
        state.store.list_alerts(&alerts),
        state.store.list_actions(&actions),
    )?;
    let Some(case) = case else {
        return Err(ApiError::not_found("case", id));
    };
    Ok(Json(CaseDetail {
        case: case.into(),
        alerts: alerts.into_iter().map(Into::into).collect(),
        actions: actions.into_iter().map(Into::into).collect(),
    }))
}
