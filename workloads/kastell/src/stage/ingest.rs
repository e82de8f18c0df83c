//! The ingest stage as a process: the Sensors' listeners (HTTP and `_bulk`, syslog over
//! UDP, TCP and TLS, followed files), and a one-time replay of the file Sensors that do
//! not follow their file.
//!
//! A reload stops the listeners gracefully (each answers what it accepted, HTTP requests
//! in flight finish, a followed file saves its checkpoint), then starts the new set; file
//! Sensors not replayed yet by this process are replayed. Shutdown stops the listeners the
//! same way. Records are on the bus (JetStream acknowledged the publish) before a
//! listener answers for them, so nothing accepted is lost.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kastell_core::Bus;
use kastell_crds::ResourceSet;
use kastell_ingest::transport::IngestMetrics;
use kastell_ingest::IngestStats;
use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consume::{changed, log_problems};
use super::endpoint::{self, Health};
use super::partitions::Keyed;
use super::{BusKind, StageArgs};
use crate::resources;
use crate::tls::ServerTls;

pub async fn run(
    args: &StageArgs,
    bus: Arc<dyn Bus>,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let metrics = IngestMetrics::register_in(&registry).context("registering the metrics")?;
    let stats = Arc::new(IngestStats::new());
    let render_registry = registry.clone();
    let health = Health::new(Arc::new(move || endpoint::encode(&render_registry)));
    let endpoint_stop = CancellationToken::new();
    let endpoint = endpoint::serve(
        args.listen,
        endpoint::router(health.clone()),
        tls,
        endpoint_stop.clone(),
    )
    .await?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;

    let mut replayed = BTreeSet::new();
    let mut fingerprint = resources::fingerprint(&args.config)?;
    let (mut loaded, problems) = resources::load(&args.config)?;
    log_problems(&problems);
    let outcome = async {
        loop {
            let generation = CancellationToken::new();
            let keyed = keyed_bus(args, &loaded, &bus);
            let listeners = start(args, &loaded, &keyed, &metrics, &stats, &generation).await?;
            health.set_ready(true);
            // A stop during the replay abandons the rest of it; a restarted process
            // replays the files again, and the message ids drop what was already stored.
            tokio::select! {
                () = replay(&loaded, keyed.as_ref(), &stats, &mut replayed) => {}
                () = stop.cancelled() => {}
            }
            let next = loop {
                tokio::select! {
                    () = stop.cancelled() => break None,
                    () = tokio::time::sleep(args.reload_interval) => {
                        if let Some((now, set, problems)) = changed(args, &fingerprint) {
                            log_problems(&problems);
                            fingerprint = now;
                            break Some(set);
                        }
                    }
                }
            };
            generation.cancel();
            for listener in listeners {
                if let Err(e) = listener.await {
                    tracing::error!(reason = %e, "an ingest listener panicked");
                }
            }
            match next {
                None => return Ok::<(), anyhow::Error>(()),
                Some(set) => {
                    tracing::info!("resources changed; restarting the listeners");
                    loaded = set;
                }
            }
        }
    }
    .await;
    health.set_ready(false);
    endpoint_stop.cancel();
    let _ = endpoint.await;
    let snapshot = stats.snapshot();
    tracing::info!(
        events_in = snapshot.events_in,
        published = snapshot.events_published,
        rejected = snapshot.events_rejected,
        "ingest stopped"
    );
    outcome
}

/// The bus with every event keyed by the partition plan of the DetectionRules in the
/// resource directory, on NATS (the in-process bus has one partition). Rules that do not
/// compile are left out here as the correlate stage leaves them out, which reports them.
fn keyed_bus(args: &StageArgs, resources: &ResourceSet, bus: &Arc<dyn Bus>) -> Arc<dyn Bus> {
    if args.bus != BusKind::Nats {
        return Arc::clone(bus);
    }
    let (rules, _) = crate::detection::compile_rules(&resources.rules);
    let plan = rules.partition_plan();
    if plan.spreads() {
        tracing::info!(fields = ?plan.fields(), correlations = rules.correlation_count(),
            "events keyed for the correlate partitions");
    } else {
        tracing::warn!(
            correlations = rules.correlation_count(),
            "the correlation rules share no group-by field; every correlated event goes to \
             one events partition, so one correlate replica does their work"
        );
    }
    Arc::new(Keyed::new(Arc::clone(bus), plan))
}

/// Plans and starts the listeners the Sensors declare, until `generation` is cancelled.
async fn start(
    args: &StageArgs,
    resources: &ResourceSet,
    bus: &Arc<dyn Bus>,
    metrics: &IngestMetrics,
    stats: &Arc<IngestStats>,
    generation: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut problems = Vec::new();
    let plans = crate::listeners::plan(resources, &args.data, &mut problems);
    log_problems(&problems);
    let listeners = crate::listeners::start_counted(
        &plans,
        Arc::clone(bus),
        metrics,
        Arc::clone(stats),
        generation.clone(),
    )
    .await?;
    for plan in &plans {
        tracing::info!(sensor = %plan.sensor, kind = ?plan.kind, "sensor listening");
    }
    Ok(listeners)
}

/// Replays the file Sensors that do not follow their file and that this process has not
/// replayed yet.
async fn replay(
    resources: &ResourceSet,
    bus: &dyn Bus,
    stats: &IngestStats,
    replayed: &mut BTreeSet<(String, PathBuf)>,
) {
    let mut problems = Vec::new();
    let sources: Vec<_> = crate::setup::sensor_sources(resources, &mut problems)
        .into_iter()
        .filter(|source| !source.follow)
        .filter(|source| !replayed.contains(&(source.sensor.clone(), source.path.clone())))
        .collect();
    log_problems(&problems);
    let (reports, problems) = crate::pipeline::ingest_all(&sources, bus, stats).await;
    log_problems(&problems);
    for source in sources {
        replayed.insert((source.sensor, source.path));
    }
    let published: u64 = reports.iter().map(|r| r.published).sum();
    let rejected: u64 = reports.iter().map(|r| r.rejected).sum();
    if !reports.is_empty() {
        tracing::info!(files = reports.len(), published, rejected, "replay done");
    }
}
