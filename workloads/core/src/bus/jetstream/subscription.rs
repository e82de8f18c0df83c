//! One replica's membership in a consumer group: a durable pull consumer read as a stream
//! of deliveries, each acknowledged by the stage once its effects are stored or forwarded.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::{AckKind, Acker as NatsAcker};
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use futures::StreamExt;

use super::config::DeliveryPolicy;
use super::KEY_HEADER;
use crate::bus::{
    error_chain, Acker, BusError, DeadLetter, Delivery, Message, Subscription, Topic,
};

/// Which consumer of which stream a subscription reads, and where its dead letters go.
pub(super) struct Binding {
    pub stream: String,
    /// The durable consumer: the group, or `<group>-p<N>` for one partition.
    pub durable: String,
    /// Empty for the whole stream.
    pub filter_subject: String,
    pub group: String,
    pub topic: Topic,
    pub dead_letter_subject: String,
}

pub(super) struct JetStreamSubscription {
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
    context: jetstream::Context,
    max_deliveries: i64,
    batch: usize,
    group: String,
    topic: Topic,
    dead_letter_subject: String,
}

impl JetStreamSubscription {
    /// Creates the durable consumer, or updates it to the configured policy when it exists.
    pub(super) async fn create(
        context: jetstream::Context,
        binding: Binding,
        delivery: &DeliveryPolicy,
    ) -> Result<Self, BusError> {
        let Binding {
            stream,
            durable,
            filter_subject,
            group,
            topic,
            dead_letter_subject,
        } = binding;
        let transport = |what: &str, error: &dyn std::error::Error| {
            BusError::Transport(format!(
                "{what} {durable} on {stream}: {}",
                error_chain(error)
            ))
        };
        let stream_handle = context
            .get_stream(&stream)
            .await
            .map_err(|e| transport("finding the stream for", &e))?;
        let consumer = stream_handle
            .create_consumer(consumer_config(&durable, filter_subject, delivery))
            .await
            .map_err(|e| transport("creating the consumer", &e))?;
        Ok(JetStreamSubscription {
            consumer,
            messages: None,
            context,
            max_deliveries: i64::from(delivery.max_deliveries.max(1)),
            batch: delivery.batch.max(1),
            group,
            topic,
            dead_letter_subject,
        })
    }

    /// The next message from the server, reopening the pull stream after an error (the
    /// client reconnects underneath; a server restart ends the old stream).
    async fn next_raw(&mut self) -> jetstream::Message {
        let mut pause = Duration::from_millis(100);
        loop {
            let messages = match self.messages.as_mut() {
                Some(messages) => messages,
                None => match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.batch)
                    .messages()
                    .await
                {
                    Ok(messages) => self.messages.insert(messages),
                    Err(error) => {
                        tracing::warn!(group = %self.group, error = %error_chain(&error), "opening the pull stream failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => return message,
                Some(Err(error)) => {
                    tracing::warn!(group = %self.group, error = %error_chain(&error), "pull stream error; reopening");
                    self.messages = None;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                None => self.messages = None,
            }
        }
    }

    /// Publishes the dead letter for a message that used up its deliveries, then stops its
    /// redelivery. The letter's id makes a repeat of this step (after a crash between the
    /// two) a duplicate the stream drops.
    async fn give_up(
        &self,
        message: Message,
        stream_sequence: u64,
        acker: NatsAcker,
    ) -> Result<(), BusError> {
        let reason = format!("not acknowledged after {} deliveries", self.max_deliveries);
        tracing::warn!(group = %self.group, topic = %self.topic, stream_sequence, reason = %reason, "dead-lettering");
        let letter = DeadLetter::new(&self.group, self.topic, reason, &message);
        let letter = Message::json(&letter)?;
        let id = format!(
            "dead-{}-{}-{}",
            self.topic.name(),
            self.group,
            stream_sequence
        );
        let publish = PublishMessage::build()
            .payload(letter.payload)
            .message_id(id);
        let ack = self
            .context
            .send_publish(self.dead_letter_subject.clone(), publish)
            .await
            .map_err(|e| BusError::Transport(error_chain(&e)))?;
        ack.await
            .map_err(|e| BusError::Transport(error_chain(&e)))?;
        acker
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| BusError::Transport(e.to_string()))
    }
}

/// A durable, explicitly acknowledged pull consumer. The server allows one delivery more
/// than the policy, so that the subscription sees the message once more and can move it to
/// the dead letters itself (JetStream only emits an advisory when it stops redelivering).
fn consumer_config(
    durable: &str,
    filter_subject: String,
    delivery: &DeliveryPolicy,
) -> pull::Config {
    let max_deliver = i64::from(delivery.max_deliveries.max(1)) + 1;
    // The server requires fewer backoff steps than deliveries.
    let steps = usize::try_from(max_deliver - 1).unwrap_or(usize::MAX);
    let backoff: Vec<Duration> = delivery.backoff.iter().copied().take(steps).collect();
    pull::Config {
        durable_name: Some(durable.to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: backoff.first().copied().unwrap_or(delivery.ack_wait),
        max_deliver,
        backoff,
        filter_subject,
        max_ack_pending: delivery.max_ack_pending,
        ..Default::default()
    }
}

fn to_message(message: &async_nats::Message) -> Message {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
    };
    Message {
        id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
        key: header(KEY_HEADER),
        payload: message.payload.clone(),
    }
}

#[async_trait]
impl Subscription for JetStreamSubscription {
    /// Never ends: a durable topic is never closed, and transport errors are retried.
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let raw = self.next_raw().await;
            // Every message of a pull consumer has a reply subject carrying this; without
            // one there is nothing to count or acknowledge, so it is handed on as a first
            // delivery.
            let (delivered, stream_sequence) = match raw.info() {
                Ok(info) => (info.delivered, info.stream_sequence),
                Err(_) => (1, 0),
            };
            let message = to_message(&raw.message);
            let (_, acker) = raw.split();
            if delivered <= self.max_deliveries {
                return Some(Delivery::new(
                    message,
                    Some(Box::new(JetStreamAcker(acker))),
                ));
            }
            if let Err(error) = self.give_up(message, stream_sequence, acker).await {
                // Unacknowledged, so the server delivers it again and this is retried.
                tracing::warn!(group = %self.group, error = %error, "dead-lettering failed");
            }
        }
    }
}

struct JetStreamAcker(NatsAcker);

#[async_trait]
impl Acker for JetStreamAcker {
    /// Waits for the server to confirm, so that "acknowledged" means the server will not
    /// deliver the message to this group again.
    ///
    /// A server that restarts (or a connection that drops) loses the acknowledgement or
    /// its confirmation; it is sent again with a growing pause for up to [`ACK_PATIENCE`],
    /// long enough for the client to reconnect, so that a brief outage does not stop the
    /// stage. An acknowledgement that never gets through is an error; the message then
    /// comes back to the group, as after a crash.
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.0.double_ack().await {
                Ok(()) => return Ok(()),
                Err(error) if started.elapsed() >= ACK_PATIENCE => {
                    return Err(BusError::Transport(format!("acknowledging: {error}")));
                }
                Err(error) => {
                    tracing::warn!(error = %error, "acknowledgement not confirmed; retrying");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// How long an acknowledgement is retried before the stage gives up on it.
const ACK_PATIENCE: Duration = Duration::from_secs(60);
