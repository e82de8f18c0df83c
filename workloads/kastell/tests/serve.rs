//! `kastell run` without `--once`, as a process: after the replay it keeps the stages
//! running, takes events in through a Sensor's HTTP listener, shows the alerts they raise
//! through the case API, and exits cleanly on SIGTERM after draining the stages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod support;
use support::{example_with_http_sensor, repo_root};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the child's standard error on a thread, line by line, so the test can wait for a
/// line without blocking forever on a child that never prints it.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    loop {
        match lines.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!(
                "no line with {needle:?}; stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Kills the child when the test ends early (a failed assertion), so that no server is
/// left running.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The tests of this file bind ports the system hands out (a port freed for a child to
/// take, a port held taken): run one at a time, so the port one test frees is never the
/// one the other holds (a CI run failed so once, `Address already in use`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn events_posted_to_a_listening_sensor_become_alerts_and_sigterm_drains_and_exits() {
    let _one = one_at_a_time();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(posted_events_become_alerts_and_sigterm_drains());
}

async fn posted_events_become_alerts_and_sigterm_drains() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ingest_port = free_port();
    let config = example_with_http_sensor(ingest_port);
    let data = tempfile::tempdir().unwrap();
    let key = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args([
            "apikey", "create", "--name", "t", "--role", "analyst", "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();

    let api = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(["--log", "info", "run", "--listen", &api, "--config"])
        .arg(config.path())
        .arg("--data")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut running = Running(Some(child));
    let mut seen = Vec::new();
    // The listeners are bound before the case API is announced.
    wait_for_line(&lines, "sensor listening", &mut seen);
    wait_for_line(&lines, "case API on", &mut seen);

    // Real Suricata EVE records the bundled replay does not hold: three severity-1 alerts
    // (tests/fixtures/corpora/suricata/xhpx, see its SOURCE.txt).
    let eve =
        std::fs::read_to_string(repo_root().join("tests/fixtures/corpora/suricata/xhpx/eve.json"))
            .unwrap();
    let posted_alerts = eve
        .lines()
        .filter(|l| l.contains("\"event_type\":\"alert\""))
        .count();
    assert_eq!(posted_alerts, 3);
    let posted_lines = eve.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let client = reqwest::Client::new();
    let answer = client
        .post(format!(
            "http://127.0.0.1:{ingest_port}/api/v1/ingest/suricata-http"
        ))
        .body(eve)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());

    // The posted records are from November 2019, the bundled ones from 2022 and 2023.
    let rule = std::fs::read_to_string(
        repo_root().join("examples/soc/rules/kastell-suricata-alert-high.yaml"),
    )
    .unwrap();
    let rule_id = rule
        .lines()
        .find_map(|l| l.trim().strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let url = format!(
        "http://{api}/api/v1/alerts?rule={rule_id}\
         &since=2019-11-26T00:00:00Z&until=2019-11-27T00:00:00Z"
    );
    let mut alerts = Vec::new();
    for _ in 0..600 {
        let page: Value = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        alerts = page["items"].as_array().cloned().unwrap_or_default();
        if alerts.len() >= posted_alerts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alerts.len(), posted_alerts, "{alerts:?}");
    assert!(
        alerts.iter().all(|a| a["sensor"] == "suricata-http"),
        "{alerts:?}"
    );
    // The listener's per-sensor counters are served with the API's metrics.
    let metrics = client
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(eve_lines_posted(&metrics), posted_lines, "{metrics}");

    let mut child = running.0.take().unwrap();
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        seen.join("\n")
    );
    let log = seen.join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        log.contains("enrich stopped"),
        "the stages were drained: {log}"
    );
    assert!(log.contains("cases stopped"), "{log}");
}

#[test]
fn a_sensor_port_in_use_fails_the_run_before_the_case_api_is_announced() {
    let _one = one_at_a_time();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = example_with_http_sensor(port);
    let data = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let run = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(["run", "--listen", &api, "--config"])
        .arg(config.path())
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sensor suricata-http: listening on tcp 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("case API on"), "{stderr}");
    drop(taken);
}

/// The `kastell_ingest_records_total` of the `suricata-http` Sensor in a metrics text.
fn eve_lines_posted(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("kastell_ingest_records_total{") && l.contains("sensor=\"suricata-http\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
