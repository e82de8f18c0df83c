//! `kastell apikey create|list|revoke`: makes an API key for the case API, stores its
//! argon2 hash in the platform's case store (the `kastell.sqlite` of the data directory
//! `kastell run` uses) and prints the key once; lists the keys (never a secret or hash);
//! revokes a key, which the API refuses from its next request on.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kastell_cases::auth::{apikey, Role};
use kastell_core::store::keys::ApiKeyStatus;
use kastell_core::{StoreUrl, Tlp};

use crate::store_arg::StoreArgs;

/// The data directory `kastell run` uses when it is given none (without `--once`).
pub const DEFAULT_DATA: &str = "kastell-data";

/// The longest key name accepted.
const MAX_NAME: usize = 128;

/// Arguments of `kastell apikey`.
#[derive(clap::Args, Debug)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    command: ApiKeyCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ApiKeyCommand {
    /// Make a key and print it once on standard output; only its hash is stored.
    Create(CreateArgs),
    /// List the keys: name, role, TLP ceiling, created, last used, revoked.
    List(ListArgs),
    /// Revoke a key: the API answers it 401 from its next request on. Audited.
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args, Debug)]
struct RevokeArgs {
    /// The name the key was made with.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Who holds the key (unique); the audit log names its changes `apikey:<name>`.
    #[arg(long)]
    name: String,
    /// analyst, responder, lead, auditor or admin (see docs/cases-api.md).
    #[arg(long)]
    role: Role,
    /// The most restricted TLP the key may read: clear, green, amber, amber+strict or
    /// red. Cases above it are answered 404.
    #[arg(long, default_value = "amber")]
    tlp: Tlp,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ApiKeyArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let create = match args.command {
        ApiKeyCommand::Create(create) => create,
        ApiKeyCommand::List(list) => {
            let keys = runtime.block_on(list_keys(&list.store.existing()?))?;
            if list.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", key_table(&keys));
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApiKeyCommand::Revoke(revoke) => {
            let url = revoke.store.existing()?;
            let status = runtime.block_on(revoke_key(&url, &revoke.name))?;
            eprintln!(
                "API key {:?} (id {}) revoked in {url}",
                status.key.name, status.key.id
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let url = create.store.url()?;
    // Making a key before the first `kastell run` is allowed (provisioning), but a
    // mistyped --data would otherwise give a key that no server knows, silently.
    let new_store = !url.exists();
    let key = runtime.block_on(create_key_in(&url, &create.name, create.role, create.tlp))?;
    if new_store {
        eprintln!(
            "note: there was no case store in {url}; a new one was made there, and the key \
             works only for a server started on it (`kastell run --data DIR` with the same DIR)"
        );
    }
    eprintln!(
        "API key {:?} ({}, TLP up to {}) stored in {}; it is shown once, keep it now:",
        create.name.trim(),
        create.role,
        create.tlp,
        url
    );
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}

/// Who the audit log names for a change made from the command line: the login name from
/// the environment, else the account of the process's user id (containers and cron jobs
/// often run without `$USER`), else that user id itself, so an entry always names someone.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(account_of_process);
    format!("cli:{}", user.unwrap_or_else(|| "unknown".to_owned()))
}

/// The owner of /proc/self is the process's user id; reading it there and its name from
/// /etc/passwd needs no `unsafe` call into libc. Accounts known only to NSS (LDAP, SSSD)
/// are not in /etc/passwd and are named `uid:<n>`.
fn account_of_process() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(account_named(&passwd, uid).unwrap_or_else(|| format!("uid:{uid}")))
}

fn account_named(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Makes and stores a key in the case store of `data`; returns the key.
///
/// # Errors
/// When the name is blank or taken, or the store cannot be opened or written.
pub async fn create_key(data: &Path, name: &str, role: Role, tlp: Tlp) -> anyhow::Result<String> {
    create_key_in(&StoreUrl::SqliteDir(data.to_owned()), name, role, tlp).await
}

/// As [`create_key`], in the case store at `url` (made if absent).
///
/// # Errors
/// As [`create_key`].
pub async fn create_key_in(
    url: &StoreUrl,
    name: &str,
    role: Role,
    tlp: Tlp,
) -> anyhow::Result<String> {
    let name = name.trim();
    anyhow::ensure!(!name.is_empty(), "--name must not be blank");
    anyhow::ensure!(
        name.chars().count() <= MAX_NAME && !name.chars().any(char::is_control),
        "--name must be at most {MAX_NAME} printable characters"
    );
    let store = kastell_core::store::open(url)
        .await
        .with_context(|| format!("opening the case store {url}"))?;
    let new = apikey::generate(name, role, tlp)?;
    store
        .create_api_key(&new.record, &cli_actor())
        .await
        .context("storing the key")?;
    tracing::info!(name, role = %role, tlp = %tlp, id = %new.record.id, "api key created");
    Ok(new.key)
}

/// Every key of the store at `url`, oldest first.
///
/// # Errors
/// When the store cannot be opened or read.
pub async fn list_keys(url: &StoreUrl) -> anyhow::Result<Vec<ApiKeyStatus>> {
    let store = kastell_core::store::open(url)
        .await
        .with_context(|| format!("opening the case store {url}"))?;
    store.list_api_keys().await.context("listing the API keys")
}

/// Revokes the key named `name` in the store at `url`, as the command-line user.
///
/// # Errors
/// When no key has that name, it is revoked already, or the store fails.
pub async fn revoke_key(url: &StoreUrl, name: &str) -> anyhow::Result<ApiKeyStatus> {
    let store = kastell_core::store::open(url)
        .await
        .with_context(|| format!("opening the case store {url}"))?;
    store
        .revoke_api_key(name.trim(), &cli_actor())
        .await
        .with_context(|| format!("revoking the API key {:?}", name.trim()))
}

/// The keys as an aligned text table, times to the second.
fn key_table(keys: &[ApiKeyStatus]) -> String {
    let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or_else(
            || "-".to_owned(),
            |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    let mut rows = vec![[
        "NAME".to_owned(),
        "ROLE".to_owned(),
        "TLP".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
        "REVOKED".to_owned(),
    ]];
    for status in keys {
        rows.push([
            status.key.name.clone(),
            status.key.role.clone(),
            status.key.tlp.to_string(),
            time(Some(status.key.created_at)),
            time(status.last_used_at),
            time(status.revoked_at),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kastell_core::store::ApiKeyRecord;

    #[test]
    fn an_account_is_named_by_its_uid_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      broken-line\n\
                      soc:x:1000:1000:SOC analyst:/home/soc:/bin/sh\n";
        assert_eq!(account_named(passwd, 1000).as_deref(), Some("soc"));
        assert_eq!(account_named(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_named(passwd, 4242), None);
    }

    #[test]
    fn the_process_account_is_found_without_the_environment() {
        let account = account_of_process().expect("/proc/self exists on Linux");
        assert!(!account.is_empty() && account != "unknown", "{account}");
    }

    #[test]
    fn the_table_shows_every_key_without_its_hash() {
        let created = "2026-01-02T03:04:05Z".parse().unwrap();
        let key = |name: &str, revoked: bool| ApiKeyStatus {
            key: ApiKeyRecord {
                id: format!("id-{name}"),
                name: name.into(),
                role: "analyst".into(),
                tlp: Tlp::Amber,
                hash: "$argon2id$secret-hash".into(),
                created_at: created,
            },
            revoked_at: revoked.then_some(created),
            last_used_at: None,
        };
        let table = key_table(&[key("soc-bot", false), key("old", true)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME     ROLE"));
        assert!(lines[1].starts_with("soc-bot  analyst  amber  2026-01-02T03:04:05Z  -"));
        assert!(lines[2].ends_with("2026-01-02T03:04:05Z"));
        assert!(!table.contains("argon2"));
    }
}
