//! Greenbone findings into remediation cases, with the repository's GMP report fixture
//! parsed by the real decoder: three scans where the OpenSSH finding disappears (its case
//! is closed) and then returns (reopened), while the TLS finding stays one case throughout.

use std::collections::BTreeMap;
use std::path::Path;

use kastell_cases::remediation::{Criticality, Finding, Remediation};
use kastell_core::store::{CaseFilter, CaseStatus, TaskStatus};
use kastell_core::{CaseStore, Level, SqliteStore};
use kastell_ingest::{decode_reader, Decoder, Format, ParseContext};

const OPENSSH_OID: &str = "1.3.6.1.4.1.25623.1.0.104876";
const TLS_OID: &str = "1.3.6.1.4.1.25623.1.0.117274";

fn fixture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ingest/tests/fixtures/greenbone/gmp-report.xml");
    std::fs::read_to_string(path).unwrap()
}

/// The report without the OpenSSH result: the host is still scanned (its OS-detection
/// log result stays), the vulnerability is no longer found.
fn fixed_report() -> String {
    let report = fixture();
    let start = report
        .find(r#"<result id="5c3d4e5f-0000-4000-8000-00000000c001">"#)
        .unwrap();
    let next = report
        .find(r#"<result id="5c3d4e5f-0000-4000-8000-00000000c002">"#)
        .unwrap();
    format!("{}{}", &report[..start], &report[next..])
}

fn findings(report: &str) -> Vec<Finding> {
    let mut decoder = Decoder::new(Format::Greenbone, ParseContext::new("dmz-scanner"));
    let mut events = Vec::new();
    decode_reader(report.as_bytes(), &mut decoder, |d| {
        events.push(d.result.expect("the fixture parses"))
    })
    .unwrap();
    events.iter().filter_map(Finding::from_event).collect()
}

#[tokio::test]
async fn findings_open_close_and_reopen_remediation_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).await.unwrap();
    let criticality = BTreeMap::from([
        ("192.0.2.10".to_owned(), Criticality::Critical),
        ("2001:db8::443".to_owned(), Criticality::Low),
    ]);
    let remediation = Remediation::new(&store).with_criticality(criticality, Criticality::Medium);

    let first = findings(&fixture());
    assert_eq!(first.len(), 3, "two vulnerabilities and one log result");
    let scan1 = remediation.apply_scan(&first).await.unwrap();
    assert_eq!(scan1.opened.len(), 2, "{scan1:?}");

    let cases = store.list_cases(&CaseFilter::default()).await.unwrap();
    let by_oid = |oid: &str| {
        cases
            .iter()
            .find(|c| c.tags.iter().any(|t| t.ends_with(oid)))
            .unwrap()
            .clone()
    };
    let openssh = by_oid(OPENSSH_OID);
    let tls = by_oid(TLS_OID);
    assert!(openssh
        .tags
        .contains(&format!("remediation:192.0.2.10|{OPENSSH_OID}")));
    assert!(openssh.tags.contains(&"cve:CVE-2023-38408".to_owned()));
    assert_eq!(
        openssh.severity,
        Level::Critical,
        "CVSS 9.8 on a critical host"
    );
    assert_eq!(
        tls.severity,
        Level::Low,
        "CVSS 4.3 on a low-criticality host"
    );
    let tasks = store.list_tasks(openssh.id).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Update to version 9.3p2 or later.");
    assert_eq!(tasks[0].status, TaskStatus::Open);

    // The same scan again: deduplicated, nothing opens.
    let again = remediation.apply_scan(&first).await.unwrap();
    assert!(
        again.opened.is_empty() && again.closed.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.unchanged.len(), 2);

    let scan2 = remediation
        .apply_scan(&findings(&fixed_report()))
        .await
        .unwrap();
    assert_eq!(scan2.closed, [openssh.id]);
    assert_eq!(scan2.unchanged, [tls.id]);
    let closed = store.get_case(openssh.id).await.unwrap().unwrap();
    assert_eq!(closed.status, CaseStatus::Closed);
    assert!(closed.closed_at.is_some());

    let scan3 = remediation.apply_scan(&first).await.unwrap();
    assert_eq!(scan3.reopened, [openssh.id]);
    assert!(scan3.opened.is_empty());
    let reopened = store.get_case(openssh.id).await.unwrap().unwrap();
    assert_eq!(reopened.status, CaseStatus::Open);
    assert_eq!(reopened.closed_at, None, "a reopened case is not resolved");
    assert_eq!(
        store
            .list_cases(&CaseFilter::default())
            .await
            .unwrap()
            .len(),
        2,
        "still one case per host and vulnerability"
    );

    // A scan of another host leaves these cases alone.
    let other: Vec<Finding> = first
        .iter()
        .cloned()
        .map(|mut f| {
            f.host = "198.51.100.7".into();
            f
        })
        .filter(|f| f.oid == TLS_OID)
        .collect();
    let scan4 = remediation.apply_scan(&other).await.unwrap();
    assert_eq!(scan4.opened.len(), 1);
    assert!(scan4.closed.is_empty());
}

/// The cluster cases stage's loop: the events topic stays open, so the scan is applied
/// once no more of the report arrives, and the loop keeps reading until the topic closes.
#[tokio::test]
async fn a_report_on_an_open_subscription_is_applied_when_it_stops_arriving() {
    use kastell_cases::remediation::{run_remediation_with, CriticalitySettings};
    use kastell_core::{Bus, InProcessBus, Message, Topic};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).await.unwrap());
    let bus = InProcessBus::new(64);
    let subscription = bus
        .subscribe(Topic::Events, kastell_cases::remediation::GROUP)
        .await
        .unwrap();
    let settings = CriticalitySettings::default();
    let running = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let idle = std::time::Duration::from_millis(200);
            run_remediation_with(subscription, store.as_ref(), &settings, Some(idle)).await
        })
    };

    let mut decoder = Decoder::new(Format::Greenbone, ParseContext::new("dmz-scanner"));
    let mut events = Vec::new();
    decode_reader(fixture().as_bytes(), &mut decoder, |d| {
        events.push(d.result.expect("the fixture parses"))
    })
    .unwrap();
    for event in &events {
        bus.publish(Topic::Events, Message::json(event).unwrap())
            .await
            .unwrap();
    }

    // The topic is still open: only the pause can end the scan.
    let mut cases = Vec::new();
    for _ in 0..300 {
        cases = store.list_cases(&CaseFilter::default()).await.unwrap();
        if cases.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        cases.len(),
        2,
        "the report's two vulnerabilities: {cases:?}"
    );
    assert!(
        !running.is_finished(),
        "the loop keeps reading the open topic"
    );

    bus.close(Topic::Events).await;
    let outcome = running.await.unwrap().unwrap();
    assert_eq!(outcome.opened.len(), 2, "{outcome:?}");
}
