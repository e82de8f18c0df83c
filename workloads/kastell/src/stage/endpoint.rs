//! The HTTP endpoint of the stages without an API of their own: `/healthz` (the process
//! answers), `/readyz` (the stage is consuming; 503 while it starts and once it stops)
//! and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::tls::ServerTls;

/// Renders the stage's metrics in the Prometheus text format.
pub type Render = Arc<dyn Fn() -> Result<String, prometheus::Error> + Send + Sync>;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    render: Render,
}

impl Health {
    pub fn new(render: Render) -> Self {
        Health {
            ready: Arc::new(AtomicBool::new(false)),
            render,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Metrics of the form `(name, help, value)`, each a counter, rendered fresh: the stages
/// keep their counters as atomics of their own, read here at each scrape.
pub fn render_counters(counters: &[(&str, &str, u64)]) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    for (name, help, value) in counters {
        let counter = IntCounter::new(*name, *help)?;
        counter.inc_by(*value);
        registry.register(Box::new(counter))?;
    }
    encode(&registry)
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> Response {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(health): State<Health>) -> Response {
    match (health.render)() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr` and serves `router` until `stop` is cancelled: over HTTPS with `tls`,
/// else over plain HTTP. Plain HTTP off loopback is logged rather than refused here: these
/// endpoints carry only health and counters, and a platform without `spec.tls` still
/// needs its probes answered (docs/cluster.md).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    if tls.is_none() && !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(%addr, "health and metrics endpoint on plain HTTP off loopback");
    }
    tracing::info!(%addr, https = tls.is_some(), "health endpoint listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move { stop.cancelled().await };
        let served = match tls {
            Some(tls) => crate::tls::serve(listener, router, tls, shutdown).await,
            None => {
                axum::serve(kastell_cases::api::guard::Guarded::new(listener), router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(reason = %e, "health endpoint stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let text = render_counters(&[("kastell_test_total", "A test counter.", 7)]).unwrap();
        assert!(text.contains("# TYPE kastell_test_total counter"), "{text}");
        assert!(text.contains("kastell_test_total 7"), "{text}");
    }
}
