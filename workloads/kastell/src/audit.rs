//! `kastell audit verify` walks the case store's audit chain and names the first entry
//! that was altered, removed or reordered; `kastell audit export --git DIR` commits the
//! entries not exported yet to a git repository, one commit per run of entries by the
//! same actor, authored by that actor, so auditors read the log as git history and hold
//! a copy the store's owner cannot rewrite unnoticed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use git2::{Repository, Signature, Time};
use kastell_core::audit::{self, AuditEntry, Verdict};
use kastell_core::{CaseStore, StoreUrl};
use serde::{Deserialize, Serialize};

use crate::store_arg::StoreArgs;

/// Arguments of `kastell audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Check every entry's hash and link; exit status 1 names the first broken entry.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Commit the entries not exported yet to the git repository DIR (made if absent).
    Export {
        /// The repository; entries go to `entries/<seq>.json`, the last exported entry
        /// to `head.json`.
        #[arg(long = "git", value_name = "DIR")]
        git: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Entries read from the store per query.
const PAGE: i64 = 10_000;

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match args.command {
        AuditCommand::Verify { store } => {
            let verdict = runtime.block_on(verify_store(&store.existing()?))?;
            println!("{verdict}");
            Ok(match verdict {
                Verdict::Intact { .. } => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            })
        }
        AuditCommand::Export { git, store } => {
            let exported = runtime.block_on(export_store(&store.existing()?, &git))?;
            println!(
                "{} entries exported in {} commits to {}",
                exported.entries,
                exported.commits,
                git.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open(url: &StoreUrl) -> anyhow::Result<std::sync::Arc<dyn CaseStore>> {
    anyhow::ensure!(
        url.exists(),
        "no case store in {url} (pass --data DIR, as given to `kastell run`, or --store URL)"
    );
    let store = kastell_core::store::open(url)
        .await
        .with_context(|| format!("opening the case store {url}"))?;
    Ok(store)
}

/// Every entry after `after`, in chain order.
async fn entries_after(store: &dyn CaseStore, after: i64) -> anyhow::Result<Vec<AuditEntry>> {
    let mut all = Vec::new();
    let mut last = after;
    loop {
        let page = store
            .audit_entries(last, PAGE)
            .await
            .context("reading the audit log")?;
        let Some(tail) = page.last() else { break };
        last = tail.seq;
        let full = page.len() as i64 == PAGE;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// The verdict on the audit chain of the case store in `data`.
///
/// # Errors
/// When there is no store, or it cannot be read.
pub async fn verify(data: &Path) -> anyhow::Result<Verdict> {
    verify_store(&StoreUrl::SqliteDir(data.to_owned())).await
}

/// The verdict on the audit chain of the case store at `url`.
///
/// # Errors
/// When there is no store, or it cannot be read.
pub async fn verify_store(url: &StoreUrl) -> anyhow::Result<Verdict> {
    let store = open(url).await?;
    Ok(audit::verify(&entries_after(store.as_ref(), 0).await?))
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub entries: usize,
    pub commits: usize,
}

/// The last exported entry, kept in the repository so that exports are incremental.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    seq: i64,
    hash: String,
}

const HEAD_FILE: &str = "head.json";

/// Commits the entries of the store in `data` not yet in the repository `git`.
///
/// # Errors
/// When the store or repository cannot be read or written, when the chain is broken,
/// or when the store's entry at the exported head no longer has the exported hash (the
/// store was rewritten after the last export).
pub async fn export(data: &Path, git: &Path) -> anyhow::Result<Exported> {
    export_store(&StoreUrl::SqliteDir(data.to_owned()), git).await
}

/// As [`export`], from the case store at `url`.
///
/// # Errors
/// As [`export`].
pub async fn export_store(url: &StoreUrl, git: &Path) -> anyhow::Result<Exported> {
    let store = open(url).await?;
    let verdict = audit::verify(&entries_after(store.as_ref(), 0).await?);
    anyhow::ensure!(
        matches!(verdict, Verdict::Intact { .. }),
        "refusing to export a broken chain: {verdict}"
    );
    std::fs::create_dir_all(git).with_context(|| format!("creating {}", git.display()))?;
    let repo = match Repository::open(git) {
        Ok(repo) => repo,
        Err(_) => Repository::init(git)
            .with_context(|| format!("making a git repository in {}", git.display()))?,
    };
    let head = exported_head(&repo)?;
    let after = match &head {
        Some(head) => {
            let stored = store.audit_entries(head.seq - 1, 1).await?;
            anyhow::ensure!(
                stored.first().is_some_and(|entry| entry.hash == head.hash),
                "entry {} in the store no longer has the hash exported to {} ({}): the \
                 store's audit log was rewritten",
                head.seq,
                git.display(),
                head.hash
            );
            head.seq
        }
        None => 0,
    };
    let entries = entries_after(store.as_ref(), after).await?;
    let mut commits = 0;
    for batch in entries.chunk_by(|a, b| a.actor == b.actor) {
        commit_batch(&repo, batch)?;
        commits += 1;
    }
    tracing::info!(entries = entries.len(), commits, repo = %git.display(), "audit log exported");
    Ok(Exported {
        entries: entries.len(),
        commits,
    })
}

fn exported_head(repo: &Repository) -> anyhow::Result<Option<Head>> {
    let Ok(head) = repo.head() else {
        return Ok(None);
    };
    let tree = head
        .peel_to_tree()
        .context("reading the repository's HEAD")?;
    let Some(entry) = tree.get_name(HEAD_FILE) else {
        return Ok(None);
    };
    let blob = entry
        .to_object(repo)?
        .peel_to_blob()
        .context("reading head.json")?;
    let head = serde_json::from_slice(blob.content()).context("head.json is not a head")?;
    Ok(Some(head))
}

/// One commit of entries by one actor, authored by the actor at the last entry's time.
fn commit_batch(repo: &Repository, batch: &[AuditEntry]) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    let workdir = repo
        .workdir()
        .context("the export repository must not be bare")?
        .to_owned();
    let mut index = repo.index()?;
    std::fs::create_dir_all(workdir.join("entries"))?;
    for entry in batch {
        let relative = format!("entries/{:012}.json", entry.seq);
        let text = serde_json::to_string_pretty(entry)? + "\n";
        std::fs::write(workdir.join(&relative), text)?;
        index.add_path(Path::new(&relative))?;
    }
    let head = Head {
        seq: last.seq,
        hash: last.hash.clone(),
    };
    std::fs::write(
        workdir.join(HEAD_FILE),
        serde_json::to_string_pretty(&head)? + "\n",
    )?;
    index.add_path(Path::new(HEAD_FILE))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;

    let at = chrono::DateTime::parse_from_rfc3339(&last.at)
        .map(|t| Time::new(t.timestamp(), 0))
        .unwrap_or_else(|_| Time::new(chrono::Utc::now().timestamp(), 0));
    // git wants an e-mail address; the actor is a name, not one.
    let author = Signature::new(&last.actor, "audit@kastell.invalid", &at)?;
    let committer = Signature::now("kastell audit export", "audit@kastell.invalid")?;
    let message = format!(
        "audit: entries {}..{} by {}\n\nhead {}\n",
        first.seq, last.seq, last.actor, last.hash
    );
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &author, &committer, &message, &tree, &parents)?;
    Ok(())
}
