//! Kastell's cases stage: alerts from the enrich stage stored once each and grouped into
//! cases, and the HTTP API analysts use to read them and decide on response actions.
//!
//! - [`stage`] is the bus loop between enrich and respond, and the grouping rules;
//! - [`api`] is the axum router, its OpenAPI document and the loopback-only server;
//! - [`auth`] is access control: API keys, OIDC tokens, roles and TLP ceilings;
//! - [`metrics`] is the Prometheus registry the API serves on `/metrics`.
//!
//! See `docs/cases-api.md` for the endpoints, the grouping rules and the limitations.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod remediation;
pub mod stage;

pub use api::{check_listen_addr, openapi, router, serve, ApiState, ListenError, ServeError};
pub use metrics::Metrics;
pub use stage::{
    case_change_events, case_title, group_key, run_cases, run_cases_on, run_response_outputs_on,
    subscribe_alerts, subscribe_response_outputs, ApplyError, CaseSettings, CasesError,
    CasesReport, CasesStats, DeadLetter, Filed, Grouper, OutputStats, ResponseApplier, GROUP,
};
