//! `/api/v1/cases/{id}/observables`: the values a case is about, each with the intel
//! matches its alerts carry on it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kastell_core::store::{NewObservable, ObservableOwner};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::Caller;
use super::checks;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::model::{Observable, ObservableBody};
use super::{ApiState, MAX_TEXT};
use crate::auth::Permission;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_observables, add_observable))
}

/// List a case's observables by id, each with its enrichment: the intel matches the
/// case's alerts carry on the same type and value.
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/observables",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    responses(
        (status = 200, description = "The case's observables", body = Vec<Observable>),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn list_observables(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<Observable>>, ApiError> {
    caller.require(Permission::Read)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let observables = state
        .store
        .list_observables(&ObservableOwner::Case(id))
        .await?;
    Ok(Json(observables.into_iter().map(Into::into).collect()))
}

/// Add an observable to a case (`triage`). A type and value the case has already is
/// merged: its tags are joined and its `ioc` and `sighted` flags raised, answering 200
/// instead of 201.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/observables",
    tag = "cases",
    params(("id" = i64, Path, description = "The case id")),
    request_body(content = ObservableBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new observable", body = Observable),
        (status = 200, description = "The existing observable, merged", body = Observable),
        (status = 400, description = "The id or JSON is malformed", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "The caller's role lacks the triage permission", body = ErrorBody),
        (status = 404, description = "No case has this id (visible to the caller)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid", body = ErrorBody),
        (status = 503, description = "The case store failed", body = ErrorBody),
    )
)]
async fn add_observable(
    caller: Caller,
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ObservableBody>,
) -> Result<(StatusCode, Json<Observable>), ApiError> {
    caller.require(Permission::Triage)?;
    let new = checked(body)?;
    caller.visible(state.store.get_case(id).await?, id)?;
    let owner = ObservableOwner::Case(id);
    let (observable, created) = state
        .store
        .add_observable(&owner, &new, caller.name())
        .await?;
    tracing::info!(case_id = id, observable_id = observable.id, created, by = %caller.name(), "observable added");
    if created {
        announce_added(&state, id, &observable).await;
    }
    // The answer lists the enrichment, which only a read computes.
    let observable = state
        .store
        .list_observables(&owner)
        .await?
        .into_iter()
        .find(|o| o.id == observable.id)
        .unwrap_or(observable);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(observable.into())))
}

/// Tells the respond stage about an observable new to a case, as the response-outputs
/// loop does for a playbook's, so `observable-added` playbooks run whoever added it. The
/// observable is stored already: a bus failure is logged, not answered as an error.
pub(super) async fn announce_added(
    state: &ApiState,
    case_id: i64,
    observable: &kastell_core::store::ObservableRecord,
) {
    let event = kastell_core::CaseEvent::ObservableAdded {
        case_id,
        kind: observable.kind.clone(),
        value: observable.value.clone(),
    };
    if let Err(e) = crate::stage::publish_case_event(state.bus.as_ref(), &event).await {
        tracing::warn!(
            case_id,
            observable_id = observable.id,
            reason = %kastell_core::error_chain(&e),
            "observable-added event not published"
        );
    }
}

/// The body as a store observable, every field checked.
pub(super) fn checked(body: ObservableBody) -> Result<NewObservable, ApiError> {
    Ok(NewObservable {
        kind: checks::observable_kind(&body.kind)?,
        value: checks::text("value", &body.value, MAX_TEXT, false)?,
        ioc: body.ioc,
        sighted: body.sighted,
        tags: checks::tags(body.tags)?,
    })
}
