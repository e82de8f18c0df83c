//! Paths to the real feed and traffic samples, and helpers to lay out feed directories
//! in temporary folders, shared by the integration tests.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod suricata;

use std::fs;
use std::path::{Path, PathBuf};

pub use suricata::corpora;

/// MISP's own feed fixture: one CIRCL OSINT event.
pub fn misp_fixture_feed() -> PathBuf {
    corpora().join("misp/feed-sample-misp-tests/misp")
}

/// The real TweetFeed MISP feed sample: five events.
pub fn tweetfeed_feed() -> PathBuf {
    corpora().join("misp/feed-tweetfeed/misp")
}

/// PyMISP's test events (single events, not a feed).
pub fn pymisp_event(name: &str) -> PathBuf {
    corpora()
        .join("misp/pymisp-tests/reportlab_testfiles")
        .join(name)
}

/// The demo's IntelFeed resource.
pub fn demo_resource() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/intel-feed.yaml")
}

/// The demo's feed directory.
pub fn demo_feed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/intel/tweetfeed")
}

/// The uuid of the event the Kastell project wrote into the demo feed.
pub const DEMO_EVENT: &str = "590bf349-54bb-4336-826d-ba9542eed3ff";

/// Copies a feed directory's files into a fresh temporary directory.
pub fn copy_feed(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for entry in fs::read_dir(from).expect("feed directory") {
        let entry = entry.expect("feed entry");
        if entry.file_type().expect("file type").is_file() {
            fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    dir
}
