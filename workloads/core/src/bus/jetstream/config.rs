//! What a JetStream bus is configured with: where the server is, how it is reached, and
//! the limits and delivery policy of its streams and consumers.

use std::path::PathBuf;
use std::time::Duration;

use crate::bus::Topic;

/// Everything [`super::JetStreamBus::connect`] needs.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// `nats://host:port` (or `tls://host:port`); several comma-separated for a cluster.
    pub url: String,
    /// Prefix of every subject (`<namespace>.events`) and stream (`<NAMESPACE>_EVENTS`), so
    /// that several Kastell instances (or tests) can share one NATS account.
    pub namespace: String,
    /// Retention of every stream unless [`Self::limits_for`] finds an override.
    pub limits: StreamLimits,
    /// Per-topic retention, for example a longer `max_age` for dead letters.
    pub topic_limits: Vec<(Topic, StreamLimits)>,
    /// Redelivery of unacknowledged messages.
    pub delivery: DeliveryPolicy,
    /// Consumer groups created at connect time, before anything is published: a stream
    /// with [`Retention::Interest`] keeps a message only for the groups that exist when it
    /// arrives. On a partitioned topic a declared group gets one consumer per partition.
    pub groups: Vec<(Topic, String)>,
    /// How many partitions [`Topic::Events`] is split into (1 = not split).
    pub event_partitions: u32,
    /// How long a publish keeps retrying while its stream is full or the server is
    /// unreachable before it fails with [`crate::bus::BusError::Full`] or a transport error.
    pub publish_patience: Duration,
    pub security: Security,
}

impl JetStreamConfig {
    /// Defaults suitable for a small installation, against the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        let dead_letters = StreamLimits {
            retention: Retention::Limits,
            discard: Discard::Old,
            max_age: Duration::from_secs(14 * 24 * 3600),
            ..StreamLimits::default()
        };
        JetStreamConfig {
            url: url.into(),
            namespace: "kastell".to_owned(),
            limits: StreamLimits::default(),
            topic_limits: vec![(Topic::DeadLetters, dead_letters)],
            delivery: DeliveryPolicy::default(),
            groups: PIPELINE_GROUPS
                .iter()
                .map(|(topic, group)| (*topic, (*group).to_owned()))
                .collect(),
            event_partitions: 1,
            publish_patience: Duration::from_secs(300),
            security: Security::default(),
        }
    }

    /// The retention that applies to `topic`.
    pub fn limits_for(&self, topic: Topic) -> &StreamLimits {
        self.topic_limits
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, limits)| limits)
            .unwrap_or(&self.limits)
    }

    /// How many partitions `topic` is split into.
    pub fn partitions_of(&self, topic: Topic) -> u32 {
        match topic {
            Topic::Events => self.event_partitions.max(1),
            _ => 1,
        }
    }
}

/// The stages' own consumer groups, declared by default.
pub const PIPELINE_GROUPS: [(Topic, &str); 4] = [
    (Topic::Events, "correlate"),
    (Topic::Detections, "enrich"),
    (Topic::Alerts, "cases"),
    (Topic::CaseEvents, "respond"),
];

/// When a stream lets go of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Once every consumer group that existed when it arrived has acknowledged it (or a
    /// limit is reached). A full stream then means its consumers are behind.
    Interest,
    /// Only when a limit (age, bytes, count) is reached; read or not.
    Limits,
}

/// What happens when a stream reaches a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Refuse new messages: publishers wait and retry (back-pressure). Nothing unread is
    /// lost, but a stream at its byte or message limit blocks its producers.
    New,
    /// Drop the oldest messages, read or not: producers never wait, slow consumers lose.
    Old,
}

/// Retention limits of one stream. Zero means "no limit" for the numeric fields, as in
/// JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    pub retention: Retention,
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_messages: i64,
    pub discard: Discard,
    /// Messages published with the same id within this window are stored once.
    pub duplicate_window: Duration,
    /// Copies kept by a NATS cluster (1 for a single server, 3 for a resilient cluster).
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            retention: Retention::Interest,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            max_messages: 0,
            discard: Discard::New,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// How a consumer group's unacknowledged messages come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Deliveries a message gets before it goes to the dead-letter stream.
    pub max_deliveries: u32,
    /// How long the server waits for an acknowledgement before the 1st, 2nd, ...
    /// redelivery; the last entry repeats. Empty means `ack_wait` every time.
    pub backoff: Vec<Duration>,
    /// Wait before a redelivery when `backoff` is empty.
    pub ack_wait: Duration,
    /// Messages a group may hold unacknowledged across all its replicas.
    pub max_ack_pending: i64,
    /// Messages one replica fetches per request. Small batches share work more evenly
    /// between replicas; large ones cost fewer round trips.
    pub batch: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_deliveries: 5,
            backoff: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(900),
            ],
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            batch: 64,
        }
    }
}

/// Transport security and credentials; every file is read at connect time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// Use TLS (1.3 only), trusting the CA certificates in this PEM file.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that verify clients.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// A file holding `user:password` on its first line.
    pub user_password_file: Option<PathBuf>,
    /// A file holding a token on its first line.
    pub token_file: Option<PathBuf>,
}
