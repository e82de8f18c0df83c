//! Reading across cases: the SOC figures (`/api/v1/figures`) and the text search
//! (`/api/v1/search`).

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiQuery, ErrorBody};
use super::model::{Figures, FiguresQuery, SearchQuery, SearchResults};
use super::{page, ApiState};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(figures))
        .routes(routes!(search))
}

/// The SOC figures per severity over `[from, to)`: mean time to detect (event to alert)
/// and to acknowledge (alert to its first acknowledgement) over the alerts detected in
/// the range, mean time to resolve (case creation to closing) over the cases closed in
/// it. Times in seconds. Only what the caller may read is counted: alerts without a
/// case or in a case within the caller's TLP ceiling, and cases within it.
#[utoipa::path(
    get,
    path = "/api/v1/figures",
    tag = "cases",
    params(FiguresQuery),
    responses(
        (status = 200, description = "The figures", body = Figures),
        (status = 400, description = "from or to is missing or invalid, or from is not before to", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn figures(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<FiguresQuery>,
) -> Result<Json<Figures>, ApiError> {
    caller.require(Permission::Read)?;
    if query.from >= query.to {
        return Err(ApiError::invalid_query(format!(
            "from ({}) must be before to ({})",
            query.from.to_rfc3339(),
            query.to.to_rfc3339()
        )));
    }
    let by_severity = state
        .store
        .figures_within(query.from, query.to, caller.tlp())
        .await?;
    Ok(Json(Figures {
        from: query.from,
        to: query.to,
        by_severity: by_severity.into_iter().map(Into::into).collect(),
    }))
}

/// Find cases whose title or description, and case observables whose value, contain
/// the text (case-insensitive for ASCII letters), within the caller's TLP ceiling.
#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "cases",
    params(SearchQuery),
    responses(
        (status = 200, description = "What matched", body = SearchResults),
        (status = 400, description = "q is missing, too short or too long", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn search(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    caller.require(Permission::Read)?;
    let (limit, _) = page(query.limit, None)?;
    let text = query.q.trim();
    let length = text.chars().count();
    if !(2..=256).contains(&length) {
        return Err(ApiError::invalid_query(format!(
            "q must be 2 to 256 characters, got {length}"
        )));
    }
    let hits = state.store.search(text, caller.tlp(), limit.into()).await?;
    Ok(Json(SearchResults {
        cases: hits.cases.into_iter().map(Into::into).collect(),
        observables: hits.observables.into_iter().map(Into::into).collect(),
    }))
}
