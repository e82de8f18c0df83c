//! `kastell crdgen`: writes the CRD YAML and the resource reference generated from the
//! resource types.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

pub fn run(outs: &[PathBuf], reference: &Path) -> anyhow::Result<ExitCode> {
    for out in outs {
        for path in kastell_crds::generate::write_all(out)? {
            println!("wrote {}", path.display());
        }
    }
    std::fs::write(reference, kastell_crds::reference::markdown())
        .with_context(|| format!("writing {}", reference.display()))?;
    println!("wrote {}", reference.display());
    Ok(ExitCode::SUCCESS)
}
