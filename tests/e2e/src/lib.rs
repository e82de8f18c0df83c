//! End-to-end tests of the whole pipeline live in `tests/`; this library only locates the
//! repository's bundled example.

use std::path::PathBuf;

/// The bundled example repository, examples/soc.
pub fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc")
}
