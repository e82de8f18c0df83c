//! `kastell apikey create`, `kastell audit verify` and `kastell audit export --git` as a
//! user runs them, on the case store of a real run over the bundled example data; the
//! tampering is done on the SQLite rows, as someone with the file would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

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

/// A data directory filled by `kastell run --once` over the bundled example.
fn filled_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let run = kastell(&["run", "--once", "--data", data_arg]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    (dir, data)
}

fn verify(data: &Path) -> (bool, String) {
    let output = kastell(&["audit", "verify", "--data", data.to_str().unwrap()]);
    (output.status.success(), text(&output.stdout))
}

async fn tamper(data: &Path, sql: &'static str) {
    let mut db = SqliteConnectOptions::new()
        .filename(data.join("kastell.sqlite"))
        .connect()
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut db).await.unwrap();
}

/// A key made where there is no store yet (provisioning before the first run, or a
/// mistyped --data) is made, and the command says that it made a new store.
#[test]
fn apikey_create_says_when_it_made_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-yet");
    let output = kastell(&[
        "apikey",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--name",
        "first",
        "--role",
        "lead",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("there was no case store in"),
        "{}",
        text(&output.stderr)
    );
    assert!(data.join("kastell.sqlite").is_file());
}

#[test]
fn apikey_create_prints_a_key_once_and_stores_only_its_hash() {
    let (_dir, data) = filled_store();
    let data_arg = data.to_str().unwrap();
    let args = [
        "apikey",
        "create",
        "--data",
        data_arg,
        "--name",
        "auditor-1",
    ];
    let output = kastell(&[&args[..], &["--role", "auditor", "--tlp", "red"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let key = text(&output.stdout).trim().to_owned();
    assert!(key.starts_with("kst_"), "{key}");
    assert!(text(&output.stderr).contains("shown once"));
    assert!(
        !text(&output.stderr).contains("no case store"),
        "{}",
        text(&output.stderr)
    );

    let again = kastell(&[&args[..], &["--role", "analyst"]].concat());
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
    let bad_role = kastell(
        &[
            &args[..1],
            &[
                "create", "--data", data_arg, "--name", "x", "--role", "root",
            ],
        ]
        .concat(),
    );
    assert!(!bad_role.status.success());
    assert!(text(&bad_role.stderr).contains("unknown role"));

    let file = std::fs::read(data.join("kastell.sqlite")).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let (ok, said) = verify(&data);
    assert!(ok && said.contains("intact"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_altered_entry() {
    let (_dir, data) = filled_store();
    let (ok, said) = verify(&data);
    assert!(ok, "{said}");
    // An attacker who rewrote who made change 5 (and recomputed nothing).
    tamper(
        &data,
        "UPDATE audit_log SET actor = 'apikey:mallory' WHERE seq = 5",
    )
    .await;
    let (ok, said) = verify(&data);
    assert!(!ok);
    assert_eq!(
        said.trim(),
        "entry 5 was altered: its content does not give its stored hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_removed_entry() {
    let (_dir, data) = filled_store();
    tamper(&data, "DELETE FROM audit_log WHERE seq = 7").await;
    let (ok, said) = verify(&data);
    assert!(!ok);
    assert_eq!(said.trim(), "entry 7 was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_commits_new_entries_once_authored_by_their_actor() {
    let (dir, data) = filled_store();
    let data_arg = data.to_str().unwrap();
    let repo_dir = dir.path().join("audit-git");
    let repo_arg = repo_dir.to_str().unwrap();
    let first = kastell(&["audit", "export", "--git", repo_arg, "--data", data_arg]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // One commit per run of entries by the same actor: the system's (alerts, cases,
    // actions) and the playbooks' (step results, case operations) interleave.
    assert!(
        text(&first.stdout).contains(" commits to "),
        "{}",
        text(&first.stdout)
    );

    let again = kastell(&["audit", "export", "--git", repo_arg, "--data", data_arg]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).starts_with("0 entries"),
        "{}",
        text(&again.stdout)
    );

    let key = kastell(&[
        "apikey", "create", "--data", data_arg, "--name", "lead-1", "--role", "lead",
    ]);
    assert!(key.status.success(), "{}", text(&key.stderr));
    let third = kastell(&["audit", "export", "--git", repo_arg, "--data", data_arg]);
    assert!(
        text(&third.stdout).starts_with("1 entries exported in 1 commits"),
        "{}",
        text(&third.stdout)
    );

    let repo = git2::Repository::open(&repo_dir).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert!(head.author().name().unwrap().starts_with("cli:"));
    assert!(head.message().unwrap().starts_with("audit: entries"));
    let mut authors = Vec::new();
    let mut commit = head.parent(0).unwrap();
    loop {
        authors.push(commit.author().name().unwrap().to_owned());
        if commit.parent_count() == 0 {
            break;
        }
        commit = commit.parent(0).unwrap();
    }
    assert_eq!(authors.last().map(String::as_str), Some("system:kastell"));
    assert!(
        authors.iter().any(|a| a.starts_with("playbook:soc/")),
        "{authors:?}"
    );
    let entries = repo_dir.join("entries");
    assert!(entries.join("000000000001.json").is_file());

    // A store rewritten after the export no longer matches the exported head.
    tamper(
        &data,
        "UPDATE audit_log SET hash = 'x' WHERE seq = (SELECT MAX(seq) FROM audit_log)",
    )
    .await;
    let refused = kastell(&["audit", "export", "--git", repo_arg, "--data", data_arg]);
    assert!(!refused.status.success());
}
