//! The Prometheus registry the cases API serves on `/metrics`: the stage's counters and
//! the API's own request counters and latencies.

use std::time::Duration;

use axum::http::StatusCode;

use prometheus::{Encoder, TextEncoder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::stage::CasesStats;

/// The route label of a request that matched no route, so that unknown paths cannot
/// grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric the cases workload exports. Cloning shares the same metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    stage: CasesStats,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    /// A fresh registry holding the stage's counters and the API's metrics.
    ///
    /// # Errors
    /// Only if a metric definition is invalid, which the tests rule out.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::register_in(Registry::new(), CasesStats::new())
    }

    /// Adds the metrics to an existing registry, so one process can serve every
    /// stage's metrics from one endpoint, with the stats the stage loop updates.
    ///
    /// # Errors
    /// When the registry already holds metrics of the same names.
    pub fn register_in(registry: Registry, stage: CasesStats) -> Result<Self, prometheus::Error> {
        stage.register(&registry)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "kastell_cases_api_requests_total",
                "Requests to the cases API by route template, method and status code.",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kastell_cases_api_request_duration_seconds",
                "Time to answer a request to the cases API, by route template.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            registry,
            stage,
            requests,
            latency,
        })
    }

    /// The counters to hand to [`crate::run_cases`].
    pub fn stage(&self) -> &CasesStats {
        &self.stage
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, method: &str, status: StatusCode, took: Duration) {
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// The registry in Prometheus' text exposition format.
    ///
    /// # Errors
    /// When a collected metric cannot be encoded.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        // The text encoder writes only UTF-8 label values and names.
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request(
            "/api/v1/cases/{id}",
            "GET",
            StatusCode::NOT_FOUND,
            Duration::from_millis(2),
        );
        let text = metrics.render().unwrap();
        assert!(text.contains(
            r#"kastell_cases_api_requests_total{method="GET",route="/api/v1/cases/{id}",status="404"} 1"#
        ));
        assert!(text.contains("kastell_cases_opened_total 0"));
    }

    #[test]
    fn a_registry_holds_the_metrics_once() {
        let metrics = Metrics::new().unwrap();
        let again = Metrics::register_in(metrics.registry().clone(), CasesStats::new());
        assert!(again.is_err());
    }
}
