//! Real alerts for the tests and the bench: Suricata EVE and Wazuh alert lines from the
//! corpora (copied into tests/fixtures/corpora), turned into ECS events and raised as alerts the way the correlate
//! stage would, and a case store in a temporary directory.
//!
//! Lines are picked by number and cited at their use; `eve_alert` checks the signature
//! of each, so a changed corpus fails loudly instead of silently testing other data.

#![allow(dead_code)] // Each test binary uses a different part.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kastell_core::{Alert, CaseStore, Event, Level, RuleRef, SqliteStore};
use serde_json::{json, Value};

/// The repository's copy of the corpus files these tests use (tests/fixtures/corpora),
/// or the full shared corpora when `$KASTELL_CORPORA` names them.
pub fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/corpora")
        })
}

/// Suricata 7 over the IcedID 2022-10-31 capture (see the folder's SOURCE.txt).
pub const TR0LLOPE: &str = "suricata/tr0llope/eve-mixed.json";
/// A small Suricata run with a custom ssh rule (see the folder's SOURCE.txt).
pub const XHPX: &str = "suricata/xhpx/eve.json";
/// Wazuh sshd brute-force alert, rule 5712 (see the folder's SOURCE.txt).
pub const WAZUH_SSHD: &str = "wazuh/alerts/wazuh-qa-integratord-samples.jsonl";
/// Wazuh's deliberately broken alert (no `rule` key, not JSON) on its line 2.
pub const WAZUH_MALFORMED: &str = "wazuh/alerts/wazuh-qa-integratord-malformed.txt";

/// Line `number` (1-based) of a corpus file, as text.
pub fn line(file: &str, number: usize) -> String {
    let path = corpora().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .nth(number - 1)
        .unwrap_or_else(|| panic!("{} has no line {number}", path.display()))
        .to_owned()
}

/// Every EVE alert line of a corpus file with its line number.
pub fn eve_alert_lines(file: &str) -> Vec<(usize, String)> {
    let path = corpora().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(r#""event_type":"alert""#))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// Both Suricata and Wazuh write offsets as `+0100`; ECS wants RFC 3339.
fn rfc3339(raw: &str) -> String {
    DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .unwrap_or_else(|e| panic!("timestamp {raw:?}: {e}"))
        .with_timezone(&Utc)
        .to_rfc3339()
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

/// An EVE alert line as the ECS event ingest makes of it (Elastic's Suricata mapping).
pub fn eve_event(line: &str) -> Event {
    let eve: Value = serde_json::from_str(line).expect("an EVE line is JSON");
    let mut event = Event::new();
    let copy = |event: &mut Event, to: &str, from: &str| event.set_opt(to, at(&eve, from).cloned());
    event.set(
        "@timestamp",
        json!(rfc3339(
            at(&eve, "timestamp").and_then(Value::as_str).unwrap()
        )),
    );
    event.set("event.dataset", json!("suricata.eve"));
    event.set("event.kind", json!("alert"));
    event.set("observer.name", json!("suricata"));
    copy(&mut event, "source.ip", "src_ip");
    copy(&mut event, "source.port", "src_port");
    copy(&mut event, "destination.ip", "dest_ip");
    copy(&mut event, "destination.port", "dest_port");
    copy(&mut event, "network.transport", "proto");
    copy(&mut event, "rule.id", "alert.signature_id");
    copy(&mut event, "rule.name", "alert.signature");
    copy(&mut event, "rule.category", "alert.category");
    copy(&mut event, "url.domain", "http.hostname");
    copy(&mut event, "tls.client.server_name", "tls.sni");
    event
}

/// Suricata's severity 1 is its most severe.
fn eve_level(severity: i64) -> Level {
    match severity {
        1 => Level::High,
        2 => Level::Medium,
        _ => Level::Low,
    }
}

/// The alert a rule mirroring the Suricata signature raises on line `number` of `file`;
/// `signature_id` must match, to catch a changed corpus.
pub fn eve_alert(file: &str, number: usize, signature_id: i64) -> Alert {
    let text = line(file, number);
    let eve: Value = serde_json::from_str(&text).expect("an EVE line is JSON");
    let sid = at(&eve, "alert.signature_id").and_then(Value::as_i64);
    assert_eq!(
        sid,
        Some(signature_id),
        "{file}:{number} is another signature"
    );
    let rule = RuleRef {
        id: format!("suricata-{signature_id}"),
        title: at(&eve, "alert.signature")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned(),
        level: eve_level(at(&eve, "alert.severity").and_then(Value::as_i64).unwrap()),
        tags: vec!["suricata".into()],
        ..RuleRef::default()
    };
    Alert::from_event(rule, eve_event(&text), detected_at())
}

/// The sshd brute-force alert of `WAZUH_SSHD` line 1: host `localhost.localdomain`.
pub fn wazuh_sshd_alert() -> Alert {
    let text = line(WAZUH_SSHD, 1);
    let wazuh: Value = serde_json::from_str(&text).expect("a Wazuh alert is JSON");
    let mut event = Event::new();
    event.set(
        "@timestamp",
        json!(rfc3339(
            at(&wazuh, "timestamp").and_then(Value::as_str).unwrap()
        )),
    );
    event.set("event.dataset", json!("wazuh.alerts"));
    event.set("observer.name", json!("wazuh"));
    event.set_opt("host.name", at(&wazuh, "agent.name").cloned());
    event.set_opt("source.ip", at(&wazuh, "data.srcip").cloned());
    event.set_opt("user.name", at(&wazuh, "data.srcuser").cloned());
    event.set_opt("event.original", at(&wazuh, "full_log").cloned());
    let rule = RuleRef {
        id: format!(
            "wazuh-{}",
            at(&wazuh, "rule.id").and_then(Value::as_str).unwrap()
        ),
        title: at(&wazuh, "rule.description")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned(),
        // Wazuh level 10 of 15.
        level: Level::High,
        tags: vec!["attack.t1110".into()],
        ..RuleRef::default()
    };
    Alert::from_event(rule, event, detected_at())
}

/// A fixed detection time: the tests compare whole alerts.
pub fn detected_at() -> DateTime<Utc> {
    "2024-06-01T00:00:00Z".parse().unwrap()
}

/// A SQLite case store in a fresh temporary directory (kept alive by the returned guard).
pub async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn CaseStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(&dir.path().join("data"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// Makes and stores an API key the way `kastell apikey create` does; returns the key.
pub async fn api_key(
    store: &Arc<dyn CaseStore>,
    name: &str,
    role: kastell_cases::auth::Role,
    tlp: kastell_core::Tlp,
) -> String {
    let new = kastell_cases::auth::apikey::generate(name, role, tlp).unwrap();
    store.create_api_key(&new.record, "cli:test").await.unwrap();
    new.key
}

/// A case store that fails on purpose: every call when `all` is set, else the writes of
/// alerts of one rule, to show a store error costs one alert and nothing else.
pub struct FailingStore {
    pub inner: Arc<dyn CaseStore>,
    pub rule_id: String,
    pub all: bool,
}

mod failing {
    use super::FailingStore;
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use kastell_core::store::*;
    use kastell_core::{Alert, CaseStore, StoreError};
    use serde_json::Value;

    fn refused() -> StoreError {
        StoreError::Query {
            what: "test fault",
            // What a closed database gives.
            source: sqlx::Error::PoolClosed,
        }
    }

    impl FailingStore {
        fn check(&self, alert: Option<&Alert>) -> Result<(), StoreError> {
            let hit = self.all || alert.is_some_and(|a| a.rule.id == self.rule_id);
            if hit {
                Err(refused())
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl CaseStore for FailingStore {
        async fn insert_alert(&self, alert: &Alert) -> Result<bool, StoreError> {
            self.check(None)?;
            self.inner.insert_alert(alert).await
        }
        async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
            self.check(None)?;
            self.inner.get_alert(id).await
        }
        async fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
            self.check(None)?;
            self.inner.list_alerts(f).await
        }
        async fn find_open_case(
            &self,
            key: &str,
            since: DateTime<Utc>,
        ) -> Result<Option<CaseRecord>, StoreError> {
            self.check(None)?;
            self.inner.find_open_case(key, since).await
        }
        async fn open_case(&self, new: &NewCase, first: &Alert) -> Result<CaseRecord, StoreError> {
            self.check(Some(first))?;
            self.inner.open_case(new, first).await
        }
        async fn attach_alert(&self, id: i64, alert: &Alert) -> Result<CaseRecord, StoreError> {
            self.check(Some(alert))?;
            self.inner.attach_alert(id, alert).await
        }
        async fn open_cases_near(
            &self,
            key: &str,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<CaseRecord>, StoreError> {
            self.check(None)?;
            self.inner.open_cases_near(key, from, to).await
        }
        async fn merge_cases(
            &self,
            into: i64,
            from: i64,
            by: &str,
        ) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.merge_cases(into, from, by).await
        }
        async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
            self.check(None)?;
            self.inner.get_case(id).await
        }
        async fn list_cases(&self, f: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
            self.check(None)?;
            self.inner.list_cases(f).await
        }
        async fn create_action(&self, new: &NewAction) -> Result<(ActionRecord, bool), StoreError> {
            self.check(None)?;
            self.inner.create_action(new).await
        }
        async fn get_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError> {
            self.check(None)?;
            self.inner.get_action(id).await
        }
        async fn list_actions(&self, f: &ActionFilter) -> Result<Vec<ActionRecord>, StoreError> {
            self.check(None)?;
            self.inner.list_actions(f).await
        }
        async fn decide_action(
            &self,
            id: i64,
            decision: &Decision,
            by: &str,
        ) -> Result<ActionRecord, StoreError> {
            self.check(None)?;
            self.inner.decide_action(id, decision, by).await
        }
        async fn finish_action(
            &self,
            id: i64,
            status: ActionStatus,
            result: &Value,
        ) -> Result<ActionRecord, StoreError> {
            self.check(None)?;
            self.inner.finish_action(id, status, result).await
        }
        async fn update_case(
            &self,
            id: i64,
            update: &CaseUpdate,
            by: &str,
        ) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.update_case(id, update, by).await
        }
        async fn create_api_key(&self, key: &ApiKeyRecord, by: &str) -> Result<(), StoreError> {
            self.check(None)?;
            self.inner.create_api_key(key, by).await
        }
        async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
            // Keys stay readable so that a failing store is seen past authentication.
            self.inner.get_api_key(id).await
        }
        async fn triage_alert(
            &self,
            id: &str,
            triage: &AlertTriage,
            by: &str,
        ) -> Result<AlertRecord, StoreError> {
            self.check(None)?;
            self.inner.triage_alert(id, triage, by).await
        }
        async fn close_case(
            &self,
            id: i64,
            resolution: Resolution,
            summary: &str,
            by: &str,
        ) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.close_case(id, resolution, summary, by).await
        }
        async fn create_case(&self, draft: &CaseDraft, by: &str) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.create_case(draft, by).await
        }
        async fn promote_alert(
            &self,
            alert_id: &str,
            draft: &CaseDraft,
            by: &str,
        ) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.promote_alert(alert_id, draft, by).await
        }
        async fn merge_alert(
            &self,
            alert_id: &str,
            case_id: i64,
            by: &str,
        ) -> Result<CaseRecord, StoreError> {
            self.check(None)?;
            self.inner.merge_alert(alert_id, case_id, by).await
        }
        async fn add_observable(
            &self,
            owner: &ObservableOwner,
            new: &NewObservable,
            by: &str,
        ) -> Result<(ObservableRecord, bool), StoreError> {
            self.check(None)?;
            self.inner.add_observable(owner, new, by).await
        }
        async fn list_observables(
            &self,
            owner: &ObservableOwner,
        ) -> Result<Vec<ObservableRecord>, StoreError> {
            self.check(None)?;
            self.inner.list_observables(owner).await
        }
        async fn create_task(
            &self,
            case_id: i64,
            new: &NewTask,
            by: &str,
        ) -> Result<TaskRecord, StoreError> {
            self.check(None)?;
            self.inner.create_task(case_id, new, by).await
        }
        async fn list_tasks(&self, case_id: i64) -> Result<Vec<TaskRecord>, StoreError> {
            self.check(None)?;
            self.inner.list_tasks(case_id).await
        }
        async fn update_task(
            &self,
            case_id: i64,
            task_id: i64,
            update: &TaskUpdate,
            by: &str,
        ) -> Result<TaskRecord, StoreError> {
            self.check(None)?;
            self.inner.update_task(case_id, task_id, update, by).await
        }
        async fn add_comment(
            &self,
            case_id: i64,
            text: &str,
            by: &str,
        ) -> Result<TimelineEntry, StoreError> {
            self.check(None)?;
            self.inner.add_comment(case_id, text, by).await
        }
        async fn timeline(
            &self,
            case_id: i64,
            after: i64,
            limit: i64,
        ) -> Result<Vec<TimelineEntry>, StoreError> {
            self.check(None)?;
            self.inner.timeline(case_id, after, limit).await
        }
        async fn figures(
            &self,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<SeverityFigures>, StoreError> {
            self.check(None)?;
            self.inner.figures(from, to).await
        }
        async fn figures_within(
            &self,
            from: chrono::DateTime<chrono::Utc>,
            to: chrono::DateTime<chrono::Utc>,
            max_tlp: kastell_core::Tlp,
        ) -> Result<Vec<kastell_core::store::SeverityFigures>, StoreError> {
            self.check(None)?;
            self.inner.figures_within(from, to, max_tlp).await
        }
        async fn search(
            &self,
            text: &str,
            max_tlp: kastell_core::Tlp,
            limit: i64,
        ) -> Result<SearchHits, StoreError> {
            self.check(None)?;
            self.inner.search(text, max_tlp, limit).await
        }
        async fn response_output_applied(&self, key: &str) -> Result<bool, StoreError> {
            self.check(None)?;
            self.inner.response_output_applied(key).await
        }
        async fn record_response_output(
            &self,
            key: &str,
            case_id: i64,
            kind: &str,
        ) -> Result<bool, StoreError> {
            self.check(None)?;
            self.inner.record_response_output(key, case_id, kind).await
        }
        async fn audit_entries(
            &self,
            after: i64,
            limit: i64,
        ) -> Result<Vec<kastell_core::AuditEntry>, StoreError> {
            self.check(None)?;
            self.inner.audit_entries(after, limit).await
        }
        async fn append_case_note(
            &self,
            case_id: i64,
            kind: &'static str,
            details: &Value,
            by: &str,
        ) -> Result<(), StoreError> {
            self.check(None)?;
            self.inner
                .append_case_note(case_id, kind, details, by)
                .await
        }
        async fn set_significant_incident(
            &self,
            case_id: i64,
            significant: bool,
            by: &str,
        ) -> Result<bool, StoreError> {
            self.check(None)?;
            self.inner
                .set_significant_incident(case_id, significant, by)
                .await
        }
        async fn significant_incident(&self, case_id: i64) -> Result<bool, StoreError> {
            self.check(None)?;
            self.inner.significant_incident(case_id).await
        }
        async fn significant_incidents(&self) -> Result<Vec<i64>, StoreError> {
            self.check(None)?;
            self.inner.significant_incidents().await
        }
    }
}
