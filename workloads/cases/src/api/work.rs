//! The work on a case: its tasks (`/api/v1/cases/{id}/tasks`), its comments and the
//! timeline of everything that happened to it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::store::{NewTask, TaskUpdate};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::alerts::required_text;
use super::caller::Caller;
use super::checks;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::model::{CommentBody, Task, TaskBody, TaskUpdateBody, TimelineEntry, TimelineQuery};
use super::{page, ApiState};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(update_task))
        .routes(routes!(timeline))
        .routes(routes!(add_comment))
}

/// List a case's tasks by id.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/tasks",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    responses(
        (status = 200, description = "The case's tasks", body = Vec<Task>),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_tasks(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<Task>>, ApiError> {
    caller.require(Permission::Read)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let tasks = state.store.list_tasks(id).await?;
    Ok(Json(tasks.into_iter().map(Into::into).collect()))
}

/// Add an `open` task to a case (`triage`).
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/tasks",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = TaskBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new task", body = Task),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn create_task(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<TaskBody>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    caller.require(Permission::Triage)?;
    let new = NewTask {
        title: checks::text("title", &body.title, checks::MAX_TITLE, false)?,
        assignee: match body.assignee {
            Some(name) => checks::assignee(&name)?,
            None => None,
        },
    };
    caller.visible(state.store.get_case(id).await?, id)?;
    let task = state.store.create_task(id, &new, caller.name()).await?;
    tracing::info!(case_id = id, task_id = task.id, by = %caller.name(), "task created");
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Change a task's title, assignee or status (`open`, `in_progress`, `done`) (`triage`).
#[utoipa::path(
    patch,
    path = "/api/v1/cases/{id}/tasks/{task_id}",
    tag = "cases",
    params(
        ("id" = i64, Path, description = "The case id"),
        ("task_id" = i64, Path, description = "The task id"),
    ),
    request_body(content = TaskUpdateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The task as updated", body = Task),
        (status = 400, description = "An id or the JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No such case (visible to the caller) or task of it", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is unknown or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn update_task(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath((id, task_id)): ApiPath<(i64, i64)>,
    ApiJson(body): ApiJson<TaskUpdateBody>,
) -> Result<Json<Task>, ApiError> {
    caller.require(Permission::Triage)?;
    let update = TaskUpdate {
        title: match body.title {
            Some(title) => Some(checks::text("title", &title, checks::MAX_TITLE, false)?),
            None => None,
        },
        assignee: match body.assignee {
            Some(name) => Some(checks::assignee(&name)?),
            None => None,
        },
        status: body.status.map(Into::into),
    };
    caller.visible(state.store.get_case(id).await?, id)?;
    let task = state
        .store
        .update_task(id, task_id, &update, caller.name())
        .await?;
    tracing::info!(case_id = id, task_id, by = %caller.name(), "task updated");
    Ok(Json(task.into()))
}

/// A case's timeline, oldest first: its comments and the events the store recorded
/// (creation, field changes, alerts attached and merged, observables, tasks, response
/// actions decided and executed, closing).
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/timeline",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id"), TimelineQuery),
    responses(
        (status = 200, description = "One page of the timeline", body = Vec<TimelineEntry>),
        (status = 400, description = "The id or a query parameter is invalid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn timeline(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<Vec<TimelineEntry>>, ApiError> {
    caller.require(Permission::Read)?;
    let (limit, _) = page(query.limit, None)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let entries = state
        .store
        .timeline(id, query.after.unwrap_or(0), limit.into())
        .await?;
    Ok(Json(entries.into_iter().map(Into::into).collect()))
}

/// Comment on a case (`triage`); the comment joins the timeline.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/comments",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = CommentBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The comment's timeline entry", body = TimelineEntry),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "The text is missing, blank or too long", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn add_comment(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<(StatusCode, Json<TimelineEntry>), ApiError> {
    caller.require(Permission::Triage)?;
    let text = required_text("text", &body.text)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let entry = state.store.add_comment(id, &text, caller.name()).await?;
    tracing::info!(case_id = id, by = %caller.name(), "case commented");
    Ok((StatusCode::CREATED, Json(entry.into())))
}
