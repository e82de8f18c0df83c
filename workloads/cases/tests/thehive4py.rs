//! TheHive 5 compatibility, checked with TheHive's own Python client: the cases API runs
//! on 127.0.0.1 with an API key, and tests/thehive4py/roundtrip.py (thehive4py 2.x)
//! creates an alert with observables from a real Suricata alert, promotes it, adds an
//! observable, reads, updates and closes cases, and queries open cases.
//!
//! Needs `KASTELL_THEHIVE4PY_PYTHON`: the python of the virtualenv that
//! `tests/tools/ensure-thehive4py` makes (`.ci/run` exports it).

mod support;

use std::path::Path;
use std::sync::Arc;

use kastell_cases::auth::Role;
use kastell_cases::{router, serve, ApiState, Metrics};
use kastell_core::store::{CaseStatus, ObservableOwner, Resolution};
use kastell_core::{CaseStore, InProcessBus, Tlp};
use serde_json::{json, Value};
use support::{api_key, line, sqlite_store, TR0LLOPE};
use tokio::net::TcpListener;

/// tr0llope line 17: the IcedID cookie request of 172.16.0.153 to 67.205.184.237.
const EVE_LINE: usize = 17;

#[tokio::test]
async fn thehive4py_drives_alerts_cases_observables_and_queries() {
    let Some(python) = std::env::var_os("KASTELL_THEHIVE4PY_PYTHON") else {
        println!(
            "SKIPPED: KASTELL_THEHIVE4PY_PYTHON is unset (run tests/tools/ensure-thehive4py and \
             point it at the venv's bin/python)"
        );
        return;
    };
    let (dir, store) = sqlite_store().await;
    let key = api_key(&store, "integration", Role::Lead, Tlp::Red).await;
    let eve_file = dir.path().join("eve-line.json");
    std::fs::write(&eve_file, line(TR0LLOPE, EVE_LINE)).unwrap();

    let bus = Arc::new(InProcessBus::new(16));
    let state = ApiState::new(Arc::clone(&store), bus, Metrics::new().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router(state), async {
        stopped.await.ok();
    }));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/thehive4py/roundtrip.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg(&key)
        .arg(&eve_file)
        .output()
        .await
        .expect("running the thehive4py script");
    stop.send(()).ok();
    server.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the script failed:\n{stderr}\n{stdout}"
    );
    let out: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    check_alert(&out);
    let case_id = check_case(&out);
    check_queries(&out, case_id);
    check_errors(&out);
    check_store(&store, &out, case_id).await;
}

fn check_alert(out: &Value) {
    let alert = &out["alert"];
    assert_eq!(alert["_type"], "Alert");
    assert_eq!(alert["type"], "suricata");
    assert_eq!(alert["source"], "tr0llope");
    assert_eq!(alert["sourceRef"], "1996108827552885");
    assert_eq!(alert["title"], "ET MALWARE Win32/IcedID Request Cookie");
    assert_eq!(alert["severity"], 3);
    assert_eq!(alert["severityLabel"], "HIGH");
    assert_eq!(alert["tlpLabel"], "AMBER");
    // 2022-10-31T15:47:28.168061+0100 in epoch milliseconds.
    assert_eq!(alert["date"], 1_667_227_648_168_i64);
    assert_eq!(alert["status"], "New");
    assert_eq!(alert["observableCount"], 3);
    assert_eq!(
        out["alert_again"]["_id"], alert["_id"],
        "a retry finds the same alert"
    );
    let url = &out["alert_observable"][0];
    assert_eq!(url["dataType"], "url");
    assert_eq!(url["data"], "http://vgiragdoffy.com/");
    assert_eq!(out["alert_read"]["observableCount"], 4);
}

fn check_case(out: &Value) -> i64 {
    let case = &out["case"];
    assert_eq!(case["_type"], "Case");
    let id = case["number"].as_i64().unwrap();
    assert_eq!(case["_id"], format!("~{id}"));
    assert_eq!(case["title"], "ET MALWARE Win32/IcedID Request Cookie");
    assert_eq!(
        case["description"],
        "Suricata sid 2032086 fired on 172.16.0.153 -> 67.205.184.237:80"
    );
    assert_eq!(case["severity"], 3);
    assert_eq!(case["status"], "New");
    assert_eq!(case["stage"], "New");
    assert_eq!(case["startDate"], 1_667_227_648_168_i64);
    assert_eq!(case["_createdBy"], "apikey:integration");
    assert!(case["_createdAt"].as_i64().unwrap() > 1_700_000_000_000);

    // The observable added to the case merged with the one the alert brought.
    let added = &out["observable"];
    assert_eq!(added.as_array().unwrap().len(), 1);
    let c2 = &added[0];
    assert_eq!(c2["dataType"], "ip");
    assert_eq!(c2["data"], "67.205.184.237");
    assert_eq!(c2["ioc"], true);
    assert_eq!(c2["sighted"], true);
    assert_eq!(c2["tags"], json!(["dst", "c2"]));

    let task = &out["task"];
    assert_eq!(task["_type"], "Task");
    assert_eq!(task["status"], "Waiting");
    assert_eq!(task["assignee"], "dave");
    assert_eq!(out["case_tasks"][0]["_id"], task["_id"]);
    let comment = &out["comment"];
    assert_eq!(comment["message"], "Beacon to 67.205.184.237 confirmed");
    assert_eq!(comment["createdBy"], "apikey:integration");
    // The IOCs: the C2 address and the domain the alert brought.
    let mut iocs: Vec<&str> = out["case_observables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["data"].as_str().unwrap())
        .collect();
    iocs.sort();
    assert_eq!(iocs, ["67.205.184.237", "vgiragdoffy.com"]);

    let read = &out["case_read"];
    assert_eq!(read["severity"], 4);
    assert_eq!(read["severityLabel"], "CRITICAL");
    assert_eq!(
        read["tags"],
        json!(["suricata", "A Network Trojan was detected", "icedid"])
    );
    assert_eq!(out["case_by_number"]["_id"], read["_id"]);
    id
}

fn check_queries(out: &Value, case_id: i64) {
    let open: Vec<&str> = out["open_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["_id"].as_str().unwrap())
        .collect();
    let promoted = format!("~{case_id}");
    assert_eq!(
        open,
        [promoted.as_str()],
        "the closed manual case is not open"
    );
    assert_eq!(out["open_count"], 1);
    assert_eq!(out["closed_count"], 1);
    let manual = &out["manual_case"];
    assert_eq!(manual["status"], "New");
    let alerts = out["alerts_by_ref"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["status"], "Imported");
    assert_eq!(alerts[0]["caseId"], promoted);
}

fn check_errors(out: &Value) {
    let missing = &out["missing_case_error"];
    assert_eq!(missing["status"], 404);
    let message = missing["message"].as_str().unwrap();
    assert!(message.starts_with("NotFoundError - "), "{message}");
    let bad = &out["bad_alert_error"];
    assert_eq!(bad["status"], 422);
    let message = bad["message"].as_str().unwrap();
    assert!(message.starts_with("BadRequest - "), "{message}");
    assert!(message.contains("sourceRef"), "{message}");
}

async fn check_store(store: &Arc<dyn CaseStore>, out: &Value, case_id: i64) {
    let alert_id = out["alert"]["_id"].as_str().unwrap();
    let alert = store.get_alert(alert_id).await.unwrap().unwrap();
    assert_eq!(alert.case_id, Some(case_id));
    assert_eq!(alert.status, "promoted");
    let observables = store
        .list_observables(&ObservableOwner::Case(case_id))
        .await
        .unwrap();
    let mut values: Vec<(&str, &str)> = observables
        .iter()
        .map(|o| (o.kind.as_str(), o.value.as_str()))
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            ("domain", "vgiragdoffy.com"),
            ("ip", "172.16.0.153"),
            ("ip", "67.205.184.237"),
            ("url", "http://vgiragdoffy.com/"),
        ]
    );
    let manual = out["manual_case"]["number"].as_i64().unwrap();
    let manual = store.get_case(manual).await.unwrap().unwrap();
    assert_eq!(manual.status, CaseStatus::Closed);
    assert_eq!(manual.resolution, Some(Resolution::FalsePositive));
    assert_eq!(
        manual.summary.as_deref(),
        Some("Proxy logs show no download")
    );
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    assert!(matches!(
        kastell_core::audit::verify(&entries),
        kastell_core::Verdict::Intact { .. }
    ));
}
