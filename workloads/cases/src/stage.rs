//! The cases stage loop: alerts in from the enrich stage, stored once each, grouped into
//! cases, and every opening, attachment and severity rise announced to the respond stage.
//! A second loop, [`run_response_outputs_on`], reads what the respond stage sends back:
//! it files each step result in the case's audit log and carries out the case
//! operations playbooks ask for, announcing the changes as case events in turn.
//!
//! A case gathers the alerts of one rule on one host whose event times lie within the
//! grouping window of each other. Time is event time (`alert.timestamp`), not arrival
//! time, so a replay of old data groups the way the live data would have. The window is
//! a gap, not a fixed bucket: an alert within the window of a case's span joins the case
//! and widens the span, so a steady trickle keeps one case growing. An alert that links
//! two open cases (it arrived after both, out of order) merges them, so the cases do not
//! depend on the order alerts arrive in ([`Grouper`]).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kastell_core::audit::SYSTEM_ACTOR;
use kastell_core::response::{CaseAction, CaseOperation, RespondOutput, StepResult};
use kastell_core::store::{
    CaseRecord, CaseUpdate, NewCase, NewObservable, NewTask, ObservableOwner, Resolution,
};
use kastell_core::{error_chain, Level, Subscription, Topic};
use kastell_core::{Alert, Bus, BusError, CaseEvent, CaseStore, Message, StoreError};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// The consumer group the stage reads alerts as.
pub const GROUP: &str = "cases";

/// The key used in place of a host for alerts that name none.
pub const NO_HOST: &str = "-";

/// How the stage groups and what it does when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseSettings {
    /// How far apart, in event time, an alert may be from a case's span and still join
    /// it. A negative window is treated as zero.
    pub grouping_window: Duration,
    /// Close [`Topic::CaseEvents`] once the alerts topic is drained. Leave it off when the
    /// HTTP API runs in the same process: it publishes approvals to that topic too.
    pub close_downstream: bool,
}

impl Default for CaseSettings {
    fn default() -> Self {
        CaseSettings {
            grouping_window: Duration::hours(1),
            close_downstream: false,
        }
    }
}

/// The stage's counters, shared with the metrics endpoint while the stage runs.
///
/// Each counter is a Prometheus counter, so cloning the stats shares them and
/// [`CasesStats::register`] exposes them without copying.
#[derive(Debug, Clone)]
pub struct CasesStats {
    received: IntCounter,
    stored: IntCounter,
    duplicates: IntCounter,
    cases_opened: IntCounter,
    alerts_attached: IntCounter,
    cases_merged: IntCounter,
    rejected: IntCounter,
    errors: IntCounter,
    dead_letters: IntCounter,
    alerts: IntCounterVec,
    intel_matches: IntCounterVec,
}

/// The label of alerts that name no sensor, so the series exists and sums add up.
pub const NO_SENSOR: &str = "-";

fn counter(name: &str, help: &str) -> IntCounter {
    // The names are constants of this module and valid; `stats_register_once` checks it.
    IntCounter::new(name, help).expect("valid metric name")
}

impl CasesStats {
    /// Fresh counters, not yet in any registry.
    pub fn new() -> Self {
        CasesStats {
            received: counter(
                "kastell_cases_alerts_received_total",
                "Messages read from the alerts topic.",
            ),
            stored: counter(
                "kastell_cases_alerts_stored_total",
                "Alerts stored in the case store for the first time.",
            ),
            duplicates: counter(
                "kastell_cases_duplicate_alerts_total",
                "Alerts that were stored and grouped before (redeliveries, replays).",
            ),
            cases_opened: counter("kastell_cases_opened_total", "Cases opened."),
            alerts_attached: counter(
                "kastell_cases_alerts_attached_total",
                "Alerts added to a case that was already open.",
            ),
            cases_merged: counter(
                "kastell_cases_merged_total",
                "Open cases merged into another when a later alert linked them, and closed \
                 as duplicates.",
            ),
            rejected: counter(
                "kastell_cases_rejected_messages_total",
                "Messages on the alerts topic that were not an alert.",
            ),
            errors: counter(
                "kastell_cases_errors_total",
                "Alerts whose storing or grouping failed in the case store.",
            ),
            dead_letters: counter(
                "kastell_cases_dead_letters_total",
                "Messages the stage sent to the dead-letter topic.",
            ),
            // Rules and sensors are the configured resources, so the label sets stay
            // as small as the resource repository; the SOC dashboards break alerts down
            // by each of them.
            alerts: IntCounterVec::new(
                Opts::new(
                    "kastell_cases_alerts_total",
                    "Alerts stored for the first time, by rule level, rule id and sensor.",
                ),
                &["level", "rule", "sensor"],
            )
            .expect("valid metric name"),
            intel_matches: IntCounterVec::new(
                Opts::new(
                    "kastell_cases_intel_alerts_total",
                    "Alerts stored for the first time that carry an intel match, by the \
                     IntelFeed of the match (an alert matched by two feeds counts for each).",
                ),
                &["feed"],
            )
            .expect("valid metric name"),
        }
    }

    /// Adds the counters to a Prometheus registry.
    ///
    /// # Errors
    /// When the registry already holds counters of these names.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for counter in self.all() {
            registry.register(Box::new(counter.clone()))?;
        }
        registry.register(Box::new(self.alerts.clone()))?;
        registry.register(Box::new(self.intel_matches.clone()))?;
        Ok(())
    }

    fn all(&self) -> [&IntCounter; 9] {
        [
            &self.received,
            &self.stored,
            &self.duplicates,
            &self.cases_opened,
            &self.alerts_attached,
            &self.cases_merged,
            &self.rejected,
            &self.errors,
            &self.dead_letters,
        ]
    }

    fn count_alert(&self, alert: &Alert) {
        self.stored.inc();
        let sensor = alert.sensor.as_deref().unwrap_or(NO_SENSOR);
        self.alerts
            .with_label_values(&[alert.rule.level.as_str(), alert.rule.id.as_str(), sensor])
            .inc();
        let mut feeds: Vec<&str> = alert.intel.iter().map(|m| m.feed.as_str()).collect();
        feeds.sort_unstable();
        feeds.dedup();
        for feed in feeds {
            self.intel_matches.with_label_values(&[feed]).inc();
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> CasesReport {
        CasesReport {
            received: self.received.get(),
            stored: self.stored.get(),
            duplicates: self.duplicates.get(),
            cases_opened: self.cases_opened.get(),
            alerts_attached: self.alerts_attached.get(),
            cases_merged: self.cases_merged.get(),
            rejected: self.rejected.get(),
            errors: self.errors.get(),
            dead_letters: self.dead_letters.get(),
        }
    }
}

impl Default for CasesStats {
    fn default() -> Self {
        Self::new()
    }
}

/// What the stage did, as counted by [`CasesStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasesReport {
    /// Messages read from the alerts topic.
    pub received: u64,
    /// Alerts stored for the first time.
    pub stored: u64,
    /// Alerts stored and grouped before, acknowledged without another case event.
    pub duplicates: u64,
    /// Cases opened.
    pub cases_opened: u64,
    /// Alerts that joined an open case.
    pub alerts_attached: u64,
    /// Open cases merged into another (closed as duplicates) because an alert linked
    /// them: the cases that hold alerts are `cases_opened - cases_merged`.
    #[serde(default)]
    pub cases_merged: u64,
    /// Messages that were not an alert.
    pub rejected: u64,
    /// Alerts the case store failed to store or group.
    pub errors: u64,
    /// Messages sent to the dead-letter topic (rejected and failed ones).
    pub dead_letters: u64,
}

/// The stage could not go on: the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
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
    #[error("acknowledging an alert")]
    Ack(#[source] BusError),
}

/// The dead-letter shape every stage after ingest sends, defined once in the core crate.
pub use kastell_core::DeadLetter;

/// Where an alert went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// The alert was stored and grouped before; nothing changed.
    Duplicate,
    /// The alert opened this case.
    Opened(CaseRecord),
    /// The alert joined this open case; `raised_from` is the case's severity before,
    /// when the alert (or a case merged into it) raised it; `merged` are the open cases
    /// the alert linked to this one, merged into it and closed as duplicates.
    Attached {
        case: CaseRecord,
        raised_from: Option<Level>,
        merged: Vec<i64>,
    },
}

/// Stores alerts and groups them into cases: the stage's per-alert work, usable without
/// a bus.
///
/// A case holds the alerts of one rule on one host that form a chain in event time: each
/// at most the window after the one before. Alerts may arrive in any order (a redelivery
/// after a crash comes late), so an alert can link two cases opened before it, each for
/// one end of the chain; it then joins the case with the earliest first alert, and the
/// others are merged into that one ([`CaseStore::merge_cases`]). Open cases of one key
/// are thus always more than a window apart, and the alerts end in the same cases, with
/// the same span, severity and observables, whatever the order they came in.
pub struct Grouper {
    store: Arc<dyn CaseStore>,
    window: Duration,
}

impl Grouper {
    pub fn new(store: Arc<dyn CaseStore>, window: Duration) -> Self {
        Grouper {
            store,
            window: window.max(Duration::zero()),
        }
    }

    /// Stores the alert and puts it in a case: the open case of its rule and host whose
    /// span it is within the window of, else a new one. When it is within the window of
    /// several, they are merged first (see [`Grouper`]).
    ///
    /// Repeating an alert changes nothing, with one exception: an alert stored by an
    /// earlier delivery that failed before grouping it is grouped now.
    ///
    /// # Errors
    /// When the case store fails; what was written before the failure stays written.
    /// Merges come before the alert joins, so a redelivery after a failure finds the
    /// alert without a case and completes the rest.
    pub async fn file(&self, alert: &Alert) -> Result<Filed, StoreError> {
        if !self.store.insert_alert(alert).await? {
            let stored = self.store.get_alert(&alert.id).await?;
            if stored.is_none_or(|record| record.case_id.is_some()) {
                return Ok(Filed::Duplicate);
            }
            tracing::info!(alert_id = %alert.id, "stored alert had no case, grouping it");
        }

        let key = group_key(alert);
        let near = self
            .store
            .open_cases_near(
                &key,
                earlier(alert.timestamp, self.window),
                later(alert.timestamp, self.window),
            )
            .await?;
        let Some(survivor) = survivor(&near) else {
            let new = NewCase {
                title: case_title(alert),
                group_key: key,
                rule_id: alert.rule.id.clone(),
                host: alert.host.clone(),
            };
            return Ok(Filed::Opened(self.store.open_case(&new, alert).await?));
        };

        let before = survivor.severity;
        let mut merged = Vec::new();
        for other in near.iter().filter(|case| case.id != survivor.id) {
            match self
                .store
                .merge_cases(survivor.id, other.id, SYSTEM_ACTOR)
                .await
            {
                Ok(_) => {}
                // Closed by an analyst since it was found: it is no longer open to merge,
                // and the alert still joins the survivor.
                Err(StoreError::Conflict { reason }) => {
                    tracing::info!(case_id = other.id, reason = %reason, "case not merged");
                    continue;
                }
                Err(error) => return Err(error),
            }
            tracing::info!(
                case_id = survivor.id,
                merged_case_id = other.id,
                alert_id = %alert.id,
                group_key = %key,
                "alert linked two cases, merged"
            );
            merged.push(other.id);
        }
        let case = self.store.attach_alert(survivor.id, alert).await?;
        let raised_from = (case.severity > before).then_some(before);
        Ok(Filed::Attached {
            case,
            raised_from,
            merged,
        })
    }
}

/// The case that the others an alert links are merged into: the one with the earliest
/// first alert (the id breaks a tie), which depends on the alerts, not on their order.
fn survivor(near: &[CaseRecord]) -> Option<&CaseRecord> {
    near.iter().min_by_key(|case| (case.first_seen, case.id))
}

/// The grouping key of an alert: its rule id and host, `rule|host`, with [`NO_HOST`] for
/// an alert without a host.
pub fn group_key(alert: &Alert) -> String {
    let host = alert.host.as_deref().unwrap_or(NO_HOST);
    format!("{}|{host}", alert.rule.id)
}

/// The title of the case an alert opens: `<rule title> on <host>`, or the rule title
/// alone when the alert names no host.
pub fn case_title(alert: &Alert) -> String {
    let rule = if alert.rule.title.trim().is_empty() {
        alert.rule.id.as_str()
    } else {
        alert.rule.title.as_str()
    };
    match &alert.host {
        Some(host) => format!("{rule} on {host}"),
        None => rule.to_owned(),
    }
}

fn earlier(time: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    // Event times come from outside; one near the start of chrono's range must not
    // overflow.
    time.checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn later(time: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    time.checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Runs the stage until the alerts topic is closed and drained.
///
/// `stats` are updated as the stage goes; the report is their final value. On the
/// in-process bus, a group only sees messages published after it subscribed: to wire the
/// stage before the enrich stage starts, call [`subscribe_alerts`] first and then
/// [`run_cases_on`].
///
/// # Errors
/// When the bus refuses the subscription, a publish or an acknowledgement. A message
/// that is not an alert, or an alert the store fails on, is not an error: it goes to the
/// dead-letter topic and the stage goes on.
pub async fn run_cases(
    bus: &dyn Bus,
    store: Arc<dyn CaseStore>,
    settings: CaseSettings,
    stats: &CasesStats,
) -> Result<CasesReport, CasesError> {
    match subscribe_alerts(bus).await {
        Ok(subscription) => run_cases_on(bus, subscription, store, settings, stats).await,
        Err(error) => {
            if settings.close_downstream {
                bus.close(Topic::CaseEvents).await;
            }
            Err(error)
        }
    }
}

/// Joins the alerts topic as the stage's consumer group.
///
/// # Errors
/// When the bus refuses the subscription (the topic is closed, the group is taken).
pub async fn subscribe_alerts(bus: &dyn Bus) -> Result<Box<dyn Subscription>, CasesError> {
    bus.subscribe(Topic::Alerts, GROUP)
        .await
        .map_err(|source| CasesError::Subscribe {
            topic: Topic::Alerts,
            source,
        })
}

/// [`run_cases`] on a subscription taken earlier with [`subscribe_alerts`].
///
/// # Errors
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_cases_on(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    store: Arc<dyn CaseStore>,
    settings: CaseSettings,
    stats: &CasesStats,
) -> Result<CasesReport, CasesError> {
    let span = tracing::info_span!(
        "cases",
        group = GROUP,
        window_secs = settings.grouping_window.num_seconds()
    );
    let grouper = Grouper::new(store, settings.grouping_window);
    let result = cases_loop(bus, subscription, &grouper, stats)
        .instrument(span)
        .await;

    // Closed on an error too, so that the respond stage can finish.
    if settings.close_downstream {
        bus.close(Topic::CaseEvents).await;
    }
    let report = stats.snapshot();
    tracing::info!(
        received = report.received,
        stored = report.stored,
        duplicates = report.duplicates,
        cases_opened = report.cases_opened,
        alerts_attached = report.alerts_attached,
        rejected = report.rejected,
        errors = report.errors,
        "cases stopped"
    );
    result.map(|()| report)
}

async fn cases_loop(
    bus: &dyn Bus,
    mut subscription: Box<dyn Subscription>,
    grouper: &Grouper,
    stats: &CasesStats,
) -> Result<(), CasesError> {
    while let Some(delivery) = subscription.next().await {
        stats.received.inc();
        let alert: Alert = match delivery.message.decode() {
            Ok(alert) => alert,
            Err(error) => {
                let reason = format!("undecodable alert: {}", error_chain(&error));
                tracing::warn!(reason = %reason, "rejected alert");
                stats.rejected.inc();
                dead_letter(bus, &delivery.message, reason, stats).await?;
                delivery.ack().await.map_err(CasesError::Ack)?;
                continue;
            }
        };

        match grouper.file(&alert).await {
            Ok(filed) => announce(bus, alert, filed, stats).await?,
            Err(error) => {
                let reason = format!("case store: {}", error_chain(&error));
                tracing::warn!(
                    alert_id = %alert.id,
                    rule_id = %alert.rule.id,
                    host = alert.host.as_deref().unwrap_or(NO_HOST),
                    reason = %reason,
                    "alert not filed"
                );
                stats.errors.inc();
                dead_letter(bus, &delivery.message, reason, stats).await?;
            }
        }
        delivery.ack().await.map_err(CasesError::Ack)?;
    }
    Ok(())
}

/// Counts what happened to an alert and tells the respond stage about it.
async fn announce(
    bus: &dyn Bus,
    alert: Alert,
    filed: Filed,
    stats: &CasesStats,
) -> Result<(), CasesError> {
    let event = match filed {
        Filed::Duplicate => {
            stats.duplicates.inc();
            tracing::debug!(alert_id = %alert.id, "duplicate alert");
            return Ok(());
        }
        Filed::Opened(case) => {
            stats.count_alert(&alert);
            stats.cases_opened.inc();
            tracing::info!(
                case_id = case.id,
                alert_id = %alert.id,
                rule_id = %alert.rule.id,
                host = case.host.as_deref().unwrap_or(NO_HOST),
                "case opened"
            );
            CaseEvent::CaseOpened {
                case_id: case.id,
                alert: Box::new(alert),
            }
        }
        Filed::Attached {
            case,
            raised_from,
            merged,
        } => {
            stats.count_alert(&alert);
            stats.alerts_attached.inc();
            stats.cases_merged.inc_by(merged.len() as u64);
            tracing::debug!(
                case_id = case.id,
                alert_id = %alert.id,
                alert_count = case.alert_count,
                "alert attached"
            );
            let attached = CaseEvent::AlertAttached {
                case_id: case.id,
                alert: Box::new(alert),
            };
            if let Some(from) = raised_from {
                publish_case_event(bus, &attached).await?;
                tracing::info!(case_id = case.id, from = %from, to = %case.severity, "case severity raised");
                CaseEvent::SeverityRaised {
                    case_id: case.id,
                    from,
                    to: case.severity,
                }
            } else {
                attached
            }
        }
    };
    publish_case_event(bus, &event).await
}

pub(crate) async fn publish_case_event(bus: &dyn Bus, event: &CaseEvent) -> Result<(), CasesError> {
    let publish = |source| CasesError::Publish {
        topic: Topic::CaseEvents,
        source,
    };
    // An alert opens or joins a case once, so its id names the case event, and a
    // redelivered alert's event is stored once on a durable bus.
    let id = match event {
        CaseEvent::CaseOpened { alert, .. } => Some(format!("opened:{}", alert.id)),
        CaseEvent::AlertAttached { alert, .. } => Some(format!("attached:{}", alert.id)),
        _ => None,
    };
    let mut message = Message::json(event).map_err(publish)?;
    if let Some(id) = id {
        message = message.with_id(id);
    }
    bus.publish(Topic::CaseEvents, message)
        .await
        .map_err(publish)
}

/// The case events a change of a case gives: `severity_raised` when its severity went
/// up, `case_closed` when it was closed. For every writer of cases (the response-outputs
/// loop here and the API's case handlers), so playbooks see a change
/// the same way whoever made it.
pub fn case_change_events(before: &CaseRecord, after: &CaseRecord) -> Vec<CaseEvent> {
    let mut events = Vec::new();
    if after.severity > before.severity {
        events.push(CaseEvent::SeverityRaised {
            case_id: after.id,
            from: before.severity,
            to: after.severity,
        });
    }
    if after.closed_at.is_some() && before.closed_at.is_none() {
        events.push(CaseEvent::CaseClosed {
            case_id: after.id,
            resolution: after
                .resolution
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
        });
    }
    events
}

/// The actor the audit log names for changes a playbook asked for.
fn playbook_actor(playbook: &str) -> String {
    format!("playbook:{playbook}")
}

/// Counters of the response-outputs loop, shared with the metrics endpoint.
#[derive(Debug, Clone)]
pub struct OutputStats {
    step_results: IntCounter,
    case_actions: IntCounter,
    rejected: IntCounter,
    dead_letters: IntCounter,
    repeats: IntCounter,
}

impl OutputStats {
    pub fn new() -> Self {
        OutputStats {
            step_results: counter(
                "kastell_cases_step_results_total",
                "Response step results filed in their case's audit log.",
            ),
            case_actions: counter(
                "kastell_cases_case_actions_applied_total",
                "Case operations asked for by playbooks and carried out.",
            ),
            rejected: counter(
                "kastell_cases_response_outputs_rejected_total",
                "Respond-stage messages that could not be decoded or applied.",
            ),
            dead_letters: counter(
                "kastell_cases_response_outputs_dead_letters_total",
                "Respond-stage messages sent to the dead-letter topic.",
            ),
            repeats: counter(
                "kastell_cases_response_outputs_repeated_total",
                "Respond-stage messages whose idempotency key was applied before, left alone.",
            ),
        }
    }

    /// Adds the counters to a Prometheus registry.
    ///
    /// # Errors
    /// When the registry already holds counters of these names.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for c in [
            &self.step_results,
            &self.case_actions,
            &self.rejected,
            &self.dead_letters,
            &self.repeats,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        Ok(())
    }

    /// Step results filed, case operations applied, messages rejected.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.step_results.get(),
            self.case_actions.get(),
            self.rejected.get(),
        )
    }
}

impl Default for OutputStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a respond-stage message could not be applied; it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("case store")]
    Store(#[from] StoreError),
    #[error("case action {action_id}: {reason}")]
    Invalid { action_id: i64, reason: String },
}

/// Carries out the respond stage's messages on the case store: the loop's per-message
/// work, usable without a bus. Returns the case events the change causes.
pub struct ResponseApplier {
    store: Arc<dyn CaseStore>,
}

impl ResponseApplier {
    pub fn new(store: Arc<dyn CaseStore>) -> Self {
        ResponseApplier { store }
    }

    /// Files a step result or applies a case operation, once per idempotency key:
    /// `None` when the key was applied before (a redelivery), and nothing is done.
    ///
    /// The key is recorded in the case store after the change, not in the change's
    /// transaction: a process that stops between the two applies the output again when
    /// it is redelivered (a repeated task or note), rather than losing it.
    ///
    /// # Errors
    /// When the case store fails or the case does not exist, or the operation is
    /// invalid (an unknown severity).
    pub async fn apply(
        &self,
        output: &RespondOutput,
    ) -> Result<Option<Vec<CaseEvent>>, ApplyError> {
        // Stored as a digest: a key may name an observable (`…:taxonomies:ip:<address>`),
        // which must not outlive a case's erasure in this table.
        let key = output.idempotency().map(|(key, case_id, kind)| {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
            (format!("sha256:{digest}"), case_id, kind)
        });
        let key = key.as_ref().map(|(k, c, n)| (k.as_str(), *c, *n));
        if let Some((key, case_id, kind)) = key {
            if self.store.response_output_applied(key).await? {
                tracing::info!(
                    case_id,
                    kind,
                    idempotency_key = key,
                    "respond output applied before, skipped"
                );
                return Ok(None);
            }
        }
        let events = match output {
            RespondOutput::StepResult(result) => {
                self.file_result(result).await?;
                Vec::new()
            }
            RespondOutput::CaseAction(action) => self.apply_action(action).await?,
        };
        if let Some((key, case_id, kind)) = key {
            self.store
                .record_response_output(key, case_id, kind)
                .await?;
        }
        Ok(Some(events))
    }

    async fn file_result(&self, result: &StepResult) -> Result<(), ApplyError> {
        // The respond stage redacted the result before publishing it; the audit log
        // keeps it as it came.
        let details = serde_json::to_value(result).unwrap_or_default();
        self.store
            .append_case_note(
                result.case_id,
                "respond.step_result",
                &details,
                &playbook_actor(&result.playbook),
            )
            .await?;
        Ok(())
    }

    async fn apply_action(&self, action: &CaseAction) -> Result<Vec<CaseEvent>, ApplyError> {
        let case_id = action.case_id;
        let before = self
            .store
            .get_case(case_id)
            .await?
            .ok_or(StoreError::NotFound {
                kind: "case",
                id: case_id.to_string(),
            })?;
        // The action record names the playbook; the message carries only the action id.
        let playbook = match self.store.get_action(action.action_id).await? {
            Some(record) => record.playbook,
            None => format!("action-{}", action.action_id),
        };
        let by = playbook_actor(&playbook);
        let note = |kind: &'static str, details: serde_json::Value| {
            let mut details = details;
            if let serde_json::Value::Object(map) = &mut details {
                map.insert("action_id".into(), action.action_id.into());
                map.insert(
                    "idempotency_key".into(),
                    action.idempotency_key.clone().into(),
                );
            }
            (kind, details)
        };
        let mut events = Vec::new();
        match &action.operation {
            CaseOperation::SetSeverity { severity } => {
                let to: Level =
                    severity
                        .parse()
                        .map_err(|e: kastell_core::alert::UnknownLevel| ApplyError::Invalid {
                            action_id: action.action_id,
                            reason: e.to_string(),
                        })?;
                let update = CaseUpdate {
                    severity: Some(to),
                    ..CaseUpdate::default()
                };
                let after = self.store.update_case(case_id, &update, &by).await?;
                events.extend(case_change_events(&before, &after));
            }
            CaseOperation::Assign { assignee } => {
                let update = CaseUpdate {
                    assignee: Some(Some(assignee.clone())),
                    ..CaseUpdate::default()
                };
                self.store.update_case(case_id, &update, &by).await?;
            }
            CaseOperation::CloseFalsePositive { reason } => {
                match self
                    .store
                    .close_case(case_id, Resolution::FalsePositive, reason, &by)
                    .await
                {
                    Ok(after) => events.extend(case_change_events(&before, &after)),
                    // Closed already (by a person, or by this very message before).
                    Err(StoreError::Conflict { reason }) => {
                        tracing::info!(case_id, reason = %reason, "case already closed");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            CaseOperation::AddTask { title } => {
                let task = NewTask {
                    title: title.clone(),
                    assignee: None,
                };
                self.store.create_task(case_id, &task, &by).await?;
            }
            CaseOperation::AddObservable { r#type, value } => {
                let new = NewObservable {
                    kind: r#type.clone(),
                    value: value.clone(),
                    ..NewObservable::default()
                };
                let owner = ObservableOwner::Case(case_id);
                let (_, added) = self.store.add_observable(&owner, &new, &by).await?;
                // One the case had already (from its alerts, a repeat) is not news.
                if added {
                    events.push(CaseEvent::ObservableAdded {
                        case_id,
                        kind: r#type.clone(),
                        value: value.clone(),
                    });
                }
            }
            // The store keeps no analyzer reports: the taxonomies go on the case's
            // timeline and audit log.
            CaseOperation::AttachTaxonomies {
                r#type,
                value,
                source,
                taxonomies,
            } => {
                let (kind, details) = note(
                    "respond.taxonomies",
                    serde_json::json!({
                        "type": r#type, "value": value, "source": source, "taxonomies": taxonomies,
                    }),
                );
                self.store
                    .append_case_note(case_id, kind, &details, &by)
                    .await?;
            }
        }
        tracing::info!(
            case_id,
            action_id = action.action_id,
            playbook = %playbook,
            operation = ?action.operation,
            "case action applied"
        );
        Ok(events)
    }
}

/// Joins [`Topic::ResponseOutputs`] as the stage's consumer group.
///
/// # Errors
/// When the bus refuses the subscription (the topic is closed, the group is taken).
pub async fn subscribe_response_outputs(
    bus: &dyn Bus,
) -> Result<Box<dyn Subscription>, CasesError> {
    bus.subscribe(Topic::ResponseOutputs, GROUP)
        .await
        .map_err(|source| CasesError::Subscribe {
            topic: Topic::ResponseOutputs,
            source,
        })
}

/// Applies the respond stage's messages until [`Topic::ResponseOutputs`] is closed and
/// drained. A message that does not decode or cannot be applied goes to the
/// dead-letter topic with the reason; the loop goes on.
///
/// # Errors
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_response_outputs_on(
    bus: &dyn Bus,
    mut subscription: Box<dyn Subscription>,
    store: Arc<dyn CaseStore>,
    stats: &OutputStats,
) -> Result<(), CasesError> {
    let applier = ResponseApplier::new(store);
    let span = tracing::info_span!("case-actions", group = GROUP);
    async {
        while let Some(delivery) = subscription.next().await {
            let applied = match delivery.message.decode::<RespondOutput>() {
                Ok(output) => applier
                    .apply(&output)
                    .await
                    .map(|events| (output, events))
                    .map_err(|e| format!("not applied: {}", error_chain(&e))),
                Err(e) => Err(format!("undecodable respond output: {}", error_chain(&e))),
            };
            match applied {
                Ok((_, None)) => stats.repeats.inc(),
                Ok((output, Some(events))) => {
                    match output {
                        RespondOutput::StepResult(_) => stats.step_results.inc(),
                        RespondOutput::CaseAction(_) => stats.case_actions.inc(),
                    }
                    for event in &events {
                        match publish_case_event(bus, event).await {
                            // `kastell run --once` closes the case events when the replay
                            // is drained; what the playbooks changed after that starts
                            // nothing more.
                            Err(CasesError::Publish {
                                source: BusError::Closed(_),
                                ..
                            }) => tracing::info!(?event, "case events closed, event not published"),
                            other => other?,
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(reason = %reason, "respond output rejected");
                    stats.rejected.inc();
                    DeadLetter::new(GROUP, Topic::ResponseOutputs, reason, &delivery.message)
                        .publish(bus)
                        .await
                        .map_err(|source| CasesError::Publish {
                            topic: Topic::DeadLetters,
                            source,
                        })?;
                    stats.dead_letters.inc();
                }
            }
            delivery.ack().await.map_err(CasesError::Ack)?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

async fn dead_letter(
    bus: &dyn Bus,
    message: &Message,
    reason: String,
    stats: &CasesStats,
) -> Result<(), CasesError> {
    DeadLetter::new(GROUP, Topic::Alerts, reason, message)
        .publish(bus)
        .await
        .map_err(|source| CasesError::Publish {
            topic: Topic::DeadLetters,
            source,
        })?;
    stats.dead_letters.inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kastell_core::alert::RuleRef;
    use kastell_core::store::CaseStatus;
    use kastell_core::{Event, Level};

    fn case(first: &str, last: &str) -> CaseRecord {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        CaseRecord {
            id: 1,
            title: "t".into(),
            severity: Level::Low,
            status: CaseStatus::Open,
            group_key: "k".into(),
            rule_id: "r".into(),
            host: None,
            first_seen: t(first),
            last_seen: t(last),
            alert_count: 2,
            tlp: kastell_core::Tlp::Amber,
            pap: kastell_core::Tlp::Amber,
            description: String::new(),
            assignee: None,
            tags: Vec::new(),
            resolution: None,
            summary: None,
            closed_at: None,
            created_at: t(first),
            updated_at: t(last),
        }
    }

    #[test]
    fn the_survivor_is_the_case_with_the_earliest_first_alert() {
        let mut early = case("2022-10-31T16:00:00Z", "2022-10-31T17:00:00Z");
        early.id = 7;
        let mut late = case("2022-10-31T18:00:00Z", "2022-10-31T18:30:00Z");
        late.id = 3;
        let mut tie = early.clone();
        tie.id = 9;
        assert_eq!(survivor(&[late.clone(), early.clone()]).unwrap().id, 7);
        assert_eq!(survivor(&[tie, late, early]).unwrap().id, 7);
        assert!(survivor(&[]).is_none());
    }

    #[test]
    fn the_window_does_not_overflow_at_the_edges_of_time() {
        assert_eq!(
            earlier(DateTime::<Utc>::MIN_UTC, Duration::hours(1)),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(
            later(DateTime::<Utc>::MAX_UTC, Duration::hours(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn key_and_title_name_the_rule_and_the_host() {
        let rule = RuleRef {
            id: "suricata-2011540".into(),
            title: "ET POLICY OpenSSL Demo CA - Internet Widgits Pty (O)".into(),
            ..Default::default()
        };
        let mut alert = Alert::from_event(rule, Event::new(), Utc::now());
        assert_eq!(group_key(&alert), "suricata-2011540|-");
        assert_eq!(
            case_title(&alert),
            "ET POLICY OpenSSL Demo CA - Internet Widgits Pty (O)"
        );
        alert.host = Some("66.63.168.75".into());
        assert_eq!(group_key(&alert), "suricata-2011540|66.63.168.75");
        assert_eq!(
            case_title(&alert),
            "ET POLICY OpenSSL Demo CA - Internet Widgits Pty (O) on 66.63.168.75"
        );
        alert.rule.title = " ".into();
        assert_eq!(case_title(&alert), "suricata-2011540 on 66.63.168.75");
    }

    #[test]
    fn a_raise_and_a_close_are_case_events_a_lowering_is_not() {
        let before = case("2022-10-31T16:00:00Z", "2022-10-31T17:00:00Z");
        let mut after = before.clone();
        after.severity = Level::High;
        after.closed_at = Some(after.last_seen);
        after.resolution = Some(Resolution::FalsePositive);
        assert_eq!(
            case_change_events(&before, &after),
            [
                CaseEvent::SeverityRaised {
                    case_id: 1,
                    from: Level::Low,
                    to: Level::High
                },
                CaseEvent::CaseClosed {
                    case_id: 1,
                    resolution: "false_positive".into()
                },
            ]
        );
        assert!(case_change_events(&after, &before).is_empty());
    }

    #[test]
    fn stats_register_once() {
        let registry = Registry::new();
        let stats = CasesStats::new();
        stats.register(&registry).unwrap();
        assert!(stats.register(&registry).is_err(), "names are unique");
        stats.cases_opened.inc();
        assert_eq!(stats.snapshot().cases_opened, 1);
        assert_eq!(registry.gather().len(), 9);
    }
}
