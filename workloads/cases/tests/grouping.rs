//! Case grouping does not depend on the order alerts arrive in: real Suricata alerts of
//! the IcedID capture, filed in every order, end in the same cases with the same fields.
//! An alert that links two open cases (it came after both, as a redelivery does) merges
//! them.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kastell_cases::{Filed, Grouper};
use kastell_core::store::{CaseFilter, CaseStatus, ObservableOwner, Resolution};
use kastell_core::{Alert, CaseStore, Level};
use support::{eve_alert, sqlite_store, TR0LLOPE};

/// ET POLICY OpenSSL Demo CA, which the IcedID C2 servers trip every 5 minutes.
const DEMO_CA: i64 = 2011540;

/// Six minutes: the 5-minute beacons chain, a 10-minute gap does not.
fn window() -> Duration {
    Duration::minutes(6)
}

/// Five alerts of one rule on one host (the C2 server 66.63.168.75, so one grouping key)
/// in two chains: lines 29 (15:48:32), 165 (15:53:31) and 119 (15:58:32), where 165
/// links the other two, which are ten minutes apart; and lines 1171 (17:08:50) and 1379
/// (17:13:51). Line 165's rule level is raised to high, as a DetectionRule's severity
/// override would, so the merged case's severity shows whether the maximum is kept.
fn alerts() -> Vec<Alert> {
    let mut alerts: Vec<Alert> = [29, 165, 119, 1171, 1379]
        .into_iter()
        .map(|line| eve_alert(TR0LLOPE, line, DEMO_CA))
        .collect();
    alerts[1].rule.level = Level::High;
    alerts
}

/// What a case is, apart from its id and the times it was written: the fields grouping
/// derives from its alerts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    group_key: String,
    title: String,
    severity: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    alerts: Vec<String>,
    observables: Vec<(String, String, bool)>,
    /// The alerts the case's timeline says came in (opened for, attached, merged in).
    timeline_alerts: BTreeSet<String>,
}

async fn shapes(store: &dyn CaseStore) -> BTreeSet<Shape> {
    let cases = store.list_cases(&CaseFilter::default()).await.unwrap();
    let mut shapes = BTreeSet::new();
    for case in cases {
        if case.status == CaseStatus::Closed {
            // Merged away: closed as a duplicate, holding nothing.
            assert_eq!(case.resolution, Some(Resolution::Duplicate));
            assert_eq!(case.alert_count, 0);
            continue;
        }
        let filter = kastell_core::store::AlertFilter {
            case_id: Some(case.id),
            ..Default::default()
        };
        let mut alerts: Vec<String> = store
            .list_alerts(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        alerts.sort();
        assert_eq!(case.alert_count, alerts.len() as i64);
        let mut observables: Vec<(String, String, bool)> = store
            .list_observables(&ObservableOwner::Case(case.id))
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.kind, o.value, o.ioc))
            .collect();
        observables.sort();
        let mut timeline_alerts = BTreeSet::new();
        for entry in store.timeline(case.id, 0, 1000).await.unwrap() {
            let details = &entry.details;
            match entry.kind.as_str() {
                "created" | "alert_attached" => {
                    timeline_alerts.insert(details["alert_id"].as_str().unwrap().to_owned());
                }
                "case_merged" => {
                    for id in details["alert_ids"].as_array().unwrap() {
                        timeline_alerts.insert(id.as_str().unwrap().to_owned());
                    }
                }
                _ => {}
            }
        }
        shapes.insert(Shape {
            group_key: case.group_key,
            title: case.title,
            severity: case.severity.as_str().to_owned(),
            first_seen: case.first_seen,
            last_seen: case.last_seen,
            alerts,
            observables,
            timeline_alerts,
        });
    }
    shapes
}

/// Files the alerts in this order into a fresh store; the cases that hold alerts, and
/// how many cases were opened and merged away.
async fn file_in_order(alerts: &[Alert]) -> (BTreeSet<Shape>, usize, usize) {
    let (_dir, store) = sqlite_store().await;
    let grouper = Grouper::new(Arc::clone(&store), window());
    let (mut opened, mut merged) = (0, 0);
    for alert in alerts {
        match grouper.file(alert).await.unwrap() {
            Filed::Opened(_) => opened += 1,
            Filed::Attached { merged: m, .. } => merged += m.len(),
            Filed::Duplicate => panic!("alert {} filed twice", alert.id),
        }
    }
    let verdict = kastell_core::audit::verify(&store.audit_entries(0, 10_000).await.unwrap());
    assert!(
        matches!(verdict, kastell_core::Verdict::Intact { .. }),
        "{verdict:?}"
    );
    (shapes(store.as_ref()).await, opened, merged)
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for at in 0..=shorter.len() {
            let mut next = shorter.clone();
            next.insert(at, n - 1);
            all.push(next);
        }
    }
    all
}

#[tokio::test]
async fn every_arrival_order_gives_the_same_cases() {
    let alerts = alerts();
    let mut by_time = alerts.clone();
    by_time.sort_by_key(|a| a.timestamp);
    let (expected, opened, merged) = file_in_order(&by_time).await;
    assert_eq!((opened, merged), (2, 0), "in time order nothing is merged");
    assert_eq!(expected.len(), 2);
    let first = expected.iter().next().unwrap();
    assert_eq!(first.alerts.len(), 3);
    assert_eq!(first.severity, "high");
    assert!(
        first.observables.iter().any(|o| o.1 == "66.63.168.75"),
        "{:?}",
        first.observables
    );
    for shape in &expected {
        let alerts: BTreeSet<String> = shape.alerts.iter().cloned().collect();
        assert_eq!(shape.timeline_alerts, alerts);
    }

    let mut merges_seen = 0;
    for order in permutations(alerts.len()) {
        let arrived: Vec<Alert> = order.iter().map(|&i| alerts[i].clone()).collect();
        let (got, opened, merged) = file_in_order(&arrived).await;
        assert_eq!(got, expected, "order {order:?}");
        assert_eq!(opened - merged, 2, "order {order:?}");
        merges_seen += merged;
    }
    // Line 165 comes after lines 29 and 119 in a third of the orders: each merges.
    assert_eq!(merges_seen, 120 / 3);
}

#[tokio::test]
async fn a_linking_alert_merges_into_the_case_with_the_earliest_first_alert() {
    let alerts = alerts();
    let (_dir, store) = sqlite_store().await;
    let grouper = Grouper::new(Arc::clone(&store), window());
    // 15:58:32 first, then 15:48:32: ten minutes apart, two cases.
    let Filed::Opened(later) = grouper.file(&alerts[2]).await.unwrap() else {
        panic!("a first alert opens a case")
    };
    let Filed::Opened(earlier) = grouper.file(&alerts[0]).await.unwrap() else {
        panic!("ten minutes away opens another")
    };
    let filed = grouper.file(&alerts[1]).await.unwrap();
    let Filed::Attached {
        case,
        raised_from,
        merged,
    } = filed
    else {
        panic!("the linking alert joins: {filed:?}")
    };
    assert_eq!(case.id, earlier.id);
    assert_eq!(merged, [later.id]);
    assert_eq!(raised_from, Some(Level::Low));
    assert_eq!(case.alert_count, 3);

    // Filing it again changes nothing.
    assert_eq!(grouper.file(&alerts[1]).await.unwrap(), Filed::Duplicate);
    let gone = store.get_case(later.id).await.unwrap().unwrap();
    assert_eq!(gone.status, CaseStatus::Closed);
    assert!(gone.summary.unwrap().contains(&earlier.id.to_string()));
    let audit = store.audit_entries(0, 1000).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "case.merge").count(), 1);
}
