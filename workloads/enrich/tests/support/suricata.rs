//! Real Suricata EVE lines turned into ECS events by the ingest crate's own parser, the
//! way the pipeline does it.

use std::path::{Path, PathBuf};

use kastell_core::Event;
use kastell_ingest::{parse_line, Format, ParseContext};

/// The real Suricata 7 EVE run in the shared corpora (see its SOURCE.txt).
pub fn eve_path() -> PathBuf {
    corpora().join("suricata/tr0llope/eve-mixed.json")
}

/// The repository's copy of the corpus files these tests use (tests/fixtures/corpora),
/// or the full shared corpora when `$KASTELL_CORPORA` names them.
pub fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/corpora")
        })
}

/// Every line of an EVE file that ingest accepts, as an ECS event.
pub fn read_events(path: &Path) -> Vec<Event> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().filter_map(ecs_event).collect()
}

/// One EVE line as ingest normalises it for the Sensor `suricata`; `None` when ingest
/// refuses the line.
pub fn ecs_event(line: &str) -> Option<Event> {
    parse_line(
        Format::SuricataEve,
        line.as_bytes(),
        &ParseContext::new("suricata"),
    )
    .ok()
}
