//! Cases made by people: `POST /api/v1/cases` opens one by hand, and an alert is promoted
//! to a case of its own or merged into an existing one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::store::{AlertRecord, CaseDraft};
use kastell_core::{Level, Tlp};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::alerts::visible_alert;
use super::caller::Caller;
use super::checks;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::model::{Case, CaseCreateBody, MergeBody, PromoteBody};
use super::{ApiState, MAX_TEXT};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_case))
        .routes(routes!(promote_alert))
        .routes(routes!(merge_alert))
}

/// Open a case by hand (`triage`; naming an assignee needs `manage`). It receives no
/// alerts from the pipeline; merge alerts into it.
#[utoipa::path(
    post,
    path = "/api/v1/cases",
    tag = "cases",
    request_body(content = CaseCreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new case", body = Case),
        (status = 400, description = "The JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role may not do this, or the TLP is above their ceiling", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn create_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CaseCreateBody>,
) -> Result<(StatusCode, Json<Case>), ApiError> {
    caller.require(Permission::Triage)?;
    let draft = draft(&caller, body)?;
    let case = state.store.create_case(&draft, caller.name()).await?;
    tracing::info!(case_id = case.id, by = %caller.name(), "case created");
    Ok((StatusCode::CREATED, Json(case.into())))
}

/// The checked draft of a new case, refused when the caller may not set its assignee or
/// TLP.
pub(super) fn draft(caller: &Caller, body: CaseCreateBody) -> Result<CaseDraft, ApiError> {
    let assignee = match body.assignee {
        Some(name) => checks::assignee(&name)?,
        None => None,
    };
    if assignee.is_some() {
        caller.require(Permission::Manage)?;
    }
    // By default at most the caller's own ceiling, so they can read what they made.
    let tlp: Tlp = body
        .tlp
        .map(Into::into)
        .unwrap_or_else(|| Tlp::Amber.min(caller.tlp()));
    within_ceiling(caller, tlp)?;
    Ok(CaseDraft {
        title: checks::text("title", &body.title, checks::MAX_TITLE, false)?,
        description: checks::text("description", &body.description, MAX_TEXT, true)?,
        severity: body.severity.map(Into::into).unwrap_or(Level::Medium),
        tlp,
        pap: body.pap.map(Into::into).unwrap_or(Tlp::Amber),
        tags: checks::tags(body.tags)?,
        assignee,
    })
}

/// 403 for a TLP above the caller's ceiling: they could not read the case they made.
pub(super) fn within_ceiling(caller: &Caller, tlp: Tlp) -> Result<(), ApiError> {
    if tlp > caller.tlp() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "TLP {tlp} is above your ceiling {}: you could no longer read the case",
                caller.tlp()
            ),
        ));
    }
    Ok(())
}

/// The draft of the case an alert is promoted to: its rule's title on its host, its
/// level, TLP and PAP amber (callers lower the TLP to their own ceiling).
pub(super) fn promoted_draft(alert: &AlertRecord, title: Option<String>) -> CaseDraft {
    let alert = &alert.alert;
    let title = title.unwrap_or_else(|| match &alert.host {
        Some(host) => format!("{} on {host}", alert.rule.title),
        None => alert.rule.title.clone(),
    });
    CaseDraft {
        title,
        description: String::new(),
        severity: alert.rule.level,
        tlp: Tlp::Amber,
        pap: Tlp::Amber,
        tags: alert.rule.tags.clone(),
        assignee: None,
    }
}

/// Promote an alert to a case of its own (`triage`): the alert moves to the new case
/// (leaving the case the pipeline grouped it in), its status becomes `promoted`, its
/// observables are copied to the case.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/promote",
    tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    request_body(content = Option<PromoteBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new case", body = Case),
        (status = 400, description = "The JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No alert has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The title is blank or too long", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn promote_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<PromoteBody>>,
) -> Result<(StatusCode, Json<Case>), ApiError> {
    caller.require(Permission::Triage)?;
    let title = match body.and_then(|ApiJson(body)| body.title) {
        Some(title) => Some(checks::text("title", &title, checks::MAX_TITLE, false)?),
        None => None,
    };
    let alert = visible_alert(&caller, &state, &id).await?;
    let mut draft = promoted_draft(&alert, title);
    draft.tlp = draft.tlp.min(caller.tlp());
    let case = state
        .store
        .promote_alert(&id, &draft, caller.name())
        .await?;
    tracing::info!(alert_id = %id, case_id = case.id, by = %caller.name(), "alert promoted");
    Ok((StatusCode::CREATED, Json(case.into())))
}

/// Merge an alert into an existing case (`triage`): the alert moves there, the case's
/// span widens and its severity rises, the alert's observables are copied, its status
/// becomes `merged`. Merging into the case it is in already changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/merge",
    tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    request_body(content = MergeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The case the alert is now in", body = Case),
        (status = 400, description = "The JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No alert or case has this id (visible to the caller)", body = ErrorBody),
        (status = 409, description = "The case is closed", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "case_id is missing or not a number", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn merge_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MergeBody>,
) -> Result<Json<Case>, ApiError> {
    caller.require(Permission::Triage)?;
    visible_alert(&caller, &state, &id).await?;
    caller.visible(state.store.get_case(body.case_id).await?, body.case_id)?;
    let case = state
        .store
        .merge_alert(&id, body.case_id, caller.name())
        .await?;
    tracing::info!(alert_id = %id, case_id = case.id, by = %caller.name(), "alert merged");
    Ok(Json(case.into()))
}
