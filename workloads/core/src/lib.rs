//! Kastell's shared crate: the event model every stage reads, the messages the stages
//! exchange, the bus that carries them and the store that keeps cases.

pub mod alert;
pub mod approval;
pub mod audit;
pub mod bus;
pub mod event;
pub mod response;
pub mod stall;
pub mod store;

pub use alert::{
    Alert, CaseEvent, Detection, IntelMatch, Level, ObservableRef, RuleRef, RuleSource, RunPlaybook,
};
pub use audit::{AuditEntry, Verdict};
pub use bus::{
    error_chain, Bus, BusError, DeadLetter, Delivery, InProcessBus, Message, Subscription, Topic,
};
pub use event::{Event, Observable, ObservableKind};
pub use store::{CaseStore, PostgresStore, PrivacyStore, SqliteStore, StoreError, StoreUrl, Tlp};
