//! `kastell run`: every stage in one process over the in-process bus and the SQLite
//! store. With `--once` it replays the Sensors' files and exits; otherwise it replays,
//! then keeps every stage running, starts the Sensors' listeners, refreshes the intel
//! feeds on their own intervals and serves the case API until asked to stop, when it
//! stops the listeners, drains the bus through every stage and exits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use kastell_cases::{ApiState, CaseSettings, CasesStats, Metrics};
use kastell_core::store::dead_letters::DeadLetterLog;
use kastell_core::store::{ActionFilter, ActionStatus};
use kastell_core::{Alert, Bus, CaseStore, InProcessBus, StoreUrl, Subscription, Topic};
use kastell_correlate::CorrelateStats;
use kastell_enrich::refresh::Refresher;
use kastell_enrich::{EnrichStats, IndicatorStore};
use kastell_ingest::transport::IngestMetrics;
use kastell_ingest::{IngestReport, IngestStats, Ingestor, Source};
use kastell_respond::{RespondStats, RunnerSettings, Runners};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::setup::Setup;
use crate::summary::{AlertTally, RejectedRecord, Summary};

/// Messages each consumer group may hold before its producer waits.
pub const BUS_CAPACITY: usize = 1024;

/// How the run ends.
pub enum Mode {
    /// Replay, print the summary, exit.
    Once,
    /// Replay, then run the listeners and serve the case API on the listener until
    /// `shutdown` resolves; then drain every stage.
    Serve {
        listener: tokio::net::TcpListener,
        shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        /// Called with the summary once the replay is through, before serving.
        on_replayed: Box<dyn FnOnce(&Summary) + Send>,
    },
}

/// The stages' subscriptions, all taken before anything is published: the in-process
/// bus has no stream to replay from, so a late consumer would miss messages.
struct Subscriptions {
    correlate: Box<dyn Subscription>,
    enrich: Box<dyn Subscription>,
    cases: Box<dyn Subscription>,
    respond: Box<dyn Subscription>,
    response_outputs: Box<dyn Subscription>,
    remediation: Box<dyn Subscription>,
    alert_tally: Box<dyn Subscription>,
}

async fn subscribe_all(bus: &dyn Bus) -> anyhow::Result<Subscriptions> {
    Ok(Subscriptions {
        correlate: kastell_correlate::subscribe_events(bus).await?,
        enrich: kastell_enrich::subscribe_detections(bus).await?,
        cases: kastell_cases::subscribe_alerts(bus).await?,
        respond: kastell_respond::subscribe_case_events(bus).await?,
        response_outputs: kastell_cases::subscribe_response_outputs(bus).await?,
        remediation: bus
            .subscribe(Topic::Events, kastell_cases::remediation::GROUP)
            .await?,
        alert_tally: bus.subscribe(Topic::Alerts, "run-summary").await?,
    })
}

/// The running stages.
struct Stages {
    correlate:
        JoinHandle<Result<kastell_correlate::CorrelateReport, kastell_correlate::CorrelateError>>,
    enrich: JoinHandle<Result<kastell_enrich::EnrichReport, kastell_enrich::EnrichError>>,
    cases: JoinHandle<Result<kastell_cases::CasesReport, kastell_cases::CasesError>>,
    respond: JoinHandle<Result<kastell_respond::RespondReport, kastell_respond::RespondError>>,
    /// Applies respond's case operations and step results to the case store.
    response_outputs: JoinHandle<Result<(), kastell_cases::CasesError>>,
    /// Turns Greenbone findings into remediation cases.
    remediation: JoinHandle<
        Result<
            kastell_cases::remediation::ScanOutcome,
            kastell_cases::remediation::RemediationError,
        >,
    >,
    tally_task: JoinHandle<()>,
    counters: Counters,
    /// The per-feed indicator gauges, set again by the refresher after each round.
    intel_metrics: kastell_enrich::metrics::IntelMetrics,
}

/// The counters the stages keep as they go, read for the summary at any time.
struct Counters {
    correlate: Arc<CorrelateStats>,
    enrich: Arc<EnrichStats>,
    cases: CasesStats,
    respond: Arc<RespondStats>,
    tally: Arc<Mutex<AlertTally>>,
}

/// Runs the pipeline over the setup's sources with the SQLite store in `data_dir`.
pub async fn run(setup: Setup, data_dir: &Path, mode: Mode) -> anyhow::Result<Summary> {
    run_on(
        setup,
        data_dir,
        &StoreUrl::SqliteDir(data_dir.to_owned()),
        mode,
    )
    .await
}

/// Runs the pipeline with the case store at `store_url`; `data_dir` keeps the
/// dead-letter log, the respond journal and file-tail checkpoints.
pub async fn run_on(
    setup: Setup,
    data_dir: &Path,
    store_url: &StoreUrl,
    mode: Mode,
) -> anyhow::Result<Summary> {
    let privacy = kastell_core::store::open(store_url)
        .await
        .with_context(|| format!("opening the case store {store_url}"))?;
    let store: Arc<dyn CaseStore> = privacy.clone();
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(BUS_CAPACITY));
    let subs = subscribe_all(bus.as_ref()).await?;
    let (written_tx, mut written_rx) = tokio::sync::mpsc::unbounded_channel();
    let dead_letters = spawn_dead_letter_log(
        bus.subscribe(Topic::DeadLetters, "run-dead-letters")
            .await?,
        DeadLetterLog::in_dir(data_dir),
        written_tx,
    );
    let once = matches!(mode, Mode::Once);
    // Enrich and the respond stage's lookups read the set the feed refresher swaps in
    // serve mode; with --once it is the set loaded up front. The refresher starts with
    // that set and runs only after the replay, so a replay gives the figures of --once.
    // Its first round re-reads every feed, as it has no way to adopt a loaded set.
    let refresher = if once {
        None
    } else {
        match crate::setup::feed_http(&setup.resources) {
            Ok(http) => Some(Refresher::new(
                crate::setup::feed_defs(&setup.resources),
                http,
            )),
            Err(e) => {
                tracing::warn!(reason = %kastell_core::error_chain(&e), "intel feeds are not refreshed");
                None
            }
        }
    };
    let indicators = match &refresher {
        Some(refresher) => refresher.current(),
        None => Arc::new(ArcSwap::new(Arc::new(IndicatorStore::new()))),
    };
    indicators.store(Arc::clone(&setup.indicators));
    // One registry for the API's `/metrics`: the cases stage's, the response outputs'
    // and the respond stage's counters.
    let registry = prometheus::Registry::new();
    let respond_stats = Arc::new(RespondStats::new());
    let output_stats = kastell_cases::OutputStats::new();
    respond_stats
        .register(&registry)
        .and_then(|()| output_stats.register(&registry))
        .context("registering the respond metrics")?;
    let metrics = Metrics::register_in(registry, kastell_cases::CasesStats::new())
        .context("registering metrics")?;
    let stages = start_stages(
        &setup,
        subs,
        Shared {
            bus: &bus,
            store: &store,
            indicators: &indicators,
            metrics: &metrics,
            respond_stats,
            output_stats,
            data_dir,
        },
        once,
    )?;

    let ingest_stats = Arc::new(IngestStats::new());
    let replay_sources: Vec<_> = setup
        .sources
        .iter()
        .filter(|source| once || !source.follow)
        .cloned()
        .collect();
    let (ingest_reports, mut ingest_problems) =
        ingest_all(&replay_sources, bus.as_ref(), &ingest_stats).await;

    let mut summary = match mode {
        Mode::Once => {
            let mut problems = Vec::new();
            for plan in crate::listeners::plan(&setup.resources, data_dir, &mut problems) {
                ingest_problems.push(format!(
                    "sensor {}: listens ({:?}) and is served only without --once",
                    plan.sensor, plan.kind
                ));
            }
            ingest_problems.extend(problems);
            bus.close(Topic::Events).await;
            finish(
                stages,
                Arc::clone(&bus),
                &setup,
                ingest_problems,
                ingest_reports,
                &store,
            )
            .await?
        }
        Mode::Serve {
            listener,
            shutdown,
            on_replayed,
        } => {
            let replayed = ingest_stats.events_published();
            wait_until_drained(&stages, replayed).await?;
            let listened = Arc::new(IngestStats::new());
            let mut summary = replay_summary(&setup, &stages.counters, ingest_problems.clone());
            add_ingest(&mut summary, ingest_reports.clone());
            summary.actions_pending = pending_actions(store.as_ref()).await?;
            summary.dead_letters = dead_letters_so_far(bus.as_ref(), &mut written_rx).await;
            let stop = CancellationToken::new();
            // Bound before the announcement, so a port already in use fails the run
            // before it says the case API is up.
            let ingest_metrics = IngestMetrics::register_in(metrics.registry())
                .context("registering the ingest metrics")?;
            let listeners = start_listeners(
                &setup,
                data_dir,
                Arc::clone(&bus),
                &listened,
                &ingest_metrics,
                &stop,
            )
            .await?;
            on_replayed(&summary);

            let retention = setup.personal_data_retention.map(|period| {
                let log = DeadLetterLog::in_dir(data_dir);
                crate::gdpr::spawn_retention(Arc::clone(&privacy), log, period)
            });
            let asked = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    stop.cancel();
                })
            };
            let served = serve(
                &setup,
                Served {
                    listener,
                    bus: Arc::clone(&bus),
                    store: Arc::clone(&store),
                    metrics,
                    refresher: refresher
                        .map(|refresher| refresher.with_metrics(stages.intel_metrics.clone())),
                    listeners,
                },
                stop.clone(),
            )
            .await;
            // Whatever ended the serving (a signal or a failed listener), everything else
            // stops too; the stages then drain what the listeners put on the bus.
            stop.cancel();
            asked.abort();
            if let Some(retention) = retention {
                retention.abort();
            }
            served?;
            tracing::info!("listeners stopped; draining the stages");
            bus.close(Topic::Events).await;
            let mut summary = finish(
                stages,
                Arc::clone(&bus),
                &setup,
                ingest_problems,
                ingest_reports,
                &store,
            )
            .await?;
            let listened = listened.snapshot();
            summary.events_in += listened.events_in;
            summary.events_rejected += listened.events_rejected;
            summary
        }
    };
    bus.close(Topic::DeadLetters).await;
    summary.dead_letters = dead_letters
        .await
        .context("the dead-letter log stopped")??;
    Ok(summary)
}

/// What the stages share: the bus, the store, the indicator set and the counters the
/// metrics endpoint reads.
struct Shared<'a> {
    bus: &'a Arc<dyn Bus>,
    store: &'a Arc<dyn CaseStore>,
    indicators: &'a Arc<ArcSwap<IndicatorStore>>,
    metrics: &'a Metrics,
    respond_stats: Arc<RespondStats>,
    output_stats: kastell_cases::OutputStats,
    data_dir: &'a Path,
}

/// Spawns the four stages, the response-outputs loop and the alert tally on their
/// subscriptions.
fn start_stages(
    setup: &Setup,
    subs: Subscriptions,
    shared: Shared<'_>,
    once: bool,
) -> anyhow::Result<Stages> {
    let Shared {
        bus,
        store,
        indicators,
        metrics,
        respond_stats,
        output_stats,
        data_dir,
    } = shared;
    let (tally, tally_task) = spawn_alert_tally(subs.alert_tally);

    let correlate_stats = Arc::new(CorrelateStats::new());
    let correlate = {
        let (bus, rules, stats) = (
            Arc::clone(bus),
            Arc::clone(&setup.rules),
            Arc::clone(&correlate_stats),
        );
        tokio::spawn(async move {
            kastell_correlate::run_correlate_on(bus.as_ref(), subs.correlate, rules, &stats).await
        })
    };
    let enrich_stats = Arc::new(EnrichStats::new());
    let enrich = {
        let (bus, indicators, stats) = (
            Arc::clone(bus),
            Arc::clone(indicators),
            Arc::clone(&enrich_stats),
        );
        // Sightings go back to MISP while serving; a replay (--once) sends none.
        let sightings = if once {
            None
        } else {
            crate::setup::feed_http(&setup.resources)
                .ok()
                .and_then(|http| {
                    crate::setup::start_sightings(&crate::setup::feed_defs(&setup.resources), &http)
                })
        };
        tokio::spawn(async move {
            let report = kastell_enrich::run_enrich_sighted(
                bus.as_ref(),
                subs.enrich,
                indicators,
                &stats,
                sightings.as_ref().map(|(sightings, _)| sightings),
            )
            .await;
            if let Some((sightings, sender)) = sightings {
                drop(sightings);
                let _ = sender.await;
            }
            report
        })
    };
    let cases_stats = metrics.stage().clone();
    let intel_metrics = kastell_enrich::metrics::IntelMetrics::register_in(metrics.registry())
        .context("registering the intel metrics")?;
    intel_metrics.set_from(&setup.indicators);
    let cases = {
        let (bus, store, stats) = (Arc::clone(bus), Arc::clone(store), cases_stats.clone());
        let settings = CaseSettings {
            grouping_window: setup.grouping_window,
            close_downstream: once,
        };
        tokio::spawn(async move {
            kastell_cases::run_cases_on(bus.as_ref(), subs.cases, store, settings, &stats).await
        })
    };
    let respond = {
        let runners = Arc::new(
            Runners::new(&RunnerSettings {
                intel: Arc::new(crate::intel_lookup::IndicatorLookup(Arc::clone(indicators))),
                ..RunnerSettings::default()
            })
            .context("setting up the step runners")?,
        );
        let (bus, store, stats) = (
            Arc::clone(bus),
            Arc::clone(store),
            Arc::clone(&respond_stats),
        );
        let journal = kastell_respond::Journal::open(&data_dir.join("respond-journal.jsonl"))
            .context("opening the respond stage's side-effect journal")?;
        let responder = kastell_respond::Responder::new(
            Arc::clone(&store),
            Arc::clone(&setup.playbooks),
            runners,
        )
        .with_safety(setup.response.clone())
        .with_journal(Arc::new(journal))
        .with_outbox(Arc::new(kastell_respond::BusOutbox::new(Arc::clone(&bus))));
        tokio::spawn(async move {
            kastell_respond::run_responder_on(bus.as_ref(), subs.respond, responder, store, &stats)
                .await
        })
    };
    let response_outputs = {
        let (bus, store) = (Arc::clone(bus), Arc::clone(store));
        tokio::spawn(async move {
            kastell_cases::run_response_outputs_on(
                bus.as_ref(),
                subs.response_outputs,
                store,
                &output_stats,
            )
            .await
        })
    };
    let remediation = {
        let (store, settings) = (Arc::clone(store), setup.criticality.clone());
        tokio::spawn(async move {
            kastell_cases::remediation::run_remediation_on(
                subs.remediation,
                store.as_ref(),
                &settings,
            )
            .await
        })
    };
    Ok(Stages {
        correlate,
        enrich,
        cases,
        respond,
        response_outputs,
        remediation,
        tally_task,
        counters: Counters {
            correlate: correlate_stats,
            enrich: enrich_stats,
            cases: cases_stats,
            respond: respond_stats,
            tally,
        },
        intel_metrics,
    })
}

/// Joins the stages once the events topic is closed: each closes the next topic when it
/// has drained its own (the case-events topic is closed here in serve mode, where the
/// case API also publishes approvals to it and has stopped by now).
async fn finish(
    stages: Stages,
    bus: Arc<dyn Bus>,
    setup: &Setup,
    ingest_problems: Vec<String>,
    ingest_reports: Vec<IngestReport>,
    store: &Arc<dyn CaseStore>,
) -> anyhow::Result<Summary> {
    join("correlate", stages.correlate).await?;
    let remediated = join("remediation", stages.remediation).await?;
    tracing::info!(
        opened = remediated.opened.len(),
        reopened = remediated.reopened.len(),
        closed = remediated.closed.len(),
        "remediation cases"
    );
    join("enrich", stages.enrich).await?;
    join("cases", stages.cases).await?;
    bus.close(Topic::CaseEvents).await;
    stages.tally_task.await.context("the alert tally stopped")?;
    let executed = join("respond", stages.respond).await?.executed;
    bus.close(Topic::ResponseOutputs).await;
    join("response outputs", stages.response_outputs).await?;
    let mut summary = replay_summary(setup, &stages.counters, ingest_problems);
    add_ingest(&mut summary, ingest_reports);
    summary.actions_executed = executed;
    summary.actions_pending = pending_actions(store.as_ref()).await?;
    Ok(summary)
}

/// The summary from the setup and the stages' counters; ingest and actions are added by
/// the caller.
fn replay_summary(setup: &Setup, counters: &Counters, problems: Vec<String>) -> Summary {
    let enrich = counters.enrich.snapshot();
    let cases = counters.cases.snapshot();
    let tally = counters.tally.lock().unwrap_or_else(|p| p.into_inner());
    let mut summary = Summary {
        rules_loaded: setup.rule_count as u64,
        indicators_loaded: setup.indicators.len() as u64,
        playbooks_loaded: setup.playbooks.len() as u64,
        problems: setup.problems.clone(),
        ..Summary::default()
    };
    summary.problems.extend(problems);
    summary.alerts = tally.total;
    summary.alerts_by_level = tally.by_level();
    summary.alerts_by_rule = tally.by_rule();
    summary.intel_matches = enrich.intel_matches;
    summary.intel_alerts = enrich.intel_alerts;
    summary.cases_opened = cases.cases_opened;
    summary.cases_merged = cases.cases_merged;
    summary.alerts_attached_to_cases = cases.alerts_attached;
    summary.actions_executed = counters.respond.snapshot().executed;
    summary
}

/// In serve mode the topics stay open, so the replay's end is seen by counting: every
/// stage has taken in what the one before it put out. A stage that stops meanwhile
/// (it failed) ends the wait with its error.
async fn wait_until_drained(stages: &Stages, replayed: u64) -> anyhow::Result<()> {
    let counters = &stages.counters;
    loop {
        let correlate = counters.correlate.snapshot();
        let enrich = counters.enrich.snapshot();
        let cases = counters.cases.snapshot();
        let tallied = counters
            .tally
            .lock()
            .map(|t| t.total)
            .unwrap_or_else(|p| p.into_inner().total);
        let case_events = cases.cases_opened + cases.alerts_attached;
        let drained = correlate.events + correlate.dead_letters >= replayed
            && enrich.detections + enrich.dead_letters >= correlate.events
            && cases.received >= enrich.alerts_forwarded
            && tallied >= enrich.alerts_forwarded
            && counters.respond.snapshot().case_events >= case_events;
        if drained {
            return Ok(());
        }
        let stopped = [
            ("correlate", stages.correlate.is_finished()),
            ("enrich", stages.enrich.is_finished()),
            ("cases", stages.cases.is_finished()),
            ("respond", stages.respond.is_finished()),
        ];
        if let Some((stage, _)) = stopped.iter().find(|(_, done)| *done) {
            anyhow::bail!("the {stage} stage stopped during the replay; see its log above");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What serving needs besides the setup.
struct Served {
    listener: tokio::net::TcpListener,
    bus: Arc<dyn Bus>,
    store: Arc<dyn CaseStore>,
    metrics: Metrics,
    /// Refreshes the feeds into the set enrich reads.
    refresher: Option<Refresher>,
    /// The Sensors' listeners, already bound and serving.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds and starts the Sensors' listeners; they run until `stop` is cancelled.
/// The listeners count into `stats` (the run's summary) and `metrics` (the per-sensor
/// metrics served on `/metrics`).
async fn start_listeners(
    setup: &Setup,
    data_dir: &Path,
    bus: Arc<dyn Bus>,
    stats: &Arc<IngestStats>,
    metrics: &IngestMetrics,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut problems = Vec::new();
    let plans = crate::listeners::plan(&setup.resources, data_dir, &mut problems);
    for problem in &problems {
        tracing::warn!(problem = %problem, "sensor not listening");
    }
    let listeners =
        crate::listeners::start_counted(&plans, bus, metrics, Arc::clone(stats), stop.clone())
            .await?;
    for plan in &plans {
        tracing::info!(sensor = %plan.sensor, kind = ?plan.kind, "sensor listening");
    }
    Ok(listeners)
}

/// Starts the feed refresher, serves the case API until `stop` is cancelled, then waits
/// for the listeners to answer what they accepted.
async fn serve(setup: &Setup, served: Served, stop: CancellationToken) -> anyhow::Result<()> {
    let refresher = served.refresher.map(|refresher| {
        let token = stop.clone();
        let runtime = tokio::runtime::Handle::current();
        // The refresher's future is not `Send` (the feed HTTP client holds a URL
        // serializer across an await), so it runs on a blocking thread of its own.
        tokio::task::spawn_blocking(move || runtime.block_on(refresher.run(token.cancelled())))
    });

    let mut state = ApiState::new(
        Arc::clone(&served.store),
        Arc::clone(&served.bus),
        served.metrics,
    )
    .with_playbooks(Arc::new(setup.playbooks.catalog()));
    if let Some(oidc) = kastell_cases::auth::oidc::from_env().await? {
        state = state.with_oidc(oidc);
    }
    let token = stop.clone();
    let api = serve_until(
        served.listener,
        kastell_cases::router(state),
        Box::pin(async move { token.cancelled().await }),
    )
    .await;
    stop.cancel();
    for listener in served.listeners {
        if let Err(e) = listener.await {
            tracing::error!(reason = %e, "an ingest listener panicked");
        }
    }
    if let Some(refresher) = refresher {
        let _ = refresher.await;
    }
    api
}

/// Ingests every source in turn; a source that fails (an unreadable file) becomes a
/// problem line and the others still run.
pub(crate) async fn ingest_all(
    sources: &[crate::setup::ReplaySource],
    bus: &dyn Bus,
    stats: &IngestStats,
) -> (Vec<IngestReport>, Vec<String>) {
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for source in sources {
        let ingestor =
            Ingestor::new(source.format, &source.sensor).with_options(source.options.clone());
        let file = kastell_ingest::FileSource::new(&source.path);
        let report = match file.run(&ingestor, bus, stats).await {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(path = %source.path.display(), reason = %e, "source failed");
                problems.push(format!(
                    "sensor {}: ingesting {}: {e}",
                    source.sensor,
                    source.path.display()
                ));
                continue;
            }
        };
        tracing::info!(
            path = %source.path.display(),
            sensor = %source.sensor,
            published = report.published,
            rejected = report.rejected,
            "replayed"
        );
        reports.push(report);
    }
    (reports, problems)
}

fn add_ingest(summary: &mut Summary, reports: Vec<IngestReport>) {
    for report in reports {
        summary.events_in += report.records;
        summary.events_rejected += report.rejected;
        summary
            .rejections
            .extend(report.rejections.into_iter().map(|r| RejectedRecord {
                file: r.path,
                line: r.line,
                reason: r.reason,
            }));
    }
}

async fn join<T, E>(stage: &str, handle: JoinHandle<Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    handle
        .await
        .with_context(|| format!("the {stage} stage panicked"))?
        .with_context(|| format!("the {stage} stage failed"))
}

/// Counts every alert on the bus as it passes, into a tally the summary reads at any time.
fn spawn_alert_tally(mut sub: Box<dyn Subscription>) -> (Arc<Mutex<AlertTally>>, JoinHandle<()>) {
    let tally = Arc::new(Mutex::new(AlertTally::default()));
    let counted = Arc::clone(&tally);
    let task = tokio::spawn(async move {
        while let Some(delivery) = sub.next().await {
            // Alerts that do not decode are dead-lettered by the cases stage itself.
            if let Ok(alert) = delivery.message.decode::<Alert>() {
                counted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(&alert);
            }
            let _ = delivery.ack().await;
        }
    });
    (tally, task)
}

/// Appends every dead letter to a JSON-lines file, so nothing a stage refused is lost.
/// Writes every dead letter to `path` (appending) and counts them. An empty message is
/// not a dead letter but a count request (see [`dead_letters_so_far`]): the count so far
/// is sent on `written`.
/// Writes each dead letter to the log, stamped with when it was logged (which the
/// retention period reads), through the log's writer, which shares a lock with the GDPR
/// procedures that rewrite the log (`kastell gdpr`, possibly in another process).
fn spawn_dead_letter_log(
    mut sub: Box<dyn Subscription>,
    log: DeadLetterLog,
    written: tokio::sync::mpsc::UnboundedSender<u64>,
) -> JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let mut count = 0;
        let mut writer = Some(log.writer());
        while let Some(delivery) = sub.next().await {
            if delivery.message.payload.is_empty() {
                let _ = written.send(count);
                let _ = delivery.ack().await;
                continue;
            }
            let payload = delivery.message.payload.clone();
            let mut taken = writer.take().context("the dead-letter writer was lost")?;
            // The writer locks and writes a file: off the async workers.
            let (back, appended) = tokio::task::spawn_blocking(move || {
                let appended = taken.append(&payload, chrono::Utc::now());
                (taken, appended)
            })
            .await
            .context("the dead-letter writer panicked")?;
            writer = Some(back);
            appended.context("writing the dead-letter log")?;
            count += 1;
            let _ = delivery.ack().await;
        }
        Ok(count)
    })
}

/// The dead letters written so far. The in-process bus delivers in publish order, so an
/// empty message published now reaches the log after every dead letter published before
/// it, and the log answers with its count then. A log that stopped (it failed) answers
/// nothing; its error surfaces when the run ends.
async fn dead_letters_so_far(
    bus: &dyn Bus,
    written: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
) -> u64 {
    let request = kastell_core::Message {
        id: None,
        key: None,
        payload: bytes::Bytes::new(),
    };
    if bus.publish(Topic::DeadLetters, request).await.is_err() {
        return 0;
    }
    written.recv().await.unwrap_or(0)
}

async fn pending_actions(store: &dyn CaseStore) -> anyhow::Result<u64> {
    let filter = ActionFilter {
        status: Some(ActionStatus::Pending),
        ..ActionFilter::default()
    };
    Ok(store
        .list_actions(&filter)
        .await
        .context("counting pending actions")?
        .len() as u64)
}

/// Binds the case API's address, refusing plain HTTP off loopback before binding.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    kastell_cases::check_listen_addr(addr, false)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

/// How long requests in flight may take to finish once shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets requests in flight finish for at most
/// [`SHUTDOWN_GRACE`]: a client that never completes its request must not keep the
/// process alive.
async fn serve_until(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let (asked_tx, mut asked) = tokio::sync::watch::channel(false);
    let graceful = async move {
        shutdown.await;
        let _ = asked_tx.send(true);
    };
    let serving = kastell_cases::serve(listener, router, graceful);
    tokio::select! {
        served = serving => served.context("serving the case API"),
        _ = async {
            let _ = asked.wait_for(|asked| *asked).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "requests still open after the shutdown grace; closing them"
            );
            Ok(())
        }
    }
}
