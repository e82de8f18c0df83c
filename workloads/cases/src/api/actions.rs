//! `/api/v1/actions`: response actions, and the approval or rejection of a pending one.
//! An approval is announced on the case-events topic so that the respond stage runs the
//! action.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::store::{ActionFilter, Decision};
use kastell_core::{CaseEvent, Message, Topic};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::model::{Action, ActionQuery, ApproveBody, Page, RejectBody};
use super::{page, ApiState};
use kastell_core::error_chain;

/// The header naming the person who decides; trusted as sent until the API
/// authenticates its callers.
pub const USER_HEADER: &str = "x-kastell-user";

/// Who decides when [`USER_HEADER`] is absent.
pub const ANONYMOUS: &str = "anonymous";

/// The longest user name, reason or comment accepted, in characters.
pub const MAX_TEXT: usize = 4096;

const MAX_USER: usize = 256;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_actions))
        .routes(routes!(get_action))
        .routes(routes!(approve_action))
        .routes(routes!(reject_action))
}

/// The person a request acts for, from [`USER_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(USER_HEADER) else {
            return Ok(Actor(ANONYMOUS.to_owned()));
        };
        let invalid = |why: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("{USER_HEADER} {why}"),
            )
        };
        let name = value
            .to_str()
            .map_err(|_| invalid("must be visible ASCII text"))?
            .trim();
        if name.is_empty() {
            return Err(invalid("must not be blank"));
        }
        if name.chars().count() > MAX_USER {
            return Err(invalid(&format!("must be at most {MAX_USER} characters")));
        }
        Ok(Actor(name.to_owned()))
    }
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
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_actions(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ActionQuery>,
) -> Result<Json<Page<Action>>, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = ActionFilter {
        status: query.status.map(Into::into),
        case_id: query.case,
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
        (status = 404, description = "No action has this id", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn get_action(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Action>, ApiError> {
    match state.store.get_action(id).await? {
        Some(action) => Ok(Json(action.into())),
        None => Err(ApiError::not_found("action", id)),
    }
}

/// Approve a pending action; the respond stage then runs it.
#[utoipa::path(
    post,
    path = "/api/v1/actions/{id}/approve",
    tag = "actions",
    params(
        ("id" = i64, Path, description = "The action id"),
        ("X-Kastell-User" = Option<String>, Header,
            description = "Who approves; `anonymous` when absent"),
    ),
    request_body(content = Option<ApproveBody>, description = "Optional note",
        content_type = "application/json"),
    responses(
        (status = 200, description = "The approved action", body = Action),
        (status = 400, description = "The id, header or JSON is malformed", body = ErrorBody),
        (status = 404, description = "No action has this id", body = ErrorBody),
        (status = 409, description = "The action is not pending", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The body is not an approval", body = ErrorBody),
        (status = 503, description = "The store failed, or the approval is stored but the \
            respond stage could not be told", body = ErrorBody),
    )
)]
async fn approve_action(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    Actor(actor): Actor,
    body: Option<ApiJson<ApproveBody>>,
) -> Result<Json<Action>, ApiError> {
    let comment = body
        .and_then(|ApiJson(body)| body.comment)
        .map(|comment| comment.trim().to_owned())
        .unwrap_or_default();
    if comment.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_body(format!(
            "comment must be at most {MAX_TEXT} characters"
        )));
    }

    let action = state
        .store
        .decide_action(id, &Decision::Approve, &actor)
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
        ("X-Kastell-User" = Option<String>, Header,
            description = "Who rejects; `anonymous` when absent"),
    ),
    request_body(content = RejectBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The rejected action", body = Action),
        (status = 400, description = "The id, header or JSON is malformed", body = ErrorBody),
        (status = 404, description = "No action has this id", body = ErrorBody),
        (status = 409, description = "The action is not pending", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The reason is missing or blank", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn reject_action(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    Actor(actor): Actor,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<Action>, ApiError> {
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
    let action = state.store.decide_action(id, &decision, &actor).await?;
    tracing::info!(
        action_id = id,
        playbook = %action.playbook,
        step = %action.step,
        decided_by = %actor,
        reason = %reason,
        "action rejected"
    );
    Ok(Json(action.into()))
}
