//! `kastell gdpr`: data-subject requests against the case store (`export` prints
//! everything held about a subject, `erase` erases it) and the platform's retention of
//! personal data (`retention` erases the personal fields of cases closed longer than
//! `spec.retention.personalData`, which `kastell run` also does every hour). Each covers
//! the dead-letter log beside the store too, whose raw records may name the subject. Each
//! run is an audit entry; the procedures themselves are in
//! [`kastell_core::store::privacy`] and [`kastell_core::store::dead_letters`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kastell_core::store::dead_letters::{DeadLetterLog, Expiry};
use kastell_core::store::privacy::{Erasure, Subject, SubjectData};
use kastell_core::{PrivacyStore, StoreUrl};
use kastell_crds::{parse_duration, ResourceSet};
use serde::Serialize;
use serde_json::Value;

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
    #[command(flatten)]
    dead_letters: DeadLetterArgs,
}

#[derive(clap::Args, Debug)]
struct DeadLetterArgs {
    /// The dead-letter log of `kastell run` to include [default: `dead-letters.jsonl` in
    /// the SQLite store's data directory; a PostgreSQL store needs it named, as the log
    /// stays in `kastell run --data`]
    #[arg(long = "dead-letters", value_name = "FILE")]
    path: Option<PathBuf>,
}

impl DeadLetterArgs {
    /// The log to include, or `None` (said on stderr) when there is none to find.
    fn log(&self, store: &StoreArgs) -> anyhow::Result<Option<DeadLetterLog>> {
        if let Some(path) = &self.path {
            return Ok(Some(DeadLetterLog::at(path.clone())));
        }
        let log = match store.url()? {
            StoreUrl::SqliteDir(dir) => Some(DeadLetterLog::in_dir(&dir)),
            StoreUrl::SqliteFile(file) => file.parent().map(DeadLetterLog::in_dir),
            StoreUrl::Postgres(_) => None,
        };
        if log.is_none() {
            eprintln!(
                "note: the dead-letter log was not included: name it with --dead-letters \
                 DIR/dead-letters.jsonl (DIR as given to `kastell run --data`)"
            );
        }
        Ok(log)
    }
}

/// `kastell gdpr export`'s answer: the store's data and the dead letters (`null` when no
/// log was included).
#[derive(Serialize)]
struct Export {
    #[serde(flatten)]
    store: SubjectData,
    dead_letters: Option<Vec<Value>>,
}

/// What `erase` and `retention` changed, in the store and in the dead-letter log.
#[derive(Debug, Serialize)]
pub struct Changes<T> {
    #[serde(flatten)]
    pub store: Erasure,
    pub dead_letters: Option<T>,
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
    #[command(flatten)]
    dead_letters: DeadLetterArgs,
}

pub fn run(args: GdprArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let actor = cli_actor();
    let json = match args.command {
        GdprCommand::Export(subject) => runtime.block_on(async {
            let store = open(&subject.store).await?;
            let log = subject.dead_letters.log(&subject.store)?;
            let data = store
                .export_subject(&subject.subject, &actor)
                .await
                .context("exporting the subject's data")?;
            let dead_letters = match log {
                Some(log) => {
                    Some(export_dead_letters(store.as_ref(), log, &subject.subject, &actor).await?)
                }
                None => None,
            };
            let export = Export {
                store: data,
                dead_letters,
            };
            serde_json::to_string_pretty(&export).context("printing the export")
        })?,
        GdprCommand::Erase(subject) => runtime.block_on(async {
            let store = open(&subject.store).await?;
            let log = subject.dead_letters.log(&subject.store)?;
            let erasure = store
                .erase_subject(&subject.subject, &actor)
                .await
                .context("erasing the subject")?;
            let dead_letters = match log {
                Some(log) => {
                    Some(erase_dead_letters(store.as_ref(), log, &subject.subject, &actor).await?)
                }
                None => None,
            };
            let changes = Changes {
                store: erasure,
                dead_letters,
            };
            serde_json::to_string_pretty(&changes).context("printing the erasure")
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
                let log = retention.dead_letters.log(&retention.store)?;
                let changes = apply_retention(store.as_ref(), log, period, &actor).await?;
                serde_json::to_string_pretty(&changes).context("printing the erasure")
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

/// The dead letters that mention `subject`; the export is audited.
async fn export_dead_letters(
    store: &dyn PrivacyStore,
    log: DeadLetterLog,
    subject: &str,
    by: &str,
) -> anyhow::Result<Vec<Value>> {
    let digest = Subject::new(subject)?.digest();
    let file = log.path().display().to_string();
    let subject = subject.to_owned();
    let letters = tokio::task::spawn_blocking(move || log.export(&subject))
        .await
        .context("reading the dead-letter log")?
        .context("reading the dead-letter log")?;
    let found = serde_json::json!({ "file": file, "letters": letters.len() });
    store
        .record_procedure(by, "gdpr.dead_letters.export", "subject", digest, found)
        .await
        .context("auditing the export of the dead letters")?;
    Ok(letters)
}

/// Scrubs `subject` from the dead letters; audited, with how many lines changed.
async fn erase_dead_letters(
    store: &dyn PrivacyStore,
    log: DeadLetterLog,
    subject: &str,
    by: &str,
) -> anyhow::Result<kastell_core::store::dead_letters::Scrub> {
    let digest = Subject::new(subject)?.digest();
    let subject = subject.to_owned();
    let scrub = tokio::task::spawn_blocking(move || log.erase(&subject))
        .await
        .context("scrubbing the dead-letter log")?
        .context("scrubbing the dead-letter log")?;
    let state = serde_json::to_value(&scrub).context("auditing the scrub")?;
    store
        .record_procedure(by, "gdpr.dead_letters.erase", "subject", digest, state)
        .await
        .context("auditing the scrub of the dead letters")?;
    tracing::info!(file = %scrub.file, scrubbed = scrub.scrubbed, by, "subject scrubbed from dead letters");
    Ok(scrub)
}

/// Erases the personal fields of cases closed more than `period` ago, and drops the
/// dead letters logged before then from `log`.
///
/// # Errors
/// When the store or the log cannot be read or written.
pub async fn apply_retention(
    store: &dyn PrivacyStore,
    log: Option<DeadLetterLog>,
    period: chrono::Duration,
    by: &str,
) -> anyhow::Result<Changes<Expiry>> {
    let cutoff = chrono::Utc::now() - period;
    let erasure = store
        .erase_closed_before(cutoff, by)
        .await
        .context("erasing personal data past its retention period")?;
    let dead_letters = match log {
        Some(log) => Some(expire_dead_letters(store, log, cutoff, by).await?),
        None => None,
    };
    Ok(Changes {
        store: erasure,
        dead_letters,
    })
}

/// Drops the dead letters logged before `cutoff`; audited when one was dropped, so a
/// run that changes nothing appends nothing, as the store's retention.
async fn expire_dead_letters(
    store: &dyn PrivacyStore,
    log: DeadLetterLog,
    cutoff: chrono::DateTime<chrono::Utc>,
    by: &str,
) -> anyhow::Result<Expiry> {
    let expiry = tokio::task::spawn_blocking(move || log.expire(cutoff))
        .await
        .context("expiring dead letters")?
        .context("expiring dead letters")?;
    if expiry.dropped > 0 {
        let mut state = serde_json::to_value(&expiry).context("auditing the expiry")?;
        state["logged_before"] = Value::String(cutoff.to_rfc3339());
        store
            .record_procedure(
                by,
                "gdpr.dead_letters.retention",
                "dead_letters",
                expiry.file.clone(),
                state,
            )
            .await
            .context("auditing the expiry of dead letters")?;
        tracing::info!(file = %expiry.file, dropped = expiry.dropped, kept = expiry.kept, "dead letters past retention dropped");
    }
    Ok(expiry)
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
    dead_letters: DeadLetterLog,
    period: chrono::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            ticks.tick().await;
            let log = Some(dead_letters.clone());
            match apply_retention(store.as_ref(), log, period, RETENTION_ACTOR).await {
                Ok(changes) => tracing::info!(
                    period_hours = period.num_hours(),
                    changed = changes.store.total(),
                    dead_letters_dropped = changes.dead_letters.map_or(0, |e| e.dropped),
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
