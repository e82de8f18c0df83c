//! The enrich stage: every detection from correlate is matched against the indicator
//! store once; its alerts leave with the matches attached, and an event that no rule
//! matched but that equals an indicator raises an intel alert of its own.
//!
//! The per-detection work is the pure [`enrich_detection`]; [`run_enrich`] is the thin
//! loop that moves detections from the bus to it and alerts from it to the bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use kastell_core::bus::{AckAfterStored, AckAfterStoredError};
use kastell_core::{
    error_chain, Alert, Bus, BusError, Detection, Event, Level, Message, RuleRef, Subscription,
    Topic,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::ecs;
use crate::sightings::Sightings;
use crate::store::{distinct_matches, Hit, IndicatorStore};

/// The consumer group the stage reads detections as.
pub const GROUP: &str = "enrich";

/// The author written on intel-only alerts.
pub const INTEL_AUTHOR: &str = "Kastell intel matcher";

/// The rule id of the intel-only alerts one feed raises.
pub fn intel_rule_id(feed: &str) -> String {
    format!("kastell-intel-{feed}")
}

/// Counters the stage keeps while it runs, readable from other tasks (for metrics).
#[derive(Debug, Default)]
pub struct EnrichStats {
    detections: AtomicU64,
    events_with_matches: AtomicU64,
    intel_matches: AtomicU64,
    intel_alerts: AtomicU64,
    alerts_forwarded: AtomicU64,
    dead_letters: AtomicU64,
}

impl EnrichStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> EnrichReport {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EnrichReport {
            detections: read(&self.detections),
            events_with_matches: read(&self.events_with_matches),
            intel_matches: read(&self.intel_matches),
            intel_alerts: read(&self.intel_alerts),
            alerts_forwarded: read(&self.alerts_forwarded),
            dead_letters: read(&self.dead_letters),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What the stage did, as counted by [`EnrichStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichReport {
    /// Detections read and decoded.
    pub detections: u64,
    /// Detections whose event equalled at least one indicator.
    pub events_with_matches: u64,
    /// Distinct intel matches, counted once per detection event.
    pub intel_matches: u64,
    /// Alerts the stage raised itself for events no rule matched.
    pub intel_alerts: u64,
    /// Alerts published to the alerts topic (rule alerts and intel alerts).
    pub alerts_forwarded: u64,
    /// Messages that were not detections, sent to the dead-letter topic.
    pub dead_letters: u64,
}

/// The stage could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("subscribing to {topic} as group {GROUP}")]
    Subscribe {
        topic: Topic,
        #[source]
        source: BusError,
    },
    #[error("publishing to {topic}")]
    Publish {
        topic: Topic,
        #[source]
        source: BusError,
    },
    #[error("acknowledging a detection")]
    Ack(#[source] BusError),
}

/// The dead-letter shape every stage after ingest sends, defined once in the core crate.
pub use kastell_core::DeadLetter;

/// What enriching one detection produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Enriched {
    /// Every alert to forward: the detection's own, annotated, or the intel alerts.
    pub alerts: Vec<Alert>,
    /// Distinct matches on the detection's event.
    pub intel_matches: usize,
    /// How many of `alerts` the stage raised itself.
    pub intel_alerts: usize,
}

/// Matches a detection's event once and builds the alerts to forward.
///
/// With alerts, each alert gets the matches of its events in `intel` and on each event
/// in `threat.enrichments`. Without alerts, each feed that matched raises one alert
/// (rule `kastell-intel-<feed>`) at the level of its most severe MISP threat level.
pub fn enrich_detection(
    store: &IndicatorStore,
    detection: Detection,
    now: DateTime<Utc>,
) -> Enriched {
    enrich_with_hits(store, detection, now).0
}

/// [`enrich_detection`], and the hits on the detection's event (for sightings).
fn enrich_with_hits(
    store: &IndicatorStore,
    detection: Detection,
    now: DateTime<Utc>,
) -> (Enriched, Vec<Hit>) {
    let Detection { event, alerts } = detection;
    let hits = store.matches(&event);
    let intel_matches = distinct_matches(&hits).len();
    if alerts.is_empty() {
        let alerts = intel_alerts(&event, &hits, now);
        let enriched = Enriched {
            intel_alerts: alerts.len(),
            alerts,
            intel_matches,
        };
        return (enriched, hits);
    }
    let alerts = alerts
        .into_iter()
        .map(|alert| annotate_alert(store, alert, &event, &hits))
        .collect();
    let enriched = Enriched {
        alerts,
        intel_matches,
        intel_alerts: 0,
    };
    (enriched, hits)
}

fn annotate_alert(store: &IndicatorStore, mut alert: Alert, event: &Event, hits: &[Hit]) -> Alert {
    if alert.events.is_empty() {
        push_distinct(&mut alert.intel, hits);
        return alert;
    }
    let mut intel = std::mem::take(&mut alert.intel);
    for alert_event in &mut alert.events {
        // A correlation alert carries earlier events too; those are matched here, the
        // detection's own event reuses the hits already found.
        let own_hits;
        let event_hits = if alert_event == event {
            hits
        } else {
            own_hits = store.matches(alert_event);
            &own_hits
        };
        push_distinct(&mut intel, event_hits);
        ecs::annotate(alert_event, event_hits);
    }
    alert.intel = intel;
    alert
}

fn push_distinct(intel: &mut Vec<kastell_core::IntelMatch>, hits: &[Hit]) {
    for candidate in distinct_matches(hits) {
        if !intel.contains(&candidate) {
            intel.push(candidate);
        }
    }
}

/// One alert per feed that matched an event no rule matched.
fn intel_alerts(event: &Event, hits: &[Hit], now: DateTime<Utc>) -> Vec<Alert> {
    let mut feeds: Vec<&str> = Vec::new();
    for hit in hits {
        if !feeds.contains(&hit.indicator.feed()) {
            feeds.push(hit.indicator.feed());
        }
    }
    feeds
        .into_iter()
        .map(|feed| {
            let feed_hits: Vec<Hit> = hits
                .iter()
                .filter(|h| h.indicator.feed() == feed)
                .cloned()
                .collect();
            intel_alert(event, feed, &feed_hits, now)
        })
        .collect()
}

fn intel_alert(event: &Event, feed: &str, hits: &[Hit], now: DateTime<Utc>) -> Alert {
    let level = hits
        .iter()
        .map(|h| h.indicator.level())
        .max()
        .unwrap_or(Level::Informational);
    let mut tags: Vec<String> = Vec::new();
    let mut observables: Vec<&str> = Vec::new();
    for hit in hits {
        for tag in hit.indicator.all_tags() {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if !observables.contains(&hit.observable.value.as_str()) {
            observables.push(&hit.observable.value);
        }
    }
    let first = observables.first().copied().unwrap_or_default();
    let title = match observables.len() {
        0 | 1 => format!("Threat intel match: {first} in {feed}"),
        n => format!("Threat intel match: {first} and {} more in {feed}", n - 1),
    };
    let rule = RuleRef {
        id: intel_rule_id(feed),
        title,
        level,
        tags,
        author: Some(INTEL_AUTHOR.to_owned()),
        source: None,
    };
    // The id is taken from the event as it arrived, so a refreshed feed that adds tags
    // or context to the same indicator still gives the same alert id on a replay.
    let mut alert = Alert::from_event(rule, event.clone(), now);
    alert.intel = distinct_matches(hits);
    if let Some(alert_event) = alert.events.first_mut() {
        ecs::annotate(alert_event, hits);
    }
    alert
}

/// Runs the stage until the detections topic is closed and drained, then closes the
/// alerts topic (also when it stops on an error, so the cases stage can finish).
///
/// `stats` are updated as the stage goes; the report is their final value. On the
/// in-process bus, a group only sees messages published after it subscribed: to wire the
/// stage before ingest starts, call [`subscribe_detections`] first and then
/// [`run_enrich_on`].
///
/// # Errors
///
/// When the bus refuses the subscription, a publish or an acknowledgement. A message
/// that is not a detection is not an error: it goes to the dead-letter topic.
pub async fn run_enrich(
    bus: &dyn Bus,
    store: Arc<IndicatorStore>,
    stats: &EnrichStats,
) -> Result<EnrichReport, EnrichError> {
    match subscribe_detections(bus).await {
        Ok(subscription) => run_enrich_on(bus, subscription, store, stats).await,
        Err(error) => {
            bus.close(Topic::Alerts).await;
            Err(error)
        }
    }
}

/// Joins the detections topic as the stage's consumer group.
///
/// # Errors
///
/// When the bus refuses the subscription (the topic is closed, the group is taken).
pub async fn subscribe_detections(bus: &dyn Bus) -> Result<Box<dyn Subscription>, EnrichError> {
    bus.subscribe(Topic::Detections, GROUP)
        .await
        .map_err(|source| EnrichError::Subscribe {
            topic: Topic::Detections,
            source,
        })
}

/// [`run_enrich`] on a subscription taken earlier with [`subscribe_detections`].
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_enrich_on(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    store: Arc<IndicatorStore>,
    stats: &EnrichStats,
) -> Result<EnrichReport, EnrichError> {
    run_enrich_live(bus, subscription, Arc::new(ArcSwap::new(store)), stats).await
}

/// [`run_enrich_on`] reading the indicator set a [`crate::refresh::Refresher`] swaps:
/// each detection is matched against the set current when it arrives.
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_enrich_live(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    store: Arc<ArcSwap<IndicatorStore>>,
    stats: &EnrichStats,
) -> Result<EnrichReport, EnrichError> {
    run_enrich_sighted(bus, subscription, store, stats, None).await
}

/// [`run_enrich_live`] that also offers every hit to `sightings` (which sends those of
/// the feeds that report sightings to MISP, without ever making the loop wait).
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_enrich_sighted(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    store: Arc<ArcSwap<IndicatorStore>>,
    stats: &EnrichStats,
    sightings: Option<&Sightings>,
) -> Result<EnrichReport, EnrichError> {
    let span = tracing::info_span!("enrich", group = GROUP, indicators = store.load().len());
    let sightings = sightings.filter(|s| !s.is_empty());
    let result = enrich_loop(bus, subscription, &store, stats, sightings)
        .instrument(span)
        .await;
    bus.close(Topic::Alerts).await;
    let report = stats.snapshot();
    tracing::info!(
        detections = report.detections,
        events_with_matches = report.events_with_matches,
        intel_matches = report.intel_matches,
        intel_alerts = report.intel_alerts,
        alerts_forwarded = report.alerts_forwarded,
        dead_letters = report.dead_letters,
        "enrich stopped"
    );
    result.map(|()| report)
}

async fn enrich_loop(
    bus: &dyn Bus,
    mut subscription: Box<dyn Subscription>,
    store: &ArcSwap<IndicatorStore>,
    stats: &EnrichStats,
    sightings: Option<&Sightings>,
) -> Result<(), EnrichError> {
    let mut acks = AckAfterStored::new(PUBLISH_WINDOW);
    while let Some(delivery) = subscription.next().await {
        let detection: Detection = match delivery.message.decode() {
            Ok(detection) => detection,
            Err(error) => {
                let reason = error_chain(&error);
                tracing::warn!(reason = %reason, "undecodable detection");
                dead_letter(bus, &delivery.message, reason).await?;
                EnrichStats::add(&stats.dead_letters, 1);
                delivery.ack().await.map_err(EnrichError::Ack)?;
                continue;
            }
        };

        let (enriched, hits) = enrich_with_hits(&store.load(), detection, Utc::now());
        if let Some(sightings) = sightings {
            hits.iter().for_each(|hit| sightings.offer(hit));
        }

        let mut pending = Vec::with_capacity(enriched.alerts.len());
        for alert in &enriched.alerts {
            let message = Message::json(alert)
                .map_err(|source| EnrichError::Publish {
                    topic: Topic::Alerts,
                    source,
                })?
                .with_id(alert.id.clone());
            let publish = bus
                .start_publish(Topic::Alerts, message)
                .await
                .map_err(|source| EnrichError::Publish {
                    topic: Topic::Alerts,
                    source,
                })?;
            pending.push(publish);
        }
        if enriched.intel_matches > 0 {
            tracing::debug!(
                matches = enriched.intel_matches,
                intel_alerts = enriched.intel_alerts,
                "event matched intel"
            );
        }

        EnrichStats::add(&stats.detections, 1);
        EnrichStats::add(
            &stats.events_with_matches,
            usize::from(enriched.intel_matches > 0),
        );
        EnrichStats::add(&stats.intel_matches, enriched.intel_matches);
        EnrichStats::add(&stats.intel_alerts, enriched.intel_alerts);
        EnrichStats::add(&stats.alerts_forwarded, enriched.alerts.len());
        acks.push(pending, delivery).await.map_err(acked_error)?;
    }
    acks.finish().await.map_err(acked_error)
}

/// Detections whose alerts may be in flight at once (see `PUBLISH_WINDOW` of the
/// correlate stage, and docs/cluster.md, "Pipelined publishing").
pub const PUBLISH_WINDOW: usize = 256;

fn acked_error(error: AckAfterStoredError) -> EnrichError {
    match error {
        AckAfterStoredError::Publish(source) => EnrichError::Publish {
            topic: Topic::Alerts,
            source,
        },
        AckAfterStoredError::Ack(source) => EnrichError::Ack(source),
    }
}

async fn dead_letter(bus: &dyn Bus, message: &Message, reason: String) -> Result<(), EnrichError> {
    DeadLetter::new(GROUP, Topic::Detections, reason, message)
        .publish(bus)
        .await
        .map_err(|source| EnrichError::Publish {
            topic: Topic::DeadLetters,
            source,
        })
}
