//! The consuming stages (correlate, enrich, cases, respond) as processes: one
//! subscription held for the life of the process, and on it one *generation* of the stage
//! per version of the resource directory.
//!
//! A reload loads the new resources first (a directory that cannot be read leaves the
//! running generation alone), then asks the running generation to stop between messages:
//! the message in hand is finished, forwarded and acknowledged, and the next generation
//! reads the same subscription from the next message on. Nothing is dropped and nothing
//! is read twice. Shutdown is the same stop without a next generation.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use kastell_core::{Bus, CaseStore, Delivery, Subscription, Topic};
use kastell_crds::ResourceSet;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::endpoint::{self, render_counters, Health};
use super::{partitions, BusKind, Stage, StageArgs};
use crate::resources;
use crate::tls::ServerTls;

/// The stage's input topic and consumer group.
fn input(stage: Stage) -> (Topic, &'static str) {
    match stage {
        Stage::Correlate => (Topic::Events, kastell_correlate::GROUP),
        Stage::Enrich => (Topic::Detections, kastell_enrich::stage::GROUP),
        Stage::Cases => (Topic::Alerts, kastell_cases::GROUP),
        Stage::Respond | Stage::Ingest => (Topic::CaseEvents, kastell_respond::GROUP),
    }
}

/// A view of the shared subscription that ends (returns `None`) once `stop` is
/// cancelled, but only between messages: the stage loops finish the delivery they hold
/// before asking for the next.
struct Stoppable {
    inner: Arc<Mutex<Box<dyn Subscription>>>,
    stop: CancellationToken,
}

#[async_trait]
impl Subscription for Stoppable {
    async fn next(&mut self) -> Option<Delivery> {
        if self.stop.is_cancelled() {
            return None;
        }
        let mut inner = self.inner.lock().await;
        // NB: a JetStream fetch abandoned here leaves its messages unacknowledged; the
        // server delivers them again after the acknowledgement wait.
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            delivery = inner.next() => delivery,
        }
    }
}

/// The counters that outlive generations, and what the stage shares across them.
struct Shared {
    stage: Stage,
    bus: Arc<dyn Bus>,
    store: Option<Arc<dyn CaseStore>>,
    correlate: Arc<kastell_correlate::CorrelateStats>,
    enrich: Arc<kastell_enrich::EnrichStats>,
    /// The enrich stage's per-feed indicator gauges, set by its refresher, and the
    /// registry `/metrics` renders them from.
    intel: Option<(kastell_enrich::metrics::IntelMetrics, prometheus::Registry)>,
    cases: kastell_cases::Metrics,
    /// Counters of the cases stage's response-outputs loop (on the cases metrics).
    outputs: kastell_cases::OutputStats,
    respond: Arc<kastell_respond::RespondStats>,
    /// The respond stage's labelled counters (actions by playbook and outcome, approvals,
    /// dry runs…), the ones the response dashboard reads, as `kastell run` exports them.
    respond_registry: Option<prometheus::Registry>,
    /// Where the respond stage keeps its side-effect journal.
    data: std::path::PathBuf,
    /// correlate: whether it reads events partitions, and how many events arrived keyed
    /// by another partition plan than its rules make.
    partitioned: bool,
    plan_mismatches: Arc<std::sync::atomic::AtomicU64>,
}

pub async fn run(
    stage: Stage,
    args: &StageArgs,
    bus: Arc<dyn Bus>,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let store = match stage {
        Stage::Cases | Stage::Respond => Some(super::open_store(args).await?),
        _ => None,
    };
    let registry = prometheus::Registry::new();
    let outputs = kastell_cases::OutputStats::new();
    outputs
        .register(&registry)
        .context("registering the response-outputs metrics")?;
    let intel = match stage {
        Stage::Enrich => {
            let registry = prometheus::Registry::new();
            let metrics = kastell_enrich::metrics::IntelMetrics::register_in(&registry)
                .context("registering the intel metrics")?;
            Some((metrics, registry))
        }
        _ => None,
    };
    let respond = Arc::new(kastell_respond::RespondStats::new());
    let respond_registry = match stage {
        Stage::Respond => {
            let registry = prometheus::Registry::new();
            respond
                .register(&registry)
                .context("registering the respond metrics")?;
            Some(registry)
        }
        _ => None,
    };
    let context = Arc::new(Shared {
        stage,
        bus: Arc::clone(&bus),
        store,
        correlate: Arc::default(),
        enrich: Arc::default(),
        intel,
        cases: kastell_cases::Metrics::register_in(registry, kastell_cases::CasesStats::new())
            .context("registering the cases metrics")?,
        outputs,
        respond,
        respond_registry,
        data: args.data.clone(),
        partitioned: stage == Stage::Correlate && args.bus == BusKind::Nats,
        plan_mismatches: Arc::default(),
    });
    let subscription = subscribe_input(stage, args, bus.as_ref()).await?;
    let shared = Arc::new(Mutex::new(subscription));

    let outputs = match stage {
        Stage::Cases => Some(spawn_response_outputs(&context, stop.clone()).await?),
        _ => None,
    };
    let remediation = match stage {
        Stage::Cases => Some(spawn_remediation(&context, args, stop.clone()).await?),
        _ => None,
    };

    let endpoint_stop = CancellationToken::new();
    let (endpoint, health) = serve_endpoint(&context, args, tls, endpoint_stop.clone()).await?;
    let mut outcome = generations(&context, args, &shared, &stop, health.as_ref()).await;
    if let Some(outputs) = outputs {
        // The generations ended (a stop, or the input closed): the outputs loop stops
        // between messages too.
        stop.cancel();
        let applied = outputs
            .await
            .context("the response-outputs loop panicked")
            .and_then(|applied| applied);
        outcome = outcome.and(applied);
    }
    if let Some(remediation) = remediation {
        stop.cancel();
        let applied = remediation
            .await
            .context("the remediation loop panicked")
            .and_then(|applied| applied);
        outcome = outcome.and(applied);
    }
    if let Some(health) = &health {
        health.set_ready(false);
    }
    endpoint_stop.cancel();
    let _ = endpoint.await;
    tracing::info!(stage = context.stage.as_str(), "stage stopped");
    outcome
}

/// The stage's input subscription. A correlate replica on NATS reads only its share of
/// the events partitions, so that each correlation group is seen whole by one replica.
async fn subscribe_input(
    stage: Stage,
    args: &StageArgs,
    bus: &dyn Bus,
) -> anyhow::Result<Box<dyn Subscription>> {
    let (topic, group) = input(stage);
    if stage == Stage::Correlate && args.bus == BusKind::Nats {
        let count = super::event_partitions(args);
        let explicit = args.partitions.as_ref().map(|list| list.0.as_slice());
        let mine = partitions::assigned(count, explicit, args.replica_index, args.replicas)
            .map_err(anyhow::Error::msg)
            .context("choosing this replica's events partitions")?;
        let indices: Vec<u32> = mine.iter().map(|p| p.index).collect();
        tracing::info!(partitions = ?indices, count, "reading events partitions");
        let merged = partitions::Merged::subscribe(bus, topic, group, &mine)
            .await
            .with_context(|| format!("subscribing to partitions {indices:?} of {topic}"))?;
        return Ok(Box::new(merged));
    }
    bus.subscribe(topic, group)
        .await
        .with_context(|| format!("subscribing to {topic} as group {group}"))
}

/// The cases stage also applies what respond sends back (case operations and step
/// results). That loop reads no resources, so it runs beside the generations for the
/// life of the process rather than being restarted on each reload.
async fn spawn_response_outputs(
    context: &Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let subscription = kastell_cases::subscribe_response_outputs(context.bus.as_ref())
        .await
        .context("subscribing to the response outputs")?;
    let subscription = Box::new(Stoppable {
        inner: Arc::new(Mutex::new(subscription)),
        stop,
    });
    let (bus, store, stats) = (
        Arc::clone(&context.bus),
        store(context)?,
        context.outputs.clone(),
    );
    Ok(tokio::spawn(async move {
        kastell_cases::run_response_outputs_on(bus.as_ref(), subscription, store, &stats)
            .await
            .context("the response-outputs loop failed")
    }))
}

/// How long the remediation loop waits for more of a Greenbone report before it applies
/// what it has as one scan. A report's findings are published together, so a pause this
/// long means the report is complete.
const SCAN_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The cases stage also turns Greenbone findings into remediation cases, reading the
/// events topic as the consumer group `remediation` (as `kastell run` does) for the life
/// of the process. Host criticality is read from the Sensors at start.
async fn spawn_remediation(
    context: &Arc<Shared>,
    args: &StageArgs,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let (loaded, _) = resources::load(&args.config)?;
    let settings = crate::setup::criticality(&loaded);
    let group = kastell_cases::remediation::GROUP;
    let subscription = context
        .bus
        .subscribe(Topic::Events, group)
        .await
        .with_context(|| format!("subscribing to {} as group {group}", Topic::Events))?;
    let subscription = Box::new(Stoppable {
        inner: Arc::new(Mutex::new(subscription)),
        stop,
    });
    let store = store(context)?;
    Ok(tokio::spawn(async move {
        let outcome = kastell_cases::remediation::run_remediation_with(
            subscription,
            store.as_ref(),
            &settings,
            Some(SCAN_IDLE),
        )
        .await
        .context("the remediation loop failed")?;
        tracing::info!(
            opened = outcome.opened.len(),
            reopened = outcome.reopened.len(),
            closed = outcome.closed.len(),
            "remediation stopped"
        );
        Ok(())
    }))
}

/// Runs generation after generation until `stop` (or the input ends).
async fn generations(
    context: &Arc<Shared>,
    args: &StageArgs,
    shared: &Arc<Mutex<Box<dyn Subscription>>>,
    stop: &CancellationToken,
    health: Option<&Health>,
) -> anyhow::Result<()> {
    let mut fingerprint = resources::fingerprint(&args.config)?;
    let (mut loaded, problems) = resources::load(&args.config)?;
    log_problems(&problems);
    let mut generation_number = 1u64;
    loop {
        let pause = CancellationToken::new();
        let subscription = Box::new(Stoppable {
            inner: Arc::clone(shared),
            stop: pause.clone(),
        });
        let next = {
            let generation = generation(context, &loaded, subscription, pause.clone());
            tokio::pin!(generation);
            if let Some(health) = health {
                health.set_ready(true);
            }
            tracing::info!(generation = generation_number, "stage running");
            let next = loop {
                tokio::select! {
                    ended = &mut generation => {
                        // The input ended (an in-process bus was closed) or the stage failed.
                        return ended;
                    }
                    () = stop.cancelled() => {
                        pause.cancel();
                        return (&mut generation).await;
                    }
                    () = tokio::time::sleep(args.reload_interval) => {
                        match changed(args, &fingerprint) {
                            Some((now, set, problems)) => {
                                log_problems(&problems);
                                fingerprint = now;
                                break set;
                            }
                            None => continue,
                        }
                    }
                }
            };
            tracing::info!(
                generation = generation_number,
                "resources changed; reloading"
            );
            pause.cancel();
            (&mut generation).await?;
            next
        };
        loaded = next;
        generation_number += 1;
    }
}

/// The new fingerprint and resources when the directory changed and can be read; a
/// directory that cannot be read is logged and keeps the running generation.
pub(super) fn changed(
    args: &StageArgs,
    fingerprint: &str,
) -> Option<(String, ResourceSet, Vec<String>)> {
    let read = || -> anyhow::Result<Option<(String, ResourceSet, Vec<String>)>> {
        let now = resources::fingerprint(&args.config)?;
        if now == fingerprint {
            return Ok(None);
        }
        let (set, problems) = resources::load(&args.config)?;
        Ok(Some((now, set, problems)))
    };
    match read() {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(reason = %format!("{e:#}"), "resource directory unreadable; keeping the running configuration");
            None
        }
    }
}

pub(super) fn log_problems(problems: &[String]) {
    for problem in problems {
        tracing::warn!(problem = %problem, "resource not used");
    }
}

/// One generation of the stage on `resources`, reading `subscription` until it ends.
async fn generation(
    context: &Shared,
    resources: &ResourceSet,
    subscription: Box<dyn Subscription>,
    pause: CancellationToken,
) -> anyhow::Result<()> {
    let bus = context.bus.as_ref();
    let mut problems = Vec::new();
    match context.stage {
        Stage::Correlate => {
            let (rules, rule_problems) = crate::detection::compile_rules(&resources.rules);
            log_problems(&rule_problems);
            tracing::info!(rules = rules.len(), "rules compiled");
            let subscription: Box<dyn Subscription> = if context.partitioned {
                Box::new(partitions::PlanChecked::new(
                    subscription,
                    &rules.partition_plan(),
                    Arc::clone(&context.plan_mismatches),
                ))
            } else {
                subscription
            };
            kastell_correlate::run_correlate_on(
                bus,
                subscription,
                Arc::new(rules),
                &context.correlate,
            )
            .await?;
        }
        Stage::Enrich => {
            let http = crate::setup::feed_http(resources)?;
            let defs = crate::setup::feed_defs(resources);
            let sightings = crate::setup::start_sightings(&defs, &http);
            let mut refresher = kastell_enrich::refresh::Refresher::new(defs, http);
            if let Some((metrics, _)) = &context.intel {
                refresher = refresher.with_metrics(metrics.clone());
            }
            refresher.refresh_due().await;
            for feed in refresher.feeds() {
                if let Some(error) = &feed.status.last_error {
                    tracing::warn!(feed = %feed.def.name, reason = %error, "intel feed not loaded");
                }
            }
            let current = refresher.current();
            let refreshing = refresher.run(pause.cancelled());
            let enriching = async {
                let enriched = kastell_enrich::run_enrich_sighted(
                    bus,
                    subscription,
                    current,
                    &context.enrich,
                    sightings.as_ref().map(|(sightings, _)| sightings),
                )
                .await;
                // A stage that stopped on an error stops its refresher too.
                pause.cancel();
                enriched
            };
            let ((), enriched) = tokio::join!(refreshing, enriching);
            if let Some((sightings, sender)) = sightings {
                // The sender stops when its last handle goes, after sending what waits.
                drop(sightings);
                let _ = sender.await;
            }
            enriched?;
        }
        Stage::Cases => {
            let window = crate::setup::grouping_window(resources, &mut problems);
            log_problems(&problems);
            let settings = kastell_cases::CaseSettings {
                grouping_window: window,
                close_downstream: false,
            };
            kastell_cases::run_cases_on(
                bus,
                subscription,
                store(context)?,
                settings,
                context.cases.stage(),
            )
            .await?;
        }
        Stage::Respond => {
            let store = store(context)?;
            let (playbooks, invalid) =
                kastell_respond::PlaybookSet::compile(resources.playbooks.iter().cloned());
            problems.extend(invalid.iter().map(ToString::to_string));
            let safety = kastell_respond::safety::response_safety(resources, &mut problems);
            let indicators = crate::setup::load_feeds(resources, &mut problems).await;
            log_problems(&problems);
            let runners = kastell_respond::Runners::new(&kastell_respond::RunnerSettings {
                intel: Arc::new(crate::intel_lookup::IndicatorLookup::fixed(Arc::new(
                    indicators,
                ))),
                ..kastell_respond::RunnerSettings::default()
            })
            .context("setting up the step runners")?;
            tracing::info!(playbooks = playbooks.len(), "playbooks compiled");
            // With --store the case store lives elsewhere, and nothing else creates --data.
            std::fs::create_dir_all(&context.data).with_context(|| {
                format!("creating the data directory {}", context.data.display())
            })?;
            let responder = kastell_respond::Responder::new(
                Arc::clone(&store),
                Arc::new(playbooks),
                Arc::new(runners),
            )
            .with_safety(safety)
            .with_journal(Arc::new(
                kastell_respond::Journal::open(&context.data.join("respond-journal.jsonl"))
                    .context("opening the respond stage's side-effect journal")?,
            ))
            .with_outbox(Arc::new(kastell_respond::BusOutbox::new(Arc::clone(
                &context.bus,
            ))));
            kastell_respond::run_responder_on(
                bus,
                subscription,
                responder,
                store,
                &context.respond,
            )
            .await?;
        }
        Stage::Ingest => anyhow::bail!("ingest reads Sensors, not a topic"),
    }
    Ok(())
}

fn store(context: &Shared) -> anyhow::Result<Arc<dyn CaseStore>> {
    context
        .store
        .clone()
        .context("this stage needs a case store")
}

/// Serves the stage's endpoint: the case API for cases (with its own /healthz, /readyz
/// and /metrics), the health endpoint otherwise. The case API is served over plain HTTP
/// only on loopback.
async fn serve_endpoint(
    context: &Arc<Shared>,
    args: &StageArgs,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Option<Health>)> {
    if context.stage == Stage::Cases {
        kastell_cases::check_listen_addr(args.listen, tls.is_some())?;
        let state = kastell_cases::ApiState::new(
            store(context)?,
            Arc::clone(&context.bus),
            context.cases.clone(),
        );
        let state = match kastell_cases::auth::oidc::from_env().await? {
            Some(oidc) => state.with_oidc(oidc),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let router = kastell_cases::router(state);
        let task = tokio::spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            if let Err(e) = crate::tls::serve_either(listener, router, tls, shutdown).await {
                tracing::error!(reason = %kastell_core::error_chain(&*e), "case API stopped");
            }
        });
        return Ok((task, None));
    }
    let counters = Arc::clone(context);
    let render: endpoint::Render = Arc::new(move || render_stage(&counters));
    let health = Health::new(render);
    let task = endpoint::serve(args.listen, endpoint::router(health.clone()), tls, stop).await?;
    Ok((task, Some(health)))
}

fn render_stage(context: &Shared) -> Result<String, prometheus::Error> {
    match context.stage {
        Stage::Correlate => {
            let r = context.correlate.snapshot();
            render_counters(&[
                (
                    "kastell_correlate_events_total",
                    "Events evaluated.",
                    r.events,
                ),
                ("kastell_correlate_alerts_total", "Alerts raised.", r.alerts),
                (
                    "kastell_correlate_dead_letters_total",
                    "Messages that were not events.",
                    r.dead_letters,
                ),
                (
                    "kastell_correlate_partition_plan_mismatches_total",
                    "Events keyed by another partition plan than this replica's rules make.",
                    context
                        .plan_mismatches
                        .load(std::sync::atomic::Ordering::Relaxed),
                ),
            ])
        }
        Stage::Enrich => {
            let r = context.enrich.snapshot();
            let gauges = match &context.intel {
                Some((_, registry)) => endpoint::encode(registry)?,
                None => String::new(),
            };
            render_counters(&[
                (
                    "kastell_enrich_detections_total",
                    "Detections read.",
                    r.detections,
                ),
                (
                    "kastell_enrich_intel_matches_total",
                    "Distinct intel matches.",
                    r.intel_matches,
                ),
                (
                    "kastell_enrich_intel_alerts_total",
                    "Alerts raised for intel matches alone.",
                    r.intel_alerts,
                ),
                (
                    "kastell_enrich_alerts_forwarded_total",
                    "Alerts published to the alerts topic.",
                    r.alerts_forwarded,
                ),
                (
                    "kastell_enrich_dead_letters_total",
                    "Messages that were not detections.",
                    r.dead_letters,
                ),
            ])
            .map(|counters| counters + &gauges)
        }
        Stage::Respond | Stage::Cases | Stage::Ingest => {
            let r = context.respond.snapshot();
            let labelled = match &context.respond_registry {
                Some(registry) => endpoint::encode(registry)?,
                None => String::new(),
            };
            // kastell_respond_playbook_runs_total is in the registry with its trigger label.
            let runs = (
                "kastell_respond_playbook_runs_total",
                "Playbooks triggered.",
                r.playbook_runs,
            );
            let runs = context.respond_registry.is_none().then_some(runs);
            let counters: Vec<(&str, &str, u64)> = runs
                .into_iter()
                .chain([
                    (
                        "kastell_respond_case_events_total",
                        "Case events read.",
                        r.case_events,
                    ),
                    (
                        "kastell_respond_actions_created_total",
                        "Actions created.",
                        r.actions_created,
                    ),
                    (
                        "kastell_respond_actions_executed_total",
                        "Actions run.",
                        r.executed,
                    ),
                    (
                        "kastell_respond_actions_failed_total",
                        "Actions that failed.",
                        r.failed,
                    ),
                    (
                        "kastell_respond_dead_letters_total",
                        "Messages that were not case events.",
                        r.dead_letters,
                    ),
                ])
                .collect();
            render_counters(&counters).map(|counters| counters + &labelled)
        }
    }
}
