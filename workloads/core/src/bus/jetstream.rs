//! The NATS JetStream bus used in cluster mode.
//!
//! Each [`Topic`] is one stream (`<NAMESPACE>_EVENTS`, ...) holding the subjects
//! `<namespace>.<topic>` and, for a partitioned topic, `<namespace>.<topic>.p<N>`. A
//! consumer group is a durable pull consumer named after the group, so the replicas of a
//! stage that subscribe with the same group share its messages, and every group sees every
//! message. A delivery must be acknowledged after its effects are stored or forwarded;
//! until then the server redelivers it after the configured backoff, and a message that was
//! delivered `max_deliveries` times without an acknowledgement is published to the
//! dead-letter stream by the subscription that receives it next. docs/cluster.md has the
//! whole picture.

mod config;
mod connect;
mod subscription;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    context::{CreateStreamError, CreateStreamErrorKind, PublishErrorKind},
    stream,
};
use async_trait::async_trait;

use super::{error_chain, Bus, BusError, Message, Partition, PendingPublish, Subscription, Topic};
pub use config::{
    DeliveryPolicy, Discard, JetStreamConfig, Retention, Security, StreamLimits, PIPELINE_GROUPS,
};
use subscription::{Binding, JetStreamSubscription};

/// Header carrying [`Message::key`]; the id travels in JetStream's own `Nats-Msg-Id`.
const KEY_HEADER: &str = "Kastell-Key";

/// Setting up the JetStream bus.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("connecting to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("reading the {what} file {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected {expected}")]
    Malformed {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("declaring consumer group {group:?} of topic {topic}")]
    Group {
        group: String,
        topic: Topic,
        #[source]
        source: BusError,
    },
    #[error("creating or updating the stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// The bus over NATS JetStream.
pub struct JetStreamBus {
    context: jetstream::Context,
    config: JetStreamConfig,
}

impl JetStreamBus {
    /// Connects, creates (or updates to the configured limits) the five streams and the
    /// declared consumer groups.
    ///
    /// # Errors
    ///
    /// When a credential or certificate file cannot be read, the server cannot be reached,
    /// or it refuses a stream's or consumer's configuration (a stream's retention policy
    /// cannot be changed once created).
    pub async fn connect(config: JetStreamConfig) -> Result<Self, JetStreamError> {
        let options = connect::connect_options(&config.security).await?;
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|source| JetStreamError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let bus = JetStreamBus {
            context: jetstream::new(client),
            config,
        };
        for topic in Topic::ALL {
            bus.ensure_stream(topic).await?;
        }
        for (topic, group) in &bus.config.groups {
            bus.declare_group(*topic, group).await?;
        }
        Ok(bus)
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// The stream that holds `topic`.
    pub fn stream_name(&self, topic: Topic) -> String {
        format!("{}_{}", self.config.namespace, topic.name())
            .to_uppercase()
            .replace(['-', '.'], "_")
    }

    /// The subject of `topic` (partitions are `<subject>.p<N>`).
    pub fn subject(&self, topic: Topic) -> String {
        format!("{}.{}", self.config.namespace, topic.name())
    }

    /// Where a message goes: its partition's subject when the topic is split.
    fn publish_subject(&self, topic: Topic, message: &Message) -> String {
        let subject = self.subject(topic);
        match self.config.partitions_of(topic) {
            1 => subject,
            count => {
                let partition = match message.key.as_deref() {
                    Some(key) => Partition::of_key(key, count),
                    None => Partition { index: 0, count },
                };
                partition.subject(&subject)
            }
        }
    }

    async fn ensure_stream(&self, topic: Topic) -> Result<(), JetStreamError> {
        let limits = self.config.limits_for(topic);
        let subject = self.subject(topic);
        let name = self.stream_name(topic);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone(), format!("{subject}.>")],
            retention: match limits.retention {
                Retention::Interest => stream::RetentionPolicy::Interest,
                Retention::Limits => stream::RetentionPolicy::Limits,
            },
            storage: stream::StorageType::File,
            max_age: limits.max_age,
            max_bytes: if limits.max_bytes > 0 {
                limits.max_bytes
            } else {
                -1
            },
            max_messages: if limits.max_messages > 0 {
                limits.max_messages
            } else {
                -1
            },
            discard: match limits.discard {
                Discard::New => stream::DiscardPolicy::New,
                Discard::Old => stream::DiscardPolicy::Old,
            },
            duplicate_window: limits.duplicate_window,
            num_replicas: limits.replicas.max(1),
            ..Default::default()
        };
        self.declare_stream(config)
            .await
            .map_err(|source| JetStreamError::Stream {
                stream: name,
                source,
            })
    }

    /// Creates the stream when it is missing and updates it only when a field Kastell sets
    /// differs. The stage processes of one platform start together and each declares every
    /// stream; nats-server 2.9 (Debian's) can crash on an update that races the same
    /// stream's creation, which `create_or_update_stream` sends on every start. Reading
    /// first means concurrent starts of an unchanged platform send no updates at all.
    async fn declare_stream(&self, config: stream::Config) -> Result<(), CreateStreamError> {
        let existing = match self.context.get_stream(&config.name).await {
            Ok(found) => Some(found.cached_info().config.clone()),
            Err(error) if is_stream_missing(&error) => None,
            Err(error) => {
                return Err(CreateStreamError::with_source(
                    CreateStreamErrorKind::Response,
                    error,
                ))
            }
        };
        let existing = match existing {
            Some(existing) => existing,
            None => match self.context.create_stream(config.clone()).await {
                Ok(_) => return Ok(()),
                // Another process created it between our read and our create.
                Err(error) if is_name_taken(&error) => self
                    .context
                    .get_stream(&config.name)
                    .await
                    .map_err(|error| {
                        CreateStreamError::with_source(CreateStreamErrorKind::Response, error)
                    })?
                    .cached_info()
                    .config
                    .clone(),
                Err(error) => return Err(error),
            },
        };
        if !stream_settings_differ(&existing, &config) {
            return Ok(());
        }
        tracing::info!(stream = %config.name, "updating the stream to the configured limits");
        self.context.update_stream(&config).await?;
        Ok(())
    }

    fn binding(&self, topic: Topic, group: &str, durable: String, filter: String) -> Binding {
        Binding {
            stream: self.stream_name(topic),
            durable,
            filter_subject: filter,
            group: group.to_owned(),
            topic,
            dead_letter_subject: self.subject(Topic::DeadLetters),
        }
    }

    /// Creates the group's consumer (one per partition on a split topic) without reading.
    async fn declare_group(&self, topic: Topic, group: &str) -> Result<(), JetStreamError> {
        let count = self.config.partitions_of(topic);
        let consumers: Vec<(String, String)> = if count == 1 {
            vec![(group.to_owned(), String::new())]
        } else {
            (0..count)
                .map(|index| {
                    let partition = Partition { index, count };
                    (
                        partition_durable(group, partition),
                        partition.subject(&self.subject(topic)),
                    )
                })
                .collect()
        };
        for (durable, filter) in consumers {
            JetStreamSubscription::create(
                self.context.clone(),
                self.binding(topic, group, durable, filter),
                &self.config.delivery,
            )
            .await
            .map_err(|source| JetStreamError::Group {
                group: group.to_owned(),
                topic,
                source,
            })?;
        }
        Ok(())
    }

    async fn subscribe_filtered(
        &self,
        topic: Topic,
        durable: String,
        filter_subject: String,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let subscription = JetStreamSubscription::create(
            self.context.clone(),
            self.binding(topic, group, durable, filter_subject),
            &self.config.delivery,
        )
        .await?;
        Ok(Box::new(subscription))
    }
}

fn is_stream_missing(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

fn is_name_taken(error: &CreateStreamError) -> bool {
    matches!(
        error.kind(),
        CreateStreamErrorKind::JetStream(ref inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// Whether the fields Kastell sets differ between a stream on the server and the wanted
/// configuration; the server fills in the rest with its defaults, which are not compared.
fn stream_settings_differ(existing: &stream::Config, wanted: &stream::Config) -> bool {
    let mut existing_subjects = existing.subjects.clone();
    let mut wanted_subjects = wanted.subjects.clone();
    existing_subjects.sort();
    wanted_subjects.sort();
    // A zero duplicate window asks for the server's default, which it reports back.
    let duplicate_window_differs =
        !wanted.duplicate_window.is_zero() && existing.duplicate_window != wanted.duplicate_window;
    existing_subjects != wanted_subjects
        || existing.retention != wanted.retention
        || existing.storage != wanted.storage
        || existing.max_age != wanted.max_age
        || existing.max_bytes != wanted.max_bytes
        || existing.max_messages != wanted.max_messages
        || existing.discard != wanted.discard
        || existing.num_replicas != wanted.num_replicas
        || duplicate_window_differs
}

fn publish_message(message: &Message) -> jetstream::message::PublishMessage {
    let mut publish = jetstream::message::PublishMessage::build().payload(message.payload.clone());
    if let Some(id) = &message.id {
        publish = publish.message_id(id);
    }
    if let Some(key) = &message.key {
        publish = publish.header(KEY_HEADER, key.as_str());
    }
    publish
}

/// Publishes once.
async fn try_publish(
    context: &jetstream::Context,
    subject: &str,
    message: &Message,
) -> Result<Attempt, BusError> {
    let result = match context
        .send_publish(subject.to_owned(), publish_message(message))
        .await
    {
        Ok(ack) => ack.await,
        Err(error) => Err(error),
    };
    judge(subject, message, result)
}

/// What a publish's outcome means: stored, worth retrying, or failed for good.
fn judge(
    subject: &str,
    message: &Message,
    result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<Attempt, BusError> {
    let error = match result {
        Ok(ack) => {
            if ack.duplicate {
                tracing::debug!(subject, id = ?message.id, "duplicate dropped by the stream");
            }
            return Ok(Attempt::Stored);
        }
        Err(error) => error,
    };
    let text = error_chain(&error);
    let attempt = match error.kind() {
        PublishErrorKind::Other if is_stream_full(&text) => Attempt::Full,
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => Attempt::Unreachable(text.clone()),
        _ => return Err(BusError::Transport(text)),
    };
    tracing::warn!(subject, error = %text, "publish refused; retrying");
    Ok(attempt)
}

/// Publishes until the stream stores the message: while the stream is full or the server
/// unreachable it retries with a growing pause (back-pressure: the caller stays blocked,
/// and so does whatever feeds it), for at most `patience`.
async fn publish_until_stored(
    context: &jetstream::Context,
    patience: Duration,
    topic: Topic,
    subject: &str,
    message: &Message,
) -> Result<(), BusError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = try_publish(context, subject, message).await?;
        let waited = started.elapsed();
        match attempt {
            Attempt::Stored => return Ok(()),
            Attempt::Full if waited >= patience => {
                return Err(BusError::Full { topic, waited });
            }
            Attempt::Unreachable(error) if waited >= patience => {
                return Err(BusError::Transport(error));
            }
            Attempt::Full | Attempt::Unreachable(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// How one publish went, when it did not fail for good.
enum Attempt {
    Stored,
    /// The stream is at a limit (discard policy "new"): its consumers are behind.
    Full,
    /// The server is restarting or unreachable, or the stream is not there (yet).
    Unreachable(String),
}

/// The durable consumer of one partition for a group.
fn partition_durable(group: &str, partition: Partition) -> String {
    format!("{group}-p{}", partition.index)
}

/// The server reports a stream at its limit only in the error text (API error 10077).
fn is_stream_full(text: &str) -> bool {
    text.contains("maximum messages exceeded")
        || text.contains("maximum bytes exceeded")
        || text.contains("maximum messages per subject exceeded")
}

#[async_trait]
impl Bus for JetStreamBus {
    /// Publishes and waits for the stream's acknowledgement. While the stream is full or
    /// the server unreachable it retries with a growing pause (back-pressure: the caller
    /// stays blocked, and so does whatever feeds it), for at most `publish_patience`.
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let subject = self.publish_subject(topic, &message);
        publish_until_stored(
            &self.context,
            self.config.publish_patience,
            topic,
            &subject,
            &message,
        )
        .await
    }

    /// Sends the message and returns the wait for its acknowledgement. An acknowledgement
    /// that does not come as "stored" (timeout, full stream, server restarting) turns
    /// into the retrying publish of [`Bus::publish`]; the message id makes a repeat of a
    /// message that was stored after all a duplicate the stream drops.
    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<PendingPublish, BusError> {
        let subject = self.publish_subject(topic, &message);
        let context = self.context.clone();
        let patience = self.config.publish_patience;
        let sent = context
            .send_publish(subject.clone(), publish_message(&message))
            .await;
        // NB: a task of its own, not a future polled when the publisher gets to it: the
        // acknowledgement's timeout starts at its first poll, so publishes lost with a
        // dying server would otherwise time out (5 s) one after another, not together.
        let waiting = tokio::spawn(async move {
            let first = match sent {
                Ok(ack) => judge(&subject, &message, ack.await)?,
                Err(error) => judge(&subject, &message, Err(error))?,
            };
            match first {
                Attempt::Stored => Ok(()),
                Attempt::Full | Attempt::Unreachable(_) => {
                    publish_until_stored(&context, patience, topic, &subject, &message).await
                }
            }
        });
        Ok(PendingPublish::new(async move {
            waiting
                .await
                .map_err(|e| BusError::Transport(format!("waiting for a publish: {e}")))?
        }))
    }

    /// Joins the group's durable consumer of the whole topic (all partitions).
    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.subscribe_filtered(topic, group.to_owned(), String::new(), group)
            .await
    }

    /// Joins the durable consumer `<group>-p<N>` that reads only partition N.
    async fn subscribe_partition(
        &self,
        topic: Topic,
        group: &str,
        partition: Partition,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let count = self.config.partitions_of(topic);
        if partition.count != count || partition.index >= count {
            return Err(BusError::Unpartitioned { topic, partition });
        }
        if count == 1 {
            return self.subscribe(topic, group).await;
        }
        let durable = partition_durable(group, partition);
        let filter = partition.subject(&self.subject(topic));
        self.subscribe_filtered(topic, durable, filter, group).await
    }

    /// Streams are durable and shared by processes: nothing to close.
    async fn close(&self, _topic: Topic) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_stream_is_recognised_from_the_server_text() {
        assert!(is_stream_full(
            "publish failed: maximum bytes exceeded (code 503, 10077)"
        ));
        assert!(is_stream_full("maximum messages exceeded"));
        assert!(!is_stream_full("publish failed: wrong last sequence"));
    }
}
