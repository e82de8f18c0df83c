//! `kastell report` as a user runs it, on the case store of a real `kastell run --once`
//! over the bundled example data: one case flagged a significant NIS2 incident with its
//! early warning sent, then the HTML and JSON reports read back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::Utc;
use kastell_core::store::{CaseFilter, CaseUpdate};
use kastell_core::{CaseStore, SqliteStore};

fn kastell(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("running kastell")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn filled_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = kastell(&["run", "--once", "--data", data.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    (dir, data)
}

/// Flags the first case significant, then records its early warning as sent; returns the
/// case id.
async fn flag_significant(data: &Path) -> i64 {
    let store = SqliteStore::open_dir(data).await.unwrap();
    let case = store
        .list_cases(&CaseFilter::default())
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("the example run opens cases");
    store
        .set_significant_incident(case.id, true, "lead-1")
        .await
        .unwrap();
    let mut tags = case.tags.clone();
    tags.push("nis2:early-warning".into());
    let update = CaseUpdate {
        tags: Some(tags),
        ..CaseUpdate::default()
    };
    store.update_case(case.id, &update, "lead-1").await.unwrap();
    case.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_and_json_reports_of_a_real_run() {
    let (dir, data) = filled_store();
    let case_id = flag_significant(&data).await;
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let data_arg = data.to_str().unwrap();
    let html_path = dir.path().join("report.html");
    let period = ["--from", &today, "--to", &today, "--data", data_arg];

    let html = kastell(
        &[
            &[
                "report",
                "--format",
                "html",
                "--out",
                html_path.to_str().unwrap(),
            ],
            &period[..],
        ]
        .concat(),
    );
    assert!(html.status.success(), "{}", text(&html.stderr));
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Self-contained: nothing is fetched when it is opened or printed.
    for external in ["<link", "<script", "src=", "@import", "url("] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    assert!(page.contains("@media print"));
    for section in [
        "SOC figures",
        "Significant incidents",
        "GDPR records",
        "ATT&amp;CK",
    ] {
        assert!(page.contains(section), "no {section} section");
    }
    assert!(page.contains(&format!("<td>#{case_id}</td>")));
    assert!(
        page.contains(r#"<span class="met">met</span>"#),
        "early warning met"
    );
    assert!(
        page.contains(r#"<span class="open">open</span>"#),
        "72 h still open"
    );
    assert!(page.contains("T1110"), "the brute-force rules' technique");
    assert!(page.contains("audit chain intact"));

    let json = kastell(&[&["report", "--format", "json"], &period[..]].concat());
    assert!(json.status.success(), "{}", text(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["schema"], "kastell.report/v1");
    assert!(report["soc"]["alerts"].as_i64().unwrap() > 0);
    assert!(report["soc"]["cases_opened"].as_u64().unwrap() > 0);
    let incident = &report["incidents"][0];
    assert_eq!(incident["case_id"], case_id);
    let states: Vec<&str> = incident["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["met", "open", "open"]);
    assert!(report["attack"]["techniques"]["T1110"].is_array());
    assert_eq!(report["audit"]["intact"], true);
    assert_eq!(report["gdpr"]["erasures"], 0);

    // A period before the run holds none of it.
    let empty = kastell(
        &[
            &[
                "report",
                "--format",
                "json",
                "--from",
                "2020-01-01",
                "--to",
                "2020-01-31",
            ],
            &["--data", data_arg][..],
        ]
        .concat(),
    );
    let report: serde_json::Value = serde_json::from_slice(&empty.stdout).unwrap();
    assert_eq!(report["soc"]["cases_opened"], 0);
    assert_eq!(report["incidents"].as_array().unwrap().len(), 0);
}

#[test]
fn a_missing_store_and_a_reversed_period_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let missing = kastell(&[
        "report",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--data",
        data,
    ]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no case store"));
    let reversed = kastell(&[
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-01-01",
        "--data",
        data,
    ]);
    assert!(!reversed.status.success());
    assert!(text(&reversed.stderr).contains("--from must be before --to"));
}
