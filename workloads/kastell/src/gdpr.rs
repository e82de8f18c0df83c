//! `kastell gdpr`: data-subject requests against the case store (`export` prints
//! everything held about a subject, `erase` erases it) and the platform's retention of
//! personal data (`retention` erases the personal fields of cases closed longer than
//! `spec.retention.personalData`, which `kastell run` also does every hour). Each run is
//! an audit entry; the procedures themselves are in [`kastell_core::store::privacy`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kastell_core::store::privacy::Erasure;
use kastell_core::PrivacyStore;
use kastell_crds::{parse_duration, ResourceSet};

use crate::apikey::cli_actor;
use crate::store_arg::StoreArgs;

/// Who the audit log names for the retention `kastell run` does by itself.
pub const RETENTION_ACTOR: &str = "system:retention";

/// How often `kastell run` applies the retention period while it serves.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Arguments of `kastell gdpr`.
#[derive(clap::Args, Debug)]
pub struct GdprArgs {
    #[command(subcommand)]
    command: GdprCommand,
}

#[derive(clap::Subcommand, Debug)]
enum GdprCommand {
    /// Print, as JSON, every case, alert, action, API key and audit entry that mentions
    /// the subject (a data-subject access request).
    Export(SubjectArgs),
    /// Replace every mention of the subject with "[erased]" and blank the audit states
    /// that mention it; the audit chain stays verifiable. Prints what was changed.
    Erase(SubjectArgs),
    /// Erase the personal fields of cases closed longer than the retention period, with
    /// their alerts, actions and audit states. Prints what was changed.
    Retention(RetentionArgs),
}

#[derive(clap::Args, Debug)]
struct SubjectArgs {
    /// The data subject: a user name, e-mail address or other identifier (at least three
    /// characters), matched anywhere without regard to case.
    #[arg(long)]
    subject: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args, Debug)]
struct RetentionArgs {
    /// The retention period, e.g. `90d`; default: the SecOpsPlatform's
    /// `spec.retention.personalData` in `--config`.
    #[arg(long, required_unless_present = "config")]
    period: Option<String>,
    /// A directory of resources whose SecOpsPlatform sets the period.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: GdprArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let actor = cli_actor();
    let json = match args.command {
        GdprCommand::Export(subject) => runtime.block_on(async {
            let store = open(&subject.store).await?;
            let data = store
                .export_subject(&subject.subject, &actor)
                .await
                .context("exporting the subject's data")?;
            serde_json::to_string_pretty(&data).context("printing the export")
        })?,
        GdprCommand::Erase(subject) => runtime.block_on(async {
            let store = open(&subject.store).await?;
            let erasure = store
                .erase_subject(&subject.subject, &actor)
                .await
                .context("erasing the subject")?;
            serde_json::to_string_pretty(&erasure).context("printing the erasure")
        })?,
        GdprCommand::Retention(retention) => {
            let period = match (&retention.period, &retention.config) {
                (Some(period), _) => parse_period(period)?,
                (None, Some(config)) => configured_period(config)?.with_context(|| {
                    format!(
                        "no SecOpsPlatform in {} sets spec.retention.personalData",
                        config.display()
                    )
                })?,
                (None, None) => anyhow::bail!("pass --period or --config"),
            };
            runtime.block_on(async {
                let store = open(&retention.store).await?;
                let erasure = apply_retention(store.as_ref(), period, &actor).await?;
                serde_json::to_string_pretty(&erasure).context("printing the erasure")
            })?
        }
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

async fn open(store: &StoreArgs) -> anyhow::Result<Arc<dyn PrivacyStore>> {
    let url = store.existing()?;
    kastell_core::store::open(&url)
        .await
        .with_context(|| format!("opening the case store {url}"))
}

fn parse_period(text: &str) -> anyhow::Result<chrono::Duration> {
    let period = parse_duration(text).map_err(|e| anyhow::anyhow!("retention period: {e}"))?;
    chrono::Duration::from_std(period).context("retention period too long")
}

/// Erases the personal fields of cases closed more than `period` ago.
///
/// # Errors
/// When the store cannot be read or written.
pub async fn apply_retention(
    store: &dyn PrivacyStore,
    period: chrono::Duration,
    by: &str,
) -> anyhow::Result<Erasure> {
    let cutoff = chrono::Utc::now() - period;
    store
        .erase_closed_before(cutoff, by)
        .await
        .context("erasing personal data past its retention period")
}

/// The SecOpsPlatform's `spec.retention.personalData` from a resource directory.
fn configured_period(config: &Path) -> anyhow::Result<Option<chrono::Duration>> {
    let (resources, _) = kastell_crds::load_dir(config)
        .with_context(|| format!("reading resources from {}", config.display()))?;
    let mut problems = Vec::new();
    let period = personal_data_retention(&resources, &mut problems);
    match problems.pop() {
        Some(problem) => Err(anyhow::anyhow!(problem)),
        None => Ok(period),
    }
}

/// The first SecOpsPlatform's personal-data retention period; a malformed one is a
/// problem line and no retention.
pub fn personal_data_retention(
    resources: &ResourceSet,
    problems: &mut Vec<String>,
) -> Option<chrono::Duration> {
    let platform = resources.platforms.first()?;
    let text = platform
        .object
        .spec
        .retention
        .as_ref()?
        .personal_data
        .as_deref()?;
    match parse_period(text) {
        Ok(period) => Some(period),
        Err(e) => {
            problems.push(format!(
                "{}: platform {}: spec.retention.personalData: {e:#}; personal data is kept",
                platform.file.display(),
                platform.key()
            ));
            None
        }
    }
}

/// Applies the retention period now and then every [`RETENTION_INTERVAL`], for as long
/// as the returned task is not aborted. A failed run is logged and retried next time.
pub fn spawn_retention(
    store: Arc<dyn PrivacyStore>,
    period: chrono::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            ticks.tick().await;
            match apply_retention(store.as_ref(), period, RETENTION_ACTOR).await {
                Ok(erasure) => tracing::info!(
                    period_hours = period.num_hours(),
                    changed = erasure.total(),
                    "retention applied"
                ),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "retention run failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(dir: &Path) -> ResourceSet {
        kastell_crds::load_dir(dir).unwrap().0
    }

    #[test]
    fn the_example_platform_keeps_personal_data_thirty_days() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc");
        let mut problems = Vec::new();
        let period = personal_data_retention(&resources(&examples), &mut problems);
        assert_eq!(period, Some(chrono::Duration::days(30)));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_malformed_period_is_a_problem_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let platform = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/platform.yaml"),
        )
        .unwrap()
        // Well-formed for the schema, but more days than a duration holds.
        .replace("personalData: 30d", "personalData: 99999999999999999999d");
        std::fs::write(dir.path().join("platform.yaml"), platform).unwrap();
        let mut problems = Vec::new();
        let period = personal_data_retention(&resources(dir.path()), &mut problems);
        assert_eq!(period, None);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.retention.personalData")),
            "{problems:?}"
        );
        assert!(parse_period("90d").is_ok() && parse_period("-1d").is_err());
    }
}
