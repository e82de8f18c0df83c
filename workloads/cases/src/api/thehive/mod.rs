//! TheHive 5 compatibility: the `/api/v1` endpoints integrations use (alert create,
//! promote and merge; case create, get and update; observables of cases and alerts; the
//! Query API for alerts and cases), with TheHive's singular paths, field names,
//! epoch-millisecond dates and `{"type", "message"}` errors, over Kastell's own store.
//!
//! The handlers answer Kastell's [`ApiError`]; a layer on these routes only rewrites
//! error bodies into TheHive's shape, so checks, roles and the TLP ceiling are the same
//! code as the Kastell endpoints'.

pub mod model;
pub mod query;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use kastell_core::store::{
    AlertFilter, CaseDraft, CaseFilter, CaseRecord, CaseUpdate, NewObservable, NewTask,
    ObservableOwner, TaskUpdate,
};
use kastell_core::{Alert, Event, RuleRef, Tlp};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::model::{
    InputAlert, InputCase, InputComment, InputObservable, InputTask, InputUpdateCase, QueryBody,
    StatusChange, TheHiveError,
};
use super::alerts::visible_alert;
use super::caller::Caller;
use super::checks;
use super::error::{ApiError, ApiJson, ApiPath};
use super::workflow::{promoted_draft, within_ceiling};
use super::{ApiState, MAX_TEXT};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_alert))
        .routes(routes!(get_alert))
        .routes(routes!(promote_alert))
        .routes(routes!(merge_alert))
        .routes(routes!(create_case))
        .routes(routes!(get_case, update_case))
        .routes(routes!(add_case_observable))
        .routes(routes!(add_alert_observable))
        .routes(routes!(add_case_comment))
        .routes(routes!(add_case_task))
        .routes(routes!(run_query))
        .layer(axum::middleware::map_response(thehive_errors))
}

/// TheHive's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "AuthenticationError",
        StatusCode::FORBIDDEN => "AuthorizationError",
        StatusCode::NOT_FOUND => "NotFoundError",
        StatusCode::CONFLICT => "CreateError",
        status if status.is_server_error() => "InternalError",
        _ => "BadRequest",
    }
}

/// Rewrites the API's error bodies (`{"error", "message"}`) as TheHive's.
async fn thehive_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are the API's own small JSON objects.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let error = TheHiveError {
        kind: error_type(status).to_owned(),
        message,
    };
    let body = serde_json::to_vec(&error).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Who created a case: the actor of its `created` timeline line (the pipeline for
/// cases older than the timeline).
async fn created_by(state: &ApiState, case: &CaseRecord) -> Result<String, ApiError> {
    let first = state.store.timeline(case.id, 0, 1).await?;
    Ok(first
        .into_iter()
        .find(|entry| entry.kind == "created")
        .map(|entry| entry.actor)
        .unwrap_or_else(|| kastell_core::audit::SYSTEM_ACTOR.to_owned()))
}

async fn case_answer(state: &ApiState, case: &CaseRecord) -> Result<Value, ApiError> {
    Ok(model::case_json(case, &created_by(state, case).await?))
}

async fn alert_answer(state: &ApiState, id: &str) -> Result<Value, ApiError> {
    let record = state
        .store
        .get_alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert", id))?;
    let owner = ObservableOwner::Alert(id.to_owned());
    let count = state.store.list_observables(&owner).await?.len();
    Ok(model::alert_json(&record, count))
}

/// The visible case a TheHive id (`~42` or `42`) names.
async fn visible_case(
    caller: &Caller,
    state: &ApiState,
    raw: &str,
) -> Result<CaseRecord, ApiError> {
    let id = model::parse_case_ref(raw)?;
    caller.visible(state.store.get_case(id).await?, id)
}

/// The checked observables of a TheHive body: one per value.
fn observables(input: &InputObservable) -> Result<Vec<NewObservable>, ApiError> {
    let tags = checks::tags(input.tags.clone())?;
    input
        .values()?
        .into_iter()
        .map(|value| {
            let value = checks::text("data", &value, MAX_TEXT, false)?;
            let data_type = checks::observable_kind(&input.data_type)?;
            Ok(NewObservable {
                kind: model::observable_kind(&data_type, &value),
                value,
                ioc: input.ioc,
                sighted: input.sighted,
                tags: tags.clone(),
            })
        })
        .collect()
}

async fn add_observables(
    caller: &Caller,
    state: &ApiState,
    owner: ObservableOwner,
    input: &InputObservable,
) -> Result<Vec<Value>, ApiError> {
    let mut ids = Vec::new();
    for new in observables(input)? {
        let (observable, created) = state
            .store
            .add_observable(&owner, &new, caller.name())
            .await?;
        if let (true, ObservableOwner::Case(case_id)) = (created, &owner) {
            super::observables::announce_added(state, *case_id, &observable).await;
        }
        ids.push(observable.id);
    }
    // Read back for the enrichment (the `reports`).
    let all = state.store.list_observables(&owner).await?;
    Ok(all
        .iter()
        .filter(|o| ids.contains(&o.id))
        .map(model::observable_json)
        .collect())
}

/// Create an alert (TheHive `POST /api/v1/alert`, `triage`). `type`, `source` and
/// `sourceRef` name it: creating it again returns the stored alert (200) and adds any
/// new observables, so a retry is harmless.
#[utoipa::path(
    post,
    path = "/api/v1/alert",
    tag = "thehive",
    request_body(content = InputAlert, content_type = "application/json"),
    responses(
        (status = 201, description = "The new alert (TheHive's OutputAlert)", body = Object),
        (status = 200, description = "The alert of this type, source and sourceRef, created before", body = Object),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
    )
)]
async fn create_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(input): ApiJson<InputAlert>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::Triage)?;
    let alert = alert_from_input(&caller, &input)?;
    let checked: Vec<Vec<NewObservable>> = input
        .observables
        .iter()
        .map(observables)
        .collect::<Result<_, _>>()?;
    let created = state.store.insert_alert(&alert).await?;
    if !created {
        // The stored alert may sit in a case above this caller's ceiling by now.
        visible_alert(&caller, &state, &alert.id).await?;
    }
    let owner = ObservableOwner::Alert(alert.id.clone());
    for new in checked.iter().flatten() {
        state
            .store
            .add_observable(&owner, new, caller.name())
            .await?;
    }
    tracing::info!(alert_id = %alert.id, created, source = %input.source, by = %caller.name(), "thehive alert received");
    if !created {
        return Ok((StatusCode::OK, Json(alert_answer(&state, &alert.id).await?)));
    }
    // Just stored, so the record is known without reading it back: untriaged, in no
    // case. Only the observable count is read (event values and the body's observables,
    // merged).
    let id = alert.id.clone();
    let record = kastell_core::store::AlertRecord {
        id: id.clone(),
        case_id: None,
        status: "new".to_owned(),
        status_reason: None,
        triaged_by: None,
        triaged_at: None,
        alert,
    };
    let count = state
        .store
        .list_observables(&ObservableOwner::Alert(id))
        .await?
        .len();
    Ok((StatusCode::CREATED, Json(model::alert_json(&record, count))))
}

/// The Kastell alert a TheHive alert becomes: the triple's id, its title as the rule,
/// its TheHive fields kept on its one event.
fn alert_from_input(caller: &Caller, input: &InputAlert) -> Result<Alert, ApiError> {
    let kind = checks::text("type", &input.kind, 128, false)?;
    let source = checks::text("source", &input.source, 128, false)?;
    let source_ref = checks::text("sourceRef", &input.source_ref, 256, false)?;
    let title = checks::text("title", &input.title, checks::MAX_TITLE, false)?;
    let description = checks::text("description", &input.description, MAX_TEXT, true)?;
    let level = model::level("severity", input.severity.unwrap_or(2))?;
    let tlp = model::tlp("tlp", input.tlp.unwrap_or(Tlp::Amber.rank()))?;
    let pap = model::tlp("pap", input.pap.unwrap_or(Tlp::Amber.rank()))?;
    let now = Utc::now();
    let date = match input.date {
        Some(ms) => model::from_millis("date", ms)?,
        None => now,
    };
    let mut event = Event::new();
    event.set("@timestamp", json!(date.to_rfc3339()));
    event.set("event.kind", json!("alert"));
    event.set("event.provider", json!(source));
    event.set("event.dataset", json!(kind));
    event.set("message", json!(description));
    event.set(
        model::EVENT_KEY,
        json!({
            "type": kind,
            "source": source,
            "sourceRef": source_ref,
            "description": description,
            "tlp": tlp.rank(),
            "pap": pap.rank(),
            "externalLink": input.external_link,
            "createdBy": caller.name(),
        }),
    );
    let rule = RuleRef {
        id: format!("thehive:{source}:{kind}"),
        title,
        level,
        tags: checks::tags(input.tags.clone())?,
        ..RuleRef::default()
    };
    Ok(Alert {
        id: model::alert_id(&kind, &source, &source_ref),
        rule,
        timestamp: date,
        detected_at: now,
        sensor: Some(source),
        host: None,
        events: vec![event],
        group: Default::default(),
        intel: Vec::new(),
    })
}

/// Get an alert (TheHive `GET /api/v1/alert/{id}`).
#[utoipa::path(
    get,
    path = "/api/v1/alert/{id}",
    tag = "thehive",
    params(("id" = String, Path, description = "The alert id")),
    responses(
        (status = 200, description = "The alert (TheHive's OutputAlert)", body = Object),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 404, description = "No alert has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn get_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    visible_alert(&caller, &state, &id).await?;
    Ok(Json(alert_answer(&state, &id).await?))
}

/// Promote an alert to a case (TheHive `POST /api/v1/alert/{id}/case`, `triage`); the
/// optional body overrides the case's title, description, severity, tags, TLP and PAP.
#[utoipa::path(
    post,
    path = "/api/v1/alert/{id}/case",
    tag = "thehive",
    params(("id" = String, Path, description = "The alert id")),
    request_body(content = Option<InputCase>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new case (TheHive's OutputCase)", body = Object),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller may not do this", body = TheHiveError),
        (status = 404, description = "No alert has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn promote_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<InputCase>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::Triage)?;
    let input = body.map(|ApiJson(input)| input).unwrap_or_default();
    let alert = visible_alert(&caller, &state, &id).await?;
    let mut draft = promoted_draft(&alert, None);
    draft.tlp = draft.tlp.min(caller.tlp());
    if let Some(description) = alert
        .alert
        .events
        .first()
        .and_then(|e| e.get_str("thehive.description"))
    {
        draft.description = description.to_owned();
    }
    let draft = apply_input(&caller, draft, input)?;
    let case = state
        .store
        .promote_alert(&id, &draft, caller.name())
        .await?;
    tracing::info!(alert_id = %id, case_id = case.id, by = %caller.name(), "thehive alert promoted");
    Ok((StatusCode::CREATED, Json(case_answer(&state, &case).await?)))
}

/// The draft with a TheHive case body's fields applied and checked.
fn apply_input(
    caller: &Caller,
    mut draft: CaseDraft,
    input: InputCase,
) -> Result<CaseDraft, ApiError> {
    if let Some(title) = input.title {
        draft.title = checks::text("title", &title, checks::MAX_TITLE, false)?;
    }
    if let Some(description) = input.description {
        draft.description = checks::text("description", &description, MAX_TEXT, true)?;
    }
    if let Some(severity) = input.severity {
        draft.severity = model::level("severity", severity)?;
    }
    if let Some(tags) = input.tags {
        draft.tags = checks::tags(tags)?;
    }
    if let Some(tlp) = input.tlp {
        draft.tlp = model::tlp("tlp", tlp)?;
    }
    if let Some(pap) = input.pap {
        draft.pap = model::tlp("pap", pap)?;
    }
    if let Some(name) = input.assignee {
        draft.assignee = checks::assignee(&name)?;
    }
    if draft.assignee.is_some() {
        caller.require(Permission::Manage)?;
    }
    within_ceiling(caller, draft.tlp)?;
    Ok(draft)
}

/// Merge an alert into a case (TheHive `POST /api/v1/alert/{id}/merge/{caseId}`,
/// `triage`).
#[utoipa::path(
    post,
    path = "/api/v1/alert/{id}/merge/{case_id}",
    tag = "thehive",
    params(
        ("id" = String, Path, description = "The alert id"),
        ("case_id" = String, Path, description = "The case id (`~42` or `42`)"),
    ),
    responses(
        (status = 200, description = "The case (TheHive's OutputCase)", body = Object),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
        (status = 404, description = "No such alert or case (visible to the caller)", body = TheHiveError),
        (status = 409, description = "The case is closed", body = TheHiveError),
    )
)]
async fn merge_alert(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath((id, case_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Triage)?;
    visible_alert(&caller, &state, &id).await?;
    let case = visible_case(&caller, &state, &case_id).await?;
    let case = state.store.merge_alert(&id, case.id, caller.name()).await?;
    Ok(Json(case_answer(&state, &case).await?))
}

/// Create a case (TheHive `POST /api/v1/case`, `triage`; an assignee needs `manage`).
#[utoipa::path(
    post,
    path = "/api/v1/case",
    tag = "thehive",
    request_body(content = InputCase, content_type = "application/json"),
    responses(
        (status = 201, description = "The new case (TheHive's OutputCase)", body = Object),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller may not do this", body = TheHiveError),
    )
)]
async fn create_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(input): ApiJson<InputCase>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::Triage)?;
    if input.title.is_none() {
        return Err(ApiError::invalid_body("title is required"));
    }
    let draft = CaseDraft {
        title: String::new(),
        description: String::new(),
        severity: kastell_core::Level::Medium,
        tlp: Tlp::Amber.min(caller.tlp()),
        pap: Tlp::Amber,
        tags: Vec::new(),
        assignee: None,
    };
    let draft = apply_input(&caller, draft, input)?;
    let case = state.store.create_case(&draft, caller.name()).await?;
    Ok((StatusCode::CREATED, Json(case_answer(&state, &case).await?)))
}

/// Get a case (TheHive `GET /api/v1/case/{id}`).
#[utoipa::path(
    get,
    path = "/api/v1/case/{id}",
    tag = "thehive",
    params(("id" = String, Path, description = "The case id (`~42` or `42`)")),
    responses(
        (status = 200, description = "The case (TheHive's OutputCase)", body = Object),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 404, description = "No case has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn get_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let case = visible_case(&caller, &state, &id).await?;
    Ok(Json(case_answer(&state, &case).await?))
}

/// Update a case (TheHive `PATCH /api/v1/case/{id}`): the same permissions as
/// `PATCH /api/v1/cases/{id}`; a closing status (`TruePositive`, `FalsePositive`,
/// `Indeterminate`, `Other`, `Duplicated`) closes the case with `summary` (`manage`).
#[utoipa::path(
    patch,
    path = "/api/v1/case/{id}",
    tag = "thehive",
    params(("id" = String, Path, description = "The case id (`~42` or `42`)")),
    request_body(content = InputUpdateCase, content_type = "application/json"),
    responses(
        (status = 204, description = "Updated"),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller may not make this change", body = TheHiveError),
        (status = 404, description = "No case has this id (visible to the caller)", body = TheHiveError),
        (status = 409, description = "Closing a closed case", body = TheHiveError),
    )
)]
async fn update_case(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<InputUpdateCase>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Triage)?;
    let case = visible_case(&caller, &state, &id).await?;
    let text = |field: &str, value: Option<String>, max: usize, blank_ok: bool| {
        value
            .map(|v| checks::text(field, &v, max, blank_ok))
            .transpose()
    };
    let mut tags = input.tags.map(checks::tags).transpose()?;
    if input.add_tags.is_some() || input.remove_tags.is_some() {
        let mut next = tags.clone().unwrap_or_else(|| case.tags.clone());
        next.extend(checks::tags(input.add_tags.unwrap_or_default())?);
        let remove = input.remove_tags.unwrap_or_default();
        next.retain(|tag| !remove.contains(tag));
        tags = Some(checks::tags(next)?);
    }
    let change = input
        .status
        .as_deref()
        .map(model::status_change)
        .transpose()?;
    let mut update = CaseUpdate {
        title: text("title", input.title, checks::MAX_TITLE, false)?,
        description: text("description", input.description, MAX_TEXT, true)?,
        severity: input
            .severity
            .map(|s| model::level("severity", s))
            .transpose()?,
        tlp: input.tlp.map(|t| model::tlp("tlp", t)).transpose()?,
        pap: input.pap.map(|p| model::tlp("pap", p)).transpose()?,
        status: None,
        assignee: input.assignee.map(|a| checks::assignee(&a)).transpose()?,
        tags,
    };
    if let Some(StatusChange::Open(status)) = change {
        update.status = Some(status);
    }
    if update.tlp.is_some() || update.pap.is_some() || update.assignee.is_some() {
        caller.require(Permission::Manage)?;
    }
    if let Some(tlp) = update.tlp {
        within_ceiling(&caller, tlp)?;
    }
    let summary = text("summary", input.summary, MAX_TEXT, false)?;
    if let Some(StatusChange::Close(_)) = change {
        caller.require(Permission::Manage)?;
        if summary.is_none() {
            return Err(ApiError::invalid_body(
                "closing a case (a status other than New or InProgress) needs a summary",
            ));
        }
    }
    state
        .store
        .update_case(case.id, &update, caller.name())
        .await?;
    if let (Some(StatusChange::Close(resolution)), Some(summary)) = (change, summary) {
        state
            .store
            .close_case(case.id, resolution, &summary, caller.name())
            .await?;
    }
    tracing::info!(case_id = case.id, by = %caller.name(), "thehive case updated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Add observables to a case (TheHive `POST /api/v1/case/{id}/observable`, `triage`):
/// one per value of `data`; one the case has already is merged as in
/// `POST /api/v1/cases/{id}/observables`.
#[utoipa::path(
    post,
    path = "/api/v1/case/{id}/observable",
    tag = "thehive",
    params(("id" = String, Path, description = "The case id (`~42` or `42`)")),
    request_body(content = InputObservable, content_type = "application/json"),
    responses(
        (status = 201, description = "The observables (TheHive's OutputObservable list)", body = Vec<Object>),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
        (status = 404, description = "No case has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn add_case_observable(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<InputObservable>,
) -> Result<(StatusCode, Json<Vec<Value>>), ApiError> {
    caller.require(Permission::Triage)?;
    let case = visible_case(&caller, &state, &id).await?;
    let added = add_observables(&caller, &state, ObservableOwner::Case(case.id), &input).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Add observables to an alert (TheHive `POST /api/v1/alert/{id}/observable`,
/// `triage`); they are copied to the case the alert is promoted or merged into.
#[utoipa::path(
    post,
    path = "/api/v1/alert/{id}/observable",
    tag = "thehive",
    params(("id" = String, Path, description = "The alert id")),
    request_body(content = InputObservable, content_type = "application/json"),
    responses(
        (status = 201, description = "The observables (TheHive's OutputObservable list)", body = Vec<Object>),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
        (status = 404, description = "No alert has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn add_alert_observable(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<InputObservable>,
) -> Result<(StatusCode, Json<Vec<Value>>), ApiError> {
    caller.require(Permission::Triage)?;
    visible_alert(&caller, &state, &id).await?;
    let added = add_observables(&caller, &state, ObservableOwner::Alert(id), &input).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// TheHive's Query API (`POST /api/v1/query`) for `listCase` and `listAlert` (and a
/// case's observables or tasks, an alert's observables), with `filter`, `sort`, `page`
/// and `count`, over what is visible to the caller. A `page` before any filter or sort
/// is run by the store; any other query is evaluated over at most 10,000 cases or
/// alerts, and answered 422 when more are visible. A page holds at most 1,000 items.
#[utoipa::path(
    post,
    path = "/api/v1/query",
    tag = "thehive",
    request_body(content = QueryBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The matching cases or alerts (TheHive's shapes), or their count", body = Object),
        (status = 400, description = "The query is invalid or uses an unsupported operation", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 422, description = "A page over 1,000 items, or a query the store cannot page over more than 10,000 visible cases or alerts", body = TheHiveError),
    )
)]
async fn run_query(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let mut query = query::parse(&body.query)?;
    // A leading page over cases or alerts is the store's LIMIT/OFFSET; otherwise one row
    // past the scan bound tells that the bound was hit. A case's observables and tasks
    // are read whole (they are one case's) and paged in memory.
    let listing = matches!(query.source, query::Source::Cases | query::Source::Alerts);
    let pushed = if listing {
        query::take_leading_page(&mut query)
    } else {
        None
    };
    let (offset, limit) = match pushed {
        Some((offset, limit)) => (Some(offset as i64), limit as i64),
        None => (None, query::MAX_SCAN as i64 + 1),
    };
    let bounded = |read: usize, what: &str| {
        if read > query::MAX_SCAN {
            Err(query::too_wide(what))
        } else {
            Ok(())
        }
    };
    let mut items = Vec::new();
    match &query.source {
        query::Source::CaseObservables(id) => {
            let case = visible_case(&caller, &state, id).await?;
            let owner = ObservableOwner::Case(case.id);
            let observables = state.store.list_observables(&owner).await?;
            items.extend(observables.iter().map(model::observable_json));
        }
        query::Source::CaseTasks(id) => {
            let case = visible_case(&caller, &state, id).await?;
            let tasks = state.store.list_tasks(case.id).await?;
            items.extend(tasks.iter().map(model::task_json));
        }
        query::Source::AlertObservables(id) => {
            visible_alert(&caller, &state, id).await?;
            let owner = ObservableOwner::Alert(id.clone());
            let observables = state.store.list_observables(&owner).await?;
            items.extend(observables.iter().map(model::observable_json));
        }
        query::Source::Cases => {
            let filter = CaseFilter {
                max_tlp: Some(caller.tlp()),
                limit: Some(limit),
                offset,
                ..CaseFilter::default()
            };
            let cases = state.store.list_cases(&filter).await?;
            bounded(cases.len(), "cases")?;
            for case in cases {
                items.push(case_answer(&state, &case).await?);
            }
        }
        query::Source::Alerts => {
            let filter = AlertFilter {
                max_tlp: Some(caller.tlp()),
                limit: Some(limit),
                offset,
                ..AlertFilter::default()
            };
            let alerts = state.store.list_alerts(&filter).await?;
            bounded(alerts.len(), "alerts")?;
            for record in alerts {
                let owner = ObservableOwner::Alert(record.id.clone());
                let count = state.store.list_observables(&owner).await?.len();
                items.push(model::alert_json(&record, count));
            }
        }
    }
    if !body.exclude_fields.is_empty() {
        for item in &mut items {
            if let Some(fields) = item.as_object_mut() {
                for field in &body.exclude_fields {
                    fields.remove(field);
                }
            }
        }
    }
    Ok(Json(query::run(&query, items)))
}

/// Comment on a case (TheHive `POST /api/v1/case/{id}/comment`, `triage`): the comment
/// joins the case's timeline.
#[utoipa::path(
    post,
    path = "/api/v1/case/{id}/comment",
    tag = "thehive",
    params(("id" = String, Path, description = "The case id (`~42` or `42`)")),
    request_body(content = InputComment, content_type = "application/json"),
    responses(
        (status = 201, description = "The comment (TheHive's OutputComment)", body = Object),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
        (status = 404, description = "No case has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn add_case_comment(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<InputComment>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::Triage)?;
    let message = checks::text("message", &input.message, MAX_TEXT, false)?;
    let case = visible_case(&caller, &state, &id).await?;
    let entry = state
        .store
        .add_comment(case.id, &message, caller.name())
        .await?;
    Ok((StatusCode::CREATED, Json(model::comment_json(&entry))))
}

/// Add a task to a case (TheHive `POST /api/v1/case/{id}/task`, `triage`): `title`,
/// `assignee` and `status` (`Waiting`, `InProgress`, `Completed`) are kept.
#[utoipa::path(
    post,
    path = "/api/v1/case/{id}/task",
    tag = "thehive",
    params(("id" = String, Path, description = "The case id (`~42` or `42`)")),
    request_body(content = InputTask, content_type = "application/json"),
    responses(
        (status = 201, description = "The task (TheHive's OutputTask)", body = Object),
        (status = 400, description = "The body is invalid", body = TheHiveError),
        (status = 401, description = "No valid credentials", body = TheHiveError),
        (status = 403, description = "The caller's role lacks the triage permission", body = TheHiveError),
        (status = 404, description = "No case has this id (visible to the caller)", body = TheHiveError),
    )
)]
async fn add_case_task(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<InputTask>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Permission::Triage)?;
    let new = NewTask {
        title: checks::text("title", &input.title, checks::MAX_TITLE, false)?,
        assignee: input
            .assignee
            .map(|a| checks::assignee(&a))
            .transpose()?
            .flatten(),
    };
    let status = input
        .status
        .as_deref()
        .map(model::task_status)
        .transpose()?;
    let case = visible_case(&caller, &state, &id).await?;
    let mut task = state
        .store
        .create_task(case.id, &new, caller.name())
        .await?;
    if let Some(status) = status.filter(|s| *s != task.status) {
        let update = TaskUpdate {
            status: Some(status),
            ..TaskUpdate::default()
        };
        task = state
            .store
            .update_task(case.id, task.id, &update, caller.name())
            .await?;
    }
    Ok((StatusCode::CREATED, Json(model::task_json(&task))))
}
