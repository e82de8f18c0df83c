//! Kastell's operator: the controllers that reconcile every Kastell resource into
//! workloads, the pure builders of the objects they apply, the residency policy (region
//! catalogue and outbound endpoints), and the offline check of a resource repository
//! (`kastell validate`), the built-in git sync, and the mirror of Case resources into
//! the case store. See docs/operator.md.

pub mod admission;
pub mod assemble;
pub mod build;
pub mod casemirror;
pub mod conditions;
pub mod controller;
pub mod gitsync;
pub mod regions;
pub mod residency;
pub mod serve;
pub mod validate;

pub use residency::{EndpointPolicy, Refusal};
pub use validate::{validate_dir, Problem, Report};
