//! `/api/v1/cases`: cases, one case with its alerts and actions, and case updates.

use axum::extract::State;
use axum::Json;
use kastell_core::error_chain;
use kastell_core::store::{CaseFilter, CaseStatus, CaseUpdate};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::alerts::required_text;
use super::caller::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::model::{
    AlertAnswer, Case, CaseDetail, CaseDetailAnswer, CaseDetailQuery, CaseQuery, CaseUpdateBody,
    CloseBody, Page,
};
use super::{page, ApiState, MAX_LIMIT, MAX_TEXT};
use crate::auth::Permission;

/// The most tags a case may carry, and the longest title.
const MAX_TAGS: usize = 100;
const MAX_TITLE: usize = 512;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_cases))
        .routes(routes!(get_case, update_case))
        .routes(routes!(close_case))
}

/// List the cases the caller's TLP ceiling allows, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/cases",
    tag = "cases",
    params(CaseQuery),
    responses(
        (status = 200, description = "One page of cases", body = Page<Case>),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_cases(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<CaseQuery>,
) -> Result<Json<Page<Case>>, ApiError> {
    caller.require(Permission::Read)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = CaseFilter {
        status: query.status.map(Into::into),
        max_tlp: Some(caller.tlp()),
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

/// Get a case with its earliest 1000 alerts and all its response actions; a case above
/// the caller's TLP ceiling is not found. `events=false` leaves the alerts' events out.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id"), CaseDetailQuery),
    responses(
        (status = 200, description = "The case", body = CaseDetail),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn get_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<CaseDetailQuery>,
) -> Result<Json<CaseDetailAnswer>, ApiError> {
    caller.require(Permission::Read)?;
    let detail = state.store.case_detail(id, MAX_LIMIT.into()).await?;
    let (case, alerts, actions) = match detail {
        Some(detail) => (Some(detail.case), detail.alerts, detail.actions),
        None => (None, Vec::new(), Vec::new()),
    };
    let case = caller.visible(case, id)?;
    let alerts = alerts
        .into_iter()
        .map(|alert| AlertAnswer::from_stored(alert, query.events.unwrap_or(true)))
        .collect::<Result<_, _>>()?;
    Ok(Json(CaseDetailAnswer {
        case: case.into(),
        alerts,
        actions: actions.into_iter().map(Into::into).collect(),
    }))
}

/// Change a case's title, description, severity, TLP, PAP, status, assignee or tags.
/// Assigning, setting TLP or PAP and closing need the `manage` permission (lead,
/// admin); the rest `triage`. Nobody may set a TLP above their own ceiling.
#[utoipa::path(
    patch,
    path = "/api/v1/cases/{id}",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = CaseUpdateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The case as updated", body = Case),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role may not make this change", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is unknown or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn update_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<CaseUpdateBody>,
) -> Result<Json<Case>, ApiError> {
    caller.require(Permission::Triage)?;
    let update = checked_update(body)?;
    if update.status == Some(CaseStatus::Closed) {
        return Err(ApiError::invalid_body(
            "close a case with POST /api/v1/cases/{id}/close and a resolution",
        ));
    }
    let manages = update.tlp.is_some() || update.pap.is_some() || update.assignee.is_some();
    if manages {
        caller.require(Permission::Manage)?;
    }
    if let Some(tlp) = update.tlp.filter(|tlp| *tlp > caller.tlp()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "TLP {tlp} is above your ceiling {}: you could no longer read the case",
                caller.tlp()
            ),
        ));
    }
    let before = caller.visible(state.store.get_case(id).await?, id)?;
    let case = state.store.update_case(id, &update, caller.name()).await?;
    tracing::info!(case_id = id, by = %caller.name(), "case updated");
    announce_changes(&state, &before, &case).await;
    Ok(Json(case.into()))
}

/// Close a case with its resolution (`true_positive`, `false_positive`, `benign`,
/// `duplicate`) and a summary; needs the `manage` permission.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/close",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = CloseBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The closed case", body = Case),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the manage permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 409, description = "The case is closed already", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The resolution or summary is missing or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn close_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    // Taken as a `Result` so that a caller who may not close cases learns that (403)
    // before anything about the body (422): the role is checked first.
    body: Result<ApiJson<CloseBody>, ApiError>,
) -> Result<Json<Case>, ApiError> {
    caller.require(Permission::Manage)?;
    let ApiJson(body) = body?;
    let summary = required_text("summary", &body.summary)?;
    let before = caller.visible(state.store.get_case(id).await?, id)?;
    let case = state
        .store
        .close_case(id, body.resolution.into(), &summary, caller.name())
        .await?;
    tracing::info!(case_id = id, by = %caller.name(), resolution = ?body.resolution, "case closed");
    announce_changes(&state, &before, &case).await;
    Ok(Json(case.into()))
}

/// Publishes the case events an analyst's change causes (severity raised, case closed)
/// so playbooks triggered by them run, as they do for the pipeline's own changes. The
/// change is stored already: a lost message costs the triggered playbook, not the change,
/// so a failed publish is logged rather than answered as an error.
async fn announce_changes(
    state: &ApiState,
    before: &kastell_core::store::CaseRecord,
    after: &kastell_core::store::CaseRecord,
) {
    for event in crate::stage::case_change_events(before, after) {
        if let Err(e) = crate::stage::publish_case_event(state.bus.as_ref(), &event).await {
            tracing::warn!(case_id = after.id, reason = %error_chain(&e), "case event not published");
        }
    }
}

/// The body as a store update, with every text checked and trimmed.
fn checked_update(body: CaseUpdateBody) -> Result<CaseUpdate, ApiError> {
    let text = |field: &str, value: Option<String>, max: usize, blank_ok: bool| {
        let Some(value) = value else { return Ok(None) };
        let value = value.trim().to_owned();
        if value.is_empty() && !blank_ok {
            return Err(ApiError::invalid_body(format!("{field} must not be blank")));
        }
        if value.chars().count() > max {
            return Err(ApiError::invalid_body(format!(
                "{field} must be at most {max} characters"
            )));
        }
        Ok(Some(value))
    };
    let tags = match body.tags {
        Some(tags) if tags.len() > MAX_TAGS => {
            return Err(ApiError::invalid_body(format!(
                "a case has at most {MAX_TAGS} tags"
            )))
        }
        Some(tags) => {
            let mut clean = Vec::with_capacity(tags.len());
            for tag in tags {
                if let Some(tag) = text("a tag", Some(tag), 128, false)? {
                    if !clean.contains(&tag) {
                        clean.push(tag);
                    }
                }
            }
            Some(clean)
        }
        None => None,
    };
    // An empty assignee unassigns.
    let assignee =
        text("assignee", body.assignee, 256, true)?.map(|name| (!name.is_empty()).then_some(name));
    Ok(CaseUpdate {
        title: text("title", body.title, MAX_TITLE, false)?,
        description: text("description", body.description, MAX_TEXT, true)?,
        severity: body.severity.map(Into::into),
        tlp: body.tlp.map(Into::into),
        pap: body.pap.map(Into::into),
        status: body.status.map(Into::into),
        assignee,
        tags,
    })
}
