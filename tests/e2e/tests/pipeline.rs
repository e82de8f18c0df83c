//! The whole pipeline on the bundled example: real Suricata and Wazuh records through
//! ingest, the example's Sigma rules, the demo MISP feed, case grouping and the demo
//! playbook. Every expected number is derived in a comment from the sample data, and the
//! helpers below recount the facts it rests on from the files themselves, so a changed
//! sample fails here with the reason rather than silently changing the figures.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kastell::pipeline::{run, Mode};
use kastell::summary::Summary;
use kastell_core::store::{ActionFilter, ActionStatus, CaseFilter};
use kastell_core::{CaseStore, SqliteStore};
use serde_json::Value;

fn data(path: &str) -> PathBuf {
    kastell_e2e::example_dir().join("data").join(path)
}

fn eve_records() -> Vec<Value> {
    std::fs::read_to_string(data("suricata/eve.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eve_alerts_of_severity(severities: &[u64]) -> usize {
    eve_records()
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .filter(|r| severities.contains(&r["alert"]["severity"].as_u64().unwrap()))
        .count()
}

async fn replay() -> (Summary, tempfile::TempDir) {
    let setup = kastell::setup::prepare(&kastell_e2e::example_dir(), &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = run(setup, dir.path(), Mode::Once).await.unwrap();
    (summary, dir)
}

fn by_rule(summary: &Summary) -> BTreeMap<&str, u64> {
    summary
        .alerts_by_rule
        .iter()
        .map(|r| (r.rule_id.as_str(), r.count))
        .collect()
}

const SURICATA_HIGH: &str = "9507d32f-0b57-4312-ae66-2a48f00081c2";
const SURICATA_LOW: &str = "a8a7d977-91a3-4bcc-af24-01916bd47019";
const SMB_ADMIN_SHARE: &str = "e9a40f3f-ab5f-44f3-a897-c8e2a29239c2";
const WAZUH_MISP: &str = "dd7ed1e2-cfcb-4bd2-a899-b94ef3f80f9e";
const WAZUH_SSHD: &str = "d0229745-b977-4788-975e-4729fe25e99b";
const INTEL: &str = "kastell-intel-tweetfeed";

#[tokio::test]
async fn the_bundled_example_gives_exactly_these_alerts_matches_and_cases() {
    let (summary, dir) = replay().await;

    // Input: eve.json has 1,814 Suricata records, all valid; alerts.json has 4 Wazuh
    // lines, of which line 4 is Wazuh's deliberately broken sample (a key that is not a
    // string), the one rejection.
    assert_eq!(eve_records().len(), 1814);
    assert_eq!(summary.events_in, 1814 + 4);
    assert_eq!(summary.events_rejected, 1);
    assert_eq!(summary.rejections[0].line, 4);
    assert!(summary.rejections[0].file.ends_with("wazuh/alerts.json"));
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);

    // Rule alerts. Suricata's own alerts: 4 of severity 1 (two IcedID requests, two
    // Windows DOS-prompt signatures) and 30 of severity 3 (29 "OpenSSL Demo CA" TLS
    // certificates and one applayer anomaly); none of severity 2.
    assert_eq!(eve_alerts_of_severity(&[1]), 4);
    assert_eq!(eve_alerts_of_severity(&[3, 4]), 30);
    assert_eq!(eve_alerts_of_severity(&[2]), 0);
    // The infected host 172.16.0.153 tried the domain controller 172.16.0.12's ADMIN$ and
    // C$ shares six times and was refused each time (smb records with
    // STATUS_ACCESS_DENIED on a TREE_CONNECT). The two MISP-integration alerts and the
    // sshd brute-force alert in alerts.json each raise the matching Wazuh rule.
    let rules = by_rule(&summary);
    assert_eq!(rules.get(SURICATA_HIGH), Some(&4));
    assert_eq!(rules.get(SURICATA_LOW), Some(&30));
    assert_eq!(rules.get(SMB_ADMIN_SHARE), Some(&6));
    assert_eq!(rules.get(WAZUH_MISP), Some(&2));
    assert_eq!(rules.get(WAZUH_SSHD), Some(&1));

    // Intel: the demo feed's Kastell-written event lists the IcedID C2 host and addresses
    // seen in eve.json; 175 records carry at least one of them (236 observables in all),
    // 33 of those records are Suricata alerts already, so 142 records raise an intel
    // alert of their own.
    assert_eq!(summary.intel_matches, 236);
    assert_eq!(summary.intel_alerts, 142);
    assert_eq!(rules.get(INTEL), Some(&142));

    let rule_alerts = 4 + 30 + 6 + 2 + 1;
    assert_eq!(summary.alerts, rule_alerts + 142);
    assert_eq!(summary.alerts_by_level.high, 4 + 2 + 1 + 142);
    assert_eq!(summary.alerts_by_level.medium, 6);
    assert_eq!(summary.alerts_by_level.low, 30);
    assert_eq!(summary.alerts_by_level.critical, 0);
    assert_eq!(rules.len(), 6, "no other rule fires: {rules:?}");

    // Cases group alerts of one rule on one host within an hour of event time.
    let store = SqliteStore::open_dir(dir.path()).await.unwrap();
    let cases = store.list_cases(&CaseFilter::default()).await.unwrap();
    let mut per_rule: BTreeMap<&str, Vec<(Option<&str>, i64)>> = BTreeMap::new();
    for case in &cases {
        per_rule
            .entry(case.rule_id.as_str())
            .or_default()
            .push((case.host.as_deref(), case.alert_count));
    }
    // The Suricata high alerts all come from 172.16.0.153, in two bursts more than an
    // hour apart (the IcedID download at 15:47, the DOS-prompt commands at 17:36): two
    // cases of two.
    assert_eq!(
        per_rule[SURICATA_HIGH],
        [(Some("172.16.0.153"), 2), (Some("172.16.0.153"), 2)]
    );
    // The low alerts are the TLS certificates, keyed on the server that sent them:
    // 66.63.168.75 (22), 138.68.255.102 (3), 94.140.114.103 (3: one at 15:48, two at
    // 17:22, more than an hour apart), 137.184.208.116 (1), and the infected host's one
    // applayer anomaly.
    let mut low = per_rule[SURICATA_LOW].clone();
    low.sort();
    assert_eq!(
        low,
        [
            (Some("137.184.208.116"), 1),
            (Some("138.68.255.102"), 3),
            (Some("172.16.0.153"), 1),
            (Some("66.63.168.75"), 22),
            (Some("94.140.114.103"), 1),
            (Some("94.140.114.103"), 2),
        ]
    );
    assert_eq!(per_rule[SMB_ADMIN_SHARE], [(Some("172.16.0.153"), 6)]);
    // The two MISP-integration alerts come from two different agents.
    let mut misp = per_rule[WAZUH_MISP].clone();
    misp.sort();
    assert_eq!(
        misp,
        [(Some("WIN-7FK8M79Q5R6"), 1), (Some("ubunutu2004vm"), 1)]
    );
    assert_eq!(per_rule[WAZUH_SSHD], [(Some("localhost.localdomain"), 1)]);
    // Intel alerts: 141 from the infected host's own traffic, and one for the fileinfo
    // record of the gzip payload, whose source is the IcedID loader server 67.205.184.237.
    let mut intel = per_rule[INTEL].clone();
    intel.sort();
    assert_eq!(
        intel,
        [(Some("172.16.0.153"), 141), (Some("67.205.184.237"), 1)]
    );
    assert_eq!(cases.len(), 2 + 6 + 1 + 2 + 1 + 2);
    assert_eq!(summary.cases_opened, cases.len() as u64);

    // The playbook acts on cases opened for high alerts: the 7 high cases (2 Suricata
    // high, 2 Wazuh MISP, 1 sshd, 2 intel) each get the log step run at once and the
    // webhook step left pending for approval.
    let high_cases = cases
        .iter()
        .filter(|c| c.severity == kastell_core::Level::High)
        .count();
    assert_eq!(high_cases, 7);
    let actions = store.list_actions(&ActionFilter::default()).await.unwrap();
    let pending: Vec<_> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Pending)
        .collect();
    assert_eq!(pending.len(), 7);
    assert!(pending.iter().all(|a| a.step == "notify-soc-chat"));
    assert_eq!(summary.actions_pending, 7);
    assert_eq!(summary.actions_executed, 7);
    assert!(actions
        .iter()
        .filter(|a| a.step == "record-case")
        .all(|a| a.status == ActionStatus::Succeeded));
}

#[tokio::test]
async fn alerts_keep_the_rule_author_and_the_intel_context() {
    let (_summary, dir) = replay().await;
    let store = SqliteStore::open_dir(dir.path()).await.unwrap();
    let alerts = store
        .list_alerts(&kastell_core::store::AlertFilter::default())
        .await
        .unwrap();
    // The Detection Rule License requires the author on every alert of a SigmaHQ rule;
    // every alert here carries one.
    assert!(alerts.iter().all(|a| a.alert.rule.author.is_some()));
    // Each Suricata high alert is on an IcedID record the demo feed knows, so enrich adds
    // the feed's match to the rule alert instead of raising a second alert.
    let high: Vec<_> = alerts
        .iter()
        .filter(|a| a.alert.rule.id == SURICATA_HIGH)
        .collect();
    assert_eq!(high.len(), 4);
    assert!(high.iter().all(|a| !a.alert.intel.is_empty()));
    assert!(high.iter().all(|a| a.alert.intel[0].feed == "tweetfeed"));
    // The matched event carries the match in ECS form too.
    let event = &high[0].alert.events[0];
    assert!(event.get("threat.enrichments").is_some());
}

#[tokio::test]
async fn a_second_replay_into_the_same_store_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let setup = kastell::setup::prepare(&kastell_e2e::example_dir(), &[])
            .await
            .unwrap();
        let summary = run(setup, dir.path(), Mode::Once).await.unwrap();
        if round == 1 {
            // Alert ids are derived from rule and event, so every alert is a duplicate,
            // no case opens and no action is created twice.
            assert_eq!(summary.cases_opened, 0);
            assert_eq!(summary.actions_pending, 7);
        }
    }
}
