//! `kastell report`: a period's compliance report from the case store — SOC figures,
//! significant incidents with their NIS2 deadlines, GDPR procedure records, ATT&CK
//! coverage of the live rules and the audit chain's verdict — as JSON or as one
//! self-contained HTML page.
//!
//! NIS2 state lives in case tags, so no store migration is needed and every change is
//! already audited: `nis2:significant` marks a significant incident, and the tags
//! `nis2:early-warning`, `nis2:notification` and `nis2:final-report` record that the
//! corresponding report was sent. The time a milestone was met is the time of the audit
//! entry that added its tag, which the chain vouches for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kastell_core::audit::{self, AuditEntry, Verdict};
use kastell_core::store::{CaseFilter, CaseRecord, CaseStatus, SeverityFigures};
use kastell_core::{CaseStore, SqliteStore};
use serde::{Deserialize, Serialize};

use crate::apikey::DEFAULT_DATA;

/// The version of the JSON document, bumped when a field changes meaning.
pub const SCHEMA: &str = "kastell.report/v1";

/// The tag that flags a case as a significant incident under NIS2 (art. 23).
pub const SIGNIFICANT_TAG: &str = "nis2:significant";

/// The audit actions the GDPR section counts (written by `kastell gdpr`).
pub const GDPR_ACTIONS: [(&str, &str); 3] = [
    ("gdpr.retention", "retention run"),
    ("gdpr.export", "data-subject request"),
    ("gdpr.erase", "erasure"),
];

/// Arguments of `kastell report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// First day (YYYY-MM-DD, UTC) or instant (RFC 3339) of the period.
    #[arg(long, value_parser = parse_start)]
    from: DateTime<Utc>,
    /// Last day (YYYY-MM-DD, included) or instant (RFC 3339, excluded) of the period.
    #[arg(long, value_parser = parse_end)]
    to: DateTime<Utc>,
    #[arg(long, value_enum, default_value_t = Format::Html)]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The data directory holding the case store, as given to `kastell run --data`.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// The resource directory whose DetectionRules are live [default: the bundled
    /// examples/soc].
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Json,
}

fn parse_instant(text: &str, day_offset: i64) -> Result<DateTime<Utc>, String> {
    let as_day = NaiveDate::parse_from_str(text, "%Y-%m-%d");
    if let Ok(day) = as_day {
        let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        return Ok(start + Duration::days(day_offset));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|rfc3339| {
            // A bare day (no `T`) is reported as a day: "2000-02-30 … out of range" says
            // more than the RFC 3339 parser's "premature end of input".
            let reason = match as_day {
                Err(day) if !text.contains(['T', 't', ' ']) => day.to_string(),
                _ => rfc3339.to_string(),
            };
            format!("{text:?} is neither a day YYYY-MM-DD nor an RFC 3339 time: {reason}")
        })
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, 0)
}

/// A day given as the end is included, so the period ends at the next midnight.
fn parse_end(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, 1)
}

/// The whole report, as written in JSON (docs/report.md describes every field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub generated_at: DateTime<Utc>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub soc: SocFigures,
    pub incidents: Vec<Incident>,
    pub gdpr: Gdpr,
    pub attack: AttackCoverage,
    pub audit: AuditResult,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocFigures {
    pub by_severity: Vec<SeverityFigures>,
    pub alerts: i64,
    pub acknowledged: i64,
    pub cases_opened: usize,
    pub cases_closed: usize,
    pub significant_incidents: usize,
}

/// A significant incident and its NIS2 reporting deadlines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incident {
    pub case_id: i64,
    pub title: String,
    pub severity: String,
    pub status: String,
    /// When Kastell detected it: the case's creation.
    pub detected_at: DateTime<Utc>,
    pub deadlines: Vec<Deadline>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deadline {
    /// `early_warning` (24 h), `incident_notification` (72 h), `final_report` (one month).
    pub name: String,
    /// The case tag that records the report as sent.
    pub tag: String,
    pub due: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub state: DeadlineState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineState {
    Met,
    Missed,
    /// Not done, and not due yet when the report was made.
    Open,
}

/// The NIS2 art. 23 milestones, counted from detection. One month is taken as 30 days.
const MILESTONES: [(&str, &str, i64); 3] = [
    ("early_warning", "nis2:early-warning", 24),
    ("incident_notification", "nis2:notification", 72),
    ("final_report", "nis2:final-report", 30 * 24),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gdpr {
    pub retention_runs: usize,
    pub subject_requests: usize,
    pub erasures: usize,
    pub records: Vec<GdprRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GdprRecord {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub kind: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackCoverage {
    pub rules: usize,
    pub rules_with_technique: usize,
    /// Technique id (T1110, T1021.002) to the ids of the rules tagged with it.
    pub techniques: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditResult {
    pub intact: bool,
    pub entries: usize,
    pub verdict: String,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.from < args.to, "--from must be before --to");
    let config = match args.config {
        Some(dir) => dir,
        None => bundled_examples()?,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(build(&args.data, &config, args.from, args.to, Utc::now()))?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => render_html(&report)?,
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn bundled_examples() -> anyhow::Result<PathBuf> {
    [
        PathBuf::from("examples/soc"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc"),
    ]
    .into_iter()
    .find(|dir| dir.is_dir())
    .context("the bundled examples/soc directory was not found; pass --config DIR")
}

/// Builds the report of `[from, to)` from the store in `data` and the rules in `config`;
/// `now` decides which unmet deadlines are still open.
///
/// # Errors
/// When there is no store, or it or the rules cannot be read.
pub async fn build(
    data: &Path,
    config: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        data.join(kastell_core::store::SQLITE_FILE).is_file(),
        "no case store in {} (pass --data DIR, as given to `kastell run`)",
        data.display()
    );
    let store = SqliteStore::open_dir(data)
        .await
        .with_context(|| format!("opening the case store in {}", data.display()))?;
    let entries = all_entries(&store).await?;
    let verdict = audit::verify(&entries);
    let cases = store
        .list_cases(&CaseFilter::default())
        .await
        .context("reading the cases")?;
    let by_severity = store
        .figures(from, to)
        .await
        .context("reading the SOC figures")?;

    let in_period = |t: DateTime<Utc>| t >= from && t < to;
    let incidents: Vec<Incident> = cases
        .iter()
        .filter(|c| c.tags.iter().any(|t| t == SIGNIFICANT_TAG) && in_period(c.created_at))
        .map(|c| incident(c, &entries, now))
        .collect();
    let soc = SocFigures {
        alerts: by_severity.iter().map(|f| f.alerts).sum(),
        acknowledged: by_severity.iter().map(|f| f.acknowledged).sum(),
        by_severity,
        cases_opened: cases.iter().filter(|c| in_period(c.created_at)).count(),
        cases_closed: cases
            .iter()
            .filter(|c| c.status == CaseStatus::Closed && c.closed_at.is_some_and(in_period))
            .count(),
        significant_incidents: incidents.len(),
    };
    tracing::info!(
        cases = cases.len(),
        incidents = incidents.len(),
        audit_entries = entries.len(),
        "report built"
    );
    Ok(Report {
        schema: SCHEMA.to_owned(),
        generated_at: now,
        from,
        to,
        soc,
        incidents,
        gdpr: gdpr(&entries, from, to),
        attack: attack_coverage(config)?,
        audit: AuditResult {
            intact: matches!(verdict, Verdict::Intact { .. }),
            entries: entries.len(),
            verdict: verdict.to_string(),
        },
    })
}

async fn all_entries(store: &dyn CaseStore) -> anyhow::Result<Vec<AuditEntry>> {
    const PAGE: i64 = 10_000;
    let mut all: Vec<AuditEntry> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store
            .audit_entries(after, PAGE)
            .await
            .context("reading the audit log")?;
        let full = page.len() as i64 == PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

fn has_tag(state: &Option<serde_json::Value>, tag: &str) -> bool {
    state
        .as_ref()
        .and_then(|s| s["tags"].as_array())
        .is_some_and(|tags| tags.iter().any(|t| t == tag))
}

/// When the audit log first shows `tag` added to the case.
fn tagged_at(case_id: i64, tag: &str, entries: &[AuditEntry]) -> Option<DateTime<Utc>> {
    let id = case_id.to_string();
    entries
        .iter()
        .filter(|e| e.object_kind == "case" && e.object_id == id)
        .find(|e| has_tag(&e.after, tag) && !has_tag(&e.before, tag))
        .and_then(|e| DateTime::parse_from_rfc3339(&e.at).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn incident(case: &CaseRecord, entries: &[AuditEntry], now: DateTime<Utc>) -> Incident {
    let detected_at = case.created_at;
    let deadlines = MILESTONES
        .iter()
        .map(|(name, tag, hours)| {
            let due = detected_at + Duration::hours(*hours);
            let done_at = tagged_at(case.id, tag, entries);
            let state = match done_at {
                Some(done) if done <= due => DeadlineState::Met,
                Some(_) => DeadlineState::Missed,
                None if now > due => DeadlineState::Missed,
                None => DeadlineState::Open,
            };
            Deadline {
                name: (*name).to_owned(),
                tag: (*tag).to_owned(),
                due,
                done_at,
                state,
            }
        })
        .collect();
    Incident {
        case_id: case.id,
        title: case.title.clone(),
        severity: case.severity.as_str().to_owned(),
        status: case.status.as_str().to_owned(),
        detected_at,
        deadlines,
    }
}

fn gdpr(entries: &[AuditEntry], from: DateTime<Utc>, to: DateTime<Utc>) -> Gdpr {
    let mut out = Gdpr::default();
    for entry in entries {
        let Some((_, kind)) = GDPR_ACTIONS.iter().find(|(a, _)| *a == entry.action) else {
            continue;
        };
        let at = DateTime::parse_from_rfc3339(&entry.at).map(|t| t.with_timezone(&Utc));
        if !at.is_ok_and(|t| t >= from && t < to) {
            continue;
        }
        match entry.action.as_str() {
            "gdpr.retention" => out.retention_runs += 1,
            "gdpr.export" => out.subject_requests += 1,
            _ => out.erasures += 1,
        }
        out.records.push(GdprRecord {
            seq: entry.seq,
            at: entry.at.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            kind: (*kind).to_owned(),
        });
    }
    out
}

/// `attack.t1021.002` to `T1021.002`; tactic tags (`attack.credential-access`) give none.
fn technique(tag: &str) -> Option<String> {
    let id = tag.strip_prefix("attack.")?;
    let (base, sub) = id.split_once('.').map_or((id, None), |(b, s)| (b, Some(s)));
    let digits = base.strip_prefix('t').or_else(|| base.strip_prefix('T'))?;
    let numeric = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(digits, 4) || sub.is_some_and(|s| !numeric(s, 3)) {
        return None;
    }
    Some(match sub {
        Some(sub) => format!("T{digits}.{sub}"),
        None => format!("T{digits}"),
    })
}

/// Techniques of the enabled DetectionRules in `config` that compile.
fn attack_coverage(config: &Path) -> anyhow::Result<AttackCoverage> {
    let (resources, _) = kastell_crds::load_dir(config)
        .with_context(|| format!("reading resources from {}", config.display()))?;
    let (rules, _) = crate::detection::compile_rules(&resources.rules);
    let mut out = AttackCoverage::default();
    for rule in rules.rules() {
        out.rules += 1;
        let techniques: BTreeSet<String> = rule.tags.iter().filter_map(|t| technique(t)).collect();
        if !techniques.is_empty() {
            out.rules_with_technique += 1;
        }
        for t in techniques {
            out.techniques.entry(t).or_default().push(rule.id.clone());
        }
    }
    Ok(out)
}

const HTML_TEMPLATE: &str = include_str!("report.html.j2");

/// The report as one HTML page with its style inline, readable offline and on paper.
///
/// # Errors
/// Only if the built-in template fails to render.
pub fn render_html(report: &Report) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    // The name ends in .html so minijinja escapes every value.
    env.add_template("report.html", HTML_TEMPLATE)
        .context("loading the report template")?;
    env.get_template("report.html")?
        .render(minijinja::context! { r => minijinja::value::Serde(report) })
        .context("rendering the report")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_are_read_from_attack_tags_only() {
        assert_eq!(technique("attack.t1110").as_deref(), Some("T1110"));
        assert_eq!(technique("attack.T1021.002").as_deref(), Some("T1021.002"));
        assert_eq!(technique("attack.credential-access"), None);
        assert_eq!(technique("attack.t11"), None);
        assert_eq!(technique("cve.2018-15473"), None);
    }

    #[test]
    fn dates_are_whole_utc_days_and_the_end_day_is_included() {
        assert_eq!(
            parse_start("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_end("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-02T00:00:00+00:00"
        );
        assert!(parse_start("1 Dec").is_err());
    }

    #[test]
    fn an_impossible_day_is_reported_as_a_day() {
        let error = parse_start("2000-02-30").unwrap_err();
        assert!(error.contains("out of range"), "{error}");
        let error = parse_start("2000-02-01T25:00:00Z").unwrap_err();
        assert!(error.contains("out of range"), "{error}");
    }
}
