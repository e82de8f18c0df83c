//! The stage commands as separate processes over a real nats-server (KASTELL_NATS_URL;
//! `tests/services/ensure-nats` starts one): ingest → correlate → enrich → cases on the
//! bundled example store exactly the alerts and cases `kastell run --once` counts, also
//! when a stage is killed with SIGKILL mid-run and started again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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

/// What `kastell run --once` counts on the bundled example.
fn single_process() -> (u64, u64) {
    let output = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(["run", "--once", "--output", "json"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        summary["alerts"].as_u64().unwrap(),
        summary["cases_opened"].as_u64().unwrap(),
    )
}

/// The stage processes of one test, on a namespace of their own; killed when the test
/// ends, whatever happened.
struct Pipeline {
    nats: String,
    namespace: String,
    dir: tempfile::TempDir,
    children: BTreeMap<&'static str, (Child, u16)>,
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
            children: BTreeMap::new(),
        }
    }

    fn start(&mut self, stage: &'static str) {
        let port = self
            .children
            .get(stage)
            .map_or_else(free_port, |(_, port)| *port);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{stage}.log")))
            .unwrap();
        let data = self.dir.path().join(stage);
        let child = Command::new(env!("CARGO_BIN_EXE_kastell"))
            .args(["--log", "info", stage, "--bus", "nats", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(repo_root().join("examples/soc"))
            .arg("--data")
            .arg(&data)
            .env("KASTELL_NATS_URL", &self.nats)
            .env("KASTELL_NATS_NAMESPACE", &self.namespace)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(stage, (child, port));
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
            "{stage} never counted {at_least} {name}; its log:\n{}",
            self.log(stage)
        );
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

    fn assert_running(&mut self) {
        let mut exited = None;
        for (stage, (child, _)) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some((*stage, status));
            }
        }
        if let Some((stage, status)) = exited {
            panic!(
                "{stage} exited early ({status}); its log:\n{}",
                self.log(stage)
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
        let stages: Vec<&'static str> = self.children.keys().copied().collect();
        for stage in stages {
            let (child, _) = self.children.get_mut(stage).unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{stage}: {status}; log:\n{}",
                self.log(stage)
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
    }
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

#[test]
fn four_stage_processes_store_the_alerts_and_cases_of_the_single_process_run() {
    let Some(nats) = nats_url() else { return };
    let (alerts, cases) = single_process();
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
    assert_eq!(pipeline.metric("cases", OPENED), Some(cases));
    pipeline.stop();
}

#[test]
fn a_stage_killed_mid_run_and_restarted_loses_and_duplicates_nothing() {
    let Some(nats) = nats_url() else { return };
    let (alerts, cases) = single_process();
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
    // Every alert is in exactly one case. How many cases depends on the order alerts
    // arrive in, which the redelivery after the kill changes (docs/cluster.md), so the
    // case count is not compared with the single-process run here.
    let opened = pipeline.metric("cases", OPENED).unwrap();
    let attached = pipeline.metric("cases", ATTACHED).unwrap();
    assert_eq!(opened + attached, alerts);
    eprintln!("cases opened: {opened} (single process: {cases})");
    pipeline.stop();
}
