//! The cases HTTP API: alerts, cases and response actions for analysts, plus health,
//! metrics and the OpenAPI document, served with axum.
//!
//! Every endpoint is a handler with a `#[utoipa::path]` description, registered through
//! `utoipa_axum`'s `routes!`, so the router and the OpenAPI document are built from the
//! same list and cannot drift apart. Each resource has its own module with its own
//! `routes()`; new resources (case updates, observables, tasks, the timeline) add a module
//! and one `merge` line in [`api_routes`].
//!
//! Plain HTTP is served only on loopback: see [`check_listen_addr`].

mod actions;
mod alerts;
mod audit;
pub mod caller;
mod cases;
mod checks;
pub mod error;
pub mod guard;
mod insight;
pub mod model;
mod nis2;
mod observables;
mod ops;
mod playbooks;
pub mod thehive;
mod work;
mod workflow;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Response as HttpResponse, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use kastell_core::{Bus, CaseStore};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use actions::MAX_TEXT;
pub use caller::Caller;
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};

use crate::auth::{Authenticator, Oidc};
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// Page size when a list request names none.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest page size a list request may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// The largest request body any endpoint reads; a larger one is answered 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn CaseStore>,
    /// Where approvals are announced to the respond stage.
    pub bus: Arc<dyn Bus>,
    pub metrics: Metrics,
    /// Checks every `/api/v1` request's credentials.
    pub auth: Arc<Authenticator>,
    /// The playbooks a manual run may name; `None` when the API runs without them (a
    /// request is then passed on unchecked).
    pub playbooks: Option<Arc<kastell_core::response::PlaybookCatalog>>,
}

impl ApiState {
    /// Callers authenticate with the API keys kept in `store`.
    pub fn new(store: Arc<dyn CaseStore>, bus: Arc<dyn Bus>, metrics: Metrics) -> Self {
        let auth = Arc::new(Authenticator::new(Arc::clone(&store), None));
        ApiState {
            store,
            bus,
            metrics,
            auth,
            playbooks: None,
        }
    }

    /// Checks manual runs against the playbooks the respond stage loaded.
    pub fn with_playbooks(
        mut self,
        playbooks: Arc<kastell_core::response::PlaybookCatalog>,
    ) -> Self {
        self.playbooks = Some(playbooks);
        self
    }

    /// Also accepts OIDC bearer tokens that `oidc` verifies.
    pub fn with_oidc(mut self, oidc: Oidc) -> Self {
        self.auth = Arc::new(Authenticator::new(Arc::clone(&self.store), Some(oidc)));
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kastell cases API",
        description = "Alerts, the cases that group them and the response actions taken on \
            them. Errors answer `{\"error\": \"<code>\", \"message\": \"<reason>\"}`. \
            Every `/api/v1` endpoint needs `Authorization: Bearer <API key or OIDC token>`: \
            401 without valid credentials, 403 when the caller's role lacks the permission.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "alerts", description = "Alerts raised by detection rules and intel matches"),
        (name = "cases", description = "Alerts of one rule on one host, grouped in time"),
        (name = "actions", description = "Response actions and their approval"),
        (name = "audit", description = "The tamper-evident log of every change"),
        (name = "thehive", description = "TheHive 5 compatible endpoints (singular paths, \
            TheHive's field names, epoch-millisecond dates, `{\"type\", \"message\"}` errors)"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    components(schemas(ErrorBody, model::AlertStatus)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer scheme every `/api/v1` endpoint requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Kastell API key (`kst_…`, from `kastell apikey create`) or an \
                         OIDC access token",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every endpoint, each with its OpenAPI description.
fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(alerts::routes())
        .merge(cases::routes())
        .merge(workflow::routes())
        .merge(observables::routes())
        .merge(work::routes())
        .merge(insight::routes())
        .merge(thehive::routes())
        .merge(actions::routes())
        .merge(audit::routes())
        .merge(ops::routes())
        .merge(playbooks::routes())
        .merge(nis2::routes())
}

/// The OpenAPI 3.1 document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The OpenAPI document as JSON, built once.
fn openapi_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serialising the document's own types cannot fail; an empty object is a safe
        // answer if it ever did.
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
    .clone()
}

/// The API's router, with a request span, request metrics and JSON answers for unknown
/// routes and methods.
pub fn router(state: ApiState) -> Router {
    let (router, _) = api_routes().split_for_parts();
    router
        .merge(kastell_webui::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by the JSON extractors, which answer 413 in the API's error
        // shape (see `error.rs`) when this limit is hit.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        status = tracing::field::Empty,
                    )
                })
                .on_response(
                    |response: &HttpResponse<_>, latency: Duration, span: &Span| {
                        span.record("status", response.status().as_u16());
                        tracing::debug!(latency_us = latency.as_micros() as u64, "answered");
                    },
                ),
        )
        .with_state(state)
}

/// Counts each request under its route template, never its raw path.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(
        &route,
        method_label(&method),
        response.status(),
        started.elapsed(),
    );
    response
}

fn method_label(method: &Method) -> &str {
    // Only standard methods become label values, so clients cannot grow the label set.
    match *method {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            method.as_str()
        }
        Method::HEAD | Method::OPTIONS => method.as_str(),
        _ => "other",
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", error::clip(uri.path())),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", error::clip(uri.path())),
    )
}

/// Checks the paging parameters shared by every list.
fn page(limit: Option<u32>, offset: Option<u32>) -> Result<(u32, u32), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    Ok((limit, offset.unwrap_or(0)))
}

/// The API refused to listen where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error(
        "refusing to serve plain HTTP on {addr}: without TLS the cases API listens only on a \
         loopback address (127.0.0.1 or ::1); bind to loopback or configure TLS"
    )]
    PlainHttpNotLoopback { addr: SocketAddr },
}

/// Refuses a non-loopback address unless TLS is configured: DESIGN.md allows plain HTTP
/// only on loopback, in standalone mode.
///
/// # Errors
/// [`ListenError::PlainHttpNotLoopback`] for any other address (the unspecified
/// `0.0.0.0` and `::` included) without TLS.
pub fn check_listen_addr(addr: SocketAddr, tls_configured: bool) -> Result<(), ListenError> {
    // `::ffff:127.0.0.1` is loopback too, though `Ipv6Addr::is_loopback` says no.
    if tls_configured || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(ListenError::PlainHttpNotLoopback { addr })
    }
}

/// Serving the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("reading the listener's address")]
    LocalAddr(#[source] std::io::Error),
    #[error("serving HTTP")]
    Io(#[source] std::io::Error),
}

/// Serves the router over plain HTTP on a loopback listener until `shutdown` completes,
/// then finishes the requests in flight; connections are capped and closed when idle
/// ([`guard`]).
///
/// # Errors
/// When the listener is not on loopback (TLS serving is not built yet), or the server
/// fails.
pub async fn serve<F>(listener: TcpListener, router: Router, shutdown: F) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    check_listen_addr(addr, false)?;
    tracing::info!(%addr, "cases api listening");
    axum::serve(guard::Guarded::new(listener), router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Io)?;
    tracing::info!(%addr, "cases api stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let ok = |s: &str, tls| check_listen_addr(s.parse().unwrap(), tls).is_ok();
        assert!(ok("127.0.0.1:8080", false));
        assert!(ok("127.1.2.3:8080", false));
        assert!(ok("[::1]:8080", false));
        assert!(ok("[::ffff:127.0.0.1]:8080", false));
        assert!(!ok("0.0.0.0:8080", false));
        assert!(!ok("[::]:8080", false));
        assert!(!ok("10.0.0.5:8080", false));
        assert!(ok("10.0.0.5:8443", true));
        let err = check_listen_addr("0.0.0.0:8080".parse().unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("0.0.0.0:8080"));
        assert!(err.to_string().contains("loopback"));
    }

    #[test]
    fn page_limits_are_checked() {
        assert_eq!(page(None, None).unwrap(), (DEFAULT_LIMIT, 0));
        assert_eq!(page(Some(1000), Some(5)).unwrap(), (1000, 5));
        assert_eq!(page(Some(0), None).unwrap_err().code, "invalid_query");
        assert!(page(Some(1001), None)
            .unwrap_err()
            .message
            .contains("between 1 and 1000"));
    }
}
