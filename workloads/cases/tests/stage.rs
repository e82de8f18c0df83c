//! The stage loop over the in-process bus and a SQLite store, fed real Suricata and Wazuh
//! alerts: grouping by rule, host and event time, idempotence, out-of-order arrival, and
//! bad input that costs one message and nothing else.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kastell_cases::{
    run_cases_on, subscribe_alerts, CaseSettings, CasesReport, CasesStats, DeadLetter,
};
use kastell_core::bus::publish_json;
use kastell_core::store::{AlertFilter, CaseFilter, CaseRecord};
use kastell_core::{Alert, Bus, CaseEvent, CaseStore, InProcessBus, Message, Topic};
use support::{eve_alert, sqlite_store, wazuh_sshd_alert, FailingStore, TR0LLOPE, XHPX};

/// ET POLICY OpenSSL Demo CA, the signature the IcedID C2 servers trip every 5 minutes.
const DEMO_CA: i64 = 2011540;

struct Run {
    report: CasesReport,
    events: Vec<CaseEvent>,
    dead: Vec<DeadLetter>,
}

/// Publishes the messages, runs the stage until they are drained, and collects what it
/// published.
async fn run(store: Arc<dyn CaseStore>, messages: Vec<Message>) -> Run {
    let bus = Arc::new(InProcessBus::new(4096));
    let alerts = subscribe_alerts(bus.as_ref()).await.unwrap();
    let mut case_events = bus.subscribe(Topic::CaseEvents, "respond").await.unwrap();
    let mut dead_letters = bus.subscribe(Topic::DeadLetters, "audit").await.unwrap();
    let settings = CaseSettings {
        close_downstream: true,
        ..CaseSettings::default()
    };
    let stage = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let stats = CasesStats::new();
            run_cases_on(bus.as_ref(), alerts, store, settings, &stats).await
        })
    };
    for message in messages {
        bus.publish(Topic::Alerts, message).await.unwrap();
    }
    bus.close(Topic::Alerts).await;
    let report = stage.await.unwrap().unwrap();

    let mut events = Vec::new();
    while let Some(delivery) = case_events.next().await {
        events.push(delivery.message.decode().unwrap());
    }
    bus.close(Topic::DeadLetters).await;
    let mut dead = Vec::new();
    while let Some(delivery) = dead_letters.next().await {
        dead.push(delivery.message.decode().unwrap());
    }
    Run {
        report,
        events,
        dead,
    }
}

async fn run_alerts(store: Arc<dyn CaseStore>, alerts: &[Alert]) -> Run {
    run(
        store,
        alerts.iter().map(|a| Message::json(a).unwrap()).collect(),
    )
    .await
}

async fn cases(store: &dyn CaseStore) -> Vec<CaseRecord> {
    store.list_cases(&CaseFilter::default()).await.unwrap()
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// (kind, case id, alert id) of each case event.
fn summary(events: &[CaseEvent]) -> Vec<(&'static str, i64, String)> {
    events
        .iter()
        .map(|e| match e {
            CaseEvent::CaseOpened { case_id, alert } => ("opened", *case_id, alert.id.clone()),
            CaseEvent::AlertAttached { case_id, alert } => ("attached", *case_id, alert.id.clone()),
            CaseEvent::ActionApproved { action_id } => ("approved", *action_id, String::new()),
            CaseEvent::SeverityRaised { case_id, to, .. } => ("raised", *case_id, to.to_string()),
            other => ("other", other.case_id().unwrap_or(0), String::new()),
        })
        .collect()
}

#[tokio::test]
async fn one_rule_on_one_host_within_the_window_is_one_case() {
    // tr0llope lines 29, 165, 119, 265: 66.63.168.75 presents the OpenSSL demo
    // certificate at 15:48:32, 15:53:31, 15:58:32 and 16:03:33 (+01:00).
    let alerts: Vec<Alert> = [29, 165, 119, 265]
        .into_iter()
        .map(|n| eve_alert(TR0LLOPE, n, DEMO_CA))
        .collect();
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &alerts).await;

    assert_eq!(run.report.received, 4);
    assert_eq!(run.report.stored, 4);
    assert_eq!(run.report.cases_opened, 1);
    assert_eq!(run.report.alerts_attached, 3);
    assert_eq!(run.report.duplicates, 0);
    assert_eq!(run.report.errors, 0);
    assert!(run.dead.is_empty());

    let cases = cases(store.as_ref()).await;
    assert_eq!(cases.len(), 1);
    let case = &cases[0];
    assert_eq!(
        case.title,
        "ET POLICY OpenSSL Demo CA - Internet Widgits Pty (O) on 66.63.168.75"
    );
    assert_eq!(case.group_key, "suricata-2011540|66.63.168.75");
    assert_eq!(case.host.as_deref(), Some("66.63.168.75"));
    assert_eq!(case.alert_count, 4);
    assert_eq!(case.first_seen, time("2022-10-31T14:48:32.380722Z"));
    assert_eq!(case.last_seen, time("2022-10-31T15:03:33.785052Z"));

    let expected: Vec<_> = alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                if i == 0 { "opened" } else { "attached" },
                case.id,
                a.id.clone(),
            )
        })
        .collect();
    assert_eq!(summary(&run.events), expected);
    // The case events carry the whole alert, as the respond stage's triggers need it.
    match &run.events[0] {
        CaseEvent::CaseOpened { alert, .. } => assert_eq!(**alert, alerts[0]),
        other => panic!("expected a case opening, got {other:?}"),
    }
}

#[tokio::test]
async fn another_host_opens_another_case() {
    // tr0llope line 29: 66.63.168.75 at 15:48:32; line 22: 138.68.255.102 at 15:48:31,
    // the same signature a second earlier.
    let alerts = [
        eve_alert(TR0LLOPE, 29, DEMO_CA),
        eve_alert(TR0LLOPE, 22, DEMO_CA),
    ];
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &alerts).await;

    assert_eq!(run.report.cases_opened, 2);
    assert_eq!(run.report.alerts_attached, 0);
    let hosts: Vec<_> = cases(store.as_ref())
        .await
        .into_iter()
        .map(|c| (c.host.unwrap(), c.alert_count))
        .collect();
    assert_eq!(
        hosts,
        vec![("66.63.168.75".into(), 1), ("138.68.255.102".into(), 1)]
    );
    let kinds: Vec<_> = summary(&run.events).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, vec!["opened", "opened"]);
}

#[tokio::test]
async fn another_rule_on_the_same_host_opens_another_case() {
    // tr0llope lines 16 and 17 are one packet of 172.16.0.153 raising two IcedID
    // signatures.
    let alerts = [
        eve_alert(TR0LLOPE, 16, 2030053),
        eve_alert(TR0LLOPE, 17, 2032086),
    ];
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &alerts).await;
    assert_eq!(run.report.cases_opened, 2);
    let titles: Vec<_> = cases(store.as_ref())
        .await
        .into_iter()
        .map(|c| c.title)
        .collect();
    assert_eq!(
        titles,
        vec![
            "ET MALWARE Win32/IcedID Requesting Encoded Binary M4 on 172.16.0.153",
            "ET MALWARE Win32/IcedID Request Cookie on 172.16.0.153",
        ]
    );
}

#[tokio::test]
async fn an_alert_past_the_window_opens_a_new_case() {
    // xhpx lines 1 and 3: the custom "ssh test" rule on 10.8.8.1 at 16:41:02 and 16:41:11;
    // line 8: the same at 17:53:18, 72 minutes later.
    let alerts = [
        eve_alert(XHPX, 1, 100001),
        eve_alert(XHPX, 3, 100001),
        eve_alert(XHPX, 8, 100001),
    ];
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &alerts).await;

    assert_eq!(run.report.cases_opened, 2);
    assert_eq!(run.report.alerts_attached, 1);
    let cases = cases(store.as_ref()).await;
    let counts: Vec<_> = cases.iter().map(|c| c.alert_count).collect();
    assert_eq!(counts, vec![2, 1]);
    assert_eq!(cases[0].group_key, cases[1].group_key);
    let kinds: Vec<_> = summary(&run.events).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, vec!["opened", "attached", "opened"]);

    // A wider window keeps them together.
    let (_dir, store) = sqlite_store().await;
    let grouper = kastell_cases::Grouper::new(Arc::clone(&store), Duration::hours(2));
    for alert in &alerts {
        grouper.file(alert).await.unwrap();
    }
    assert_eq!(self::cases(store.as_ref()).await.len(), 1);
}

#[tokio::test]
async fn a_repeated_alert_is_a_counted_duplicate() {
    // tr0llope line 29, delivered twice, then line 165 of the same case.
    let first = eve_alert(TR0LLOPE, 29, DEMO_CA);
    let next = eve_alert(TR0LLOPE, 165, DEMO_CA);
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &[first.clone(), first.clone(), next]).await;

    assert_eq!(run.report.received, 3);
    assert_eq!(run.report.stored, 2);
    assert_eq!(run.report.duplicates, 1);
    assert_eq!(run.report.cases_opened, 1);
    assert_eq!(run.report.alerts_attached, 1);
    let cases = cases(store.as_ref()).await;
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].alert_count, 2);
    let kinds: Vec<_> = summary(&run.events).into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        vec!["opened", "attached"],
        "no event for the duplicate"
    );

    // A later replay of the same data changes nothing either.
    let again = run_alerts(Arc::clone(&store), &[first]).await;
    assert_eq!(again.report.duplicates, 1);
    assert!(again.events.is_empty());
}

#[tokio::test]
async fn out_of_order_alerts_join_within_the_window_of_the_span() {
    // tr0llope line 1163 (17:33:56) arrives before line 1171 (17:08:50): the older one
    // is within the window, joins and widens the case back. Line 29 (15:48:32) is more
    // than an hour before the case's first alert and opens its own case.
    let late = eve_alert(TR0LLOPE, 1163, DEMO_CA);
    let earlier = eve_alert(TR0LLOPE, 1171, DEMO_CA);
    let much_earlier = eve_alert(TR0LLOPE, 29, DEMO_CA);
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &[late, earlier, much_earlier]).await;

    assert_eq!(run.report.cases_opened, 2);
    assert_eq!(run.report.alerts_attached, 1);
    let cases = cases(store.as_ref()).await;
    assert_eq!(cases[0].alert_count, 2);
    assert_eq!(cases[0].first_seen, time("2022-10-31T16:08:50.220792Z"));
    assert_eq!(cases[0].last_seen, time("2022-10-31T16:33:56.683280Z"));
    assert_eq!(cases[1].alert_count, 1);
    assert_eq!(cases[1].first_seen, time("2022-10-31T14:48:32.380722Z"));
}

#[tokio::test]
async fn the_whole_real_run_groups_every_alert_once() {
    // All 34 alerts of the tr0llope run, in the order Suricata wrote them (not time
    // order: its flow timeouts emit some alerts late).
    let alerts: Vec<Alert> = support::eve_alert_lines(TR0LLOPE)
        .into_iter()
        .map(|(number, line)| {
            let sid = serde_json::from_str::<serde_json::Value>(&line).unwrap()["alert"]
                ["signature_id"]
                .as_i64()
                .unwrap();
            eve_alert(TR0LLOPE, number, sid)
        })
        .collect();
    assert_eq!(alerts.len(), 34);
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &alerts).await;

    assert_eq!(run.report.stored, 34);
    assert_eq!(run.report.errors, 0);
    assert_eq!(
        run.report.cases_opened + run.report.alerts_attached,
        34,
        "every alert is in exactly one case event"
    );
    let cases = cases(store.as_ref()).await;
    assert_eq!(cases.len() as u64, run.report.cases_opened);
    assert_eq!(cases.iter().map(|c| c.alert_count).sum::<i64>(), 34);

    // Every stored alert sits in a case of its own rule and host.
    let by_id: BTreeMap<i64, &CaseRecord> = cases.iter().map(|c| (c.id, c)).collect();
    let stored = store.list_alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(stored.len(), 34);
    for record in &stored {
        let case = by_id[&record.case_id.expect("every alert is in a case")];
        assert_eq!(case.rule_id, record.alert.rule.id);
        assert_eq!(case.host, record.alert.host);
        assert!(case.first_seen <= record.alert.timestamp);
        assert!(record.alert.timestamp <= case.last_seen);
    }

    // The 22 demo-certificate alerts of 66.63.168.75 span 15:48 to 17:33 with gaps of at
    // most 35 minutes in arrival order: one case.
    let c2 = cases
        .iter()
        .find(|c| c.group_key == "suricata-2011540|66.63.168.75")
        .unwrap();
    assert_eq!(c2.alert_count, 22);
    // The IcedID cookie request is the most severe thing on 172.16.0.153.
    let icedid = cases
        .iter()
        .find(|c| c.group_key == "suricata-2032086|172.16.0.153")
        .unwrap();
    assert_eq!(icedid.severity, kastell_core::Level::High);
}

#[tokio::test]
async fn a_wazuh_alert_is_titled_by_its_agent() {
    // wazuh-qa-integratord-samples.jsonl line 1: rule 5712 on agent localhost.localdomain.
    let (_dir, store) = sqlite_store().await;
    let run = run_alerts(Arc::clone(&store), &[wazuh_sshd_alert()]).await;
    assert_eq!(run.report.cases_opened, 1);
    let case = &cases(store.as_ref()).await[0];
    assert_eq!(
        case.title,
        "sshd: brute force trying to get access to the system. Non existent user. on \
         localhost.localdomain"
    );
    assert_eq!(case.group_key, "wazuh-5712|localhost.localdomain");
}

#[tokio::test]
async fn a_message_that_is_not_an_alert_is_dead_lettered_and_the_rest_flows() {
    // Line 2 of Wazuh's malformed sample is a broken alerts.json record; the alerts
    // around it are tr0llope lines 29 and 165.
    let broken = support::line(support::WAZUH_MALFORMED, 2);
    let messages = vec![
        Message::json(&eve_alert(TR0LLOPE, 29, DEMO_CA)).unwrap(),
        Message {
            id: None,
            key: None,
            payload: broken.clone().into(),
        },
        // Valid JSON, but a Wazuh alert rather than a Kastell alert.
        Message {
            id: None,
            key: None,
            payload: support::line(support::WAZUH_SSHD, 1).into(),
        },
        Message::json(&eve_alert(TR0LLOPE, 165, DEMO_CA)).unwrap(),
    ];
    let (_dir, store) = sqlite_store().await;
    let run = run(Arc::clone(&store), messages).await;

    assert_eq!(run.report.received, 4);
    assert_eq!(run.report.rejected, 2);
    assert_eq!(run.report.dead_letters, 2);
    assert_eq!(run.report.stored, 2);
    assert_eq!(run.report.alerts_attached, 1);
    assert_eq!(run.dead.len(), 2);
    let letter = &run.dead[0];
    assert_eq!(letter.stage, "cases");
    assert_eq!(letter.topic, "kastell.alerts");
    assert_eq!(letter.payload, broken);
    assert!(
        letter
            .reason
            .starts_with("undecodable alert: decoding a message from JSON: "),
        "{}",
        letter.reason
    );
    // Wazuh's numeric rule level is not one of Sigma's level names.
    assert_eq!(run.dead[1].payload, support::line(support::WAZUH_SSHD, 1));
    assert!(
        run.dead[1].reason.starts_with("undecodable alert: "),
        "{}",
        run.dead[1].reason
    );
}

#[tokio::test]
async fn a_store_error_costs_one_alert_and_is_dead_lettered() {
    // The store refuses to open cases of the IcedID cookie rule (tr0llope line 17); the
    // alerts of lines 16 and 29 before and after it are filed.
    let (_dir, inner) = sqlite_store().await;
    let store: Arc<dyn CaseStore> = Arc::new(FailingStore {
        inner: Arc::clone(&inner),
        rule_id: "suricata-2032086".into(),
        all: false,
    });
    let failing = eve_alert(TR0LLOPE, 17, 2032086);
    let alerts = [
        eve_alert(TR0LLOPE, 16, 2030053),
        failing.clone(),
        eve_alert(TR0LLOPE, 29, DEMO_CA),
    ];
    let run = run_alerts(store, &alerts).await;

    assert_eq!(run.report.errors, 1);
    assert_eq!(run.report.dead_letters, 1);
    assert_eq!(run.report.cases_opened, 2);
    assert_eq!(run.dead.len(), 1);
    assert!(
        run.dead[0]
            .reason
            .starts_with("case store: case-store query test fault"),
        "{}",
        run.dead[0].reason
    );
    let letter: Alert = serde_json::from_str(&run.dead[0].payload).unwrap();
    assert_eq!(letter, failing);
    assert_eq!(cases(inner.as_ref()).await.len(), 2);

    // The alert was stored before the failure; a redelivery once the store works again
    // groups it instead of calling it a duplicate.
    let retry = run_alerts(Arc::clone(&inner), &[failing]).await;
    assert_eq!(retry.report.duplicates, 0);
    assert_eq!(retry.report.cases_opened, 1);
    assert_eq!(cases(inner.as_ref()).await.len(), 3);
}

#[tokio::test]
async fn case_events_stay_open_unless_asked_to_close() {
    let (_dir, store) = sqlite_store().await;
    let bus = InProcessBus::new(16);
    let alerts = subscribe_alerts(&bus).await.unwrap();
    bus.close(Topic::Alerts).await;
    let stats = CasesStats::new();
    run_cases_on(&bus, alerts, store, CaseSettings::default(), &stats)
        .await
        .unwrap();
    // The API still publishes approvals after the stage ends.
    publish_json(
        &bus,
        Topic::CaseEvents,
        &CaseEvent::ActionApproved { action_id: 1 },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_alert_that_raises_its_case_severity_is_announced_after_the_attachment() {
    // The Wazuh sshd alert twice, the second time after its rule was raised to
    // critical (a severity override): the case follows and says so.
    let (_dir, store) = sqlite_store().await;
    let first = wazuh_sshd_alert();
    let mut second = first.clone();
    second.rule.level = kastell_core::Level::Critical;
    second.timestamp += Duration::seconds(30);
    second.id = format!("{}-raised", first.id);
    let run = run_alerts(store.clone(), &[first.clone(), second.clone()]).await;
    let kinds: Vec<_> = summary(&run.events)
        .into_iter()
        .map(|(kind, case, detail)| {
            (
                kind,
                case,
                if kind == "raised" {
                    detail
                } else {
                    String::new()
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("opened", 1, String::new()),
            ("attached", 1, String::new()),
            ("raised", 1, "critical".to_owned()),
        ]
    );
    match &run.events[2] {
        CaseEvent::SeverityRaised { from, .. } => assert_eq!(*from, first.rule.level),
        other => panic!("{other:?}"),
    }
    // A repeat of the same alert is a duplicate and raises nothing again.
    let again = run_alerts(store, &[second]).await;
    assert!(again.events.is_empty(), "{:?}", again.events);
}
