//! `kastell crdgen`: writes the CRD YAML generated from the resource types.

use std::path::Path;
use std::process::ExitCode;

pub fn run(out: &Path) -> anyhow::Result<ExitCode> {
    for path in kastell_crds::generate::write_all(out)? {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
