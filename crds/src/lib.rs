//! Kastell's custom resources (group `kastell.eu`, version `v1alpha1`): their Rust types,
//! from which the CRD schemas are generated, and the loader that reads them from YAML.

// kube's `printcolumn(...)` attributes repeat `type_ = ...` legitimately, once per column,
// which clippy's duplicated-attributes lint mistakes for a repeated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod case;
pub mod common;
pub mod generate;
pub mod intel;
pub mod load;
pub mod platform;
pub mod playbook;
pub mod reference;
pub mod rule;
pub mod sensor;

pub use case::{Case, CaseResolution, CaseSpec, CaseState, CaseStatus, Pap};
pub use common::{parse_duration, CommonStatus, Severity, SourceRevision, Tlp};
pub use intel::{FeedKind, IntelFeed, IntelFeedSpec};
pub use load::{load_dir, Loaded, ResourceSet};
pub use platform::{SecOpsPlatform, SecOpsPlatformSpec};
pub use playbook::{Playbook, PlaybookSpec};
pub use rule::{DetectionRule, DetectionRuleSpec};
pub use sensor::{Sensor, SensorFormat, SensorSpec};

/// The API group of every Kastell resource.
pub const GROUP: &str = "kastell.eu";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
