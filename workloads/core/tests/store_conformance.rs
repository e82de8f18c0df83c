//! The case-store conformance suite: every test runs against the SQLite store, and
//! against the PostgreSQL store when KASTELL_POSTGRES_URL names a server (`.ci/run` starts
//! one), each test in a schema of its own that it drops at the end.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{Duration, Utc};
use kastell_core::audit::{self, Verdict};
use kastell_core::store::privacy::ERASED;
use kastell_core::store::{
    ActionFilter, ActionStatus, AlertFilter, AlertTriage, ApiKeyRecord, CaseDraft, CaseFilter,
    CaseStatus, CaseUpdate, Decision, NewAction, NewCase, NewObservable, NewTask, ObservableOwner,
    Resolution, TaskStatus, TaskUpdate, MANUAL_GROUP_KEY,
};
use kastell_core::{Alert, Event, Level, PostgresStore, PrivacyStore, RuleRef, StoreError, Tlp};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

type Store = Arc<dyn PrivacyStore>;

/// A PostgreSQL schema of one test.
struct PgSchema {
    url: String,
    name: String,
    store: Store,
}

impl PgSchema {
    async fn create(test: &str) -> Option<PgSchema> {
        let url = match std::env::var("KASTELL_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                println!("SKIPPED: KASTELL_POSTGRES_URL not set");
                return None;
            }
        };
        let name = format!(
            "conformance_{test}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", name.as_str())]);
        let store = PostgresStore::connect_with(options).await.unwrap();
        Some(PgSchema {
            url,
            name,
            store: Arc::new(store),
        })
    }

    async fn drop(self) {
        drop(self.store);
        let mut admin = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Expands each test into `sqlite::<test>` and `postgres::<test>`.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = kastell_core::SqliteStore::open_dir(dir.path()).await.unwrap();
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(schema) = super::PgSchema::create(stringify!($test)).await else {
                        return;
                    };
                    super::$test(std::sync::Arc::clone(&schema.store)).await;
                    schema.drop().await;
                }
            )+
        }
    };
}

conformance!(
    alerts_are_stored_once_and_filtered,
    cases_group_alerts_and_keep_the_highest_severity,
    an_action_is_decided_once_and_every_change_audited,
    case_updates_are_audited_and_tlp_hides_cases,
    alerts_are_triaged_and_cases_closed_once,
    api_key_names_are_unique,
    concurrent_writers_never_fork_the_audit_chain,
    a_subject_export_finds_every_mention_and_is_audited,
    a_subject_erasure_leaves_no_mention_and_a_verifiable_chain,
    retention_erases_closed_cases_only_once,
    alerts_are_promoted_and_merged_with_their_observables,
    observables_merge_and_tasks_stay_in_their_case,
    the_timeline_records_every_change_in_order,
    figures_and_search_see_what_happened,
    a_reopened_case_is_not_resolved,
    a_case_is_flagged_as_a_significant_incident,
    response_output_keys_are_recorded_once,
    an_expired_action_is_final_and_on_the_timeline,
    a_subject_is_found_and_erased_in_observables_tasks_and_the_timeline,
    retention_erases_observables_tasks_and_the_timeline_of_closed_cases,
    api_keys_are_listed_used_and_revoked_once,
    open_cases_merge_into_one_with_the_union_of_their_fields,
    a_case_detail_is_the_case_its_alerts_and_its_actions,
    concurrent_alerts_are_stored_once_each_with_one_entry,
);

fn alert(rule: &str, host: &str, at: &str, level: Level) -> Alert {
    let event = Event::from_value(json!({"@timestamp": at, "host": {"name": host}})).unwrap();
    let rule = RuleRef {
        id: rule.into(),
        title: format!("rule {rule}"),
        level,
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

/// The real Wazuh sshd alert of tests/fixtures/privacy (user "paco"), as an alert.
fn wazuh_alert() -> Alert {
    let raw = include_str!("fixtures/privacy/wazuh-sshd-5712.json");
    let event = Event::from_value(serde_json::from_str(raw).unwrap()).unwrap();
    let rule = RuleRef {
        id: "wazuh-5712".into(),
        title: "sshd brute force".into(),
        level: Level::High,
        ..Default::default()
    };
    let mut alert = Alert::from_event(rule, event, Utc::now());
    alert.host = Some("localhost.localdomain".into());
    alert
}

async fn verdict(store: &Store) -> Verdict {
    audit::verify(&store.audit_entries(0, i64::MAX).await.unwrap())
}

async fn actions_logged(store: &Store) -> Vec<String> {
    store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect()
}

async fn case_of(store: &Store, alert: &Alert, key: &str) -> i64 {
    store.insert_alert(alert).await.unwrap();
    let new = NewCase {
        title: format!("case {key}"),
        group_key: key.into(),
        rule_id: alert.rule.id.clone(),
        host: alert.host.clone(),
    };
    store.open_case(&new, alert).await.unwrap().id
}

async fn alerts_are_stored_once_and_filtered(store: Store) {
    let early = alert("r1", "web-1", "2024-01-01T10:00:00Z", Level::Low);
    let late = alert("r2", "web-2", "2024-01-02T10:00:00Z", Level::High);
    assert!(store.insert_alert(&early).await.unwrap());
    assert!(store.insert_alert(&late).await.unwrap());
    assert!(
        !store.insert_alert(&early).await.unwrap(),
        "a repeat is a no-op"
    );
    assert_eq!(
        store.get_alert(&early.id).await.unwrap().unwrap().alert,
        early
    );
    assert!(store.get_alert("missing").await.unwrap().is_none());

    let ids = |records: Vec<kastell_core::store::AlertRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.id).collect()
    };
    let all = store.list_alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(
        ids(all),
        [early.id.clone(), late.id.clone()],
        "oldest first"
    );
    let high = AlertFilter {
        level: Some(Level::High),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_alerts(&high).await.unwrap()),
        std::slice::from_ref(&late.id)
    );
    let since = AlertFilter {
        since: Some(late.timestamp),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_alerts(&since).await.unwrap()),
        std::slice::from_ref(&late.id)
    );
    let until = AlertFilter {
        until: Some(late.timestamp),
        rule_id: Some("r1".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_alerts(&until).await.unwrap()),
        std::slice::from_ref(&early.id)
    );
    let page = AlertFilter {
        limit: Some(1),
        offset: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_alerts(&page).await.unwrap()),
        std::slice::from_ref(&late.id)
    );
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 2 });
}

async fn cases_group_alerts_and_keep_the_highest_severity(store: Store) {
    let first = alert("r1", "web-1", "2024-01-01T10:00:00Z", Level::Low);
    let second = alert("r1", "web-1", "2024-01-01T10:05:00Z", Level::High);
    let case = case_of(&store, &first, "r1|web-1").await;
    store.insert_alert(&second).await.unwrap();
    let since = second.timestamp - Duration::hours(1);
    let found = store
        .find_open_case("r1|web-1", since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, case);
    let attached = store.attach_alert(case, &second).await.unwrap();
    assert_eq!(attached.alert_count, 2);
    assert_eq!(attached.severity, Level::High);
    assert_eq!(attached.first_seen, first.timestamp);
    assert_eq!(attached.last_seen, second.timestamp);
    let later = second.timestamp + Duration::hours(2);
    assert!(store
        .find_open_case("r1|web-1", later)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .find_open_case("other", since)
        .await
        .unwrap()
        .is_none());
    let in_case = AlertFilter {
        case_id: Some(case),
        ..Default::default()
    };
    assert_eq!(store.list_alerts(&in_case).await.unwrap().len(), 2);
    assert!(matches!(
        store.attach_alert(999, &second).await,
        Err(StoreError::NotFound { kind: "case", .. })
    ));
}

async fn an_action_is_decided_once_and_every_change_audited(store: Store) {
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
    let case = case_of(&store, &a, "k").await;
    let new = NewAction {
        case_id: case,
        alert_id: a.id.clone(),
        playbook: "soc/pb".into(),
        step: "block".into(),
        step_type: "webhook".into(),
        approval_required: true,
        params: json!({"url": "http://127.0.0.1:1/"}),
    };
    let (action, created) = store.create_action(&new).await.unwrap();
    assert!(created);
    assert_eq!(action.status, ActionStatus::Pending);
    let (again, created) = store.create_action(&new).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, action.id);
    let approved = store
        .decide_action(action.id, &Decision::Approve, "alice")
        .await
        .unwrap();
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    let reject = Decision::Reject {
        reason: "no".into(),
    };
    assert!(matches!(
        store.decide_action(action.id, &reject, "bob").await,
        Err(StoreError::NotPending {
            status: ActionStatus::Approved,
            ..
        })
    ));
    let done = store
        .finish_action(action.id, ActionStatus::Succeeded, &json!({"status": 200}))
        .await
        .unwrap();
    assert_eq!(done.result, Some(json!({"status": 200})));
    assert_eq!(store.get_action(action.id).await.unwrap().unwrap(), done);
    let succeeded = ActionFilter {
        status: Some(ActionStatus::Succeeded),
        ..Default::default()
    };
    assert_eq!(store.list_actions(&succeeded).await.unwrap().len(), 1);
    assert_eq!(
        actions_logged(&store).await,
        [
            "alert.create",
            "case.open",
            "action.create",
            "action.decide",
            "action.finish"
        ]
    );
    let entries = store.audit_entries(3, 1).await.unwrap();
    assert_eq!((entries[0].seq, entries[0].actor.as_str()), (4, "alice"));
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 5 });
}

async fn case_updates_are_audited_and_tlp_hides_cases(store: Store) {
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
    let b = alert("r2", "h", "2024-01-01T10:00:00Z", Level::High);
    let open = case_of(&store, &a, "a").await;
    let secret = case_of(&store, &b, "b").await;
    let red = CaseUpdate {
        tlp: Some(Tlp::Red),
        assignee: Some(Some("carol".into())),
        tags: Some(vec!["ransomware".into()]),
        ..Default::default()
    };
    let updated = store.update_case(secret, &red, "bob").await.unwrap();
    assert_eq!(
        (updated.tlp, updated.assignee.as_deref()),
        (Tlp::Red, Some("carol"))
    );
    assert_eq!(updated.tags, ["ransomware"]);
    store.update_case(secret, &red, "bob").await.unwrap();
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact { entries: 5 },
        "no-op not audited"
    );
    let amber = CaseFilter {
        max_tlp: Some(Tlp::Amber),
        ..Default::default()
    };
    let visible: Vec<i64> = store
        .list_cases(&amber)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(visible, [open]);
    let amber_alerts = AlertFilter {
        max_tlp: Some(Tlp::Amber),
        ..Default::default()
    };
    let alerts = store.list_alerts(&amber_alerts).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].id, a.id);
    let last = store.audit_entries(4, 1).await.unwrap().remove(0);
    assert_eq!(last.action, "case.update");
    assert_eq!(last.before.unwrap()["tlp"], "amber");
    assert_eq!(last.after.unwrap()["tlp"], "red");
    let page = CaseFilter {
        limit: Some(1),
        offset: Some(1),
        ..Default::default()
    };
    assert_eq!(store.list_cases(&page).await.unwrap()[0].id, secret);
}

async fn alerts_are_triaged_and_cases_closed_once(store: Store) {
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
    let case = case_of(&store, &a, "k").await;
    let ignore = AlertTriage::Ignore {
        reason: "lab scanner".into(),
    };
    let ignored = store.triage_alert(&a.id, &ignore, "carol").await.unwrap();
    assert_eq!(ignored.status, "ignored");
    assert_eq!(ignored.triaged_by.as_deref(), Some("carol"));
    store.triage_alert(&a.id, &ignore, "carol").await.unwrap();
    assert!(matches!(
        store
            .triage_alert("nope", &AlertTriage::Acknowledge, "carol")
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let closed = store
        .close_case(case, Resolution::Benign, "lab traffic", "dave")
        .await
        .unwrap();
    assert_eq!(closed.status, CaseStatus::Closed);
    assert_eq!(closed.summary.as_deref(), Some("lab traffic"));
    assert!(closed.closed_at.is_some());
    assert!(matches!(
        store
            .close_case(case, Resolution::Benign, "x", "dave")
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let closed_only = CaseFilter {
        status: Some(CaseStatus::Closed),
        ..Default::default()
    };
    assert_eq!(store.list_cases(&closed_only).await.unwrap().len(), 1);
    assert_eq!(
        actions_logged(&store).await,
        ["alert.create", "case.open", "alert.ignore", "case.close"]
    );
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 4 });
}

fn api_key(id: &str, name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: name.into(),
        role: "analyst".into(),
        tlp: Tlp::Amber,
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: Utc::now(),
    }
}

async fn api_key_names_are_unique(store: Store) {
    store
        .create_api_key(&api_key("k1", "paco"), "cli:root")
        .await
        .unwrap();
    let got = store.get_api_key("k1").await.unwrap().unwrap();
    assert_eq!((got.name.as_str(), got.tlp), ("paco", Tlp::Amber));
    assert!(matches!(
        store
            .create_api_key(&api_key("k2", "paco"), "cli:root")
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.get_api_key("k2").await.unwrap().is_none());
    let entry = store.audit_entries(0, 10).await.unwrap().remove(0);
    assert!(
        entry.after.unwrap().get("hash").is_none(),
        "the hash is not audited"
    );
}

/// Writers on separate connections at once: the chain must stay one line with no gap,
/// fork or failed write.
async fn concurrent_writers_never_fork_the_audit_chain(store: Store) {
    let seed = alert("r0", "h", "2024-01-01T10:00:00Z", Level::Low);
    let case = case_of(&store, &seed, "k").await;
    let writers = (0..8).map(|writer| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for n in 0..20 {
                let at = format!("2024-01-01T11:{writer:02}:{n:02}Z");
                let a = alert(&format!("w{writer}"), "h", &at, Level::High);
                assert!(store.insert_alert(&a).await.unwrap());
                let update = CaseUpdate {
                    title: Some(format!("writer {writer} step {n}")),
                    ..Default::default()
                };
                store.update_case(case, &update, "bob").await.unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: 2 + 8 * 20 * 2
        }
    );
}

/// A case about the Wazuh alert, worked by "paco" and closed: every place the subject
/// can be named.
async fn subject_case(store: &Store) -> (i64, String) {
    let wazuh = wazuh_alert();
    let case = case_of(store, &wazuh, "wazuh-5712|localhost.localdomain").await;
    let update = CaseUpdate {
        description: Some("Invalid logins for user Paco; ask paco@example.org".into()),
        assignee: Some(Some("paco".into())),
        ..Default::default()
    };
    store
        .update_case(case, &update, "apikey:lead")
        .await
        .unwrap();
    let ignore = AlertTriage::Ignore {
        reason: "paco mistyped".into(),
    };
    store
        .triage_alert(&wazuh.id, &ignore, "apikey:paco")
        .await
        .unwrap();
    store
        .close_case(case, Resolution::Benign, "paco's own typo", "apikey:lead")
        .await
        .unwrap();
    store
        .create_api_key(&api_key("kp", "paco"), "cli:root")
        .await
        .unwrap();
    (case, wazuh.id)
}

async fn a_subject_export_finds_every_mention_and_is_audited(store: Store) {
    let (case, alert_id) = subject_case(&store).await;
    let other = alert("r9", "db-1", "2024-01-01T10:00:00Z", Level::Low);
    case_of(&store, &other, "r9|db-1").await;
    let data = store.export_subject("PACO", "cli:dpo").await.unwrap();
    assert_eq!(data.cases.iter().map(|c| c.id).collect::<Vec<_>>(), [case]);
    assert_eq!(
        data.alerts.iter().map(|a| &a.id).collect::<Vec<_>>(),
        [&alert_id]
    );
    assert_eq!(data.api_keys[0].id, "kp");
    let audited: Vec<&str> = data
        .audit_entries
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        audited,
        ["case.update", "alert.ignore", "case.close", "apikey.create"]
    );
    let json = serde_json::to_value(&data).unwrap();
    assert!(json["api_keys"][0].get("hash").is_none());
    let last = store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("gdpr.export", "cli:dpo")
    );
    assert!(!serde_json::to_string(&last)
        .unwrap()
        .to_lowercase()
        .contains("paco"));
    assert_eq!(last.after.unwrap()["alerts"], 1);
    assert!(matches!(
        store.export_subject("pa", "cli:dpo").await,
        Err(StoreError::Conflict { .. })
    ));
}

async fn a_subject_erasure_leaves_no_mention_and_a_verifiable_chain(store: Store) {
    let (case, alert_id) = subject_case(&store).await;
    let erasure = store.erase_subject("paco", "cli:dpo").await.unwrap();
    assert_eq!(erasure.cases, [case]);
    assert_eq!(erasure.alerts, std::slice::from_ref(&alert_id));
    assert_eq!(erasure.api_keys, ["kp"]);
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 7 });

    let again = store.export_subject("paco", "cli:dpo").await.unwrap();
    assert!(again.cases.is_empty() && again.alerts.is_empty() && again.api_keys.is_empty());
    // Only the actor of the triage, which the chain hashes, still names the subject.
    let left: Vec<(&str, &str)> = again
        .audit_entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(left, [("alert.ignore", "apikey:paco")]);
    assert!(again.audit_entries[0].after.is_none());

    let record = store.get_alert(&alert_id).await.unwrap().unwrap();
    let event = record.alert.events[0].clone().into_value();
    assert_eq!(event["data"]["srcuser"], ERASED);
    assert_eq!(
        event["data"]["srcip"], "172.17.1.1",
        "technical evidence stays"
    );
    assert!(event["full_log"]
        .as_str()
        .unwrap()
        .contains("Invalid user [erased] from"));
    let case = store.get_case(case).await.unwrap().unwrap();
    assert_eq!(case.assignee.as_deref(), Some(ERASED));
    assert_eq!(
        case.description,
        "Invalid logins for user [erased]; ask [erased]@example.org"
    );
    let erase_entry = store.audit_entries(6, 1).await.unwrap().remove(0);
    assert_eq!(erase_entry.action, "gdpr.erase");
    assert_eq!(
        erase_entry.after.as_ref().unwrap()["cases"],
        json!([case.id])
    );
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 8 });
}

async fn retention_erases_closed_cases_only_once(store: Store) {
    let (closed, alert_id) = subject_case(&store).await;
    let other = alert("r9", "db-1", "2024-01-01T10:00:00Z", Level::Low);
    let open = case_of(&store, &other, "r9|db-1").await;
    let assign = CaseUpdate {
        assignee: Some(Some("quentin".into())),
        description: Some("still being worked".into()),
        ..Default::default()
    };
    store
        .update_case(open, &assign, "apikey:lead")
        .await
        .unwrap();
    let before_count = store.audit_entries(0, i64::MAX).await.unwrap().len();

    let past = Utc::now() - Duration::days(30);
    let nothing = store
        .erase_closed_before(past, "system:retention")
        .await
        .unwrap();
    assert_eq!(
        nothing.total(),
        0,
        "the case closed just now is within retention"
    );
    assert_eq!(
        store.audit_entries(0, i64::MAX).await.unwrap().len(),
        before_count
    );

    let cutoff = Utc::now() + Duration::seconds(1);
    let erasure = store
        .erase_closed_before(cutoff, "system:retention")
        .await
        .unwrap();
    assert_eq!(erasure.cases, [closed]);
    assert_eq!(erasure.alerts, std::slice::from_ref(&alert_id));
    let case = store.get_case(closed).await.unwrap().unwrap();
    assert_eq!((case.assignee, case.summary), (None, None));
    assert!(case.description.is_empty());
    assert_eq!(
        case.resolution,
        Some(Resolution::Benign),
        "the outcome stays"
    );
    let record = store.get_alert(&alert_id).await.unwrap().unwrap();
    assert_eq!((record.triaged_by, record.status_reason), (None, None));
    let event: Value = record.alert.events[0].clone().into_value();
    assert_eq!(event["data"]["srcuser"], ERASED);
    assert_eq!(event["full_log"], ERASED);
    assert_eq!(event["previous_output"], ERASED);
    assert_eq!(event["rule"]["id"], "5712");
    let untouched = store.get_case(open).await.unwrap().unwrap();
    assert_eq!(untouched.assignee.as_deref(), Some("quentin"));

    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    for entry in &entries {
        let about_closed = (entry.object_kind == "case" && entry.object_id == closed.to_string())
            || entry.object_id == alert_id;
        assert_eq!(
            about_closed,
            erasure.audit_states.contains(&entry.seq),
            "entry {}",
            entry.seq
        );
        if about_closed {
            assert!(entry.before.is_none() && entry.after.is_none());
        }
    }
    let last = entries.last().unwrap();
    assert_eq!(last.action, "gdpr.retention");
    assert_eq!(
        audit::verify(&entries),
        Verdict::Intact {
            entries: entries.len() as i64
        }
    );

    let again = store
        .erase_closed_before(cutoff, "system:retention")
        .await
        .unwrap();
    assert_eq!(again.total(), 0);
    assert_eq!(
        store.audit_entries(0, i64::MAX).await.unwrap().len(),
        entries.len()
    );
}

/// An alert whose event carries three observables (two addresses, a domain).
fn network_alert(rule: &str, at: &str) -> Alert {
    let event = Event::from_value(json!({
        "@timestamp": at,
        "source": {"ip": "172.16.0.153"},
        "destination": {"ip": "67.205.184.237"},
        "url": {"domain": "vgiragdoffy.com"},
    }))
    .unwrap();
    let rule = RuleRef {
        id: rule.into(),
        title: "ET MALWARE Win32/IcedID Request Cookie".into(),
        level: Level::High,
        ..Default::default()
    };
    Alert::from_event(rule, event, Utc::now())
}

fn draft(title: &str) -> CaseDraft {
    CaseDraft {
        title: title.into(),
        description: String::new(),
        severity: Level::Low,
        tlp: Tlp::Amber,
        pap: Tlp::Amber,
        tags: Vec::new(),
        assignee: None,
    }
}

async fn timeline_kinds(store: &Store, case_id: i64) -> Vec<String> {
    store
        .timeline(case_id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.kind)
        .collect()
}

async fn alerts_are_promoted_and_merged_with_their_observables(store: Store) {
    let first = network_alert("suricata-2032086", "2022-10-31T14:47:28.168061Z");
    let second = network_alert("suricata-2030053", "2022-10-31T14:47:29.000000Z");
    for alert in [&first, &second] {
        assert!(store.insert_alert(alert).await.unwrap());
    }
    let by_value = AlertFilter {
        observable: Some("67.205.184.237".into()),
        ..Default::default()
    };
    assert_eq!(store.list_alerts(&by_value).await.unwrap().len(), 2);
    let alert_owned = store
        .list_observables(&ObservableOwner::Alert(first.id.clone()))
        .await
        .unwrap();
    assert_eq!(alert_owned.len(), 3);

    let case = store
        .promote_alert(&first.id, &draft("IcedID"), "alice")
        .await
        .unwrap();
    assert_eq!(case.alert_count, 1);
    assert_eq!(case.severity, Level::High, "raised to the alert's level");
    assert_eq!(case.group_key, MANUAL_GROUP_KEY);
    assert_eq!(case.rule_id, first.rule.id);
    let promoted = store.get_alert(&first.id).await.unwrap().unwrap();
    assert_eq!(promoted.status, "promoted");
    assert_eq!(promoted.case_id, Some(case.id));
    assert_eq!(promoted.triaged_by.as_deref(), Some("alice"));

    let other = store.create_case(&draft("elsewhere"), "bob").await.unwrap();
    assert_eq!(other.alert_count, 0);
    assert_eq!(other.group_key, MANUAL_GROUP_KEY);
    store
        .merge_alert(&second.id, other.id, "bob")
        .await
        .unwrap();
    // Moving the second alert on into the first case recounts both.
    let merged = store.merge_alert(&second.id, case.id, "bob").await.unwrap();
    assert_eq!(merged.alert_count, 2);
    let again = store.merge_alert(&second.id, case.id, "bob").await.unwrap();
    assert_eq!(again, merged, "merging into its own case changes nothing");
    assert_eq!(
        store.get_case(other.id).await.unwrap().unwrap().alert_count,
        0
    );
    assert_eq!(
        store.get_alert(&second.id).await.unwrap().unwrap().status,
        "merged"
    );
    assert!(matches!(
        store.merge_alert("no-such-alert", case.id, "bob").await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .close_case(other.id, Resolution::FalsePositive, "empty", "bob")
        .await
        .unwrap();
    assert!(matches!(
        store.merge_alert(&first.id, other.id, "bob").await,
        Err(StoreError::Conflict { .. })
    ));

    let values: Vec<String> = store
        .list_observables(&ObservableOwner::Case(case.id))
        .await
        .unwrap()
        .into_iter()
        .map(|o| format!("{} {}", o.kind, o.value))
        .collect();
    assert_eq!(
        values,
        [
            "domain vgiragdoffy.com",
            "ip 172.16.0.153",
            "ip 67.205.184.237"
        ]
    );
    assert_eq!(
        timeline_kinds(&store, case.id).await,
        ["created", "alert_merged", "alert_merged"]
    );
    assert_eq!(
        timeline_kinds(&store, other.id).await,
        ["created", "alert_merged", "alert_moved_out", "closed"]
    );
    let logged = actions_logged(&store).await;
    for action in ["case.create", "alert.promote", "alert.merge"] {
        assert!(logged.iter().any(|a| a == action), "{action} in {logged:?}");
    }
    assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));
}

async fn observables_merge_and_tasks_stay_in_their_case(store: Store) {
    let case = store.create_case(&draft("c"), "alice").await.unwrap();
    let owner = ObservableOwner::Case(case.id);
    let new = NewObservable {
        kind: "ip".into(),
        value: "67.205.184.237".into(),
        tags: vec!["c2".into()],
        ..Default::default()
    };
    let (first, created) = store.add_observable(&owner, &new, "alice").await.unwrap();
    assert!(created);
    assert!(!first.ioc);
    let (same, created) = store.add_observable(&owner, &new, "alice").await.unwrap();
    assert!(!created);
    assert_eq!(same, first, "a repeat that adds nothing changes nothing");
    let again = NewObservable {
        ioc: true,
        tags: vec!["icedid".into(), "c2".into()],
        ..new.clone()
    };
    let (merged, created) = store.add_observable(&owner, &again, "bob").await.unwrap();
    assert!(!created);
    assert_eq!(merged.id, first.id);
    assert!(merged.ioc);
    assert_eq!(merged.tags, ["c2", "icedid"]);
    assert_eq!(store.list_observables(&owner).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .add_observable(&ObservableOwner::Case(case.id + 1000), &new, "alice")
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // The same value on an alert is an observable of its own.
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::Low);
    store.insert_alert(&a).await.unwrap();
    let alert_owner = ObservableOwner::Alert(a.id.clone());
    let (on_alert, created) = store
        .add_observable(&alert_owner, &new, "alice")
        .await
        .unwrap();
    assert!(created);
    assert_ne!(on_alert.id, first.id);
    assert_eq!(on_alert.alert_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(on_alert.case_id, None);

    let task = NewTask {
        title: "isolate the host".into(),
        assignee: Some("alice".into()),
    };
    let task = store.create_task(case.id, &task, "alice").await.unwrap();
    assert_eq!(task.status, TaskStatus::Open);
    let other = store.create_case(&draft("d"), "alice").await.unwrap();
    let done = TaskUpdate {
        status: Some(TaskStatus::Done),
        assignee: Some(None),
        ..Default::default()
    };
    assert!(matches!(
        store.update_task(other.id, task.id, &done, "alice").await,
        Err(StoreError::NotFound { .. })
    ));
    let updated = store
        .update_task(case.id, task.id, &done, "bob")
        .await
        .unwrap();
    assert_eq!(updated.status, TaskStatus::Done);
    assert_eq!(updated.assignee, None);
    assert_eq!(store.list_tasks(case.id).await.unwrap(), [updated]);
    assert!(store.list_tasks(other.id).await.unwrap().is_empty());
    let updated_line = store
        .timeline(case.id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "task_updated")
        .unwrap();
    assert_eq!(
        updated_line.details["fields"]["status"],
        json!({"from": "open", "to": "done"})
    );
    assert_eq!(
        timeline_kinds(&store, case.id).await,
        [
            "created",
            "observable_added",
            "observable_updated",
            "task_created",
            "task_updated"
        ]
    );
    let logged = actions_logged(&store).await;
    for action in [
        "observable.create",
        "observable.update",
        "task.create",
        "task.update",
    ] {
        assert!(logged.iter().any(|a| a == action), "{action} in {logged:?}");
    }
    assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));
}

async fn the_timeline_records_every_change_in_order(store: Store) {
    let a = network_alert("r1", "2024-01-01T10:00:00Z");
    let b = network_alert("r2", "2024-01-01T10:05:00Z");
    let case = case_of(&store, &a, "k").await;
    store.insert_alert(&b).await.unwrap();
    store.attach_alert(case, &b).await.unwrap();
    // The pipeline's cases get their alerts' observables too.
    assert_eq!(
        store
            .list_observables(&ObservableOwner::Case(case))
            .await
            .unwrap()
            .len(),
        3
    );
    let update = CaseUpdate {
        assignee: Some(Some("alice".into())),
        ..Default::default()
    };
    store.update_case(case, &update, "alice").await.unwrap();
    let comment = store
        .add_comment(case, "looks real", "alice")
        .await
        .unwrap();
    assert_eq!(comment.kind, "comment");
    assert_eq!(comment.details, json!({"text": "looks real"}));
    let note = json!({"channel": "mail", "to": "soc@example.org"});
    store
        .append_case_note(case, "case.notified", &note, "system")
        .await
        .unwrap();
    assert!(matches!(
        store
            .append_case_note(case + 1000, "case.notified", &note, "system")
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.add_comment(case + 1000, "x", "alice").await,
        Err(StoreError::NotFound { .. })
    ));
    let new = NewAction {
        case_id: case,
        alert_id: a.id.clone(),
        playbook: "soc/pb".into(),
        step: "block".into(),
        step_type: "webhook".into(),
        approval_required: true,
        params: json!({}),
    };
    let (action, _) = store.create_action(&new).await.unwrap();
    store
        .decide_action(action.id, &Decision::Approve, "bob")
        .await
        .unwrap();
    store
        .finish_action(action.id, ActionStatus::Succeeded, &json!({}))
        .await
        .unwrap();
    store
        .close_case(case, Resolution::TruePositive, "blocked", "alice")
        .await
        .unwrap();

    let entries = store.timeline(case, 0, 1000).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "alert_attached",
            "updated",
            "comment",
            "case.notified",
            "action_approved",
            "action_executed",
            "closed"
        ]
    );
    assert_eq!(entries[3].id, comment.id);
    assert_eq!(entries[4].details, note);
    assert_eq!(
        entries[2].details["fields"]["assignee"],
        json!({"from": null, "to": "alice"})
    );
    assert_eq!(entries[7].details["resolution"], "true_positive");
    assert!(entries.windows(2).all(|w| w[0].id < w[1].id));
    // Paging: after an id, at most `limit`.
    let page = store.timeline(case, entries[2].id, 2).await.unwrap();
    assert_eq!(page, entries[3..5]);
    let logged = actions_logged(&store).await;
    for action in ["case.comment", "case.notified"] {
        assert!(logged.iter().any(|a| a == action), "{action} in {logged:?}");
    }
    assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));
}

async fn figures_and_search_see_what_happened(store: Store) {
    let start = Utc::now() - Duration::hours(1);
    let a = network_alert("r1", "2024-01-01T10:00:00Z");
    let b = alert("r2", "h", "2024-01-01T10:00:00Z", Level::Low);
    let case = case_of(&store, &a, "k").await;
    store.insert_alert(&b).await.unwrap();
    store
        .triage_alert(&a.id, &AlertTriage::Acknowledge, "alice")
        .await
        .unwrap();
    store
        .close_case(case, Resolution::TruePositive, "done", "alice")
        .await
        .unwrap();
    let end = Utc::now() + Duration::hours(1);
    let figures = store.figures(start, end).await.unwrap();
    let high = figures.iter().find(|f| f.severity == Level::High).unwrap();
    assert_eq!(high.alerts, 1);
    assert_eq!(high.acknowledged, 1);
    assert_eq!(high.resolved, 1);
    assert!(high.mean_time_to_detect.unwrap() > 0.0);
    assert!(high.mean_time_to_acknowledge.unwrap() >= 0.0);
    assert!(high.mean_time_to_resolve.unwrap() >= 0.0);
    let low = figures.iter().find(|f| f.severity == Level::Low).unwrap();
    assert_eq!((low.alerts, low.acknowledged, low.resolved), (1, 0, 0));
    assert_eq!(low.mean_time_to_acknowledge, None);
    assert_eq!(low.mean_time_to_resolve, None);
    let later = store.figures(end, end + Duration::hours(1)).await.unwrap();
    assert!(later.is_empty());

    let mut secret = draft("Secret IcedID follow-up");
    secret.tlp = Tlp::Red;
    let secret = store.create_case(&secret, "alice").await.unwrap();
    let plain = store
        .create_case(
            &CaseDraft {
                description: "icedid beacon, 50% sure".into(),
                ..draft("beacon")
            },
            "alice",
        )
        .await
        .unwrap();
    let hits = store.search("IcedID", Tlp::Red, 100).await.unwrap();
    let ids: Vec<i64> = hits.cases.iter().map(|c| c.id).collect();
    assert!(ids.contains(&secret.id), "{ids:?}");
    assert!(ids.contains(&plain.id), "{ids:?}");
    let hits = store.search("IcedID", Tlp::Amber, 100).await.unwrap();
    let ids: Vec<i64> = hits.cases.iter().map(|c| c.id).collect();
    assert!(!ids.contains(&secret.id), "TLP ceiling: {ids:?}");
    assert!(ids.contains(&plain.id), "{ids:?}");
    // A wildcard in the text is literal.
    let hits = store.search("50%", Tlp::Red, 100).await.unwrap();
    let ids: Vec<i64> = hits.cases.iter().map(|c| c.id).collect();
    assert_eq!(ids, [plain.id]);
    assert!(store
        .search("5_%", Tlp::Red, 100)
        .await
        .unwrap()
        .cases
        .is_empty());
    let hits = store.search("205.184", Tlp::Red, 100).await.unwrap();
    let values: Vec<(Option<i64>, &str)> = hits
        .observables
        .iter()
        .map(|o| (o.case_id, o.value.as_str()))
        .collect();
    assert_eq!(values, [(Some(case), "67.205.184.237")]);
    assert_eq!(
        store
            .search("IcedID", Tlp::Red, 1)
            .await
            .unwrap()
            .cases
            .len(),
        1
    );
}

async fn a_reopened_case_is_not_resolved(store: Store) {
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
    let case = case_of(&store, &a, "k").await;
    let closed = store
        .close_case(case, Resolution::TruePositive, "patched", "dave")
        .await
        .unwrap();
    assert!(closed.closed_at.is_some());
    let reopen = CaseUpdate {
        status: Some(CaseStatus::Open),
        ..CaseUpdate::default()
    };
    let reopened = store.update_case(case, &reopen, "erin").await.unwrap();
    assert_eq!(reopened.status, CaseStatus::Open);
    assert_eq!(reopened.closed_at, None);
    let stored = store.get_case(case).await.unwrap().unwrap();
    assert_eq!(stored.closed_at, None);
    // Closed again later, it counts from the new closing.
    let again = store
        .close_case(case, Resolution::TruePositive, "patched again", "dave")
        .await
        .unwrap();
    assert!(again.closed_at.is_some());
    assert_eq!(verdict(&store).await, Verdict::Intact { entries: 5 });
}

async fn a_case_is_flagged_as_a_significant_incident(store: Store) {
    let a = alert("r1", "h", "2024-01-01T10:00:00Z", Level::High);
    let b = alert("r2", "h2", "2024-01-01T11:00:00Z", Level::High);
    let case = case_of(&store, &a, "k").await;
    let other = case_of(&store, &b, "k2").await;
    assert!(!store.significant_incident(case).await.unwrap());
    assert!(store.significant_incidents().await.unwrap().is_empty());

    assert!(store
        .set_significant_incident(case, true, "lead")
        .await
        .unwrap());
    // Setting it again changes nothing and is not audited twice.
    assert!(store
        .set_significant_incident(case, true, "lead")
        .await
        .unwrap());
    assert!(store.significant_incident(case).await.unwrap());
    assert!(!store.significant_incident(other).await.unwrap());
    assert_eq!(store.significant_incidents().await.unwrap(), [case]);
    assert!(timeline_kinds(&store, case)
        .await
        .contains(&"significant_incident".to_owned()));

    assert!(!store
        .set_significant_incident(case, false, "lead")
        .await
        .unwrap());
    assert!(store.significant_incidents().await.unwrap().is_empty());
    assert!(matches!(
        store.set_significant_incident(9999, true, "lead").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.significant_incident(9999).await,
        Err(StoreError::NotFound { .. })
    ));
    let logged = actions_logged(&store).await;
    assert_eq!(
        logged
            .iter()
            .filter(|a| *a == "case.significant_incident")
            .count(),
        2,
        "{logged:?}"
    );
}

async fn response_output_keys_are_recorded_once(store: Store) {
    let key = "kastell-0123456789abcdef:result";
    assert!(!store.response_output_applied(key).await.unwrap());
    assert!(store
        .record_response_output(key, 1, "step_result")
        .await
        .unwrap());
    assert!(store.response_output_applied(key).await.unwrap());
    // Two replicas recording the same key at once: exactly one records it.
    let (a, b) = tokio::join!(
        store.record_response_output("kastell-race", 1, "case_action"),
        store.record_response_output("kastell-race", 1, "case_action"),
    );
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|new| **new).count(),
        1
    );
    assert!(!store
        .record_response_output(key, 1, "step_result")
        .await
        .unwrap());
    assert!(!store
        .response_output_applied("kastell-other")
        .await
        .unwrap());
}

async fn an_expired_action_is_final_and_on_the_timeline(store: Store) {
    let alert = wazuh_alert();
    let case_id = case_of(&store, &alert, "wazuh-5712|web-1").await;
    let new = NewAction {
        case_id,
        alert_id: alert.id.clone(),
        playbook: "soc/contain".into(),
        step: "block".into(),
        step_type: "http".into(),
        approval_required: true,
        params: json!({"approval": {"policy": "always", "expires_at": "2026-12-04T12:00:00Z"}}),
    };
    let (action, _) = store.create_action(&new).await.unwrap();
    let expire = Decision::Expire {
        reason: "approval expired at 2026-12-04T12:00:00Z".into(),
    };
    let expired = store
        .decide_action(action.id, &expire, "system")
        .await
        .unwrap();
    assert_eq!(expired.status, ActionStatus::Expired);
    assert_eq!(
        expired.reason.as_deref(),
        Some("approval expired at 2026-12-04T12:00:00Z")
    );
    let pending = ActionFilter {
        status: Some(ActionStatus::Pending),
        ..ActionFilter::default()
    };
    assert!(store.list_actions(&pending).await.unwrap().is_empty());
    // Final: neither a late approval nor a second sweep changes it.
    assert!(matches!(
        store
            .decide_action(action.id, &Decision::Approve, "lead")
            .await,
        Err(StoreError::NotPending {
            status: ActionStatus::Expired,
            ..
        })
    ));
    assert!(store
        .decide_action(action.id, &expire, "system")
        .await
        .is_err());
    assert!(timeline_kinds(&store, case_id)
        .await
        .contains(&"action_expired".to_owned()));
    assert!(actions_logged(&store)
        .await
        .contains(&"action.decide".to_owned()));
    assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));
}

fn observable(kind: &str, value: &str) -> NewObservable {
    NewObservable {
        kind: kind.into(),
        value: value.into(),
        ioc: false,
        sighted: false,
        tags: Vec::new(),
    }
}

/// The analyst work on the subject's case that names "paco": two spellings of his
/// address as observables (one observable once erased), an address that is evidence,
/// a task for him and his comment. Returns the ids of the mail observables, the
/// address observable and the task.
async fn subject_work(store: &Store, case: i64) -> ([i64; 2], i64, i64) {
    let owner = ObservableOwner::Case(case);
    let lead = "apikey:lead";
    let (mail, _) = store
        .add_observable(&owner, &observable("mail", "paco@example.org"), lead)
        .await
        .unwrap();
    let (upper, _) = store
        .add_observable(&owner, &observable("mail", "Paco@example.org"), lead)
        .await
        .unwrap();
    let (ip, _) = store
        .add_observable(&owner, &observable("ip", "172.17.1.1"), lead)
        .await
        .unwrap();
    let new = NewTask {
        title: "Ask Paco whether he mistyped".into(),
        assignee: Some("paco".into()),
    };
    let task = store.create_task(case, &new, lead).await.unwrap();
    store
        .add_comment(case, "It was me, sorry - paco@example.org", "apikey:paco")
        .await
        .unwrap();
    ([mail.id, upper.id], ip.id, task.id)
}

async fn a_subject_is_found_and_erased_in_observables_tasks_and_the_timeline(store: Store) {
    let (case, _) = subject_case(&store).await;
    let ([mail, upper], ip, task) = subject_work(&store, case).await;

    let data = store.export_subject("paco", "cli:dpo").await.unwrap();
    let found: Vec<i64> = data.observables.iter().map(|o| o.id).collect();
    assert!(found.contains(&mail) && found.contains(&upper) && !found.contains(&ip));
    assert_eq!(data.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [task]);
    let kinds: Vec<&str> = data.timeline.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "updated",
        "closed",
        "observable_added",
        "task_created",
        "comment",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let export_entry = store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(export_entry.after.as_ref().unwrap()["tasks"], 1);

    let erasure = store.erase_subject("paco", "cli:dpo").await.unwrap();
    assert!(erasure.observables.contains(&mail) && erasure.observables.contains(&upper));
    assert_eq!(erasure.tasks, [task]);
    assert!(!erasure.timeline.is_empty());
    assert_eq!(
        store
            .audit_entries(0, i64::MAX)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .after
            .unwrap()["tasks"],
        json!([task])
    );
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    assert_eq!(
        audit::verify(&entries),
        Verdict::Intact {
            entries: entries.len() as i64
        }
    );

    let again = store.export_subject("paco", "cli:dpo").await.unwrap();
    assert!(again.observables.is_empty(), "{:?}", again.observables);
    assert!(again.tasks.is_empty() && again.timeline.is_empty());
    let observables = store
        .list_observables(&ObservableOwner::Case(case))
        .await
        .unwrap();
    let values: Vec<(&str, &str)> = observables
        .iter()
        .map(|o| (o.kind.as_str(), o.value.as_str()))
        .collect();
    // Both spellings erase to the same value: one observable is left of the two.
    assert_eq!(
        values,
        [("mail", "[erased]@example.org"), ("ip", "172.17.1.1")]
    );
    let task = store.list_tasks(case).await.unwrap().remove(0);
    assert_eq!(task.title, "Ask [erased] whether he mistyped");
    assert_eq!(task.assignee.as_deref(), Some(ERASED));
    let timeline = store.timeline(case, 0, 1000).await.unwrap();
    let comment = timeline.iter().find(|e| e.kind == "comment").unwrap();
    assert_eq!(comment.actor, "apikey:[erased]");
    assert_eq!(
        comment.details["text"],
        "It was me, sorry - [erased]@example.org"
    );
    let verified = store.audit_entries(0, i64::MAX).await.unwrap();
    assert_eq!(
        audit::verify(&verified),
        Verdict::Intact {
            entries: verified.len() as i64
        }
    );
}

async fn retention_erases_observables_tasks_and_the_timeline_of_closed_cases(store: Store) {
    let (closed, _) = subject_case(&store).await;
    let ([mail, upper], ip, task) = subject_work(&store, closed).await;
    let other = alert("r9", "db-1", "2024-01-01T10:00:00Z", Level::Low);
    let open = case_of(&store, &other, "r9|db-1").await;
    let (kept, _) = store
        .add_observable(
            &ObservableOwner::Case(open),
            &observable("mail", "quentin@example.org"),
            "apikey:lead",
        )
        .await
        .unwrap();
    store
        .add_comment(open, "quentin is on it", "apikey:quentin")
        .await
        .unwrap();

    let cutoff = Utc::now() + Duration::seconds(1);
    let erasure = store
        .erase_closed_before(cutoff, "system:retention")
        .await
        .unwrap();
    assert!(erasure.observables.contains(&mail) && erasure.observables.contains(&upper));
    assert!(erasure.observables.contains(&ip), "its creator is erased");
    assert!(!erasure.observables.contains(&kept.id));
    assert_eq!(erasure.tasks, [task]);

    let observables = store
        .list_observables(&ObservableOwner::Case(closed))
        .await
        .unwrap();
    let left: Vec<(&str, &str, &str)> = observables
        .iter()
        .map(|o| (o.kind.as_str(), o.value.as_str(), o.created_by.as_str()))
        .collect();
    assert_eq!(
        left,
        [("mail", ERASED, ERASED), ("ip", "172.17.1.1", ERASED)],
        "addresses of people go, network evidence stays"
    );
    let task = store.list_tasks(closed).await.unwrap().remove(0);
    assert_eq!(
        (task.title.as_str(), task.assignee, task.created_by.as_str()),
        (ERASED, None, ERASED)
    );
    let timeline = store.timeline(closed, 0, 1000).await.unwrap();
    for entry in &timeline {
        assert!(
            entry.actor == ERASED || entry.actor.starts_with("system:"),
            "{entry:?}"
        );
        let text = entry.details.to_string().to_lowercase();
        assert!(!text.contains("paco"), "{entry:?}");
    }
    let comment = timeline.iter().find(|e| e.kind == "comment").unwrap();
    assert_eq!(comment.details["text"], ERASED);
    let closing = timeline.iter().find(|e| e.kind == "closed").unwrap();
    assert_eq!(closing.details["resolution"], "benign", "the outcome stays");
    let still_open = store.timeline(open, 0, 1000).await.unwrap();
    assert!(still_open.iter().any(|e| e.actor == "apikey:quentin"));

    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    for entry in &entries {
        let about_work = (entry.object_kind == "task" && entry.object_id == task.id.to_string())
            || (entry.object_kind == "observable"
                && [mail, upper, ip]
                    .map(|id| id.to_string())
                    .contains(&entry.object_id));
        if about_work {
            assert!(
                erasure.audit_states.contains(&entry.seq),
                "entry {}",
                entry.seq
            );
            assert!(entry.before.is_none() && entry.after.is_none());
        }
    }
    assert_eq!(
        entries.last().unwrap().after.as_ref().unwrap()["tasks"],
        json!([task.id])
    );
    assert_eq!(
        audit::verify(&entries),
        Verdict::Intact {
            entries: entries.len() as i64
        }
    );
    let again = store
        .erase_closed_before(cutoff, "system:retention")
        .await
        .unwrap();
    assert_eq!(again, Default::default(), "a second run changes nothing");
}

async fn api_keys_are_listed_used_and_revoked_once(store: Store) {
    store
        .create_api_key(&api_key("k1", "soc-bot"), "cli:root")
        .await
        .unwrap();
    store
        .create_api_key(&api_key("k2", "lead"), "cli:root")
        .await
        .unwrap();
    let now = Utc::now();
    store.mark_api_key_used("k1", now).await.unwrap();
    // Within the resolution: not written again.
    store
        .mark_api_key_used("k1", now + Duration::seconds(5))
        .await
        .unwrap();
    let status = store.get_api_key_status("k1").await.unwrap().unwrap();
    assert_eq!(
        status.last_used_at.map(|t| t.timestamp_micros()),
        Some(now.timestamp_micros())
    );
    assert_eq!(status.revoked_at, None);

    let revoked = store.revoke_api_key("soc-bot", "cli:admin").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let listed = store.list_api_keys().await.unwrap();
    let names: Vec<(&str, bool)> = listed
        .iter()
        .map(|s| (s.key.name.as_str(), s.revoked_at.is_some()))
        .collect();
    assert_eq!(names, [("soc-bot", true), ("lead", false)]);
    assert!(store
        .get_api_key_status("k1")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(matches!(
        store.revoke_api_key("soc-bot", "cli:admin").await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.revoke_api_key("nobody", "cli:admin").await,
        Err(StoreError::NotFound { .. })
    ));
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.action, "apikey.revoke");
    assert!(last.after.as_ref().unwrap().get("hash").is_none());
    assert_eq!(audit::verify(&entries), Verdict::Intact { entries: 3 });
}

/// Two cases of one grouping key, as the cases stage opens them when the alert between
/// them arrives last: merging moves the alerts and tasks, unites the fields, copies the
/// observables, closes the other case as a duplicate and audits it as one change.
async fn open_cases_merge_into_one_with_the_union_of_their_fields(store: Store) {
    let key = "r|h";
    let mut early = alert("r", "h", "2022-10-31T15:00:00Z", Level::Low);
    early.host = Some("h".into());
    let mut late = network_alert("r", "2022-10-31T17:00:00Z");
    late.host = Some("h".into());
    let a = case_of(&store, &early, key).await;
    let b = case_of(&store, &late, key).await;
    let other = case_of(
        &store,
        &alert("r", "g", "2022-10-31T16:00:00Z", Level::Low),
        "r|g",
    )
    .await;
    let task = NewTask {
        title: "look at h".into(),
        assignee: None,
    };
    store.create_task(b, &task, "alice").await.unwrap();
    let marked = CaseUpdate {
        tags: Some(vec!["c2".into()]),
        tlp: Some(Tlp::Red),
        ..Default::default()
    };
    store.update_case(b, &marked, "alice").await.unwrap();

    let t = |s: &str| s.parse().unwrap();
    let near = store
        .open_cases_near(key, t("2022-10-31T15:30:00Z"), t("2022-10-31T16:30:00Z"))
        .await
        .unwrap();
    assert!(near.is_empty(), "neither case reaches 15:30 – 16:30");
    let near = store
        .open_cases_near(key, t("2022-10-31T15:00:00Z"), t("2022-10-31T17:00:00Z"))
        .await
        .unwrap();
    assert_eq!(near.iter().map(|c| c.id).collect::<Vec<_>>(), [a, b]);

    let merged = store.merge_cases(a, b, audit::SYSTEM_ACTOR).await.unwrap();
    assert_eq!(merged.id, a);
    assert_eq!(merged.alert_count, 2);
    assert_eq!(merged.severity, Level::High);
    assert_eq!(merged.first_seen, early.timestamp);
    assert_eq!(merged.last_seen, late.timestamp);
    assert_eq!(merged.tlp, Tlp::Red);
    assert_eq!(merged.tags, ["c2"]);
    assert_eq!(store.list_tasks(a).await.unwrap().len(), 1);
    let moved = store.get_alert(&late.id).await.unwrap().unwrap();
    assert_eq!(moved.case_id, Some(a));
    assert_eq!(moved.status, "new", "grouping is not triage");
    let values: Vec<String> = store
        .list_observables(&ObservableOwner::Case(a))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.value)
        .collect();
    for value in ["172.16.0.153", "67.205.184.237", "vgiragdoffy.com"] {
        assert!(values.iter().any(|v| v == value), "{value} in {values:?}");
    }

    let gone = store.get_case(b).await.unwrap().unwrap();
    assert_eq!(gone.status, CaseStatus::Closed);
    assert_eq!(gone.resolution, Some(Resolution::Duplicate));
    assert_eq!(gone.alert_count, 0);
    assert!(gone.summary.unwrap().contains(&format!("case {a}")));
    let into = store.timeline(a, 0, 100).await.unwrap();
    let last = into.last().unwrap();
    assert_eq!(last.kind, "case_merged");
    assert_eq!(last.details["from_case"], json!(b));
    assert_eq!(last.details["alert_ids"], json!([late.id]));
    assert_eq!(
        timeline_kinds(&store, b).await.last().unwrap(),
        "merged_into"
    );
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    let merge = entries.iter().find(|e| e.action == "case.merge").unwrap();
    assert_eq!(merge.object_id, b.to_string());
    assert!(matches!(verdict(&store).await, Verdict::Intact { .. }));

    // A merged (closed) case, a case of another key and the case itself are refused.
    for (into, from) in [(a, b), (a, a), (a, other)] {
        let refused = store.merge_cases(into, from, audit::SYSTEM_ACTOR).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "{into} <- {from}: {refused:?}"
        );
    }
    assert!(matches!(
        store.merge_cases(a, 999_999, audit::SYSTEM_ACTOR).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// `case_detail` (one read on SQLite, three on PostgreSQL) answers what the three reads it
/// replaces answer: the case, its alerts by event time then id (cut at the limit) and its
/// actions by id, with triage and update fields filled in.
async fn a_case_detail_is_the_case_its_alerts_and_its_actions(store: Store) {
    let first = alert("r1", "web-1", "2024-01-01T10:00:00Z", Level::Low);
    let late = alert("r1", "web-1", "2024-01-01T12:00:00Z", Level::High);
    let middle = alert("r1", "web-1", "2024-01-01T11:00:00Z", Level::Medium);
    let other = alert("r2", "web-2", "2024-01-01T11:30:00Z", Level::Low);
    let case = case_of(&store, &first, "r1|web-1").await;
    for alert in [&late, &middle] {
        store.insert_alert(alert).await.unwrap();
        store.attach_alert(case, alert).await.unwrap();
    }
    case_of(&store, &other, "r2|web-2").await;
    store
        .triage_alert(
            &middle.id,
            &AlertTriage::Ignore {
                reason: "scanner".into(),
            },
            "apikey:ana",
        )
        .await
        .unwrap();
    let update = CaseUpdate {
        assignee: Some(Some("ana".into())),
        tags: Some(vec!["phishing".into(), "t1566".into()]),
        tlp: Some(Tlp::Red),
        ..Default::default()
    };
    store
        .update_case(case, &update, "apikey:lead")
        .await
        .unwrap();
    let mut actions = Vec::new();
    for (step, alert) in [("notify", &late), ("block", &first)] {
        let new = NewAction {
            case_id: case,
            alert_id: alert.id.clone(),
            playbook: "soc/pb".into(),
            step: step.into(),
            step_type: "webhook".into(),
            approval_required: step == "block",
            params: json!({"url": "http://127.0.0.1:1/", "step": step}),
        };
        actions.push(store.create_action(&new).await.unwrap().0);
    }
    let rejected = store
        .decide_action(
            actions[1].id,
            &Decision::Reject {
                reason: "not on a Friday".into(),
            },
            "apikey:lead",
        )
        .await
        .unwrap();
    actions[1] = rejected;

    let detail = store.case_detail(case, 1000).await.unwrap().unwrap();
    assert_eq!(
        Some(&detail.case),
        store.get_case(case).await.unwrap().as_ref()
    );
    assert_eq!(detail.case.tlp, Tlp::Red);
    assert_eq!(detail.case.assignee.as_deref(), Some("ana"));
    assert_eq!(detail.case.alert_count, 3);
    let ids: Vec<&str> = detail.alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, [&first.id, &middle.id, &late.id], "by event time");
    let listed = store
        .list_stored_alerts(&AlertFilter {
            case_id: Some(case),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(detail.alerts, listed);
    let ignored = detail.alerts[1].clone().parse().unwrap();
    assert_eq!(ignored.status, "ignored");
    assert_eq!(ignored.status_reason.as_deref(), Some("scanner"));
    assert!(ignored.triaged_at.is_some());
    assert_eq!(ignored.alert, middle);
    assert_eq!(detail.actions, actions);
    assert_eq!(
        detail.actions,
        store
            .list_actions(&ActionFilter {
                case_id: Some(case),
                ..Default::default()
            })
            .await
            .unwrap()
    );

    let cut = store.case_detail(case, 2).await.unwrap().unwrap();
    assert_eq!(cut.alerts, detail.alerts[..2]);
    assert!(store.case_detail(case + 100, 1000).await.unwrap().is_none());
}

/// Alerts arriving together share a batch (both stores group-commit them): each id is new
/// exactly once however many callers send it at the same moment, every new alert gets
/// its own `alert.create` entry and its observables, and the chain stays one line.
async fn concurrent_alerts_are_stored_once_each_with_one_entry(store: Store) {
    let alerts: Vec<Alert> = (0..24)
        .map(|n| {
            let mut a = alert(
                &format!("r{}", n % 3),
                "h",
                &format!("2024-01-01T12:00:{n:02}Z"),
                Level::Medium,
            );
            a.events[0].set("source.ip", json!(format!("192.0.2.{n}")));
            a
        })
        .collect();
    // Each alert sent by three callers at once.
    let sends = alerts.iter().cycle().take(alerts.len() * 3).map(|a| {
        let store = Arc::clone(&store);
        let a = a.clone();
        tokio::spawn(async move { (a.id.clone(), store.insert_alert(&a).await.unwrap()) })
    });
    let mut new = std::collections::BTreeMap::<String, usize>::new();
    for send in sends.collect::<Vec<_>>() {
        let (id, created) = send.await.unwrap();
        *new.entry(id).or_default() += usize::from(created);
    }
    assert_eq!(new.len(), alerts.len());
    assert!(new.values().all(|count| *count == 1), "{new:?}");
    assert_eq!(
        verdict(&store).await,
        Verdict::Intact {
            entries: alerts.len() as i64
        }
    );
    let creates = actions_logged(&store).await;
    assert!(creates.iter().all(|action| action == "alert.create"));
    for a in &alerts {
        let stored = store.get_alert(&a.id).await.unwrap().unwrap();
        assert_eq!(&stored.alert, a);
        let observables = store
            .list_observables(&ObservableOwner::Alert(a.id.clone()))
            .await
            .unwrap();
        assert!(
            observables
                .iter()
                .any(|o| Some(o.value.as_str()) == a.events[0].get_str("source.ip")),
            "{observables:?}"
        );
    }
}
