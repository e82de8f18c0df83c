//! The endpoints for operators and tools rather than analysts: liveness, readiness,
//! Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kastell_core::store::CaseFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::model::Health;
use super::{openapi_json, ApiState};

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the case store answers a query.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The case store does not answer", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    let probe = CaseFilter {
        limit: Some(1),
        ..CaseFilter::default()
    };
    state.store.list_cases(&probe).await?;
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "text/plain; version=0.0.4"),
        (status = 500, description = "The metrics could not be encoded", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let now = chrono::Utc::now();
    match state
        .store
        .figures(now - crate::metrics::FIGURES_WINDOW, now)
        .await
    {
        Ok(figures) => state.metrics.set_figures(&figures),
        // The counters are still worth serving; the gauges keep their last values.
        Err(e) => tracing::warn!(reason = %e, "reading the SOC figures for /metrics failed"),
    }
    let text = state.metrics.render().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the metrics: {e}"),
        )
    })?;
    let content_type = [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)];
    Ok((content_type, text).into_response())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object,
        content_type = "application/json"))
)]
async fn openapi() -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (content_type, openapi_json()).into_response()
}
