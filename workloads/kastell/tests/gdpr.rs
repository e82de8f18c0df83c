//! `kastell gdpr export|erase|retention` over the dead-letter log a real run leaves: the
//! real Wazuh sshd alert of wazuh-qa's integratord test (rule 5712, user `paco`) and its
//! deliberately broken copy, which ingest refuses and dead-letters with the raw line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

fn kastell(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("running kastell")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A run over the good alert followed by the broken ones, leaving dead letters.
fn run_with_dead_letters() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo_root().join("workloads/ingest/tests/fixtures/wazuh");
    let good = std::fs::read_to_string(fixtures.join("sshd-5712.jsonl")).unwrap();
    let broken = std::fs::read_to_string(fixtures.join("integratord-malformed.txt")).unwrap();
    let mut replay = good.lines().next().unwrap().to_owned();
    replay.push('\n');
    for line in broken.lines().filter(|l| !l.starts_with('#')) {
        replay.push_str(line);
        replay.push('\n');
    }
    let file = dir.path().join("alerts.json");
    std::fs::write(&file, replay).unwrap();
    let data = dir.path().join("data");
    let run = kastell(&[
        "run",
        "--once",
        "--output",
        "json",
        "--data",
        data.to_str().unwrap(),
        "--replay",
        file.to_str().unwrap(),
    ]);
    let summary = json(&run);
    assert!(summary["dead_letters"].as_u64().unwrap() >= 1, "{summary}");
    (dir, data)
}

fn letters(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn audit_actions(data: &Path) -> Vec<String> {
    let mut db = SqliteConnectOptions::new()
        .filename(data.join("kastell.sqlite"))
        .connect()
        .await
        .unwrap();
    sqlx::query("SELECT action FROM audit_log ORDER BY seq")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("action"))
        .collect()
}

fn verify(data: &Path) {
    let output = kastell(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stdout));
}

#[tokio::test]
async fn export_and_erase_cover_the_dead_letters_and_are_audited() {
    let (_dir, data) = run_with_dead_letters();
    let data_arg = data.to_str().unwrap();
    let before = letters(&data);
    assert!(
        before.iter().all(|l| l["logged_at"].is_string()),
        "{before:?}"
    );
    let mentioning = before
        .iter()
        .filter(|l| l.to_string().to_lowercase().contains("paco"))
        .count();
    assert!(mentioning >= 1, "{before:?}");

    let export = json(&kastell(&[
        "gdpr",
        "export",
        "--data",
        data_arg,
        "--subject",
        "PACO",
    ]));
    let exported = export["dead_letters"].as_array().unwrap();
    assert_eq!(exported.len(), mentioning);
    assert!(exported[0]["raw"]
        .as_str()
        .unwrap()
        .contains("Invalid user paco"));
    assert!(export["alerts"].as_array().is_some_and(|a| !a.is_empty()));

    let erase = json(&kastell(&[
        "gdpr",
        "erase",
        "--data",
        data_arg,
        "--subject",
        "paco",
    ]));
    assert_eq!(erase["dead_letters"]["scrubbed"], mentioning);
    assert_eq!(erase["dead_letters"]["lines"], before.len());
    let after = letters(&data);
    assert_eq!(
        after.len(),
        before.len(),
        "letters are scrubbed, not removed"
    );
    assert!(after
        .iter()
        .all(|l| !l.to_string().to_lowercase().contains("paco")));
    assert!(after[0]["raw"]
        .as_str()
        .unwrap()
        .contains("Invalid user [erased]"));
    assert_eq!(after[0]["line"], before[0]["line"]);

    let again = json(&kastell(&[
        "gdpr",
        "export",
        "--data",
        data_arg,
        "--subject",
        "paco",
    ]));
    assert_eq!(again["dead_letters"], serde_json::json!([]));
    let actions = audit_actions(&data).await;
    for action in [
        "gdpr.export",
        "gdpr.dead_letters.export",
        "gdpr.erase",
        "gdpr.dead_letters.erase",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    verify(&data);
}

#[tokio::test]
async fn retention_drops_the_dead_letters_logged_before_the_cutoff() {
    let (_dir, data) = run_with_dead_letters();
    let data_arg = data.to_str().unwrap();
    let count = letters(&data).len();

    let kept = json(&kastell(&[
        "gdpr",
        "retention",
        "--data",
        data_arg,
        "--period",
        "30d",
    ]));
    assert_eq!(kept["dead_letters"]["dropped"], 0);
    assert_eq!(kept["dead_letters"]["kept"], count);
    assert_eq!(letters(&data).len(), count);
    let entries = audit_actions(&data).await.len();

    let dropped = json(&kastell(&[
        "gdpr",
        "retention",
        "--data",
        data_arg,
        "--period",
        "0s",
    ]));
    assert_eq!(dropped["dead_letters"]["dropped"], count);
    assert_eq!(dropped["dead_letters"]["kept"], 0);
    assert!(letters(&data).is_empty());
    let actions = audit_actions(&data).await;
    // The store's own retention may add its entry first, if the run closed a case.
    let new = &actions[entries..];
    assert_eq!(
        new.last().unwrap(),
        "gdpr.dead_letters.retention",
        "{new:?}"
    );
    assert!(new.iter().all(|a| a.starts_with("gdpr.")), "{new:?}");
    verify(&data);
}
