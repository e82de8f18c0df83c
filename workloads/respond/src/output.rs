//! What the stage tells the rest of the platform besides the action records: each
//! step's result for the case timeline and the audit log, and the case operations the
//! cases stage carries out. They go to an [`Outbox`]: in a running platform the
//! [`BusOutbox`], which publishes them on [`Topic::ResponseOutputs`] for the cases stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kastell_core::{error_chain, Bus, Message, Topic};
use sha2::{Digest, Sha256};

pub use kastell_core::response::{CaseAction, CaseOperation, RespondOutput, StepResult};

/// Where the stage's messages go.
#[async_trait]
pub trait Outbox: Send + Sync {
    async fn publish(&self, output: RespondOutput);
}

/// Messages written to the log as structured events (`respond output`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOutbox;

#[async_trait]
impl Outbox for LogOutbox {
    async fn publish(&self, output: RespondOutput) {
        let text = serde_json::to_string(&output).unwrap_or_default();
        tracing::info!(output = %text, "respond output");
    }
}

/// Messages kept in memory, in order: for tests and `kastell playbook test`.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    messages: Mutex<Vec<RespondOutput>>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<RespondOutput> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn publish(&self, output: RespondOutput) {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(output);
    }
}

/// Messages published on [`Topic::ResponseOutputs`], where the cases stage applies the
/// case operations and files the step results.
pub struct BusOutbox {
    bus: Arc<dyn Bus>,
    failed: AtomicU64,
}

impl BusOutbox {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        BusOutbox {
            bus,
            failed: AtomicU64::new(0),
        }
    }

    /// Messages the bus refused (logged with the message; the action record holds the
    /// result regardless).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Outbox for BusOutbox {
    async fn publish(&self, output: RespondOutput) {
        let published = match Message::json(&output) {
            // The id is the payload's digest: a durable bus drops the very same message
            // published twice, while two different results of one action both go out.
            Ok(message) => {
                let id = format!(
                    "respond-{}",
                    &hex::encode(Sha256::digest(&message.payload))[..32]
                );
                self.bus
                    .publish(Topic::ResponseOutputs, message.with_id(id))
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = published {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let text = serde_json::to_string(&output).unwrap_or_default();
            tracing::warn!(
                reason = %error_chain(&error),
                output = %text,
                "respond output not published"
            );
        }
    }
}
