//! Helpers of the transport tests: a bus with the ingest consumers subscribed, inlets
//! for a test sensor, and draining what reached the bus.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use kastell_core::{Bus, Event, InProcessBus, Subscription, Topic};
use kastell_ingest::transport::{Decoder, IngestMetrics, Inlet};
use kastell_ingest::{Format, IngestStats, Ingestor, ParseContext};
use serde_json::Value;

pub const SENSOR: &str = "edge-ids";

/// A bus whose events and dead letters are read by the test.
pub struct Pipeline {
    pub bus: Arc<InProcessBus>,
    pub events: Box<dyn Subscription>,
    pub dead_letters: Box<dyn Subscription>,
    pub metrics: IngestMetrics,
    pub stats: Arc<IngestStats>,
}

impl Pipeline {
    pub async fn new(capacity: usize) -> Self {
        let bus = Arc::new(InProcessBus::new(capacity));
        let events = bus.subscribe(Topic::Events, "test").await.unwrap();
        let dead_letters = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();
        Pipeline {
            bus,
            events,
            dead_letters,
            metrics: IngestMetrics::unregistered(),
            stats: Arc::new(IngestStats::new()),
        }
    }

    pub fn inlet(&self, decoder: Decoder, queue: usize) -> Arc<Inlet> {
        let sensor = decoder.sensor().to_owned();
        let bus: Arc<dyn Bus> = self.bus.clone();
        Arc::new(Inlet::new(
            decoder,
            bus,
            Arc::clone(&self.stats),
            self.metrics.sensor(&sensor),
            queue,
        ))
    }

    pub fn suricata_inlet(&self, sensor: &str, queue: usize) -> Arc<Inlet> {
        self.inlet(
            Decoder::Format(Ingestor::new(Format::SuricataEve, sensor)),
            queue,
        )
    }

    /// A Sensor of format `syslog`, as `kastell run` builds it: messages parsed.
    pub fn parsed_syslog_inlet(&self, queue: usize) -> Arc<Inlet> {
        self.inlet(
            Decoder::Format(Ingestor::new(Format::Syslog, SENSOR)),
            queue,
        )
    }

    pub fn syslog_inlet(&self, queue: usize) -> Arc<Inlet> {
        self.inlet(Decoder::RawSyslog(ParseContext::new(SENSOR)), queue)
    }

    /// Closes both topics and returns everything that reached them.
    pub async fn drain(mut self) -> (Vec<Event>, Vec<Value>) {
        self.bus.close(Topic::Events).await;
        self.bus.close(Topic::DeadLetters).await;
        let mut events = Vec::new();
        while let Some(d) = self.events.next().await {
            events.push(d.message.decode::<Event>().unwrap());
        }
        let mut letters = Vec::new();
        while let Some(d) = self.dead_letters.next().await {
            letters.push(d.message.decode::<Value>().unwrap());
        }
        (events, letters)
    }
}

/// The first `n` records of the bundled Suricata sample whose line contains `needle`.
pub fn eve_lines(needle: &str, n: usize) -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/data/suricata/eve.json");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .take(n)
        .map(str::to_owned)
        .collect()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Waits until the inlet has taken `count` records (the test's timeout bounds the wait).
pub async fn wait_for_records(inlet: &Inlet, count: u64) {
    while inlet.metrics().records() < count {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The `message` field of each event, in order.
pub fn messages(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.get_str("message").unwrap())
        .collect()
}
