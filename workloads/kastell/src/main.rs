//! The `kastell` command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kastell::pipeline::{self, Mode};
use kastell::stage::Stage;
use kastell::summary::Summary;

/// Parsing and enrichment allocate and free many small strings and maps per event;
/// mimalloc serves those about twice as fast as glibc's allocator and fragments less,
/// see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod crdgen;
mod detect;
mod intel;
mod operator;
mod parse;
mod playbook;

/// Kastell: GitOps security operations for Kubernetes.
#[derive(Parser)]
#[command(name = "kastell", version, about, long_about = None)]
struct Cli {
    /// Log filter, as RUST_LOG (e.g. `info`, `kastell_ingest=debug`).
    #[arg(long, global = true, env = "KASTELL_LOG", default_value = "warn")]
    log: String,
    /// Log records as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in one process: replay sensor files through ingest,
    /// detection, enrichment, cases and response, then (without --once) keep running:
    /// Sensor listeners, intel feed refresh and the case API, until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Run the ingest stage alone: the Sensors' listeners and file replays, onto the bus.
    Ingest(kastell::stage::StageArgs),
    /// Run the correlate stage alone: Sigma and correlation rules over the events topic.
    Correlate(kastell::stage::StageArgs),
    /// Run the enrich stage alone: intel feeds (refreshed) over the detections topic.
    Enrich(kastell::stage::StageArgs),
    /// Run the cases stage alone: alerts into cases, and the case API.
    Cases(kastell::stage::StageArgs),
    /// Run the respond stage alone: playbooks over the case events.
    Respond(kastell::stage::StageArgs),
    /// Evaluate Sigma rules offline against raw JSON events; one JSON line per match.
    Detect(detect::DetectArgs),
    /// Parse a sensor's records and print them normalised, one JSON event per line;
    /// rejects go to stderr with their line number and reason.
    Parse(parse::ParseArgs),
    /// Make API keys for the case API.
    Apikey(kastell::apikey::ApiKeyArgs),
    /// Verify the case store's audit chain, or export it to a git repository.
    Audit(kastell::audit::AuditArgs),
    /// The period's compliance report (SOC figures, NIS2 incidents, GDPR, ATT&CK, audit).
    Report(kastell::report::ReportArgs),
    /// Data-subject requests (export, erase) and personal-data retention (GDPR).
    Gdpr(kastell::gdpr::GdprArgs),
    /// Load threat-intel feeds offline: match events against them, or count them.
    #[command(subcommand)]
    Intel(intel::IntelCommand),
    /// Work with playbooks offline: `kastell playbook test PLAYBOOK.yaml --alert ALERT.json`.
    Playbook(playbook::PlaybookArgs),
    /// Check a directory of resources offline: schemas, Sigma compilation, playbooks,
    /// referenced files and the residency policy. Exit status 1 when anything is wrong.
    Validate {
        /// The directory (a checkout of the platform's resource repository).
        dir: PathBuf,
    },
    /// Run the operator: reconcile Kastell's resources in the cluster into workloads.
    Operator(operator::OperatorArgs),
    /// Write the CustomResourceDefinitions and the resource reference generated from the
    /// resource types.
    Crdgen {
        /// Directory to write `<plural>.kastell.eu.yaml` files into.
        #[arg(long, default_value = "manifests/crds")]
        out: PathBuf,
        /// Where to write the Markdown resource reference.
        #[arg(long, default_value = "docs/resources.md")]
        reference: PathBuf,
        /// The Helm chart's CRD directory, kept identical to `--out`.
        #[arg(long, default_value = "charts/kastell/crds")]
        chart_crds: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of resource YAML [default: the bundled examples/soc]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Files to replay instead of the Sensors' own files; the format is detected.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// Directory of the case store [default: a temporary one with --once, else
    /// ./kastell-data]
    #[arg(long)]
    data: Option<PathBuf>,
    /// The case store as a URL (`postgres://…`, `sqlite://PATH`) instead of the SQLite
    /// store in --data, which then keeps only the dead-letter log.
    #[arg(long, env = "KASTELL_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Address of the case API (plain HTTP only on loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Replay, print the summary and exit instead of serving the case API.
    #[arg(long)]
    once: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_json);
    let outcome = match cli.command {
        Command::Crdgen {
            out,
            reference,
            chart_crds,
        } => crdgen::run(&[out, chart_crds], &reference),
        Command::Run(args) => run(args),
        Command::Ingest(args) => stage(Stage::Ingest, args),
        Command::Correlate(args) => stage(Stage::Correlate, args),
        Command::Enrich(args) => stage(Stage::Enrich, args),
        Command::Cases(args) => stage(Stage::Cases, args),
        Command::Respond(args) => stage(Stage::Respond, args),
        Command::Validate { dir } => validate(&dir),
        Command::Detect(args) => detect::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Apikey(args) => kastell::apikey::run(args),
        Command::Audit(args) => kastell::audit::run(args),
        Command::Report(args) => kastell::report::run(args),
        Command::Gdpr(args) => kastell::gdpr::run(args),
        Command::Intel(command) => intel::run(command),
        Command::Playbook(args) => playbook::run(args),
        Command::Operator(args) => operator::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                kastell_core::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour codes only where a terminal shows them, not in files and log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn stage(stage: Stage, args: kastell::stage::StageArgs) -> anyhow::Result<ExitCode> {
    // NATS, the feed client and the step runners use rustls; ring is picked once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(kastell::stage::run(stage, args))?;
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Both kube and reqwest use rustls; the process picks ring once, up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(dir) => dir.clone(),
        None => bundled_examples()?,
    };
    let setup = kastell::setup::prepare(&config, &args.replay).await?;

    let temp;
    let (data_dir, kept) = match (&args.data, args.once) {
        (Some(dir), _) => (dir.clone(), true),
        (None, true) => {
            temp = tempfile::tempdir().context("creating a temporary data directory")?;
            (temp.path().to_owned(), false)
        }
        (None, false) => (PathBuf::from("kastell-data"), true),
    };
    let store_url = match &args.store {
        Some(raw) => raw.parse().context("reading --store")?,
        None => kastell_core::StoreUrl::SqliteDir(data_dir.clone()),
    };
    let shown_data = match &args.store {
        Some(_) => Some(store_url.to_string()),
        None => kept.then(|| data_dir.display().to_string()),
    };

    let output = args.output;
    let mut summary = if args.once {
        pipeline::run_on(setup, &data_dir, &store_url, Mode::Once).await?
    } else {
        let listener = pipeline::bind(args.listen).await?;
        let address = listener.local_addr()?;
        let shown = shown_data.clone();
        let on_replayed = Box::new(move |summary: &Summary| {
            let mut summary = summary.clone();
            summary.data_dir = shown;
            print_summary(&summary, output);
            eprintln!(
                "case API on http://{address}/api/v1/cases (OpenAPI at /api/openapi.json); \
                 Ctrl-C or SIGTERM stops"
            );
        });
        let signal = kastell::shutdown::on_signal().context("installing the signal handlers")?;
        let shutdown = Box::pin(async move {
            let signal = signal.await;
            tracing::info!(signal, "stopping: draining the stages");
            // Not eprintln!: it panics when standard error is a closed pipe, and this
            // task must finish for the process to stop.
            let _ = writeln!(
                std::io::stderr(),
                "{signal}: stopping the listeners and draining the stages"
            );
        });
        pipeline::run_on(
            setup,
            &data_dir,
            &store_url,
            Mode::Serve {
                listener,
                shutdown,
                on_replayed,
            },
        )
        .await?
    };
    summary.data_dir = shown_data;
    if !args.once {
        // The summary printed after the replay did not see what the listeners took in
        // afterwards; this one counts the whole run.
        let _ = writeln!(
            std::io::stderr(),
            "stopped; summary of the whole run (replay and everything served):"
        );
    }
    print_summary(&summary, output);
    Ok(ExitCode::SUCCESS)
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let report = kastell_operator::validate_dir(dir)
        .with_context(|| format!("reading resources from {}", dir.display()))?;
    for problem in &report.problems {
        println!("{problem}");
    }
    let counted = |n: usize, what: &str| {
        if n == 1 {
            format!("1 {what}")
        } else {
            format!("{n} {what}s")
        }
    };
    println!(
        "{}, {}",
        counted(report.resource_count(), "resource"),
        counted(report.problems.len(), "problem")
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(summary: &Summary, output: Output) {
    let text = match output {
        Output::Table => Ok(summary.table()),
        Output::Json => serde_json::to_string(summary).map(|json| json + "\n"),
    };
    // Not print!: it panics when standard output is a closed pipe, and a summary that
    // cannot be shown must not turn a finished run into a crash.
    let printed = text
        .map_err(std::io::Error::from)
        .and_then(|text| std::io::stdout().lock().write_all(text.as_bytes()));
    if let Err(e) = printed {
        let _ = writeln!(std::io::stderr(), "error: printing the summary: {e}");
    }
}

/// The bundled example repository: `./examples/soc` when run from a clone, else the one
/// beside the sources this binary was built from.
fn bundled_examples() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("examples/soc"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc"),
    ];
    candidates
        .into_iter()
        .find(|dir| dir.is_dir())
        .context("the bundled examples/soc directory was not found; pass --config DIR")
}
