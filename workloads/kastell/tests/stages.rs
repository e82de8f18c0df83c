//! The stage commands as separate processes over a real nats-server (KASTELL_NATS_URL;
//! `tests/services/ensure-nats` starts one): ingest → correlate → enrich → cases (→ respond)
//! on the bundled example store exactly the alerts and cases `kastell run --once` counts,
//! also when a stage is killed with SIGKILL mid-run and started again, when correlate runs
//! as three replicas on the events partitions, and when the nats-server itself is killed
//! and restarted mid-stream (with the case store on PostgreSQL when KASTELL_POSTGRES_URL is
//! set).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;
use support::{copy_dir, example_with_http_sensor, repo_root};

fn nats_url() -> Option<String> {
    match std::env::var("KASTELL_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIPPED: KASTELL_NATS_URL not set (tests/services/ensure-nats starts one)");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stage processes of one test, on a namespace of their own; killed when the test
/// ends, whatever happened.
struct Pipeline {
    nats: String,
    namespace: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The case store of cases and respond (`--store`); their own --data without it.
    store: Option<String>,
    children: BTreeMap<String, (Child, u16)>,
}

/// Held by the tests that share the server of KASTELL_NATS_URL: JetStream reserves each
/// stream's byte limit from the server's storage, and several pipelines at once exceed it.
static SHARED_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn shared_server() -> std::sync::MutexGuard<'static, ()> {
    SHARED_SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pipeline {
    fn new(nats: String, test: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Pipeline {
            nats,
            namespace: format!("{test}{}x{nanos}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
            config: repo_root().join("examples/soc"),
            store: None,
            children: BTreeMap::new(),
        }
    }

    fn start(&mut self, stage: &str) {
        self.start_as(stage, stage, &[]);
    }

    /// Starts `stage` under the name `name` (several replicas of one stage have several
    /// names) with `extra` flags; a restarted name keeps its port.
    fn start_as(&mut self, name: &str, stage: &str, extra: &[String]) {
        let port = self
            .children
            .get(name)
            .map_or_else(free_port, |(_, port)| *port);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let data = self.dir.path().join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_kastell"));
        command
            .args(["--log", "info", stage, "--bus", "nats", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&data)
            .args(extra);
        if let (Some(store), "cases" | "respond") = (&self.store, stage) {
            command.arg("--store").arg(store);
        }
        let child = command
            .env("KASTELL_NATS_URL", &self.nats)
            .env("KASTELL_NATS_NAMESPACE", &self.namespace)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(name.to_owned(), (child, port));
    }

    /// Polls the stage's log until a line contains `text`.
    fn wait_for_log(&mut self, stage: &str, text: &str) {
        for _ in 0..6000 {
            if self.log(stage).contains(text) {
                return;
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{stage} never logged {text:?}; its log:\n{}",
            self.log(stage)
        );
    }

    fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{stage}.log"))).unwrap_or_default()
    }

    /// A counter from the stage's /metrics; `None` while it does not answer yet.
    fn metric(&self, stage: &str, name: &str) -> Option<u64> {
        let (_, port) = self.children.get(stage)?;
        let text = http_get(*port, "/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls until the counter reaches `at_least`; the stage's log on giving up.
    fn wait_for(&mut self, stage: &str, name: &str, at_least: u64) -> u64 {
        for _ in 0..6000 {
            if let Some(value) = self.metric(stage, name) {
                if value >= at_least {
                    return value;
                }
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{stage} never counted {at_least} {name} (last {:?}); its log:\n{}",
            self.metric(stage, name),
            self.log(stage)
        );
    }

    /// Like [`Pipeline::wait_for`], but says whether the counter got there instead of
    /// failing.
    fn reaches(&mut self, stage: &str, name: &str, at_least: u64) -> bool {
        for _ in 0..6000 {
            if self
                .metric(stage, name)
                .is_some_and(|value| value >= at_least)
            {
                return true;
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until cases has filed every alert it received (stored or recognised as a
    /// duplicate), so the counters are final for what reached it.
    fn settle(&mut self) {
        for _ in 0..6000 {
            let received = self.metric("cases", RECEIVED);
            let stored = self.metric("cases", STORED);
            let duplicates = self.metric("cases", "kastell_cases_duplicate_alerts_total");
            if let (Some(r), Some(s), Some(d)) = (received, stored, duplicates) {
                if r == s + d {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cases never settled; its log:\n{}", self.log("cases"));
    }

    /// Polls until the group's consumer of the topic's stream has nothing left to deliver
    /// and nothing unacknowledged: every message published so far was handled.
    fn wait_drained(&mut self, topic: &str, group: &str) {
        let stream = format!("{}_{topic}", self.namespace)
            .to_uppercase()
            .replace(['-', '.'], "_");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for _ in 0..6000 {
            let drained = runtime.block_on(async {
                let client = async_nats::connect(&self.nats).await.ok()?;
                let context = async_nats::jetstream::new(client);
                let stream = context.get_stream(&stream).await.ok()?;
                let info = stream.consumer_info(group).await.ok()?;
                Some(info.num_pending == 0 && info.num_ack_pending == 0)
            });
            if drained == Some(true) {
                return;
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{group} never drained {stream}");
    }

    /// The cases stage's counters agree with the cases of `reference`: those it opened,
    /// less those it merged away, are the cases holding alerts there.
    fn assert_cases_counted(&self, reference: &Stored) {
        let opened = self.metric("cases", OPENED).unwrap();
        let merged = self.metric("cases", MERGED).unwrap();
        let cases = reference.cases_holding_alerts().len() as u64;
        eprintln!("cases opened {opened}, merged {merged} (single process: {cases})");
        assert_eq!(opened - merged, cases);
    }

    fn assert_running(&mut self) {
        let mut exited = None;
        for (stage, (child, _)) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some((stage.clone(), status));
            }
        }
        if let Some((stage, status)) = exited {
            panic!(
                "{stage} exited early ({status}); its log:\n{}",
                self.log(&stage)
            );
        }
    }

    fn kill9(&mut self, stage: &str) {
        let (child, _) = self.children.get_mut(stage).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM to every stage; each must exit with success.
    fn stop(&mut self) {
        for (child, _) in self.children.values() {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
        let stages: Vec<String> = self.children.keys().cloned().collect();
        for stage in stages {
            let (child, _) = self.children.get_mut(&stage).unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{stage}: {status}; log:\n{}",
                self.log(&stage)
            );
        }
        self.children.clear();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (child, _) in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // JetStream reserves every stream's byte limit (1 GiB each) from the server's
        // storage, so a server shared by many test runs fills up unless each run removes
        // its streams, and those that runs killed before their cleanup left behind.
        delete_streams(&self.nats, |stream| {
            stream.starts_with(&format!("{}_", self.namespace.to_uppercase()))
                || left_by_a_dead_test(stream)
        });
    }
}

/// Whether a stream belongs to a namespace of this file's tests (`<test><pid>x<nanos>`)
/// whose process has ended.
fn left_by_a_dead_test(stream: &str) -> bool {
    let Some((namespace, _)) = stream.split_once('_') else {
        return false;
    };
    let Some(rest) = TEST_NAMESPACES
        .iter()
        .find_map(|test| namespace.strip_prefix(&test.to_uppercase()))
    else {
        return false;
    };
    let Some(pid) = rest
        .split_once('X')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

const TEST_NAMESPACES: [&str; 5] = ["stages", "killed", "replicas1", "replicas3", "natsrestart"];

fn delete_streams(url: &str, doomed: impl Fn(&str) -> bool) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use futures::TryStreamExt;
        let Ok(client) = async_nats::connect(url).await else {
            return;
        };
        let context = async_nats::jetstream::new(client);
        let names: Vec<String> = match context.stream_names().try_collect().await {
            Ok(names) => names,
            Err(_) => return,
        };
        for name in names.into_iter().filter(|n| doomed(n)) {
            let _ = context.delete_stream(&name).await;
        }
    });
}

/// A plain HTTP/1.1 GET on loopback; `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.contains(" 200 ").then_some(answer)
}

const RECEIVED: &str = "kastell_cases_alerts_received_total";
const STORED: &str = "kastell_cases_alerts_stored_total";
const OPENED: &str = "kastell_cases_opened_total";
const ATTACHED: &str = "kastell_cases_alerts_attached_total";
const MERGED: &str = "kastell_cases_merged_total";

#[test]
fn four_stage_processes_store_the_alerts_and_cases_of_the_single_process_run() {
    let Some(nats) = nats_url() else { return };
    let _shared = shared_server();
    let reference_dir = tempfile::tempdir().unwrap();
    let summary = single_process_in(&repo_root().join("examples/soc"), reference_dir.path());
    let alerts = summary["alerts"].as_u64().unwrap();
    let reference = read_store(&reference_dir.path().display().to_string());
    let mut pipeline = Pipeline::new(nats, "stages");
    for stage in ["correlate", "enrich", "cases"] {
        pipeline.start(stage);
    }
    pipeline.wait_for("cases", STORED, 0);
    pipeline.wait_for("correlate", "kastell_correlate_events_total", 0);
    pipeline.wait_for("enrich", "kastell_enrich_detections_total", 0);
    pipeline.start("ingest");

    pipeline.wait_for("cases", STORED, alerts);
    pipeline.settle();
    assert_eq!(pipeline.metric("cases", STORED), Some(alerts));
    pipeline.assert_cases_counted(&reference);
    pipeline.stop();
    let stored = read_store(&pipeline.dir.path().join("cases").display().to_string());
    assert_eq!(stored.alert_set(), reference.alert_set());
    stored.assert_same_cases(&reference);
}

#[test]
fn a_stage_killed_mid_run_and_restarted_loses_and_duplicates_nothing() {
    let Some(nats) = nats_url() else { return };
    let _shared = shared_server();
    let reference_dir = tempfile::tempdir().unwrap();
    let summary = single_process_in(&repo_root().join("examples/soc"), reference_dir.path());
    let alerts = summary["alerts"].as_u64().unwrap();
    let mut pipeline = Pipeline::new(nats, "killed");
    for stage in ["correlate", "enrich", "cases"] {
        pipeline.start(stage);
    }
    pipeline.wait_for("cases", STORED, 0);
    pipeline.wait_for("correlate", "kastell_correlate_events_total", 0);
    pipeline.wait_for("enrich", "kastell_enrich_detections_total", 0);
    pipeline.start("ingest");

    // Enrich is killed as soon as it has taken in its first detections: what it held
    // unacknowledged comes back to its next incarnation, and what it had already
    // forwarded is dropped by the alert ids (by the stream's duplicate window, or by the
    // case store).
    let seen = pipeline.wait_for("enrich", "kastell_enrich_detections_total", 1);
    pipeline.kill9("enrich");
    eprintln!("enrich killed after {seen} detections");
    pipeline.start("enrich");

    pipeline.wait_for("cases", STORED, alerts);
    pipeline.settle();
    assert_eq!(pipeline.metric("cases", STORED), Some(alerts));
    // Every alert is in exactly one case, and the cases are those of the single process:
    // a redelivered alert that links two cases opened meanwhile merges them
    // (docs/cluster.md, "Case grouping under redelivery").
    let opened = pipeline.metric("cases", OPENED).unwrap();
    let attached = pipeline.metric("cases", ATTACHED).unwrap();
    assert_eq!(opened + attached, alerts);
    let reference = read_store(&reference_dir.path().display().to_string());
    pipeline.assert_cases_counted(&reference);
    pipeline.stop();
    let stored = read_store(&pipeline.dir.path().join("cases").display().to_string());
    assert_eq!(stored.alert_set(), reference.alert_set());
    stored.assert_same_cases(&reference);
}

const EVENTS: &str = "kastell_correlate_events_total";
const ACTIONS: &str = "kastell_respond_actions_created_total";
const MISMATCHES: &str = "kastell_correlate_partition_plan_mismatches_total";

/// Two correlation rules over the example's real Suricata alerts, written for these tests:
/// one groups by source address, the other by source and destination, so the events are
/// keyed by `src_ip` and spread over the partitions (the sample has five sources).
const CORRELATIONS: &str = r#"apiVersion: kastell.eu/v1alpha1
kind: DetectionRule
metadata:
  name: suricata-alert-bursts
  namespace: soc
spec:
  sigma: |
      title: Repeated Suricata alerts from one source
      id: 3d0c4b8e-partition-test-burst
      level: medium
      correlation:
          type: event_count
          rules:
              - a8a7d977-91a3-4bcc-af24-01916bd47019
              - 9507d32f-0b57-4312-ae66-2a48f00081c2
          group-by:
              - src_ip
          timespan: 10m
          condition:
              gte: 2
          generate: true
      ---
      title: Repeated Suricata alerts between two hosts
      id: 5f1e2a9c-partition-test-pair
      level: medium
      correlation:
          type: event_count
          rules:
              - a8a7d977-91a3-4bcc-af24-01916bd47019
          group-by:
              - src_ip
              - dest_ip
          timespan: 30m
          condition:
              gte: 3
          generate: true
"#;

/// The bundled example plus [`CORRELATIONS`].
fn example_with_correlations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("examples/soc"), dir.path());
    std::fs::write(
        dir.path().join("rules/test-correlations.yaml"),
        CORRELATIONS,
    )
    .unwrap();
    dir
}

/// What the single process stores for `config`: its summary, and the store it leaves in
/// `data`.
fn single_process_in(config: &Path, data: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(["run", "--once", "--output", "json", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The alerts, cases and actions in a case store (a SQLite directory or a PostgreSQL URL).
struct Stored {
    alerts: Vec<kastell_core::store::AlertRecord>,
    cases: Vec<kastell_core::store::CaseRecord>,
    actions: Vec<kastell_core::store::ActionRecord>,
    /// Each case merged away (closed as a duplicate), and the case it went into.
    merged_into: BTreeMap<i64, i64>,
}

fn read_store(url: &str) -> Stored {
    let url: kastell_core::StoreUrl = url.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = kastell_core::store::open(&url).await.unwrap();
        let alerts = store
            .list_alerts(&kastell_core::store::AlertFilter {
                limit: Some(100_000),
                ..Default::default()
            })
            .await
            .unwrap();
        let cases = store
            .list_cases(&kastell_core::store::CaseFilter {
                limit: Some(100_000),
                ..Default::default()
            })
            .await
            .unwrap();
        let actions = store
            .list_actions(&kastell_core::store::ActionFilter::default())
            .await
            .unwrap();
        let mut merged_into = BTreeMap::new();
        for case in cases.iter().filter(|c| c.alert_count == 0) {
            let timeline = store.timeline(case.id, 0, 10_000).await.unwrap();
            if let Some(entry) = timeline.iter().find(|e| e.kind == "merged_into") {
                merged_into.insert(case.id, entry.details["to_case"].as_i64().unwrap());
            }
        }
        Stored {
            alerts,
            cases,
            actions,
            merged_into,
        }
    })
}

impl Stored {
    /// `<rule id> <alert id>` of every alert: the alert id is a hash of the rule and the
    /// events, so equal sets mean the same detections, correlations included.
    fn alert_set(&self) -> BTreeSet<String> {
        self.alerts
            .iter()
            .map(|a| format!("{} {}", a.alert.rule.id, a.id))
            .collect()
    }

    /// The alert ids of a case, sorted.
    fn alerts_of(&self, case_id: i64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .alerts
            .iter()
            .filter(|a| a.case_id == Some(case_id))
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Each case that holds alerts, as its group key and its alerts: what a case is,
    /// whatever id the order of arrival gave it.
    fn cases_holding_alerts(&self) -> BTreeSet<(String, Vec<String>)> {
        self.cases
            .iter()
            .filter(|c| c.alert_count > 0)
            .map(|c| (c.group_key.clone(), self.alerts_of(c.id)))
            .collect()
    }

    /// The case that holds what `case_id` held: itself, or the case it was merged into
    /// (through every later merge).
    fn surviving(&self, case_id: i64) -> i64 {
        let mut id = case_id;
        while let Some(next) = self.merged_into.get(&id) {
            id = *next;
        }
        id
    }

    /// The same cases as `reference`: every alert is in exactly one case (the store keeps
    /// one case id per alert) of the alert's own group key, the cases' alert counts add
    /// up to the alerts, every case without alerts was merged into one that has them, and
    /// the cases holding alerts hold the same alerts as `reference`'s.
    fn assert_same_cases(&self, reference: &Stored) {
        let cases: BTreeMap<i64, &kastell_core::store::CaseRecord> =
            self.cases.iter().map(|c| (c.id, c)).collect();
        for alert in &self.alerts {
            let case = alert.case_id.and_then(|id| cases.get(&id));
            let case = case.unwrap_or_else(|| panic!("alert {} is in no case", alert.id));
            assert_eq!(
                case.group_key,
                kastell_cases::group_key(&alert.alert),
                "alert {} is in a case of another group",
                alert.id
            );
        }
        let filed: i64 = self.cases.iter().map(|c| c.alert_count).sum();
        assert_eq!(filed, self.alerts.len() as i64);
        for case in self.cases.iter().filter(|c| c.alert_count == 0) {
            let into = self.surviving(case.id);
            assert!(
                into != case.id && cases[&into].alert_count > 0,
                "case {} holds no alert and was not merged",
                case.id
            );
        }
        assert_eq!(
            self.cases_holding_alerts(),
            reference.cases_holding_alerts()
        );
    }

    /// The actions as the playbook steps each case ran, with the case named by the
    /// alerts of the case it survives in; every step at most once per case.
    fn steps_by_case(&self) -> BTreeMap<i64, BTreeSet<(String, String)>> {
        let mut steps: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
        for action in &self.actions {
            let fresh = steps
                .entry(action.case_id)
                .or_default()
                .insert((action.playbook.clone(), action.step.clone()));
            assert!(
                fresh,
                "case {} ran {}/{} twice",
                action.case_id, action.playbook, action.step
            );
        }
        steps
    }
}

/// When the correlate replicas start, relative to ingest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Before ingest: each event is read soon after it is published.
    Live,
    /// After ingest has published every event: each replica finds a backlog on all its
    /// partitions and reads them side by side, so one partition runs ahead of another in
    /// event time (as after a restart or a scale-up). Correlation state that depended on
    /// the interleaving of partitions (one lateness watermark across all groups) lost
    /// correlations here.
    Backlog,
}

/// Runs the pipeline with `replicas` correlate replicas on `config` until cases stored
/// `alerts`, and returns what it stored.
fn with_replicas(nats: &str, config: &Path, replicas: u32, alerts: u64, when: Start) -> Stored {
    let mut pipeline = Pipeline::new(nats.to_owned(), &format!("replicas{replicas}"));
    pipeline.config = config.to_owned();
    let names: Vec<String> = (0..replicas).map(|r| format!("correlate-{r}")).collect();
    let start_replicas = |pipeline: &mut Pipeline| {
        for (r, name) in names.iter().enumerate() {
            let flags = [
                "--replica-index".to_owned(),
                r.to_string(),
                "--replicas".to_owned(),
                replicas.to_string(),
            ];
            pipeline.start_as(name, "correlate", &flags);
        }
        for name in &names {
            pipeline.wait_for(name, EVENTS, 0);
        }
    };
    if when == Start::Live {
        start_replicas(&mut pipeline);
    }
    pipeline.start("enrich");
    pipeline.start("cases");
    pipeline.wait_for("cases", STORED, 0);
    pipeline.wait_for("enrich", "kastell_enrich_detections_total", 0);
    pipeline.start("ingest");
    if when == Start::Backlog {
        pipeline.wait_for_log("ingest", "replay done");
        start_replicas(&mut pipeline);
    }

    // Not wait_for: when an alert is missing, the comparison with the single-process run
    // below names it, which a timeout here would not.
    if !pipeline.reaches("cases", STORED, alerts) {
        eprintln!("cases stored fewer than the {alerts} alerts of the single-process run");
    }
    pipeline.settle();
    let evaluated: Vec<u64> = names
        .iter()
        .map(|name| pipeline.metric(name, EVENTS).unwrap())
        .collect();
    eprintln!("{replicas} correlate replicas evaluated {evaluated:?} events");

    // Every replica had a share of the work: the partitions spread the events, all keyed
    // by the plan the replicas' own rules make.
    assert!(evaluated.iter().all(|n| *n > 0), "{evaluated:?}");
    for name in &names {
        assert_eq!(pipeline.metric(name, MISMATCHES), Some(0), "{name}");
    }
    pipeline.stop();
    // What each replica's windows dropped (late inputs, evictions), for a failure below.
    for name in &names {
        let log = pipeline.log(name);
        let state = log
            .lines()
            .filter(|l| l.contains("correlation state at stop"));
        for line in state {
            eprintln!("{name}: {line}");
        }
    }
    read_store(&pipeline.dir.path().join("cases").display().to_string())
}

#[test]
fn three_correlate_replicas_store_exactly_the_alerts_of_one() {
    let Some(nats) = nats_url() else { return };
    let _shared = shared_server();
    let config = example_with_correlations();
    let data = tempfile::tempdir().unwrap();
    let summary = single_process_in(config.path(), data.path());
    let alerts = summary["alerts"].as_u64().unwrap();

    let one = with_replicas(&nats, config.path(), 1, alerts, Start::Backlog);
    let three = with_replicas(&nats, config.path(), 3, alerts, Start::Live);

    let correlated = |s: &Stored| {
        s.alerts
            .iter()
            .filter(|a| a.alert.rule.id.contains("partition-test"))
            .count()
    };
    assert!(correlated(&one) > 0, "the correlations must fire");
    let reference = read_store(&data.path().display().to_string());
    let missing: Vec<_> = reference
        .alerts
        .iter()
        .filter(|a| !one.alerts.iter().any(|b| b.alert.id == a.alert.id))
        .map(|a| {
            (
                a.alert.rule.id.clone(),
                a.alert.id.clone(),
                a.alert.host.clone(),
            )
        })
        .collect();
    let extra: Vec<_> = one
        .alerts
        .iter()
        .filter(|a| !reference.alerts.iter().any(|b| b.alert.id == a.alert.id))
        .map(|a| {
            (
                a.alert.rule.id.clone(),
                a.alert.id.clone(),
                a.alert.host.clone(),
            )
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?} extra {extra:?}"
    );
    assert_eq!(one.alerts.len() as u64, alerts);
    assert_eq!(one.alert_set(), three.alert_set());
    assert_eq!(one.alert_set(), reference.alert_set());
    one.assert_same_cases(&reference);
    three.assert_same_cases(&reference);
}

/// A nats-server of the test's own, on its own port and JetStream store, so that it can be
/// killed and restarted without disturbing the shared one.
struct PrivateNats {
    port: u16,
    store: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    fn start() -> Self {
        let store = tempfile::tempdir().unwrap();
        let log = store.path().join("nats.log");
        let mut nats = PrivateNats {
            port: free_port(),
            store,
            log,
            child: None,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (tests/services/ensure-nats installs it)");
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nats-server did not listen; {}",
            std::fs::read_to_string(&self.log).unwrap()
        );
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A PostgreSQL schema of one test, as the store URL the stages take; `None` without
/// KASTELL_POSTGRES_URL.
fn postgres_schema(test: &str) -> Option<String> {
    let url = match std::env::var("KASTELL_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("SKIPPED (PostgreSQL part): KASTELL_POSTGRES_URL not set; cases on SQLite");
            return None;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("{test}_{}_{nanos}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
    });
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

#[test]
fn a_nats_server_killed_mid_stream_and_restarted_loses_and_duplicates_nothing() {
    // KASTELL_NATS_URL set means nats-server is installed; this test runs its own.
    let Some(_) = nats_url() else { return };
    let reference_dir = tempfile::tempdir().unwrap();
    let summary = single_process_in(&repo_root().join("examples/soc"), reference_dir.path());
    let alerts = summary["alerts"].as_u64().unwrap();
    let actions = summary["actions_pending"].as_u64().unwrap()
        + summary["actions_executed"].as_u64().unwrap();
    let reference = read_store(&reference_dir.path().display().to_string());

    let mut nats = PrivateNats::start();
    let mut pipeline = Pipeline::new(nats.url(), "natsrestart");
    let store = postgres_schema("natsrestart")
        .unwrap_or_else(|| pipeline.dir.path().join("store").display().to_string());
    pipeline.store = Some(store.clone());
    for stage in ["correlate", "enrich", "cases", "respond"] {
        pipeline.start(stage);
    }
    pipeline.wait_for("cases", STORED, 0);
    pipeline.wait_for("correlate", EVENTS, 0);
    pipeline.wait_for("enrich", "kastell_enrich_detections_total", 0);
    pipeline.wait_for("respond", ACTIONS, 0);
    pipeline.start("ingest");

    // Killed as soon as correlate evaluated its first event: ingest is then in the middle
    // of its pipelined replay (publishes sent, their acknowledgements pending), and events
    // and detections are in flight on the next edges. The stages keep running; their
    // publishes wait and retry, and their subscriptions reopen once the server is back on
    // the same store.
    let seen = pipeline.wait_for("correlate", EVENTS, 1);
    nats.kill9();
    let replayed = pipeline.log("ingest").contains("replay done");
    eprintln!("nats-server killed after {seen} evaluated events (ingest done: {replayed})");
    std::thread::sleep(Duration::from_millis(500));
    nats.restart();

    pipeline.wait_for("cases", STORED, alerts);
    pipeline.settle();
    pipeline.wait_drained("case-events", "respond");
    assert_eq!(pipeline.metric("cases", STORED), Some(alerts));
    pipeline.assert_cases_counted(&reference);
    let created = pipeline.metric("respond", ACTIONS).unwrap();
    pipeline.stop();

    let stored = read_store(&store);
    assert_eq!(stored.alerts.len() as u64, alerts);
    assert_eq!(stored.alert_set(), reference.alert_set());
    stored.assert_same_cases(&reference);

    // The example's playbook acts on every case opened for a high-level alert, once per
    // case and step (a redelivered case event finds its actions recorded). Events retried
    // after the restart reach the stages out of order, so a case may be opened for one
    // end of a group and merged into another later; its playbook run stays (its actions
    // stay with the merged case). So: every case ran the reference's steps exactly once,
    // the cases holding alerts that ran them are the reference's, and the only actions
    // beyond the reference's are the runs of cases merged away.
    let steps = stored.steps_by_case();
    let reference_steps = reference.steps_by_case();
    let playbook: BTreeSet<(String, String)> =
        reference_steps.values().flatten().cloned().collect();
    assert!(!playbook.is_empty(), "the example's playbook must act");
    for (case, ran) in steps.iter().chain(&reference_steps) {
        assert_eq!(ran, &playbook, "case {case}");
    }
    let acted = |s: &Stored, steps: &BTreeMap<i64, BTreeSet<(String, String)>>| {
        steps
            .keys()
            .map(|case| s.alerts_of(s.surviving(*case)))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(acted(&stored, &steps), acted(&reference, &reference_steps));
    let merged_runs = steps.keys().filter(|c| stored.merged_into.contains_key(c));
    let reference_merged_runs = reference_steps
        .keys()
        .filter(|c| reference.merged_into.contains_key(c));
    let expected = actions + playbook.len() as u64 * merged_runs.count() as u64
        - playbook.len() as u64 * reference_merged_runs.count() as u64;
    eprintln!("actions: {created} (single process: {actions}, expected {expected})");
    assert_eq!(created, expected);
    assert_eq!(stored.actions.len() as u64, expected);
}

/// A plain HTTP/1.1 POST on loopback: the status code and the body.
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// The `published` count of the ingest stage's `replay done` log line.
fn replayed(log: &str) -> u64 {
    log.lines()
        .find(|line| line.contains("replay done"))
        .and_then(|line| line.split("published=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replay done line with published=:\n{log}"))
}

/// Starts correlate, then ingest on `config`, and waits for ingest's replay of the
/// Sensors' files; returns the pipeline and how many records the replay published.
fn correlate_and_ingest(nats: String, test: &str, config: &Path) -> (Pipeline, u64) {
    let mut pipeline = Pipeline::new(nats, test);
    pipeline.config = config.to_owned();
    pipeline.start("correlate");
    pipeline.wait_for("correlate", "kastell_correlate_events_total", 0);
    pipeline.start("ingest");
    pipeline.wait_for_log("ingest", "replay done");
    let replayed = replayed(&pipeline.log("ingest"));
    (pipeline, replayed)
}

/// Waits until correlate has read `total` events, then checks, a second later, that it
/// read no more: every record once.
fn correlate_counts_exactly(pipeline: &mut Pipeline, total: u64) {
    pipeline.wait_for("correlate", "kastell_correlate_events_total", total);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pipeline.metric("correlate", "kastell_correlate_events_total"),
        Some(total),
        "every record once"
    );
}

#[test]
fn http_ingest_over_jetstream_answers_after_publishing_every_record() {
    let Some(nats) = nats_url() else { return };
    let _shared = shared_server();
    let port = free_port();
    let config = example_with_http_sensor(port);
    let (mut pipeline, replayed) = correlate_and_ingest(nats, "httpingest", config.path());

    // Real EVE records, 30 through `_bulk` and the same 30 as lines: each request gets
    // its own message ids, so none is dropped as a duplicate of the other.
    let records = eve_records(30);
    let bulk: String = records
        .iter()
        .map(|record| format!("{{\"create\":{{}}}}\n{record}\n"))
        .collect();
    let (status, answer) = http_post(port, "/suricata-http/_bulk", &bulk);
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["errors"], false, "{answer}");
    assert_eq!(answer["items"].as_array().unwrap().len(), 30);
    let (status, answer) = http_post(
        port,
        "/api/v1/ingest/suricata-http",
        &(records.join("\n") + "\n"),
    );
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["published"], 30, "{answer}");

    correlate_counts_exactly(&mut pipeline, replayed + 60);
    pipeline.stop();
}

/// The first `count` records of the real Suricata EVE sample the ingest tests use.
fn eve_records(count: usize) -> Vec<String> {
    let sample = std::fs::read_to_string(
        repo_root().join("workloads/ingest/tests/fixtures/suricata/tr0llope-eve-mixed.sample.json"),
    )
    .unwrap();
    let records: Vec<String> = sample
        .lines()
        .filter(|l| l.starts_with('{'))
        .take(count)
        .map(str::to_owned)
        .collect();
    assert_eq!(records.len(), count, "the sample holds {count} records");
    records
}

/// `count` syslog messages made of the real syslog lines of the bundled Wazuh alerts
/// (their `full_log`), repeated as needed: each message is told apart by its position on
/// the connection, not by its text.
fn syslog_lines(count: usize) -> Vec<String> {
    let alerts =
        std::fs::read_to_string(repo_root().join("examples/soc/data/wazuh/alerts.json")).unwrap();
    let real: Vec<String> = alerts
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|alert| alert["full_log"].as_str().map(str::to_owned))
        .filter(|log| log.len() > 16 && log.as_bytes()[3] == b' ' && !log.contains('\n'))
        .collect();
    assert!(!real.is_empty(), "the example holds syslog lines");
    real.iter().cycle().take(count).cloned().collect()
}

#[test]
fn syslog_tcp_and_followed_file_over_jetstream_publish_every_record_once() {
    use std::io::Write as _;

    let Some(nats) = nats_url() else { return };
    let _shared = shared_server();
    let (syslog_port, config) = (free_port(), example_with_correlations());
    let tailed = config.path().join("followed-eve.json");
    std::fs::write(&tailed, "").unwrap();
    std::fs::write(
        config.path().join("streaming-sensors.yaml"),
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\n\
             metadata: {{name: syslog-tcp, namespace: soc}}\n\
             spec:\n  format: syslog\n  transport:\n    type: syslog-tcp\n\
             \x20   port: {syslog_port}\n    bindAddress: 127.0.0.1\n---\n\
             apiVersion: kastell.eu/v1alpha1\nkind: Sensor\n\
             metadata: {{name: suricata-followed, namespace: soc}}\n\
             spec:\n  format: suricata-eve\n  transport:\n    type: file\n\
             \x20   path: {}\n    follow: true\n    checkpointDir: {}\n",
            tailed.display(),
            config.path().display()
        ),
    )
    .unwrap();
    let (mut pipeline, replayed) = correlate_and_ingest(nats, "streaming", config.path());

    // 40 messages on one connection, newline-framed: published without waiting for
    // each to be stored, all stored when the connection ends.
    let lines = syslog_lines(40);
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    for line in &lines {
        writeln!(connection, "{line}").unwrap();
    }
    drop(connection);
    // 30 real EVE records appended to the followed file in three writes.
    let records = eve_records(30);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&tailed)
        .unwrap();
    for chunk in records.chunks(10) {
        file.write_all((chunk.join("\n") + "\n").as_bytes())
            .unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    correlate_counts_exactly(&mut pipeline, replayed + 40 + 30);
    let checkpoint: serde_json::Value = serde_json::from_slice(
        &std::fs::read(config.path().join("suricata-followed.checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(checkpoint["line"], 30, "{checkpoint}");
    pipeline.stop();
}
