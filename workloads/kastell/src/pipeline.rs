//! `kastell run`: every stage in one process over the in-process bus and the SQLite
//! store, replaying sensor files and, unless `--once`, serving the case API afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kastell_cases::{ApiState, CaseSettings, Metrics};
use kastell_core::store::{ActionFilter, ActionStatus};
use kastell_core::{Alert, Bus, CaseStore, InProcessBus, SqliteStore, Subscription, Topic};
use kastell_enrich::EnrichStats;
use kastell_ingest::{IngestReport, Ingestor, Source};
use kastell_respond::{RespondStats, RunnerSettings, Runners};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::setup::Setup;
use crate::summary::{AlertTally, RejectedRecord, Summary};

/// Messages each consumer group may hold before its producer waits.
pub const BUS_CAPACITY: usize = 1024;

/// How the run ends.
pub enum Mode {
    /// Replay, print the summary, exit.
    Once,
    /// Replay, then serve the case API on the listener until `shutdown` resolves.
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
    remediation: Box<dyn Subscription>,
    alert_tally: Box<dyn Subscription>,
    dead_letters: Box<dyn Subscription>,
}

async fn subscribe_all(bus: &dyn Bus) -> anyhow::Result<Subscriptions> {
    Ok(Subscriptions {
        correlate: kastell_correlate::subscribe_events(bus).await?,
        enrich: kastell_enrich::subscribe_detections(bus).await?,
        cases: kastell_cases::subscribe_alerts(bus).await?,
        respond: kastell_respond::subscribe_case_events(bus).await?,
        remediation: bus
            .subscribe(Topic::Events, kastell_cases::remediation::GROUP)
            .await?,
        alert_tally: bus.subscribe(Topic::Alerts, "run-summary").await?,
        dead_letters: bus
            .subscribe(Topic::DeadLetters, "run-dead-letters")
            .await?,
    })
}

/// Runs the pipeline over the setup's sources with the store in `data_dir`.
pub async fn run(setup: Setup, data_dir: &Path, mode: Mode) -> anyhow::Result<Summary> {
    let store: Arc<dyn CaseStore> = Arc::new(
        SqliteStore::open_dir(data_dir)
            .await
            .with_context(|| format!("opening the case store in {}", data_dir.display()))?,
    );
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(BUS_CAPACITY));
    let subs = subscribe_all(bus.as_ref()).await?;
    let once = matches!(mode, Mode::Once);

    let tally = spawn_alert_tally(subs.alert_tally);
    let dead_letters =
        spawn_dead_letter_log(subs.dead_letters, data_dir.join("dead-letters.jsonl"));

    let correlate = {
        let (bus, rules) = (Arc::clone(&bus), Arc::clone(&setup.rules));
        let stats = kastell_correlate::CorrelateStats::new();
        tokio::spawn(async move {
            kastell_correlate::run_correlate_on(bus.as_ref(), subs.correlate, rules, &stats).await
        })
    };
    let enrich_stats = Arc::new(EnrichStats::new());
    let enrich = {
        let (bus, indicators, stats) = (
            Arc::clone(&bus),
            Arc::clone(&setup.indicators),
            Arc::clone(&enrich_stats),
        );
        tokio::spawn(async move {
            kastell_enrich::run_enrich_on(bus.as_ref(), subs.enrich, indicators, &stats).await
        })
    };
    let metrics = Metrics::new().context("registering metrics")?;
    kastell_enrich::metrics::IntelMetrics::register_in(metrics.registry())
        .context("registering the intel metrics")?
        .set_from(&setup.indicators);
    let cases = {
        let (bus, store, stats) = (
            Arc::clone(&bus),
            Arc::clone(&store),
            metrics.stage().clone(),
        );
        let settings = CaseSettings {
            grouping_window: setup.grouping_window,
            close_downstream: once,
        };
        tokio::spawn(async move {
            kastell_cases::run_cases_on(bus.as_ref(), subs.cases, store, settings, &stats).await
        })
    };
    let respond_stats = Arc::new(RespondStats::new());
    let respond = {
        let runners = Arc::new(
            Runners::new(&RunnerSettings {
                intel: Arc::new(crate::intel_lookup::IndicatorLookup(Arc::clone(
                    &setup.indicators,
                ))),
                ..RunnerSettings::default()
            })
            .context("setting up the step runners")?,
        );
        let (bus, store, stats) = (
            Arc::clone(&bus),
            Arc::clone(&store),
            Arc::clone(&respond_stats),
        );
        let responder = kastell_respond::Responder::new(
            Arc::clone(&store),
            Arc::clone(&setup.playbooks),
            runners,
        )
        .with_safety(setup.response.clone());
        tokio::spawn(async move {
            kastell_respond::run_responder_on(bus.as_ref(), subs.respond, responder, store, &stats)
                .await
        })
    };

    let remediation = {
        let (store, settings) = (Arc::clone(&store), setup.criticality.clone());
        tokio::spawn(async move {
            kastell_cases::remediation::run_remediation_on(
                subs.remediation,
                store.as_ref(),
                &settings,
            )
            .await
        })
    };

    let (ingest_reports, ingest_problems) = ingest_all(&setup, bus.as_ref()).await;
    bus.close(Topic::Events).await;
    let remediated = join("remediation", remediation).await?;
    tracing::info!(
        opened = remediated.opened.len(),
        reopened = remediated.reopened.len(),
        closed = remediated.closed.len(),
        "remediation cases"
    );

    let correlate_report = join("correlate", correlate).await?;
    let enrich_report = join("enrich", enrich).await?;
    let cases_report = join("cases", cases).await?;
    let tally = tally.await.context("the alert tally stopped")?;

    let case_events = cases_report.cases_opened + cases_report.alerts_attached;
    let mut summary = Summary {
        rules_loaded: setup.rule_count as u64,
        indicators_loaded: setup.indicators.len() as u64,
        playbooks_loaded: setup.playbooks.len() as u64,
        problems: setup.problems.clone(),
        ..Summary::default()
    };
    summary.problems.extend(ingest_problems);
    add_ingest(&mut summary, ingest_reports);
    summary.alerts = tally.total;
    summary.alerts_by_level = tally.by_level();
    summary.alerts_by_rule = tally.by_rule();
    summary.intel_matches = enrich_report.intel_matches;
    summary.intel_alerts = enrich_report.intel_alerts;
    summary.cases_opened = cases_report.cases_opened;
    summary.alerts_attached_to_cases = cases_report.alerts_attached;
    tracing::debug!(events = correlate_report.events, "correlate finished");

    // In serve mode the case-events topic stays open for approvals until the API stops;
    // with --once the cases stage has already closed it.
    if let Mode::Serve {
        listener,
        shutdown,
        on_replayed,
    } = mode
    {
        wait_for_respond(&respond_stats, case_events).await;
        summary.actions_executed = respond_stats.snapshot().executed;
        summary.actions_pending = pending_actions(store.as_ref()).await?;
        on_replayed(&summary);
        let mut state = ApiState::new(Arc::clone(&store), Arc::clone(&bus), metrics);
        if let Some(oidc) = kastell_cases::auth::oidc::from_env().await? {
            state = state.with_oidc(oidc);
        }
        serve_until(listener, kastell_cases::router(state), shutdown).await?;
        bus.close(Topic::CaseEvents).await;
    }
    summary.actions_executed = join("respond", respond).await?.executed;
    summary.actions_pending = pending_actions(store.as_ref()).await?;
    bus.close(Topic::DeadLetters).await;
    summary.dead_letters = dead_letters
        .await
        .context("the dead-letter log stopped")??;
    Ok(summary)
}

/// Ingests every source in turn; a source that fails (an unreadable file) becomes a
/// problem line and the others still run.
async fn ingest_all(setup: &Setup, bus: &dyn Bus) -> (Vec<IngestReport>, Vec<String>) {
    let stats = kastell_ingest::IngestStats::default();
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for source in &setup.sources {
        let ingestor =
            Ingestor::new(source.format, &source.sensor).with_options(source.options.clone());
        let file = kastell_ingest::FileSource::new(&source.path);
        let report = match file.run(&ingestor, bus, &stats).await {
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

fn spawn_alert_tally(mut sub: Box<dyn Subscription>) -> JoinHandle<AlertTally> {
    tokio::spawn(async move {
        let mut tally = AlertTally::default();
        while let Some(delivery) = sub.next().await {
            // Alerts that do not decode are dead-lettered by the cases stage itself.
            if let Ok(alert) = delivery.message.decode::<Alert>() {
                tally.add(&alert);
            }
            let _ = delivery.ack().await;
        }
        tally
    })
}

/// Appends every dead letter to a JSON-lines file, so nothing a stage refused is lost.
fn spawn_dead_letter_log(
    mut sub: Box<dyn Subscription>,
    path: PathBuf,
) -> JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let mut count = 0;
        let mut file: Option<tokio::fs::File> = None;
        while let Some(delivery) = sub.next().await {
            if file.is_none() {
                let opened = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                file = Some(opened);
            }
            if let Some(file) = file.as_mut() {
                file.write_all(&delivery.message.payload).await?;
                file.write_all(b"\n").await?;
            }
            count += 1;
            let _ = delivery.ack().await;
        }
        if let Some(mut file) = file {
            file.flush().await?;
        }
        Ok(count)
    })
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

/// In serve mode the case-events topic stays open for approvals, so the replay's end is
/// seen by counting: respond has handled every case event the cases stage published.
async fn wait_for_respond(stats: &RespondStats, case_events: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.snapshot().case_events < case_events && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
