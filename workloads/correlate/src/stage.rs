//! The correlate stage: every event from ingest is evaluated against the rule set once,
//! and leaves as a [`Detection`] carrying the alerts it raised (often none), because the
//! enrich stage needs every event.
//!
//! The per-event work is the pure [`correlate_event`]; [`run_correlate`] is the thin loop
//! that moves events from the bus to it and detections from it to the bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kastell_core::alert::{alert_host, alert_id};
use kastell_core::bus::{AckAfterStored, AckAfterStoredError};
use kastell_core::{
    error_chain, Alert, Bus, BusError, Detection, Event, Level, Message, Subscription, Topic,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::correlation::{CorrelationHit, CorrelationState};
use crate::ruleset::RuleSet;

/// The consumer group the stage reads events as.
pub const GROUP: &str = "correlate";

/// Counters the stage keeps while it runs, readable from other tasks (for metrics).
#[derive(Debug, Default)]
pub struct CorrelateStats {
    events: AtomicU64,
    alerts: AtomicU64,
    dead_letters: AtomicU64,
    by_level: [AtomicU64; 5],
    by_rule: Mutex<BTreeMap<String, u64>>,
}

impl CorrelateStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> CorrelateReport {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let alerts_by_level = Level::ALL
            .iter()
            .zip(&self.by_level)
            .map(|(level, count)| (*level, read(count)))
            .filter(|(_, count)| *count > 0)
            .collect();
        CorrelateReport {
            events: read(&self.events),
            alerts: read(&self.alerts),
            dead_letters: read(&self.dead_letters),
            alerts_by_level,
            alerts_by_rule: self.by_rule.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }

    fn record(&self, alerts: &[Alert]) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if alerts.is_empty() {
            return;
        }
        self.alerts
            .fetch_add(alerts.len() as u64, Ordering::Relaxed);
        for alert in alerts {
            let slot = Level::ALL
                .iter()
                .position(|l| *l == alert.rule.level)
                .unwrap_or_default();
            self.by_level[slot].fetch_add(1, Ordering::Relaxed);
        }
        // A poisoned lock only means another task panicked mid-update; the counts stay
        // usable.
        let mut by_rule = self.by_rule.lock().unwrap_or_else(|p| p.into_inner());
        for alert in alerts {
            *by_rule.entry(alert.rule.id.clone()).or_default() += 1;
        }
    }
}

/// What the stage did, as counted by [`CorrelateStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelateReport {
    /// Events read, evaluated and published as detections.
    pub events: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Messages that were not events, sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Alerts by rule level (levels without alerts are left out).
    pub alerts_by_level: BTreeMap<Level, u64>,
    /// Alerts by rule id.
    pub alerts_by_rule: BTreeMap<String, u64>,
}

/// The stage could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
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
    #[error("acknowledging an event")]
    Ack(#[source] BusError),
}

/// The dead-letter shape every stage after ingest sends, defined once in the core crate.
pub use kastell_core::DeadLetter;

/// Evaluates one event: an alert per matching rule, built by [`Alert::from_event`], and
/// one per correlation the event completes (carrying the window's events and the group).
/// `state` holds the correlation windows between events; the event's time is its
/// `@timestamp`, else `now`.
pub fn correlate_event(
    rules: &RuleSet,
    state: &mut CorrelationState<Event>,
    event: Event,
    now: DateTime<Utc>,
) -> Detection {
    let time = event.timestamp().unwrap_or(now);
    let evaluation = rules.evaluate_with(state, &event, time.timestamp_millis(), &|| event.clone());
    let mut alerts: Vec<Alert> = evaluation
        .rules
        .into_iter()
        .map(|rule| Alert::from_event(rule.clone(), event.clone(), now))
        .collect();
    alerts.extend(
        evaluation
            .correlations
            .into_iter()
            .map(|hit| correlation_alert(hit, now)),
    );
    alerts.retain(|alert| {
        !rules.suppress(
            state,
            &alert.rule.id,
            &suppression_key(alert),
            alert.timestamp.timestamp_millis(),
        )
    });
    Detection { event, alerts }
}

/// What makes two alerts of one rule "the same" for suppression: the correlation's
/// group-by values and the host the alert is about.
fn suppression_key(alert: &Alert) -> String {
    let mut key = alert.host.clone().unwrap_or_default();
    for (field, value) in &alert.group {
        key.push('\u{1f}');
        key.push_str(field);
        key.push('=');
        key.push_str(value);
    }
    key
}

fn correlation_alert(hit: CorrelationHit<'_, Event>, now: DateTime<Utc>) -> Alert {
    let events = hit.payload;
    let refs: Vec<&Event> = events.iter().collect();
    let last = events.last();
    Alert {
        id: alert_id(&hit.rule.id, &refs),
        rule: hit.rule.clone(),
        // The window's last event, at full precision (the window itself counts in ms).
        timestamp: last
            .and_then(Event::timestamp)
            .or_else(|| DateTime::from_timestamp_millis(hit.time_ms))
            .unwrap_or(now),
        detected_at: now,
        sensor: last.and_then(Event::sensor).map(str::to_owned),
        host: last.and_then(alert_host),
        group: hit.group,
        intel: Vec::new(),
        events,
    }
}

/// Runs the stage until the events topic is closed and drained, then closes the
/// detections topic (also when it stops on an error, so the enrich stage can finish).
///
/// On the in-process bus a group only sees messages published after it subscribed: to
/// wire the stage before ingest starts, call [`subscribe_events`] first and then
/// [`run_correlate_on`].
///
/// # Errors
///
/// When the bus refuses the subscription, a publish or an acknowledgement. A message
/// that is not an event is not an error: it goes to the dead-letter topic.
pub async fn run_correlate(
    bus: &dyn Bus,
    rules: Arc<RuleSet>,
    stats: &CorrelateStats,
) -> Result<CorrelateReport, CorrelateError> {
    match subscribe_events(bus).await {
        Ok(subscription) => run_correlate_on(bus, subscription, rules, stats).await,
        Err(error) => {
            bus.close(Topic::Detections).await;
            Err(error)
        }
    }
}

/// Joins the events topic as the stage's consumer group.
///
/// # Errors
///
/// When the bus refuses the subscription (the topic is closed, the group is taken).
pub async fn subscribe_events(bus: &dyn Bus) -> Result<Box<dyn Subscription>, CorrelateError> {
    bus.subscribe(Topic::Events, GROUP)
        .await
        .map_err(|source| CorrelateError::Subscribe {
            topic: Topic::Events,
            source,
        })
}

/// [`run_correlate`] on a subscription taken earlier with [`subscribe_events`].
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_correlate_on(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    rules: Arc<RuleSet>,
    stats: &CorrelateStats,
) -> Result<CorrelateReport, CorrelateError> {
    let span = tracing::info_span!("correlate", group = GROUP, rules = rules.len());
    let result = correlate_loop(bus, subscription, &rules, stats)
        .instrument(span)
        .await;
    bus.close(Topic::Detections).await;
    let report = stats.snapshot();
    tracing::info!(
        events = report.events,
        alerts = report.alerts,
        dead_letters = report.dead_letters,
        "correlate stopped"
    );
    result.map(|()| report)
}

async fn correlate_loop(
    bus: &dyn Bus,
    mut subscription: Box<dyn Subscription>,
    rules: &RuleSet,
    stats: &CorrelateStats,
) -> Result<(), CorrelateError> {
    let mut state = rules.correlation_state();
    let mut acks = AckAfterStored::new(PUBLISH_WINDOW);
    while let Some(delivery) = subscription.next().await {
        let event: Event = match delivery.message.decode() {
            Ok(event) => event,
            Err(error) => {
                let reason = error_chain(&error);
                tracing::warn!(reason = %reason, "undecodable event");
                dead_letter(bus, &delivery.message, reason).await?;
                stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                delivery.ack().await.map_err(CorrelateError::Ack)?;
                continue;
            }
        };

        let detection = correlate_event(rules, &mut state, event, Utc::now());
        for alert in &detection.alerts {
            tracing::debug!(rule = %alert.rule.id, level = %alert.rule.level, alert = %alert.id, "rule matched");
        }
        stats.record(&detection.alerts);

        let mut message = Message::json(&detection).map_err(|source| CorrelateError::Publish {
            topic: Topic::Detections,
            source,
        })?;
        // One detection per event: the event's id names it, so a redelivered event gives a
        // detection the durable bus stores once.
        if let Some(id) = &delivery.message.id {
            message = message.with_id(id.clone());
        }
        let pending = bus
            .start_publish(Topic::Detections, message)
            .await
            .map_err(|source| CorrelateError::Publish {
                topic: Topic::Detections,
                source,
            })?;
        acks.push(vec![pending], delivery)
            .await
            .map_err(acked_error)?;
    }
    acks.finish().await.map_err(acked_error)?;
    let counters = state.counters();
    tracing::info!(
        suppressed = state.suppressed(),
        late = counters.late,
        evicted_events = counters.evicted_events,
        evicted_groups = counters.evicted_groups,
        "correlation state at stop"
    );
    Ok(())
}

/// Events whose detections may be in flight at once. Each detection is one publish
/// round trip; waiting for each before reading the next event held the stage to one
/// event per round trip (docs/cluster.md, "Pipelined publishing").
pub const PUBLISH_WINDOW: usize = 256;

fn acked_error(error: AckAfterStoredError) -> CorrelateError {
    match error {
        AckAfterStoredError::Publish(source) => CorrelateError::Publish {
            topic: Topic::Detections,
            source,
        },
        AckAfterStoredError::Ack(source) => CorrelateError::Ack(source),
    }
}

async fn dead_letter(
    bus: &dyn Bus,
    message: &Message,
    reason: String,
) -> Result<(), CorrelateError> {
    DeadLetter::new(GROUP, Topic::Events, reason, message)
        .publish(bus)
        .await
        .map_err(|source| CorrelateError::Publish {
            topic: Topic::DeadLetters,
            source,
        })
}
