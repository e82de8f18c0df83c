//! The `kastell` command as a user runs it: exit codes, the JSON summary's keys, and clear
//! errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_once_json_prints_the_summary_keys() {
    let output = kastell(&["run", "--once", "--output", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    for key in [
        "events_in",
        "events_rejected",
        "alerts",
        "alerts_by_level",
        "intel_matches",
        "cases_opened",
        "actions_pending",
    ] {
        assert!(summary.get(key).is_some(), "missing {key} in {summary}");
    }
    let text = stdout(&output);
    let order: Vec<usize> = ["critical", "high", "medium", "low", "informational"]
        .iter()
        .map(|level| text.find(&format!("\"{level}\":")).expect(level))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "levels out of order: {text}"
    );
    assert!(summary["alerts"].as_u64().unwrap() > 0);
    assert!(summary["intel_matches"].as_u64().unwrap() > 0);
    assert!(summary["cases_opened"].as_u64().unwrap() > 0);
    assert!(
        summary["data_dir"].is_null(),
        "--once without --data keeps nothing"
    );
}

#[test]
fn run_once_table_names_each_figure() {
    let output = kastell(&["run", "--once"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for label in [
        "events read",
        "events rejected",
        "alerts",
        "intel matches",
        "cases opened",
    ] {
        assert!(text.contains(label), "missing {label:?} in:\n{text}");
    }
}

#[test]
fn replayed_bad_lines_are_reported_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eve.json");
    let good = std::fs::read_to_string(repo_root().join("examples/soc/data/suricata/eve.json"))
        .unwrap()
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &file,
        format!("{good}\n{{\"event_type\": \"dns\"\nnot json at all\n"),
    )
    .unwrap();
    let output = kastell(&[
        "run",
        "--once",
        "--output",
        "json",
        "--replay",
        file.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(summary["events_in"], 5);
    assert_eq!(summary["events_rejected"], 2);
    let lines: Vec<u64> = summary["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 5]);
}

#[test]
fn a_missing_config_directory_is_a_clear_error() {
    let output = kastell(&["run", "--once", "--config", "/nonexistent/kastell"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/kastell"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_replay_file_of_unknown_format_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.log");
    // Syslog is told by its header now; prose and a JSON object of no known shape are not.
    std::fs::write(&file, "just some words\n{\"message\":\"plain json\"}\n").unwrap();
    let output = kastell(&["run", "--once", "--replay", file.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot tell the format"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let output = kastell(&["run", "--listen", "0.0.0.0:0"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("0.0.0.0"), "{}", stderr(&output));
}

#[test]
fn validate_accepts_the_bundled_example_and_reports_a_broken_repository() {
    let output = kastell(&["validate", "examples/soc"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains(" resources, 0 problems"),
        "{}",
        stdout(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rule.yaml"),
        "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\nmetadata: {name: r}\nspec: {}\n",
    )
    .unwrap();
    let output = kastell(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("rule.yaml") && text.contains("missing field `sigma`"),
        "{text}"
    );
    assert!(text.contains("1 problem\n"), "{text}");
}

#[test]
fn detect_prints_one_json_line_per_match() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("rule.yml");
    std::fs::write(
        &rule,
        "title: Whoami\nid: 5a0f7c4e-6f0e-4b0e-9a51-0f0c6f2b9b11\nlevel: medium\n\
         logsource: {product: windows, category: process_creation}\n\
         detection:\n  sel: {Image|endswith: '\\\\whoami.exe'}\n  condition: sel\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"Image\": \"C:\\\\Windows\\\\System32\\\\whoami.exe\"}\n{\"Image\": \"C:\\\\x.exe\"}\n",
    )
    .unwrap();
    let output = kastell(&[
        "detect",
        "--rules",
        rule.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["rule_id"], "5a0f7c4e-6f0e-4b0e-9a51-0f0c6f2b9b11");
    assert_eq!(lines[0]["event_index"], 0);

    std::fs::write(&rule, "title: broken\ndetection: {condition: nothing}\n").unwrap();
    let strict = kastell(&[
        "detect",
        "--strict",
        "--rules",
        rule.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(strict.status.code(), Some(1), "{}", stderr(&strict));
}

#[test]
fn playbook_test_prints_one_json_line_per_planned_step() {
    let output = kastell(&[
        "playbook",
        "test",
        "examples/playbooks/malware-c2.yaml",
        "--alert",
        "examples/soc/alerts/suricata-high-severity.json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&str> = lines.iter().map(|l| l["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "intel-lookup",
            "raise-severity",
            "assign-tier2",
            "perimeter-block",
            "tell-teams",
            "tell-matrix"
        ]
    );
    let block = &lines[3];
    assert_eq!(block["approval_required"], true);
    assert_eq!(block["inputs"]["config"]["body"]["ip"], "67.205.184.237");
    assert_eq!(
        block["inputs"]["config"]["secret_headers"]["St2-Api-Key"],
        "ST2_API_KEY"
    );
    assert!(lines.iter().all(|l| l["triggered"] == true));
}

#[test]
fn playbook_test_reports_an_invalid_playbook_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\nmetadata: {name: bad, namespace: soc}\n\
         spec:\n  trigger: {}\n  steps:\n    - {name: x, type: wazuh-active-response}\n",
    )
    .unwrap();
    let output = kastell(&[
        "playbook",
        "test",
        file.to_str().unwrap(),
        "--alert",
        "examples/soc/alerts/wazuh-sshd-brute-force.json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("a wazuh-active-response step needs wazuh"),
        "{}",
        stderr(&output)
    );
}
