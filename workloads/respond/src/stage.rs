//! The respond stage: case events in, response actions out. A case event that triggers
//! playbooks records one action per step in the case store; an action that needs no
//! approval runs at once, one that does waits until the cases API approves it and an
//! `ActionApproved` event arrives.
//!
//! Steps of a playbook are independent actions created together: a step waiting for
//! approval does not hold back the steps after it. Actions are idempotent on (playbook,
//! step, alert), so a redelivered or replayed case event creates and runs nothing twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use kastell_core::approval::ApprovalTerms;
use kastell_core::store::{
    ActionFilter, ActionRecord, ActionStatus, AlertFilter, Decision, NewAction,
};
use kastell_core::{
    Alert, Bus, BusError, CaseEvent, CaseStore, Level, Message, StoreError, Subscription, Topic,
};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::output::{LogOutbox, Outbox, RespondOutput, StepResult};
use crate::playbook::{template_context, with_step, CompiledPlaybook, CompiledStep, PlaybookSet};
use crate::ratelimit::RateLimiter;
use crate::redact;
use crate::runner::{error_chain, Journal, RunContext, Runners, StepOutcome};
use crate::safety::{targets, Safety};
use crate::trigger::{kind_name, TriggeringEvent};

/// The consumer group the stage reads case events as.
pub const GROUP: &str = "respond";

/// The error recorded on an action refused by its playbook's rate limit.
pub const RATE_LIMITED: &str = "rate limited";

/// The error recorded on an action refused because it would touch a protected asset.
pub const PROTECTED_ASSET: &str = "protected asset";

/// The budget key of the platform-wide rate limit (playbook keys hold a `/`).
const GLOBAL_BUDGET: &str = "*";

/// Who the audit log and the case timeline name for an approval window that closed.
pub const EXPIRY_ACTOR: &str = "respond:expiry";

/// How often the running stage looks for pending actions whose approval window closed,
/// unless [`Responder::with_expiry_sweep`] says otherwise.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// Counters the stage keeps while it runs, readable from other tasks, and the Prometheus
/// metrics they feed (see [`RespondStats::register`]).
#[derive(Debug)]
pub struct RespondStats {
    metrics: RespondMetrics,
    case_events: AtomicU64,
    playbook_runs: AtomicU64,
    actions_created: AtomicU64,
    actions_existing: AtomicU64,
    awaiting_approval: AtomicU64,
    executed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    rate_limited: AtomicU64,
    refused: AtomicU64,
    retried: AtomicU64,
    skipped: AtomicU64,
    expired: AtomicU64,
    dead_letters: AtomicU64,
    errors: AtomicU64,
}

/// The stage's Prometheus metrics; the names are documented in `docs/respond.md`.
#[derive(Debug, Clone)]
struct RespondMetrics {
    /// By `playbook`, `step_type` and `outcome`.
    actions: IntCounterVec,
    approvals: IntCounter,
    rejections: IntCounter,
    expired: IntCounter,
    awaiting_approval: IntCounter,
    dry_runs: IntCounter,
    /// By `scope`: `playbook` or `platform`.
    rate_limited: IntCounterVec,
    refused: IntCounter,
    triggered: IntCounterVec,
}

impl RespondMetrics {
    fn new() -> Self {
        // The names and labels are constants of this module; `metrics_register_once`
        // checks them.
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        RespondMetrics {
            actions: vec(
                "kastell_respond_actions_total",
                "Response actions finished, by playbook, step type and outcome (succeeded, \
                 failed, dry-run, kill-switch, rate-limited, protected-asset).",
                &["playbook", "step_type", "outcome"],
            ),
            approvals: counter(
                "kastell_respond_approvals_total",
                "Approved actions the stage was told to run.",
            ),
            rejections: counter(
                "kastell_respond_rejections_total",
                "Pending actions a person rejected.",
            ),
            expired: counter(
                "kastell_respond_expired_total",
                "Pending actions whose approval window closed before anyone decided.",
            ),
            awaiting_approval: counter(
                "kastell_respond_awaiting_approval_total",
                "Actions created pending a person's approval.",
            ),
            dry_runs: counter(
                "kastell_respond_dry_runs_total",
                "Actions recorded without being done (dry run or kill switch).",
            ),
            rate_limited: vec(
                "kastell_respond_rate_limited_total",
                "Actions refused by a rate limit, by scope (playbook, platform).",
                &["scope"],
            ),
            refused: counter(
                "kastell_respond_protected_asset_refusals_total",
                "Actions refused because they would touch a protected asset.",
            ),
            triggered: vec(
                "kastell_respond_playbook_runs_total",
                "Playbooks started, by playbook and triggering event.",
                &["playbook", "event"],
            ),
        }
    }
}

impl Default for RespondStats {
    fn default() -> Self {
        RespondStats {
            metrics: RespondMetrics::new(),
            case_events: AtomicU64::default(),
            playbook_runs: AtomicU64::default(),
            actions_created: AtomicU64::default(),
            actions_existing: AtomicU64::default(),
            awaiting_approval: AtomicU64::default(),
            executed: AtomicU64::default(),
            succeeded: AtomicU64::default(),
            failed: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            refused: AtomicU64::default(),
            retried: AtomicU64::default(),
            skipped: AtomicU64::default(),
            expired: AtomicU64::default(),
            dead_letters: AtomicU64::default(),
            errors: AtomicU64::default(),
        }
    }
}

impl RespondStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the stage's metrics to a Prometheus registry.
    ///
    /// # Errors
    /// When the registry already holds metrics of these names.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let m = &self.metrics;
        registry.register(Box::new(m.actions.clone()))?;
        registry.register(Box::new(m.approvals.clone()))?;
        registry.register(Box::new(m.rejections.clone()))?;
        registry.register(Box::new(m.expired.clone()))?;
        registry.register(Box::new(m.awaiting_approval.clone()))?;
        registry.register(Box::new(m.dry_runs.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.triggered.clone()))?;
        Ok(())
    }

    /// The counters now; `pending` is filled in only by [`run_respond`]'s final report.
    pub fn snapshot(&self) -> RespondReport {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RespondReport {
            case_events: read(&self.case_events),
            playbook_runs: read(&self.playbook_runs),
            actions_created: read(&self.actions_created),
            actions_existing: read(&self.actions_existing),
            awaiting_approval: read(&self.awaiting_approval),
            executed: read(&self.executed),
            succeeded: read(&self.succeeded),
            failed: read(&self.failed),
            rate_limited: read(&self.rate_limited),
            refused: read(&self.refused),
            retried: read(&self.retried),
            skipped: read(&self.skipped),
            expired: read(&self.expired),
            pending: 0,
            dead_letters: read(&self.dead_letters),
            errors: read(&self.errors),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the stage did, as counted by [`RespondStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RespondReport {
    /// Case events read, decoded and handled (counted when handling ends).
    pub case_events: u64,
    /// Times a playbook was triggered (one per playbook per triggering event).
    pub playbook_runs: u64,
    /// Actions newly recorded in the store.
    pub actions_created: u64,
    /// Steps whose action existed already (a replay), so nothing was done.
    pub actions_existing: u64,
    /// Created actions that wait for a person's approval.
    pub awaiting_approval: u64,
    /// Actions handed to their runner, or recorded as a dry run.
    pub executed: u64,
    /// Actions finished as succeeded.
    pub succeeded: u64,
    /// Actions finished as failed, rate-limited ones included.
    pub failed: u64,
    /// Actions refused by their playbook's or the platform's rate limit.
    pub rate_limited: u64,
    /// Actions refused because they would touch a protected asset.
    #[serde(default)]
    pub refused: u64,
    /// Attempts repeated after a failed one.
    #[serde(default)]
    pub retried: u64,
    /// Steps not started because their condition did not hold.
    #[serde(default)]
    pub skipped: u64,
    /// Pending actions moved to `expired` because their approval window closed.
    #[serde(default)]
    pub expired: u64,
    /// Actions pending approval in the store when the stage stopped.
    pub pending: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Of those, valid case events whose handling failed (store errors, unknown actions).
    pub errors: u64,
}

/// The stage could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error("subscribing to {topic} as group {GROUP}")]
    Subscribe {
        topic: Topic,
        #[source]
        source: BusError,
    },
    #[error("publishing a dead letter")]
    DeadLetter(#[source] BusError),
    #[error("acknowledging a case event")]
    Ack(#[source] BusError),
}

/// Why one case event could not be handled; the event goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("case store")]
    Store(#[from] StoreError),
    #[error("action {0} was approved but is not in the case store")]
    UnknownAction(i64),
}

/// The dead-letter shape every stage after ingest sends, defined once in the core crate.
pub use kastell_core::DeadLetter;

/// Turns case events into actions; the stage loop's per-event work, usable without a
/// bus.
pub struct Responder {
    store: Arc<dyn CaseStore>,
    playbooks: Arc<PlaybookSet>,
    runners: Arc<Runners>,
    limiter: RateLimiter,
    safety: Safety,
    journal: Arc<Journal>,
    outbox: Arc<dyn Outbox>,
    /// Actions being run by this responder now: a duplicate delivery handled at the same
    /// time must not resume an action that is still running.
    running: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    expiry_sweep: Duration,
}

/// An action claimed for running; released when dropped.
struct Claim {
    id: i64,
    running: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Responder {
    pub fn new(
        store: Arc<dyn CaseStore>,
        playbooks: Arc<PlaybookSet>,
        runners: Arc<Runners>,
    ) -> Self {
        Responder {
            store,
            playbooks,
            runners,
            limiter: RateLimiter::hourly(),
            safety: Safety::default(),
            journal: Arc::new(Journal::new()),
            outbox: Arc::new(LogOutbox),
            running: Arc::default(),
            expiry_sweep: EXPIRY_SWEEP,
        }
    }

    /// How often the running stage expires pending actions whose approval window has
    /// closed (see [`Responder::expire_overdue`]).
    pub fn with_expiry_sweep(mut self, every: Duration) -> Self {
        self.expiry_sweep = every;
        self
    }

    /// Moves every pending action whose approval window closed before `now` to
    /// `expired`, as [`EXPIRY_ACTOR`]: the store records it on the case's timeline
    /// (`action_expired`) and in the audit log, and the action no longer lists as
    /// pending. Returns the actions expired.
    ///
    /// An action decided between the listing and the expiry keeps that decision.
    ///
    /// # Errors
    /// When the store fails; actions expired before the failure stay expired.
    pub async fn expire_overdue(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        stats: &RespondStats,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let pending = ActionFilter {
            status: Some(ActionStatus::Pending),
            ..ActionFilter::default()
        };
        let mut expired = Vec::new();
        for action in self.store.list_actions(&pending).await? {
            let Some(expires_at) = ApprovalTerms::of(&action).expires_at else {
                continue;
            };
            if now < expires_at {
                continue;
            }
            let decision = Decision::Expire {
                reason: format!("approval expired at {}", expires_at.to_rfc3339()),
            };
            match self
                .store
                .decide_action(action.id, &decision, EXPIRY_ACTOR)
                .await
            {
                Ok(action) => {
                    RespondStats::bump(&stats.expired);
                    stats.metrics.expired.inc();
                    tracing::info!(
                        action_id = action.id,
                        playbook = %action.playbook,
                        step = %action.step,
                        case_id = action.case_id,
                        expires_at = %expires_at.to_rfc3339(),
                        "approval expired, action will not run"
                    );
                    expired.push(action);
                }
                Err(StoreError::NotPending { id, status }) => {
                    tracing::debug!(action_id = id, %status, "decided before it expired");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// The platform's protected assets, kill switch and global budget.
    pub fn with_safety(mut self, safety: Safety) -> Self {
        self.safety = safety;
        self
    }

    /// Where step results and case operations are published.
    pub fn with_outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = outbox;
        self
    }

    /// The side-effect journal, shared when several responders must not repeat each
    /// other's calls.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.journal = journal;
        self
    }

    /// Handles one case event: starts the playbooks it triggers, or runs the action it
    /// approves.
    ///
    /// # Errors
    /// When the store fails or an approval names an action it does not hold. Actions
    /// already recorded stay recorded; handling the event again completes the rest.
    pub async fn handle(&self, event: &CaseEvent, stats: &RespondStats) -> Result<(), HandleError> {
        match event {
            CaseEvent::ActionApproved { action_id } => {
                stats.metrics.approvals.inc();
                return self.run_approved(*action_id, stats).await;
            }
            CaseEvent::ActionRejected { action_id } => {
                stats.metrics.rejections.inc();
                tracing::info!(action_id, "action rejected, it will not run");
                return Ok(());
            }
            CaseEvent::CaseOpened { .. } | CaseEvent::AlertAttached { .. } => {
                let trigger = TriggeringEvent::of(event, None, Level::Informational);
                return match trigger {
                    Some(trigger) => self.start_playbooks(&trigger, None, stats).await,
                    None => Ok(()),
                };
            }
            _ => {}
        }
        // The other case events carry no alert: they are matched and rendered against
        // the case and its latest alert.
        let Some(case_id) = event.case_id() else {
            return Ok(());
        };
        let Some(case) = self.store.get_case(case_id).await? else {
            tracing::warn!(case_id, "case event for a case not in the store, skipped");
            return Ok(());
        };
        let latest = self.latest_alert(case_id, case.alert_count).await?;
        match TriggeringEvent::of(event, latest.as_ref(), case.severity) {
            Some(trigger) => self.start_playbooks(&trigger, Some(case), stats).await,
            None => {
                tracing::info!(case_id, "case has no alert to match playbooks on, skipped");
                Ok(())
            }
        }
    }

    async fn latest_alert(&self, case_id: i64, count: i64) -> Result<Option<Alert>, HandleError> {
        // The store lists a case's alerts oldest first; the count says where the last is.
        let filter = AlertFilter {
            case_id: Some(case_id),
            offset: Some((count - 1).max(0)),
            limit: Some(1),
            ..AlertFilter::default()
        };
        let alerts = self.store.list_alerts(&filter).await?;
        Ok(alerts.into_iter().next_back().map(|record| record.alert))
    }

    async fn start_playbooks(
        &self,
        trigger: &TriggeringEvent<'_>,
        known_case: Option<kastell_core::store::CaseRecord>,
        stats: &RespondStats,
    ) -> Result<(), HandleError> {
        let mut case = known_case.map(Some);
        for playbook in self.playbooks.triggered_by(trigger) {
            RespondStats::bump(&stats.playbook_runs);
            stats
                .metrics
                .triggered
                .with_label_values(&[playbook.key.as_str(), kind_name(trigger.kind)])
                .inc();
            if case.is_none() {
                case = Some(self.store.get_case(trigger.case_id).await?);
            }
            let mut context = template_context(
                trigger.alert,
                trigger.case_id,
                case.as_ref().and_then(Option::as_ref),
                &playbook.key,
            );
            if let Value::Object(map) = &mut context {
                map.insert("trigger".into(), trigger.details.clone());
            }
            tracing::info!(
                playbook = %playbook.key,
                event = kind_name(trigger.kind),
                case_id = trigger.case_id,
                trigger_id = %trigger.trigger_id,
                rule_id = %trigger.alert.rule.id,
                "playbook triggered"
            );
            for step in &playbook.steps {
                self.start_step(playbook, step, trigger, &context, stats)
                    .await?;
            }
        }
        Ok(())
    }

    async fn start_step(
        &self,
        playbook: &CompiledPlaybook,
        step: &CompiledStep,
        trigger: &TriggeringEvent<'_>,
        context: &Value,
        stats: &RespondStats,
    ) -> Result<(), HandleError> {
        let context = with_step(context.clone(), &step.name);
        // A condition that fails to render is reported on the action, below.
        if let Ok(false) = step.condition_holds(&context) {
            RespondStats::bump(&stats.skipped);
            tracing::info!(
                playbook = %playbook.key,
                step = %step.name,
                case_id = trigger.case_id,
                "step condition false, skipped"
            );
            return Ok(());
        }
        let rendered = step
            .condition_holds(&context)
            .and_then(|_| step.render_params(&context, playbook.dry_run));
        let mut params = match &rendered {
            Ok(params) => params.clone(),
            Err(e) => json!({ "dry_run": playbook.dry_run, "render_error": e.to_string() }),
        };
        let approval_required = step.approval.required_at(trigger.level);
        if approval_required {
            // The terms travel with the action, so the case API can check who decides
            // and until when without knowing the playbook.
            let terms = step.approval.terms(trigger.level, chrono::Utc::now());
            if let (Value::Object(map), Ok(terms)) = (&mut params, serde_json::to_value(terms)) {
                map.insert("approval".into(), terms);
            }
        }
        let new = NewAction {
            case_id: trigger.case_id,
            alert_id: trigger.trigger_id.clone(),
            playbook: playbook.key.clone(),
            step: step.name.clone(),
            step_type: step.step_type().to_owned(),
            approval_required,
            params,
        };
        let (action, created) = self.store.create_action(&new).await?;
        if !created && action.status == ActionStatus::Approved && !action.approval_required {
            // Recorded but never finished: the process stopped while the step ran. The
            // journal keeps the retry from repeating a side effect that took place.
            RespondStats::bump(&stats.actions_existing);
            tracing::info!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                "unfinished action resumed"
            );
            return self.execute(action, stats).await;
        }
        if !created {
            RespondStats::bump(&stats.actions_existing);
            tracing::debug!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                status = %action.status,
                "action exists, skipped"
            );
            return Ok(());
        }
        RespondStats::bump(&stats.actions_created);

        if let Err(e) = rendered {
            let outcome = StepOutcome::failed(format!("rendering the step: {e}"));
            return self
                .finish_run(&action, outcome, StepRun::start(), None, stats)
                .await;
        }
        if action.status == ActionStatus::Pending {
            RespondStats::bump(&stats.awaiting_approval);
            stats.metrics.awaiting_approval.inc();
            tracing::info!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                case_id = action.case_id,
                "action awaits approval"
            );
            return Ok(());
        }
        self.execute(action, stats).await
    }

    async fn run_approved(&self, action_id: i64, stats: &RespondStats) -> Result<(), HandleError> {
        let action = self
            .store
            .get_action(action_id)
            .await?
            .ok_or(HandleError::UnknownAction(action_id))?;
        if action.status != ActionStatus::Approved {
            // A redelivered approval of an action that already ran, or one decided
            // otherwise since: running it again would repeat its side effect.
            tracing::info!(action_id, status = %action.status, "approved action not runnable, skipped");
            return Ok(());
        }
        tracing::info!(
            action_id,
            playbook = %action.playbook,
            step = %action.step,
            decided_by = action.decided_by.as_deref().unwrap_or(""),
            "running approved action"
        );
        self.execute(action, stats).await
    }

    /// Claims the action and runs it if it is still `approved` once claimed: two
    /// deliveries handled at once (a burst of duplicates, a redelivered approval) run
    /// it once, and one handled after the other finished it runs nothing.
    async fn execute(&self, action: ActionRecord, stats: &RespondStats) -> Result<(), HandleError> {
        let claimed = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(action.id);
        if !claimed {
            tracing::debug!(action_id = action.id, "action running already, skipped");
            return Ok(());
        }
        let _claim = Claim {
            id: action.id,
            running: Arc::clone(&self.running),
        };
        let action = match self.store.get_action(action.id).await? {
            Some(current) if current.status == ActionStatus::Approved => current,
            _ => {
                tracing::debug!(action_id = action.id, "action no longer approved, skipped");
                return Ok(());
            }
        };
        self.run_claimed(action, stats).await
    }

    async fn run_claimed(
        &self,
        action: ActionRecord,
        stats: &RespondStats,
    ) -> Result<(), HandleError> {
        let run = StepRun::start();
        let protected = self
            .safety
            .protected_among(&targets(&action.step_type, &action.params));
        if !protected.is_empty() {
            RespondStats::bump(&stats.refused);
            stats.metrics.refused.inc();
            tracing::warn!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                protected = ?protected,
                "action refused: protected asset"
            );
            let mut details = Map::new();
            details.insert("protected".into(), json!(protected));
            let outcome = StepOutcome::failed_with(PROTECTED_ASSET, details);
            return self
                .finish_run(&action, outcome, run, Some("protected-asset"), stats)
                .await;
        }
        // A release is a person undoing a containment: holding it back for the budget
        // would keep a pod or an address cut off because automation was busy.
        let release = crate::runner::is_release(&action);
        if !release {
            if let Some(outcome) = self.over_budget(&action, stats) {
                return self
                    .finish_run(&action, outcome, run, Some("rate-limited"), stats)
                    .await;
            }
        }

        let Some(runner) = self.runners.get(&action.step_type).cloned() else {
            let outcome = StepOutcome::failed(format!(
                "no runner for step type {:?} in this version",
                action.step_type
            ));
            return self.finish_run(&action, outcome, run, None, stats).await;
        };
        RespondStats::bump(&stats.executed);
        let dry_run = action.params.get("dry_run").and_then(Value::as_bool) == Some(true);
        if dry_run || self.safety.kill_switch {
            stats.metrics.dry_runs.inc();
            let disposition = if dry_run { "dry-run" } else { "kill-switch" };
            let (would, undo) = if release {
                (action.params.get("release").cloned(), None)
            } else {
                (Some(runner.describe(&action)), runner.release(&action))
            };
            let outcome = StepOutcome::succeeded(json!({
                "dry_run": true,
                "kill_switch": self.safety.kill_switch,
                "would": would,
                "release": undo,
            }));
            return self
                .finish_run(&action, outcome, run, Some(disposition), stats)
                .await;
        }

        let ctx = Arc::new(RunContext::new(
            Arc::clone(&self.journal),
            Arc::clone(&self.outbox),
            idempotency_key(&action),
        ));
        let retries = action
            .params
            .get("retries")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let backoff = action
            .params
            .get("backoff_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(2);
        let mut attempt = 1;
        let mut outcome = loop {
            ctx.set_attempt(attempt);
            // The runner runs in its own task so that a bug in one step type fails that
            // attempt instead of taking the stage down.
            let (task_runner, task_action, task_ctx) =
                (Arc::clone(&runner), action.clone(), Arc::clone(&ctx));
            let outcome = tokio::spawn(async move {
                if !release {
                    return task_runner.run(&task_action, &task_ctx).await;
                }
                task_runner
                    .run_release(&task_action, &task_ctx)
                    .await
                    .unwrap_or_else(|| {
                        StepOutcome::failed(format!(
                            "step type {} has no release",
                            task_action.step_type
                        ))
                    })
            })
            .await
            .unwrap_or_else(|e| StepOutcome::failed(format!("the step runner crashed: {e}")));
            if outcome.status == ActionStatus::Succeeded || attempt > retries {
                break outcome;
            }
            RespondStats::bump(&stats.retried);
            let wait = Duration::from_secs(backoff.saturating_mul(1 << (attempt - 1).min(10)));
            let reason = outcome.result.get("error").and_then(Value::as_str);
            tracing::info!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                attempt,
                wait_seconds = wait.as_secs(),
                reason = reason.unwrap_or(""),
                "step failed, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        };
        if let Value::Object(result) = &mut outcome.result {
            result.insert("attempts".into(), attempt.into());
            result.insert("requests".into(), ctx.requests().into());
            if outcome.status == ActionStatus::Succeeded && !release {
                if let Some(release) = runner.release(&action) {
                    result.insert("release".into(), release);
                }
            }
        }
        self.finish_run(&action, outcome, run, None, stats).await
    }

    /// The refusal of an action over its playbook's or the platform's budget; `None`
    /// when both have room (and then one action is taken from each).
    fn over_budget(&self, action: &ActionRecord, stats: &RespondStats) -> Option<StepOutcome> {
        // A playbook removed since the action was recorded has no budget left to apply.
        let limits = [
            (
                action.playbook.as_str(),
                self.playbooks
                    .get(&action.playbook)
                    .and_then(|p| p.max_actions_per_hour),
            ),
            (GLOBAL_BUDGET, self.safety.max_actions_per_hour),
        ];
        let now = Instant::now();
        for (key, max) in limits {
            let Some(max) = max else { continue };
            if self.limiter.try_acquire(key, max, now) {
                continue;
            }
            RespondStats::bump(&stats.rate_limited);
            let scope = if key == GLOBAL_BUDGET {
                "platform"
            } else {
                "playbook"
            };
            stats.metrics.rate_limited.with_label_values(&[scope]).inc();
            tracing::warn!(
                action_id = action.id,
                playbook = %action.playbook,
                scope,
                max_actions_per_hour = max,
                "action rate limited"
            );
            let mut details = Map::new();
            details.insert("max_actions_per_hour".into(), max.into());
            details.insert("scope".into(), scope.into());
            return Some(StepOutcome::failed_with(RATE_LIMITED, details));
        }
        None
    }

    /// Finishes the action and publishes its result for the case timeline.
    async fn finish_run(
        &self,
        action: &ActionRecord,
        mut outcome: StepOutcome,
        run: StepRun,
        disposition: Option<&str>,
        stats: &RespondStats,
    ) -> Result<(), HandleError> {
        outcome.result = redact::json(&outcome.result);
        self.finish(action, outcome.clone(), stats).await?;
        let label = disposition.unwrap_or(match outcome.status {
            ActionStatus::Succeeded => "succeeded",
            _ => "failed",
        });
        stats
            .metrics
            .actions
            .with_label_values(&[action.playbook.as_str(), action.step_type.as_str(), label])
            .inc();
        let get = |key: &str| outcome.result.get(key).cloned();
        let result = StepResult {
            action_id: action.id,
            case_id: action.case_id,
            alert_id: action.alert_id.clone(),
            playbook: action.playbook.clone(),
            step: action.step.clone(),
            step_type: action.step_type.clone(),
            status: outcome.status.to_string(),
            disposition: disposition.map(str::to_owned),
            attempts: get("attempts").and_then(|a| a.as_u64()).unwrap_or(0) as u32,
            requests: get("requests")
                .and_then(|r| r.as_array().cloned())
                .unwrap_or_default(),
            started_at: run.started_at,
            duration_ms: run.clock.elapsed().as_millis() as u64,
            release: get("release").filter(|r| !r.is_null()),
            result: outcome.result,
            idempotency_key: Some(format!("{}:result", idempotency_key(action))),
        };
        self.outbox.publish(RespondOutput::StepResult(result)).await;
        Ok(())
    }

    async fn finish(
        &self,
        action: &ActionRecord,
        outcome: StepOutcome,
        stats: &RespondStats,
    ) -> Result<(), HandleError> {
        let counter = match outcome.status {
            ActionStatus::Succeeded => &stats.succeeded,
            _ => &stats.failed,
        };
        self.store
            .finish_action(action.id, outcome.status, &outcome.result)
            .await?;
        RespondStats::bump(counter);
        if outcome.status != ActionStatus::Succeeded {
            let reason = outcome.result.get("error").and_then(|e| e.as_str());
            tracing::warn!(
                action_id = action.id,
                playbook = %action.playbook,
                step = %action.step,
                reason = reason.unwrap_or(""),
                "action failed"
            );
        }
        Ok(())
    }
}

/// When an action's run began.
struct StepRun {
    started_at: chrono::DateTime<chrono::Utc>,
    clock: Instant,
}

impl StepRun {
    fn start() -> Self {
        StepRun {
            started_at: chrono::Utc::now(),
            clock: Instant::now(),
        }
    }
}

/// The idempotency key of a trigger and step: the same for every delivery of the same
/// alert to the same step, different for anything else.
pub fn idempotency_key(action: &ActionRecord) -> String {
    let mut hash = Sha256::new();
    for part in [&action.playbook, &action.step, &action.alert_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("kastell-{}", &hex::encode(hash.finalize())[..32])
}

/// Runs the stage until the case-events topic is closed and drained.
///
/// Subscribes to [`Topic::CaseEvents`] as group [`GROUP`]. Undecodable messages and
/// events whose handling failed go to [`Topic::DeadLetters`] with the reason; the
/// stage goes on with the next.
///
/// # Errors
/// When the subscription, a dead letter or an acknowledgement fails: the bus is gone.
pub async fn run_respond(
    bus: &dyn Bus,
    store: Arc<dyn CaseStore>,
    playbooks: Arc<PlaybookSet>,
    runners: Arc<Runners>,
    stats: &RespondStats,
) -> Result<RespondReport, RespondError> {
    let subscription = subscribe_case_events(bus).await?;
    run_respond_on(bus, subscription, store, playbooks, runners, stats).await
}

/// Joins [`Topic::CaseEvents`] as group [`GROUP`]; lets a caller subscribe every stage
/// before anything is published, as the in-process bus requires.
///
/// # Errors
///
/// When the bus refuses the subscription (the topic is closed, the group is taken).
pub async fn subscribe_case_events(bus: &dyn Bus) -> Result<Box<dyn Subscription>, RespondError> {
    bus.subscribe(Topic::CaseEvents, GROUP)
        .await
        .map_err(|source| RespondError::Subscribe {
            topic: Topic::CaseEvents,
            source,
        })
}

/// [`run_respond`] on a subscription taken earlier with [`subscribe_case_events`].
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_respond_on(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    store: Arc<dyn CaseStore>,
    playbooks: Arc<PlaybookSet>,
    runners: Arc<Runners>,
    stats: &RespondStats,
) -> Result<RespondReport, RespondError> {
    let responder = Responder::new(Arc::clone(&store), playbooks, runners);
    run_responder_on(bus, subscription, responder, store, stats).await
}

/// [`run_respond_on`] with a responder configured beforehand (safety policy, outbox).
///
/// # Errors
///
/// When the bus refuses a publish or an acknowledgement.
pub async fn run_responder_on(
    bus: &dyn Bus,
    subscription: Box<dyn Subscription>,
    responder: Responder,
    store: Arc<dyn CaseStore>,
    stats: &RespondStats,
) -> Result<RespondReport, RespondError> {
    let span = tracing::info_span!(
        "respond",
        group = GROUP,
        playbooks = responder.playbooks.len()
    );
    // The sweep runs beside the loop, in this task, and stops when the loop ends.
    let result = async {
        tokio::select! {
            result = respond_loop(bus, subscription, &responder, stats) => result,
            never = expiry_loop(&responder, stats) => match never {},
        }
    }
    .instrument(span)
    .await;

    let mut report = stats.snapshot();
    let pending = ActionFilter {
        status: Some(ActionStatus::Pending),
        ..ActionFilter::default()
    };
    match store.list_actions(&pending).await {
        Ok(actions) => report.pending = actions.len() as u64,
        Err(e) => tracing::warn!(reason = %error_chain(&e), "counting pending actions failed"),
    }
    tracing::info!(
        case_events = report.case_events,
        playbook_runs = report.playbook_runs,
        actions_created = report.actions_created,
        executed = report.executed,
        succeeded = report.succeeded,
        failed = report.failed,
        rate_limited = report.rate_limited,
        refused = report.refused,
        retried = report.retried,
        skipped = report.skipped,
        pending = report.pending,
        dead_letters = report.dead_letters,
        "respond stopped"
    );
    result.map(|()| report)
}

/// Expires overdue pending actions every [`Responder::with_expiry_sweep`], the first
/// time at once (actions left pending while the stage was down); never returns.
async fn expiry_loop(responder: &Responder, stats: &RespondStats) -> std::convert::Infallible {
    let mut every = tokio::time::interval(responder.expiry_sweep);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = responder.expire_overdue(chrono::Utc::now(), stats).await {
            tracing::warn!(reason = %error_chain(&e), "expiring overdue approvals failed");
        }
    }
}

async fn respond_loop(
    bus: &dyn Bus,
    mut subscription: Box<dyn Subscription>,
    responder: &Responder,
    stats: &RespondStats,
) -> Result<(), RespondError> {
    while let Some(delivery) = subscription.next().await {
        match delivery.message.decode::<CaseEvent>() {
            Ok(event) => {
                let handled = responder.handle(&event, stats).await;
                // Counted once handling has ended: `kastell run` waits for this count to
                // know that every action of the replay is recorded.
                RespondStats::bump(&stats.case_events);
                if let Err(error) = handled {
                    let reason = error_chain(&error);
                    tracing::warn!(reason = %reason, "case event not handled");
                    RespondStats::bump(&stats.errors);
                    dead_letter(bus, &delivery.message, reason, stats).await?;
                }
            }
            Err(error) => {
                let reason = format!("undecodable case event: {}", error_chain(&error));
                tracing::warn!(reason = %reason, "rejected case event");
                dead_letter(bus, &delivery.message, reason, stats).await?;
            }
        }
        delivery.ack().await.map_err(RespondError::Ack)?;
    }
    Ok(())
}

async fn dead_letter(
    bus: &dyn Bus,
    message: &Message,
    reason: String,
    stats: &RespondStats,
) -> Result<(), RespondError> {
    DeadLetter::new(GROUP, Topic::CaseEvents, reason, message)
        .publish(bus)
        .await
        .map_err(RespondError::DeadLetter)?;
    RespondStats::bump(&stats.dead_letters);
    Ok(())
}
