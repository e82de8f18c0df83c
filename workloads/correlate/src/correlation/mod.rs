//! Sigma correlation rules: the document ([`CorrelationRule`]), the sliding windows that
//! hold their state ([`window`]) and the engine that feeds rule matches through them.

mod engine;
mod rule;
mod window;

pub use engine::{CorrelationHit, CorrelationState};
pub(crate) use engine::{Correlations, Referable};
pub(crate) use rule::read_correlation;
pub use rule::{parse_timespan, CompareOp, CorrelationRule, CorrelationType, CountCondition};
pub use window::{WindowCounters, WindowLimits};
