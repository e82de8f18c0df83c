//! The `kastell` command's library half: wiring the stages into one process, so the
//! end-to-end tests drive exactly what the command runs.

pub mod apikey;
pub mod audit;
pub mod detection;
pub mod gdpr;
pub mod intel_lookup;
pub mod listeners;
pub mod pipeline;
pub mod report;
pub mod resources;
pub mod setup;
pub mod shutdown;
pub mod stage;
pub mod store_arg;
pub mod summary;
pub mod tls;
