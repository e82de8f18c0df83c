//! The `kastell` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod crdgen;

/// Kastell: GitOps security operations for Kubernetes.
#[derive(Parser)]
#[command(name = "kastell", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions generated from the resource types.
    Crdgen {
        /// Directory to write `<plural>.kastell.eu.yaml` files into.
        #[arg(long, default_value = "manifests/crds")]
        out: PathBuf,
        /// Where to write the Markdown resource reference.
        #[arg(long, default_value = "docs/resources.md")]
        reference: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Crdgen { out, reference } => {
            crdgen::run(&out, &reference).context("generating CRDs")
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
