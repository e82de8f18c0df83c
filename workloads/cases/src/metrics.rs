//! The Prometheus registry the cases API serves on `/metrics`: the stage's counters and
//! the API's own request counters and latencies.

use std::time::Duration;

use axum::http::StatusCode;

use kastell_core::store::SeverityFigures;
use prometheus::{Encoder, TextEncoder};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::stage::CasesStats;

/// The route label of a request that matched no route, so that unknown paths cannot
/// grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The trailing window the SOC-figure gauges are computed over at each scrape. A day
/// matches the dashboards' default range and keeps the store query small.
pub const FIGURES_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Every metric the cases workload exports. Cloning shares the same metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    stage: CasesStats,
    requests: IntCounterVec,
    latency: HistogramVec,
    figures: FigureGauges,
}

/// Mean times to detect, acknowledge and resolve by severity, read from the store's
/// figures at scrape time: the store already keeps the timestamps, and a gauge per
/// severity keeps them consistent with `/api/v1/figures` and `kastell report`.
#[derive(Clone)]
struct FigureGauges {
    detect: GaugeVec,
    acknowledge: GaugeVec,
    resolve: GaugeVec,
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
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["severity"]).and_then(|g| {
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            })
        };
        let figures = FigureGauges {
            detect: gauge(
                "kastell_cases_mean_time_to_detect_seconds",
                "Mean seconds from event to alert over the last 24 hours, by severity.",
            )?,
            acknowledge: gauge(
                "kastell_cases_mean_time_to_acknowledge_seconds",
                "Mean seconds from alert to an analyst's first action over the last 24 hours, \
                 by severity.",
            )?,
            resolve: gauge(
                "kastell_cases_mean_time_to_resolve_seconds",
                "Mean seconds from case opening to closing, over the cases closed in the last \
                 24 hours, by severity.",
            )?,
        };
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            registry,
            stage,
            requests,
            latency,
            figures,
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

    /// Sets the mean-time gauges from the store's figures; a severity without a mean in
    /// the window loses its series rather than keeping a stale value.
    pub fn set_figures(&self, figures: &[SeverityFigures]) {
        let gauges = &self.figures;
        for gauge in [&gauges.detect, &gauges.acknowledge, &gauges.resolve] {
            gauge.reset();
        }
        for f in figures {
            let severity = [f.severity.as_str()];
            let pairs = [
                (&gauges.detect, f.mean_time_to_detect),
                (&gauges.acknowledge, f.mean_time_to_acknowledge),
                (&gauges.resolve, f.mean_time_to_resolve),
            ];
            for (gauge, mean) in pairs {
                if let Some(mean) = mean {
                    gauge.with_label_values(&severity).set(mean);
                }
            }
        }
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
