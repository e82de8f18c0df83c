//! Per-sensor Prometheus metrics of the listening transports: records and bytes in,
//! rejects by reason, parse latency, records admitted but not yet on the bus, and the
//! time of the last event.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every ingest transport metric, labelled by sensor. Cloning shares the same metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    records: IntCounterVec,
    bytes: IntCounterVec,
    rejects: IntCounterVec,
    parse_seconds: HistogramVec,
    queue_depth: IntGaugeVec,
    last_event: GaugeVec,
    connections_open: IntGaugeVec,
    connections_refused: IntCounterVec,
}

/// One sensor's handles on [`IngestMetrics`], resolved once so the hot path does no
/// label lookups.
#[derive(Clone)]
pub struct SensorMetrics {
    sensor: String,
    pub(crate) records: IntCounter,
    pub(crate) bytes: IntCounter,
    rejects: IntCounterVec,
    pub(crate) parse_seconds: Histogram,
    pub(crate) queue_depth: IntGauge,
    pub(crate) last_event: Gauge,
}

impl IngestMetrics {
    /// Registers the metrics in `registry`, the one the workload serves on `/metrics`.
    ///
    /// # Errors
    ///
    /// When the registry already holds metrics of the same names.
    pub fn register_in(registry: &Registry) -> Result<Self, prometheus::Error> {
        let records = IntCounterVec::new(
            Opts::new(
                "kastell_ingest_records_total",
                "Records received by a sensor's transport, good and bad.",
            ),
            &["sensor"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "kastell_ingest_bytes_total",
                "Bytes of records received by a sensor's transport (after decompression).",
            ),
            &["sensor"],
        )?;
        let rejects = IntCounterVec::new(
            Opts::new(
                "kastell_ingest_rejects_total",
                "Records dead-lettered instead of published, by sensor and reason.",
            ),
            &["sensor", "reason"],
        )?;
        let parse_seconds = HistogramVec::new(
            HistogramOpts::new(
                "kastell_ingest_parse_duration_seconds",
                "Time to parse and normalise one record, by sensor.",
            )
            .buckets(vec![
                0.000_001,
                0.000_002_5,
                0.000_005,
                0.000_01,
                0.000_025,
                0.000_05,
                0.000_1,
                0.000_25,
                0.001,
                0.01,
            ]),
            &["sensor"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "kastell_ingest_queue_depth",
                "Records a sensor's transport has admitted but not yet put on the bus.",
            ),
            &["sensor"],
        )?;
        let last_event = GaugeVec::new(
            Opts::new(
                "kastell_ingest_last_event_timestamp_seconds",
                "Unix time at which a sensor's last event was published.",
            ),
            &["sensor"],
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "kastell_ingest_connections_open",
                "Connections a listener holds open, by listener (transport and address).",
            ),
            &["listener"],
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "kastell_ingest_connections_refused_total",
                "Connections a listener refused because it was at its connection cap.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(rejects.clone()))?;
        registry.register(Box::new(parse_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(last_event.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        Ok(IngestMetrics {
            records,
            bytes,
            rejects,
            parse_seconds,
            queue_depth,
            last_event,
            connections_open,
            connections_refused,
        })
    }

    /// Metrics on a registry of their own, for tests and tools that serve none.
    pub fn unregistered() -> Self {
        // Registering fresh metrics in a fresh registry cannot clash.
        Self::register_in(&Registry::new()).expect("metric definitions are valid")
    }

    pub fn sensor(&self, sensor: &str) -> SensorMetrics {
        SensorMetrics {
            sensor: sensor.to_owned(),
            records: self.records.with_label_values(&[sensor]),
            bytes: self.bytes.with_label_values(&[sensor]),
            rejects: self.rejects.clone(),
            parse_seconds: self.parse_seconds.with_label_values(&[sensor]),
            queue_depth: self.queue_depth.with_label_values(&[sensor]),
            last_event: self.last_event.with_label_values(&[sensor]),
        }
    }
}

impl IngestMetrics {
    /// One listener's open-connection gauge and refused-connection counter.
    pub(crate) fn listener(&self, listener: &str) -> (IntGauge, IntCounter) {
        (
            self.connections_open.with_label_values(&[listener]),
            self.connections_refused.with_label_values(&[listener]),
        )
    }
}

impl SensorMetrics {
    pub(crate) fn reject(&self, reason: &str) {
        self.rejects
            .with_label_values(&[self.sensor.as_str(), reason])
            .inc();
    }

    pub fn rejects(&self, reason: &str) -> u64 {
        self.rejects
            .with_label_values(&[self.sensor.as_str(), reason])
            .get()
    }

    pub fn records(&self) -> u64 {
        self.records.get()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    pub fn last_event(&self) -> f64 {
        self.last_event.get()
    }

    pub fn parse_count(&self) -> u64 {
        self.parse_seconds.get_sample_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn every_metric_is_exported_with_its_sensor_label() {
        let registry = Registry::new();
        let metrics = IngestMetrics::register_in(&registry).unwrap();
        let sensor = metrics.sensor("edge-ids");
        sensor.records.inc();
        sensor.bytes.inc_by(10);
        sensor.reject("invalid_json");
        sensor.parse_seconds.observe(0.000_002);
        sensor.queue_depth.set(3);
        sensor.last_event.set(1.7e9);
        let (open, refused) = metrics.listener("syslog-tcp:0.0.0.0:6514");
        open.set(2);
        refused.inc();
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "kastell_ingest_records_total{sensor=\"edge-ids\"} 1",
            "kastell_ingest_bytes_total{sensor=\"edge-ids\"} 10",
            "kastell_ingest_rejects_total{reason=\"invalid_json\",sensor=\"edge-ids\"} 1",
            "kastell_ingest_parse_duration_seconds_count{sensor=\"edge-ids\"} 1",
            "kastell_ingest_queue_depth{sensor=\"edge-ids\"} 3",
            "kastell_ingest_last_event_timestamp_seconds{sensor=\"edge-ids\"} 1700000000",
            "kastell_ingest_connections_open{listener=\"syslog-tcp:0.0.0.0:6514\"} 2",
            "kastell_ingest_connections_refused_total{listener=\"syslog-tcp:0.0.0.0:6514\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn registering_twice_in_one_registry_is_an_error() {
        let registry = Registry::new();
        IngestMetrics::register_in(&registry).unwrap();
        assert!(IngestMetrics::register_in(&registry).is_err());
    }
}
