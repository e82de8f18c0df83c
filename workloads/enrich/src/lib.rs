//! Kastell's enrich stage: threat-intelligence feeds loaded into an [`IndicatorStore`],
//! every event matched against it, and alerts annotated with what matched.
//!
//! - [`misp`] reads a MISP feed directory into indicators;
//! - [`indicator`] owns the indicator type and the normalisation shared by feeds and
//!   observables;
//! - [`store`] indexes indicators and matches events;
//! - [`ecs`] writes matches onto events as ECS `threat.enrichments`;
//! - [`stage`] is the bus loop between correlate and cases.
//!
//! See `docs/intel.md` for the matching rules and the limitations.

pub mod allowlist;
pub mod ecs;
pub mod feed;
pub mod http;
pub mod indicator;
pub mod list;
pub mod metrics;
pub mod misp;
pub mod misp_api;
pub mod misp_remote;
pub mod normalise;
pub mod refresh;
pub mod sightings;
pub mod stage;
pub mod stix;
pub mod store;
pub mod taxii;
pub mod tlp;

pub use allowlist::Allowlist;
pub use indicator::{Indicator, IndicatorContext, ThreatLevel};
pub use misp::{load_misp_feed_dir, EventError, LoadError, LoadReport, SkipReason};
pub use stage::{
    enrich_detection, run_enrich, run_enrich_live, run_enrich_on, run_enrich_sighted,
    subscribe_detections, DeadLetter, EnrichError, EnrichReport, EnrichStats, Enriched,
};
pub use store::{Hit, IndicatorStore, Inserted, UnindexableIndicator, Via};
