//! `kastell apikey create`: makes an API key for the case API, stores its argon2 hash in
//! the platform's case store (the `kastell.sqlite` of the data directory `kastell run`
//! uses) and prints the key once.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kastell_cases::auth::{apikey, Role};
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
    let ApiKeyCommand::Create(create) = args.command;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let url = create.store.url()?;
    let key = runtime.block_on(create_key_in(&url, &create.name, create.role, create.tlp))?;
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

/// Who the audit log names for a change made from the command line.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
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
