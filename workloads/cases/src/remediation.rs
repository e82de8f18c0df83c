//! Vulnerability remediation: the findings of a Greenbone scan turned into cases, one per
//! host and NVT, kept in step with later scans.
//!
//! A finding's key is its host and NVT OID. The first scan that reports it opens a case
//! with the NVT's solution as a task; later scans that report it again change nothing
//! (deduplication across scans); a scan that covers the host but no longer reports the
//! finding closes the case; a scan that reports a finding whose case was closed reopens
//! it. The key is kept as a case tag (`remediation:HOST|OID`), so the store needs no
//! column of its own and analysts can search for it.
//!
//! Priority comes from the CVSS base score, moved one severity step up for hosts of high
//! or critical criticality and one step down for hosts of low criticality.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kastell_core::store::{
    CaseDraft, CaseFilter, CaseRecord, CaseStatus, CaseUpdate, NewTask, Resolution, Tlp,
};
use kastell_core::{CaseStore, Event, Level, StoreError};

/// The actor remediation changes are audited as.
pub const ACTOR: &str = "remediation";

/// Tag prefix of the finding key.
pub const KEY_TAG: &str = "remediation:";

#[derive(Debug, thiserror::Error)]
pub enum RemediationError {
    #[error("{doing} for finding {key}: {source}")]
    Store {
        doing: &'static str,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("listing the remediation cases: {0}")]
    List(#[source] StoreError),
}

/// How much a host matters to the organisation, from its Sensor (or the platform).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Criticality {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// One vulnerability finding read from a normalised Greenbone event.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub host: String,
    pub oid: String,
    pub name: String,
    pub cvss: f64,
    pub cves: Vec<String>,
    pub port: Option<String>,
    pub solution: Option<String>,
    pub scan: Option<String>,
    pub seen_at: Option<DateTime<Utc>>,
}

impl Finding {
    /// The finding of a `greenbone.results` event; `None` for other events and for
    /// results without a host or NVT.
    pub fn from_event(event: &Event) -> Option<Finding> {
        if event.get_str("event.dataset") != Some("greenbone.results") {
            return None;
        }
        // ECS `host.ip` is a list; the scanner's target is its one address.
        let ip = match event.get("host.ip") {
            Some(serde_json::Value::Array(ips)) => ips.first().and_then(|v| v.as_str()),
            Some(serde_json::Value::String(ip)) => Some(ip.as_str()),
            _ => None,
        };
        let host = ip.or_else(|| event.get_str("host.name"))?.to_owned();
        let oid = event.get_str("vulnerability.scanner.id")?.to_owned();
        let cves = match event.get("vulnerability.id") {
            Some(serde_json::Value::Array(ids)) => ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(id)) => vec![id.clone()],
            _ => Vec::new(),
        };
        Some(Finding {
            host,
            name: event.get_str("rule.name").unwrap_or(&oid).to_owned(),
            oid,
            cvss: event
                .get("vulnerability.score.base")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0),
            cves,
            port: event.get_str("greenbone.port").map(str::to_owned),
            solution: event.get_str("greenbone.nvt.solution").map(str::to_owned),
            scan: event.get_str("greenbone.report.id").map(str::to_owned),
            seen_at: event.timestamp(),
        })
    }

    /// The case tag that identifies the finding across scans.
    pub fn key(&self) -> String {
        format!("{KEY_TAG}{}|{}", self.host, self.oid)
    }

    /// Log-level results (CVSS 0) are inventory, not vulnerabilities: they mark the host
    /// as scanned but open no case.
    pub fn is_vulnerability(&self) -> bool {
        self.cvss > 0.0
    }
}

/// The case severity of a CVSS base score on a host of the given criticality.
pub fn severity(cvss: f64, criticality: Criticality) -> Level {
    const STEPS: [Level; 5] = [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];
    // CVSS v3 qualitative ratings: none, low, medium, high, critical.
    let base: usize = match cvss {
        s if s >= 9.0 => 4,
        s if s >= 7.0 => 3,
        s if s >= 4.0 => 2,
        s if s > 0.0 => 1,
        _ => 0,
    };
    let step = match criticality {
        Criticality::Low => base.saturating_sub(1).max(1.min(base)),
        Criticality::Medium => base,
        Criticality::High | Criticality::Critical => (base + 1).min(4),
    };
    STEPS[step]
}

/// What one scan changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub opened: Vec<i64>,
    pub reopened: Vec<i64>,
    pub unchanged: Vec<i64>,
    pub closed: Vec<i64>,
}

/// Applies scans to the case store.
pub struct Remediation<'a> {
    store: &'a dyn CaseStore,
    criticality: BTreeMap<String, Criticality>,
    default_criticality: Criticality,
}

impl<'a> Remediation<'a> {
    pub fn new(store: &'a dyn CaseStore) -> Self {
        Remediation {
            store,
            criticality: BTreeMap::new(),
            default_criticality: Criticality::Medium,
        }
    }

    /// Per-host criticality (by the host as the scanner names it: address or name).
    pub fn with_criticality(
        mut self,
        hosts: BTreeMap<String, Criticality>,
        default: Criticality,
    ) -> Self {
        self.criticality = hosts;
        self.default_criticality = default;
        self
    }

    fn criticality_of(&self, host: &str) -> Criticality {
        self.criticality
            .get(host)
            .copied()
            .unwrap_or(self.default_criticality)
    }

    /// Applies one whole scan: every finding it reports, and the closing of the findings
    /// of the hosts it covered that it no longer reports. Hosts the scan did not cover
    /// keep their cases as they are.
    ///
    /// # Errors
    /// When the store fails; the changes made before stay (each is audited on its own).
    pub async fn apply_scan(&self, findings: &[Finding]) -> Result<ScanOutcome, RemediationError> {
        let scanned: BTreeSet<&str> = findings.iter().map(|f| f.host.as_str()).collect();
        let reported: BTreeMap<String, &Finding> = findings
            .iter()
            .filter(|f| f.is_vulnerability())
            .map(|f| (f.key(), f))
            .collect();
        let existing = self.cases_by_key().await?;
        let mut outcome = ScanOutcome::default();

        for (key, finding) in &reported {
            match existing.get(key) {
                None => outcome.opened.push(self.open(finding).await?),
                Some(case) if case.status == CaseStatus::Closed => {
                    outcome.reopened.push(self.reopen(case, finding).await?)
                }
                Some(case) => outcome.unchanged.push(case.id),
            }
        }
        for (key, case) in &existing {
            let host = key
                .strip_prefix(KEY_TAG)
                .and_then(|k| k.rsplit_once('|'))
                .map(|(host, _)| host);
            let covered = host.is_some_and(|h| scanned.contains(h));
            if covered && case.status != CaseStatus::Closed && !reported.contains_key(key) {
                outcome.closed.push(self.close(case, key).await?);
            }
        }
        tracing::info!(
            findings = findings.len(),
            opened = outcome.opened.len(),
            reopened = outcome.reopened.len(),
            unchanged = outcome.unchanged.len(),
            closed = outcome.closed.len(),
            "scan applied"
        );
        Ok(outcome)
    }

    /// The remediation cases by finding key. The store has no tag index, so every case
    /// is read; the latest case wins should a key appear twice.
    async fn cases_by_key(&self) -> Result<BTreeMap<String, CaseRecord>, RemediationError> {
        let cases = self
            .store
            .list_cases(&CaseFilter::default())
            .await
            .map_err(RemediationError::List)?;
        let mut by_key = BTreeMap::new();
        for case in cases {
            if let Some(key) = case.tags.iter().find(|t| t.starts_with(KEY_TAG)).cloned() {
                by_key.insert(key, case);
            }
        }
        Ok(by_key)
    }

    async fn open(&self, finding: &Finding) -> Result<i64, RemediationError> {
        let key = finding.key();
        let err = |doing| {
            let key = key.clone();
            move |source| RemediationError::Store { doing, key, source }
        };
        let criticality = self.criticality_of(&finding.host);
        let mut tags = vec![
            key.clone(),
            "vulnerability".to_owned(),
            format!("cvss:{:.1}", finding.cvss),
            format!("host-criticality:{}", criticality_name(criticality)),
        ];
        tags.extend(finding.cves.iter().map(|c| format!("cve:{c}")));
        let draft = CaseDraft {
            title: format!("{} on {}", finding.name, finding.host),
            description: description(finding),
            severity: severity(finding.cvss, criticality),
            tlp: Tlp::Amber,
            pap: Tlp::Amber,
            tags,
            assignee: None,
        };
        let case = self
            .store
            .create_case(&draft, ACTOR)
            .await
            .map_err(err("opening the case"))?;
        let task = NewTask {
            title: finding
                .solution
                .clone()
                .unwrap_or_else(|| "Greenbone gives no solution: investigate".to_owned()),
            assignee: None,
        };
        self.store
            .create_task(case.id, &task, ACTOR)
            .await
            .map_err(err("adding the solution task"))?;
        Ok(case.id)
    }

    async fn reopen(&self, case: &CaseRecord, finding: &Finding) -> Result<i64, RemediationError> {
        let key = finding.key();
        let err = |doing| {
            let key = key.clone();
            move |source| RemediationError::Store { doing, key, source }
        };
        let update = CaseUpdate {
            status: Some(CaseStatus::Open),
            ..CaseUpdate::default()
        };
        self.store
            .update_case(case.id, &update, ACTOR)
            .await
            .map_err(err("reopening the case"))?;
        let note = format!(
            "Reopened: scan {} reports the finding again.",
            finding.scan.as_deref().unwrap_or("?")
        );
        self.store
            .add_comment(case.id, &note, ACTOR)
            .await
            .map_err(err("commenting the reopening"))?;
        Ok(case.id)
    }

    async fn close(&self, case: &CaseRecord, key: &str) -> Result<i64, RemediationError> {
        self.store
            .close_case(
                case.id,
                Resolution::TruePositive,
                "Fixed: a later scan of the host no longer reports the finding.",
                ACTOR,
            )
            .await
            .map_err(|source| RemediationError::Store {
                doing: "closing the case",
                key: key.to_owned(),
                source,
            })?;
        Ok(case.id)
    }
}

/// Per-host criticality of the scanned hosts, from the Greenbone Sensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriticalitySettings {
    pub hosts: BTreeMap<String, Criticality>,
    pub default: Criticality,
}

/// The consumer group remediation reads events as.
pub const GROUP: &str = "remediation";

/// Reads events until the subscription ends and applies each Greenbone report to the
/// store as one scan. A report's results arrive together (the decoder reads a report as
/// one document), so a scan ends when a finding of another report arrives or the topic
/// closes. Events that are not Greenbone findings are acknowledged and skipped.
///
/// # Errors
/// When the store fails while applying a scan.
pub async fn run_remediation_on(
    sub: Box<dyn kastell_core::Subscription>,
    store: &dyn CaseStore,
    settings: &CriticalitySettings,
) -> Result<ScanOutcome, RemediationError> {
    run_remediation_with(sub, store, settings, None).await
}

/// As [`run_remediation_on`], and when `idle` is given a scan also ends once no event has
/// arrived for that long: a long-running subscription (the cluster cases stage) never
/// closes, and without it the last report would wait for the next one.
///
/// A scan's deliveries are acknowledged only once the scan is applied, so a process
/// stopped in between has the report delivered again rather than lost; applying the same
/// scan twice changes nothing.
///
/// # Errors
/// When the store fails while applying a scan.
pub async fn run_remediation_with(
    mut sub: Box<dyn kastell_core::Subscription>,
    store: &dyn CaseStore,
    settings: &CriticalitySettings,
    idle: Option<std::time::Duration>,
) -> Result<ScanOutcome, RemediationError> {
    let remediation =
        Remediation::new(store).with_criticality(settings.hosts.clone(), settings.default);
    let mut total = ScanOutcome::default();
    let mut scan: Vec<Finding> = Vec::new();
    let mut held: Vec<kastell_core::Delivery> = Vec::new();
    loop {
        let next = match idle.filter(|_| !scan.is_empty()) {
            // NB: the abandoned read of a bus subscription is delivered again later (see
            // the stage's Stoppable), so waiting with a timeout loses nothing.
            Some(idle) => match tokio::time::timeout(idle, sub.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::debug!(findings = scan.len(), "scan ended by idle time");
                    total.add(finish_scan(&remediation, &mut scan, &mut held).await?);
                    continue;
                }
            },
            None => sub.next().await,
        };
        let Some(delivery) = next else { break };
        let finding = delivery
            .message
            .decode::<Event>()
            .ok()
            .and_then(|event| Finding::from_event(&event));
        let Some(finding) = finding else {
            let _ = delivery.ack().await;
            continue;
        };
        if scan.first().is_some_and(|f| f.scan != finding.scan) {
            total.add(finish_scan(&remediation, &mut scan, &mut held).await?);
        }
        scan.push(finding);
        held.push(delivery);
    }
    if !scan.is_empty() {
        total.add(finish_scan(&remediation, &mut scan, &mut held).await?);
    }
    Ok(total)
}

/// Applies the gathered scan, then acknowledges its deliveries.
async fn finish_scan(
    remediation: &Remediation<'_>,
    scan: &mut Vec<Finding>,
    held: &mut Vec<kastell_core::Delivery>,
) -> Result<ScanOutcome, RemediationError> {
    let outcome = remediation.apply_scan(&std::mem::take(scan)).await?;
    for delivery in held.drain(..) {
        let _ = delivery.ack().await;
    }
    Ok(outcome)
}

impl ScanOutcome {
    fn add(&mut self, other: ScanOutcome) {
        self.opened.extend(other.opened);
        self.reopened.extend(other.reopened);
        self.unchanged.extend(other.unchanged);
        self.closed.extend(other.closed);
    }
}

fn criticality_name(c: Criticality) -> &'static str {
    match c {
        Criticality::Low => "low",
        Criticality::Medium => "medium",
        Criticality::High => "high",
        Criticality::Critical => "critical",
    }
}

fn description(finding: &Finding) -> String {
    let mut text = format!(
        "Greenbone NVT {} ({}) on {}, CVSS {:.1}.",
        finding.oid, finding.name, finding.host, finding.cvss
    );
    if let Some(port) = &finding.port {
        text.push_str(&format!(" Port {port}."));
    }
    if !finding.cves.is_empty() {
        text.push_str(&format!(" CVEs: {}.", finding.cves.join(", ")));
    }
    if let Some(solution) = &finding.solution {
        text.push_str(&format!("\n\nSolution: {solution}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_cvss_and_host_criticality() {
        assert_eq!(severity(9.8, Criticality::Medium), Level::Critical);
        assert_eq!(severity(7.5, Criticality::Medium), Level::High);
        assert_eq!(severity(7.5, Criticality::Critical), Level::Critical);
        assert_eq!(severity(5.0, Criticality::Low), Level::Low);
        assert_eq!(severity(2.6, Criticality::Low), Level::Low);
        assert_eq!(severity(0.0, Criticality::High), Level::Low);
        assert_eq!(severity(0.0, Criticality::Medium), Level::Informational);
    }
}
