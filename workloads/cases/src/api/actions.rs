//! `/api/v1/actions`: response actions, the approval or rejection of a pending one, and
//! the release of a containment. An approval (and a release, which is recorded as an
//! approved action of its own) is announced on the case-events topic so that the respond
//! stage runs it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::store::{ActionFilter, ActionRecord, ActionStatus, Decision, NewAction};
use kastell_core::{CaseEvent, Message, Topic};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::model::{Action, ActionQuery, ApproveBody, Page, RejectBody};
use super::{page, ApiState};
use crate::auth::Permission;
use kastell_core::error_chain;

/// The longest reason or comment accepted, in characters.
pub const MAX_TEXT: usize = 4096;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_actions))
        .routes(routes!(get_action))
        .routes(routes!(approve_action))
        .routes(routes!(reject_action))
        .routes(routes!(release_action))
}

/// List response actions, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/actions",
    tag = "actions",
    params(ActionQuery),
    responses(
        (status = 200, description = "One page of actions", body = Page<Action>),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_actions(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> Result<Json<Page<Action>>, ApiError> {
    caller.require(Permission::Read)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = ActionFilter {
        status: query.status.map(Into::into),
        case_id: query.case,
        max_tlp: Some(caller.tlp()),
    };
    // The store lists actions unpaged; a case has a handful, so paging here is cheap.
    let items = state.store.list_actions(&filter).await?;
    Ok(Json(Page {
        items: items
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(Action::from)
            .collect(),
        limit,
        offset,
    }))
}

/// Get one response action.
#[utoipa::path(
    get,
    path = "/api/v1/actions/{id}",
    tag = "actions",
    params(("id" = i64, Path, description = "The action id")),
    responses(
        (status = 200, description = "The action", body = Action),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No action has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn get_action(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Action>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(visible_action(&caller, &state, id).await?.into()))
}

/// 403 when the action's playbook does not let the caller's role decide on it, 409 when
/// its approval window has passed (the terms the respond stage wrote on the action).
fn check_terms(
    caller: &Caller,
    action: &kastell_core::store::ActionRecord,
) -> Result<(), ApiError> {
    use kastell_core::approval::{ApprovalRefusal, ApprovalTerms};
    match ApprovalTerms::of(action).allow(caller.0.role.as_str(), chrono::Utc::now()) {
        Ok(()) => Ok(()),
        Err(refusal @ ApprovalRefusal::Role { .. }) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_not_allowed",
            refusal.to_string(),
        )),
        Err(refusal @ ApprovalRefusal::Expired { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "approval_expired",
            refusal.to_string(),
        )),
    }
}

/// The action, or 404 when it does not exist or its case is above the caller's TLP.
async fn visible_action(
    caller: &Caller,
    state: &ApiState,
    id: i64,
) -> Result<kastell_core::store::ActionRecord, ApiError> {
    let Some(action) = state.store.get_action(id).await? else {
        return Err(ApiError::not_found("action", id));
    };
    let case = state.store.get_case(action.case_id).await?;
    caller
        .visible(case, action.case_id)
        .map_err(|_| ApiError::not_found("action", id))?;
    Ok(action)
}

/// Approve a pending action; the respond stage then runs it.
#[utoipa::path(
    post,
    path = "/api/v1/actions/{id}/approve",
    tag = "actions",
    params(
        ("id" = i64, Path, description = "The action id"),
    ),
    request_body(content = Option<ApproveBody>, description = "Optional note",
        content_type = "application/json"),
    responses(
        (status = 200, description = "The approved action", body = Action),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the respond permission, or the \
            action's playbook does not let this role decide on it", body = ErrorBody),
        (status = 404, description = "No action has this id (visible to the caller)", body = ErrorBody),
        (status = 409, description = "The action is not pending, or its approval expired", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The body is not an approval", body = ErrorBody),
        (status = 503, description = "The store failed, or the approval is stored but the \
            respond stage could not be told", body = ErrorBody),
    )
)]
async fn approve_action(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    body: Option<ApiJson<ApproveBody>>,
) -> Result<Json<Action>, ApiError> {
    caller.require(Permission::Respond)?;
    let actor = caller.name();
    let comment = body
        .and_then(|ApiJson(body)| body.comment)
        .map(|comment| comment.trim().to_owned())
        .unwrap_or_default();
    if comment.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_body(format!(
            "comment must be at most {MAX_TEXT} characters"
        )));
    }

    check_terms(&caller, &visible_action(&caller, &state, id).await?)?;
    let action = state
        .store
        .decide_action(id, &Decision::Approve, actor)
        .await?;
    tracing::info!(
        action_id = id,
        playbook = %action.playbook,
        step = %action.step,
        decided_by = %actor,
        comment = %comment,
        "action approved"
    );

    let event = CaseEvent::ActionApproved { action_id: id };
    let published = match Message::json(&event) {
        Ok(message) => {
            let message = message.with_id(format!("action-approved-{id}"));
            state.bus.publish(Topic::CaseEvents, message).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = published {
        tracing::error!(action_id = id, reason = %error_chain(&error), "approval not published");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!(
                "action {id} is approved, but the respond stage could not be told to run it: \
                 {error}"
            ),
        ));
    }
    Ok(Json(action.into()))
}

/// Reject a pending action with a reason; it will not run.
#[utoipa::path(
    post,
    path = "/api/v1/actions/{id}/reject",
    tag = "actions",
    params(
        ("id" = i64, Path, description = "The action id"),
    ),
    request_body(content = RejectBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The rejected action", body = Action),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the respond permission, or the \
            action's playbook does not let this role decide on it", body = ErrorBody),
        (status = 404, description = "No action has this id (visible to the caller)", body = ErrorBody),
        (status = 409, description = "The action is not pending, or its approval expired", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The reason is missing or blank", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn reject_action(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<Action>, ApiError> {
    caller.require(Permission::Respond)?;
    let actor = caller.name();
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid_body("reason must not be blank"));
    }
    if reason.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_body(format!(
            "reason must be at most {MAX_TEXT} characters"
        )));
    }
    let decision = Decision::Reject {
        reason: reason.to_owned(),
    };
    check_terms(&caller, &visible_action(&caller, &state, id).await?)?;
    let action = state.store.decide_action(id, &decision, actor).await?;
    tracing::info!(
        action_id = id,
        playbook = %action.playbook,
        step = %action.step,
        decided_by = %actor,
        reason = %reason,
        "action rejected"
    );
    // The rejection is stored; the respond stage only counts it, so a lost message
    // changes nothing but a metric.
    let event = CaseEvent::ActionRejected { action_id: id };
    if let Ok(message) = Message::json(&event) {
        let message = message.with_id(format!("action-rejected-{id}"));
        if let Err(error) = state.bus.publish(Topic::CaseEvents, message).await {
            tracing::warn!(action_id = id, reason = %error_chain(&error), "rejection not published");
        }
    }
    Ok(Json(action.into()))
}

/// Release a containment: run the release recorded beside a succeeded action
/// (`result.release`: a quarantined pod unlabelled, a Wazuh block deleted). The release
/// is recorded as an action of its own (alert id `release:<id>`), approved by the caller
/// and run by the respond stage; asking again returns that action instead of releasing
/// twice.
#[utoipa::path(
    post,
    path = "/api/v1/actions/{id}/release",
    tag = "actions",
    params(("id" = i64, Path, description = "The id of the containing action")),
    request_body(content = Option<ApproveBody>, description = "Optional note",
        content_type = "application/json"),
    responses(
        (status = 202, description = "The release action, approved and on its way to the \
            respond stage", body = Action),
        (status = 200, description = "The release action recorded by an earlier request", body = Action),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the respond permission, or the \
            action's playbook does not let this role decide on it", body = ErrorBody),
        (status = 404, description = "No action has this id (visible to the caller)", body = ErrorBody),
        (status = 409, description = "The action has nothing to release: it did not succeed, \
            was a dry run, contains nothing, or is itself a release (`nothing_to_release`)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The store failed, or the release is recorded but the \
            respond stage could not be told", body = ErrorBody),
    )
)]
async fn release_action(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    body: Option<ApiJson<ApproveBody>>,
) -> Result<(StatusCode, Json<Action>), ApiError> {
    caller.require(Permission::Respond)?;
    let actor = caller.name();
    let comment = body
        .and_then(|ApiJson(body)| body.comment)
        .map(|comment| comment.trim().to_owned())
        .unwrap_or_default();
    if comment.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_body(format!(
            "comment must be at most {MAX_TEXT} characters"
        )));
    }
    let contained = visible_action(&caller, &state, id).await?;
    let release = release_of(&contained).map_err(|reason| {
        ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_release",
            format!("action {id} {reason}"),
        )
    })?;
    // The roles the playbook lets decide on the step decide on its release too; the
    // approval window bounded the containment, not how long it may last.
    let mut terms = kastell_core::approval::ApprovalTerms::of(&contained);
    terms.expires_at = None;
    if let Err(refusal) = terms.allow(caller.0.role.as_str(), chrono::Utc::now()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_not_allowed",
            refusal.to_string(),
        ));
    }

    let mut params = serde_json::json!({
        "release_of": id,
        "release": release,
        "dry_run": false,
        "retries": 0,
    });
    for key in ["config", "timeout_seconds", "backoff_seconds"] {
        if let Some(value) = contained.params.get(key) {
            params[key] = value.clone();
        }
    }
    let new = NewAction {
        case_id: contained.case_id,
        alert_id: format!("release:{id}"),
        playbook: contained.playbook.clone(),
        step: contained.step.clone(),
        step_type: contained.step_type.clone(),
        // Recorded pending and approved at once, so the audit log and the timeline name
        // the person who asked for the release.
        approval_required: true,
        params,
    };
    let (mut action, created) = state.store.create_action(&new).await?;
    if action.status == ActionStatus::Pending {
        action = state
            .store
            .decide_action(action.id, &Decision::Approve, actor)
            .await?;
    }
    tracing::info!(
        action_id = action.id,
        release_of = id,
        playbook = %action.playbook,
        step = %action.step,
        requested_by = %actor,
        comment = %comment,
        created,
        "containment release requested"
    );
    // Not yet run (this request, or an earlier one whose announcement failed): tell the
    // respond stage; it runs an approved action once, however often it is told.
    if action.status == ActionStatus::Approved {
        announce_approval(&state, action.id).await?;
    }
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(action.into())))
}

/// The release recorded on a succeeded containment, or why there is none.
fn release_of(action: &ActionRecord) -> Result<serde_json::Value, &'static str> {
    if action.params.get("release_of").is_some() {
        return Err("is itself a release");
    }
    if action.status != ActionStatus::Succeeded {
        return Err("did not succeed, so it contains nothing");
    }
    let result = action.result.as_ref();
    if result
        .and_then(|r| r.get("dry_run"))
        .and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        return Err("was a dry run, so it contains nothing");
    }
    result
        .and_then(|r| r.get("release"))
        .filter(|r| !r.is_null())
        .cloned()
        .ok_or("has no release: its step contains nothing, or declares no undo request")
}

/// Publishes `action_approved` for the respond stage.
async fn announce_approval(state: &ApiState, id: i64) -> Result<(), ApiError> {
    let event = CaseEvent::ActionApproved { action_id: id };
    let published = match Message::json(&event) {
        Ok(message) => {
            let message = message.with_id(format!("action-approved-{id}"));
            state.bus.publish(Topic::CaseEvents, message).await
        }
        Err(error) => Err(error),
    };
    published.map_err(|error| {
        tracing::error!(action_id = id, reason = %error_chain(&error), "approval not published");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!(
                "action {id} is approved, but the respond stage could not be told to run it: \
                 {error}"
            ),
        )
    })
}
