//! Kastell's operator side. For now it holds what needs no cluster: the offline check of
//! a resource repository (`kastell validate`) and the residency policy it enforces on
//! outbound endpoints. The controllers come with the operator itself (see
//! docs/operator.md).

pub mod residency;
pub mod validate;

pub use residency::{EndpointPolicy, Refusal};
pub use validate::{validate_dir, Problem, Report};
