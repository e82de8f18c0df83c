//! `POST /api/v1/cases/{id}/run-playbook`: a person asks for a playbook to run on a case,
//! optionally on one of its observables. The request is published on the case-events
//! topic; the respond stage runs the playbook when it lists `manual` among its trigger
//! events, with every step's approval policy as usual. Given the loaded playbooks
//! ([`super::ApiState::with_playbooks`]) the API refuses at once a run that would start
//! nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::response::{ManualRunRefusal, PlaybookCatalog};
use kastell_core::{CaseEvent, Message, ObservableRef, RunPlaybook, Topic};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::ApiState;
use crate::auth::Permission;
use kastell_core::error_chain;

/// The longest playbook key, observable value or request id accepted, in characters.
const MAX_FIELD: usize = 1024;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(run_playbook))
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunPlaybookBody {
    /// `namespace/name` of the Playbook.
    pub playbook: String,
    /// The observable to run it on (`{"type": "ip", "value": "203.0.113.7"}`).
    #[serde(default)]
    pub observable: Option<ObservableBody>,
    /// Repeats of one request with the same id run the playbook once; a new id is made
    /// when none is given.
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObservableBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// The accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunPlaybookAccepted {
    pub case_id: i64,
    pub playbook: String,
    pub request_id: String,
}

/// Ask the respond stage to run a playbook on a case.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/run-playbook",
    tag = "actions",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = RunPlaybookBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The request is on its way to the respond stage; its \
            actions appear on the case", body = RunPlaybookAccepted),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the respond permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller), or no \
            playbook of this name is loaded (`playbook_not_found`)", body = ErrorBody),
        (status = 422, description = "A field is missing, blank or too long; or the playbook \
            does not list `manual` among its trigger events (`playbook_not_manual`), or needs \
            an observable of another type (`observable_type_not_accepted`)", body = ErrorBody),
        (status = 503, description = "The store failed or the respond stage could not be \
            told", body = ErrorBody),
    )
)]
async fn run_playbook(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<RunPlaybookBody>,
) -> Result<(StatusCode, Json<RunPlaybookAccepted>), ApiError> {
    caller.require(Permission::Respond)?;
    let playbook = checked("playbook", &body.playbook)?;
    let observable = match &body.observable {
        Some(o) => Some(ObservableRef {
            kind: checked("observable.type", &o.kind)?.to_lowercase(),
            value: checked("observable.value", &o.value)?.to_owned(),
        }),
        None => None,
    };
    let request_id = match &body.request_id {
        Some(id) => checked("request_id", id)?.to_owned(),
        None => new_request_id()?,
    };
    caller.visible(state.store.get_case(id).await?, id)?;
    if let Some(catalog) = &state.playbooks {
        check_manual(catalog, playbook, observable.as_ref())?;
    }

    let run = RunPlaybook {
        case_id: id,
        playbook: playbook.to_owned(),
        observable,
        requested_by: caller.name().to_owned(),
        request_id: request_id.clone(),
    };
    let published = match Message::json(&CaseEvent::RunPlaybook(run)) {
        Ok(message) => {
            let message = message.with_id(format!("run-playbook-{request_id}"));
            state.bus.publish(Topic::CaseEvents, message).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = published {
        tracing::error!(case_id = id, playbook, reason = %error_chain(&error), "run request not published");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!("the respond stage could not be told to run {playbook}: {error}"),
        ));
    }
    tracing::info!(case_id = id, playbook, request_id, requested_by = %caller.name(), "playbook run requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(RunPlaybookAccepted {
            case_id: id,
            playbook: playbook.to_owned(),
            request_id,
        }),
    ))
}

/// 404 for a playbook that is not loaded, 422 for one the run would not start.
fn check_manual(
    catalog: &PlaybookCatalog,
    playbook: &str,
    observable: Option<&ObservableRef>,
) -> Result<(), ApiError> {
    let refusal = match catalog.check_manual(playbook, observable) {
        Ok(()) => return Ok(()),
        Err(refusal) => refusal,
    };
    let (status, code) = match refusal {
        ManualRunRefusal::Unknown { .. } => (StatusCode::NOT_FOUND, "playbook_not_found"),
        ManualRunRefusal::NotManual { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "playbook_not_manual")
        }
        ManualRunRefusal::ObservableType { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "observable_type_not_accepted",
        ),
    };
    tracing::info!(playbook, reason = %refusal, "playbook run refused");
    Err(ApiError::new(status, code, refusal.to_string()))
}

fn checked<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid_body(format!("{field} must not be blank")));
    }
    if value.chars().count() > MAX_FIELD {
        return Err(ApiError::invalid_body(format!(
            "{field} must be at most {MAX_FIELD} characters"
        )));
    }
    Ok(value)
}

fn new_request_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "random_unavailable",
            format!("no request id could be made: {e}"),
        )
    })?;
    Ok(hex::encode(bytes))
}
