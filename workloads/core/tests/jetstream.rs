//! The JetStream bus against a real nats-server: the one `.ci/run` starts
//! (KASTELL_NATS_URL), or for the restart test a private one this test starts itself.
//! Every test works in its own namespace, so they share the server without seeing each
//! other's streams.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kastell_core::bus::jetstream::{DeliveryPolicy, JetStreamBus, JetStreamConfig};
use kastell_core::bus::{Partition, Pipelined, Subscription};
use kastell_core::{Bus, BusError, DeadLetter, Delivery, Message, Topic};
use tokio::sync::Notify;

mod support;
use support::{free_port, PrivateServer};

/// A guard against a hang, not a timing assertion: every wait below normally ends in
/// well under a second.
const PATIENCE: Duration = Duration::from_secs(60);

fn nats_url() -> Option<String> {
    match std::env::var("KASTELL_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: KASTELL_NATS_URL not set");
            None
        }
    }
}

/// A configuration in a namespace of its own, with redelivery fast enough for a test.
fn config(url: &str, test: &str) -> JetStreamConfig {
    let mut config = JetStreamConfig::new(url);
    config.namespace = format!("t{}-{test}", std::process::id());
    config.delivery = DeliveryPolicy {
        max_deliveries: 3,
        backoff: vec![Duration::from_millis(200)],
        ack_wait: Duration::from_millis(200),
        max_ack_pending: 1000,
        batch: 1,
    };
    // JetStream reserves each stream's max_bytes from the server's storage.
    config.limits.max_bytes = 8 << 20;
    for (_, limits) in &mut config.topic_limits {
        limits.max_bytes = 8 << 20;
    }
    config.publish_patience = Duration::from_secs(30);
    config
}

/// Deletes the test's streams, so that a server reused across runs does not fill up with
/// the storage they reserve.
async fn delete_streams(url: &str, bus: &JetStreamBus) {
    let client = async_nats::connect(url)
        .await
        .expect("connect for clean-up");
    let context = async_nats::jetstream::new(client);
    for topic in Topic::ALL {
        context
            .delete_stream(bus.stream_name(topic))
            .await
            .expect("stream deleted");
    }
}

async fn next(subscription: &mut Box<dyn Subscription>) -> Delivery {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a delivery within the patience")
        .expect("a durable subscription does not end")
}

fn text(delivery: &Delivery) -> String {
    delivery.message.decode::<String>().expect("a JSON string")
}

async fn publish_text(bus: &JetStreamBus, topic: Topic, text: &str, id: &str) {
    let message = Message::json(&text).unwrap().with_id(id);
    bus.publish(topic, message).await.expect("published");
}

#[tokio::test]
async fn a_message_goes_round_trip_with_its_id_and_key() {
    let Some(url) = nats_url() else { return };
    let bus = JetStreamBus::connect(config(&url, "roundtrip"))
        .await
        .unwrap();
    let mut sub = bus.subscribe(Topic::Alerts, "cases").await.unwrap();

    let message = Message::json(&"hello")
        .unwrap()
        .with_id("m-1")
        .with_key("group-a");
    bus.publish(Topic::Alerts, message.clone()).await.unwrap();

    let delivery = next(&mut sub).await;
    assert_eq!(delivery.message, message);
    delivery.ack().await.unwrap();
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn replicas_sharing_a_group_get_disjoint_messages_covering_all() {
    let Some(url) = nats_url() else { return };
    let bus = Arc::new(
        JetStreamBus::connect(config(&url, "sharing"))
            .await
            .unwrap(),
    );
    let total = 60;
    let replicas = [
        bus.subscribe(Topic::Events, "correlate").await.unwrap(),
        bus.subscribe(Topic::Events, "correlate").await.unwrap(),
    ];
    // Another group sees every message too.
    let mut audit = bus.subscribe(Topic::Events, "audit").await.unwrap();
    for i in 0..total {
        publish_text(&bus, Topic::Events, &format!("e{i}"), &format!("id-{i}")).await;
    }

    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::new(Mutex::new(vec![Vec::new(), Vec::new()]));
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for (replica, mut sub) in replicas.into_iter().enumerate() {
        let (seen, acked, done) = (seen.clone(), acked.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let finished = done.notified();
            tokio::pin!(finished);
            loop {
                tokio::select! {
                    delivery = sub.next() => {
                        let delivery = delivery.expect("durable");
                        seen.lock().unwrap()[replica].push(text(&delivery));
                        delivery.ack().await.unwrap();
                        if acked.fetch_add(1, Ordering::SeqCst) + 1 == total {
                            done.notify_waiters();
                        }
                    }
                    _ = &mut finished => break,
                }
            }
        }));
    }
    tokio::time::timeout(PATIENCE, async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("both replicas finish");

    let seen = seen.lock().unwrap().clone();
    let first: BTreeSet<&String> = seen[0].iter().collect();
    let second: BTreeSet<&String> = seen[1].iter().collect();
    assert!(
        first.is_disjoint(&second),
        "a message reached both replicas"
    );
    assert_eq!(seen[0].len() + seen[1].len(), total, "no message twice");
    let union: BTreeSet<String> = first.union(&second).map(|s| s.to_string()).collect();
    let expected: BTreeSet<String> = (0..total).map(|i| format!("e{i}")).collect();
    assert_eq!(union, expected);

    for _ in 0..total {
        next(&mut audit).await.ack().await.unwrap();
    }
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn an_unacknowledged_message_is_delivered_again() {
    let Some(url) = nats_url() else { return };
    let bus = JetStreamBus::connect(config(&url, "redeliver"))
        .await
        .unwrap();
    let mut sub = bus.subscribe(Topic::Detections, "enrich").await.unwrap();
    publish_text(&bus, Topic::Detections, "d1", "d1").await;

    let first = next(&mut sub).await;
    assert_eq!(text(&first), "d1");
    drop(first);

    let again = next(&mut sub).await;
    assert_eq!(text(&again), "d1");
    assert_eq!(again.message.id.as_deref(), Some("d1"));
    again.ack().await.unwrap();

    // Acknowledged: a later message is next, not a third copy.
    publish_text(&bus, Topic::Detections, "d2", "d2").await;
    assert_eq!(text(&next(&mut sub).await), "d2");
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn a_message_never_acknowledged_ends_in_the_dead_letters() {
    let Some(url) = nats_url() else { return };
    let cfg = config(&url, "deadletter");
    let max_deliveries = cfg.delivery.max_deliveries as usize;
    let bus = Arc::new(JetStreamBus::connect(cfg).await.unwrap());
    let mut dead = bus.subscribe(Topic::DeadLetters, "audit").await.unwrap();
    let mut sub = bus.subscribe(Topic::CaseEvents, "respond").await.unwrap();
    publish_text(&bus, Topic::CaseEvents, "poison", "p1").await;
    publish_text(&bus, Topic::CaseEvents, "fine", "f1").await;

    // The handler fails on "poison" (drops it unacknowledged) and acknowledges the rest.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let handled = handled.clone();
        tokio::spawn(async move {
            loop {
                let delivery = sub.next().await.expect("durable");
                let body = text(&delivery);
                handled.lock().unwrap().push(body.clone());
                if body != "poison" {
                    delivery.ack().await.unwrap();
                }
            }
        })
    };

    let letter: DeadLetter = next(&mut dead).await.message.decode().unwrap();
    handler.abort();
    assert_eq!(letter.stage, "respond");
    assert_eq!(letter.topic, "kastell.case-events");
    assert_eq!(letter.payload, "\"poison\"");
    assert!(letter.reason.contains("3 deliveries"), "{}", letter.reason);

    let handled = handled.lock().unwrap().clone();
    let poison = handled.iter().filter(|b| *b == "poison").count();
    assert_eq!(poison, max_deliveries, "{handled:?}");
    assert!(handled.contains(&"fine".to_owned()));
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn a_duplicate_message_id_is_stored_once() {
    let Some(url) = nats_url() else { return };
    let bus = JetStreamBus::connect(config(&url, "dedup")).await.unwrap();
    let mut sub = bus.subscribe(Topic::Events, "correlate").await.unwrap();
    publish_text(&bus, Topic::Events, "first", "same-id").await;
    publish_text(&bus, Topic::Events, "retry of first", "same-id").await;
    publish_text(&bus, Topic::Events, "second", "other-id").await;

    let a = next(&mut sub).await;
    assert_eq!(text(&a), "first");
    a.ack().await.unwrap();
    let b = next(&mut sub).await;
    assert_eq!(text(&b), "second");
    b.ack().await.unwrap();
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn each_partition_consumer_gets_exactly_its_keys() {
    let Some(url) = nats_url() else { return };
    let mut cfg = config(&url, "partitions");
    cfg.event_partitions = 4;
    let bus = JetStreamBus::connect(cfg).await.unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
    // A message without a key goes to partition 0.
    let keyless = Message::json(&"no key").unwrap().with_id("keyless");
    bus.publish(Topic::Events, keyless).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        let message = Message::json(key)
            .unwrap()
            .with_id(format!("k{i}"))
            .with_key(key);
        bus.publish(Topic::Events, message).await.unwrap();
    }

    let mut received = BTreeSet::new();
    for index in 0..4 {
        let partition = Partition { index, count: 4 };
        let expected: Vec<&String> = keys
            .iter()
            .filter(|key| Partition::of_key(key, 4) == partition)
            .collect();
        let mut sub = bus
            .subscribe_partition(Topic::Events, "correlate", partition)
            .await
            .unwrap();
        if index == 0 {
            let delivery = next(&mut sub).await;
            assert_eq!(
                (text(&delivery).as_str(), delivery.message.key.as_deref()),
                ("no key", None)
            );
            delivery.ack().await.unwrap();
        }
        for key in expected {
            let delivery = next(&mut sub).await;
            assert_eq!(
                delivery.message.key.as_ref(),
                Some(key),
                "order within {partition}"
            );
            received.insert(text(&delivery));
            delivery.ack().await.unwrap();
        }
    }
    assert_eq!(received.len(), keys.len());

    let wrong = Partition { index: 0, count: 3 };
    assert!(bus
        .subscribe_partition(Topic::Events, "correlate", wrong)
        .await
        .is_err());
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn a_full_stream_holds_its_producers_back_until_the_consumers_catch_up() {
    let Some(url) = nats_url() else { return };
    let mut cfg = config(&url, "backpressure");
    cfg.limits.max_messages = 3;
    cfg.publish_patience = Duration::from_millis(500);
    let bus = JetStreamBus::connect(cfg).await.unwrap();
    let mut sub = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
    for i in 0..3 {
        publish_text(&bus, Topic::Alerts, &format!("a{i}"), &format!("a{i}")).await;
    }

    // Nothing acknowledged: the stream stays full, the publish gives up after its patience
    // instead of dropping an unread message.
    let refused = bus
        .publish(Topic::Alerts, Message::json(&"a3").unwrap().with_id("a3"))
        .await;
    assert!(
        matches!(
            refused,
            Err(BusError::Full {
                topic: Topic::Alerts,
                ..
            })
        ),
        "{refused:?}"
    );

    // The only group acknowledges one message, which frees its place.
    let first = next(&mut sub).await;
    assert_eq!(text(&first), "a0");
    first.ack().await.unwrap();
    publish_text(&bus, Topic::Alerts, "a3", "a3").await;

    let mut rest = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut sub).await;
        rest.push(text(&delivery));
        delivery.ack().await.unwrap();
    }
    assert_eq!(rest, ["a1", "a2", "a3"]);
    delete_streams(&url, &bus).await;
}

/// The stage processes of a platform start together and each declares every stream: all
/// must connect, and none may send the server an update for a stream another is still
/// creating (nats-server 2.9 has crashed on one). A private server, so that a crash fails
/// this test and not the rest of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buses_starting_together_declare_the_streams_without_crashing_the_server() {
    let Some(_) = nats_url() else { return };
    let store = tempfile::tempdir().unwrap();
    let mut server = PrivateServer::start(store.path(), free_port(), &[]);
    for round in 0..5 {
        let test = format!("together{round}");
        let starts = (0..6).map(|_| {
            let config = config(&server.url(), &test);
            tokio::spawn(async move { JetStreamBus::connect(config).await })
        });
        let mut buses = Vec::new();
        for start in starts {
            let bus = tokio::time::timeout(PATIENCE, start)
                .await
                .expect("connected within the patience")
                .unwrap();
            buses.push(bus.unwrap_or_else(|error| panic!("round {round}: {error:#}")));
        }
        assert!(server.is_running(), "nats-server died in round {round}");
        let mut sub = buses[0].subscribe(Topic::Alerts, "cases").await.unwrap();
        publish_text(&buses[5], Topic::Alerts, "together", &format!("r{round}")).await;
        let delivery = next(&mut sub).await;
        assert_eq!(text(&delivery), "together");
        delivery.ack().await.unwrap();
    }
}

async fn stream_info(
    context: &async_nats::jetstream::Context,
    stream: &str,
) -> async_nats::jetstream::stream::Info {
    let found = context.get_stream(stream).await.expect("the stream exists");
    found.cached_info().clone()
}

#[tokio::test]
async fn a_changed_limit_updates_the_existing_stream_and_an_unchanged_one_leaves_it() {
    let Some(url) = nats_url() else { return };
    let mut first = config(&url, "limits");
    first.limits.max_age = Duration::from_secs(3600);
    let bus = JetStreamBus::connect(first.clone()).await.unwrap();
    let stream = bus.stream_name(Topic::Events);
    let context = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let created = stream_info(&context, &stream).await;
    assert_eq!(created.config.max_age, Duration::from_secs(3600));

    // The same configuration again: the stream is left as it was.
    JetStreamBus::connect(first.clone()).await.unwrap();
    let again = stream_info(&context, &stream).await;
    assert_eq!(again.config.max_age, Duration::from_secs(3600));
    assert_eq!(again.created, created.created);

    let mut second = first;
    second.limits.max_age = Duration::from_secs(7200);
    let bus = JetStreamBus::connect(second).await.unwrap();
    let updated = stream_info(&context, &stream).await;
    assert_eq!(updated.config.max_age, Duration::from_secs(7200));
    assert_eq!(
        updated.created, created.created,
        "updated in place, not re-created"
    );
    delete_streams(&url, &bus).await;
}

#[tokio::test]
async fn a_killed_and_restarted_server_loses_no_acknowledged_message() {
    let Some(_) = nats_url() else { return };
    let store = tempfile::tempdir().unwrap();
    let mut server = PrivateServer::start(store.path(), free_port(), &[]);
    let bus = JetStreamBus::connect(config(&server.url(), "restart"))
        .await
        .unwrap();
    let mut sub = bus.subscribe(Topic::Alerts, "cases").await.unwrap();

    // Every publish below returned only after the stream acknowledged it.
    for i in 0..10 {
        publish_text(&bus, Topic::Alerts, &format!("a{i}"), &format!("a{i}")).await;
    }
    let mut consumed = BTreeSet::new();
    for _ in 0..4 {
        let delivery = next(&mut sub).await;
        consumed.insert(text(&delivery));
        delivery.ack().await.unwrap();
    }

    let port = server.port;
    server.kill();
    let mut server = PrivateServer::start(store.path(), port, &[]);

    // Published after the restart, through the same (reconnected) client.
    for i in 10..12 {
        publish_text(&bus, Topic::Alerts, &format!("a{i}"), &format!("a{i}")).await;
    }

    // A pipelined batch (as ingest publishes) with the server killed in its middle: up to
    // 32 publishes are sent and not yet acknowledged when it dies, and more are sent while
    // it is away. The flush returns only once every one of them is stored; those the dead
    // server had stored after all are repeats its message ids drop.
    let pipelined = Pipelined::new(&bus, 32);
    for i in 0..200 {
        let message = Message::json(&format!("b{i}"))
            .unwrap()
            .with_id(format!("b{i}"));
        pipelined.publish(Topic::Alerts, message).await.unwrap();
        if i == 99 {
            server.kill();
            server = PrivateServer::start(store.path(), port, &[]);
        }
    }
    tokio::time::timeout(PATIENCE, pipelined.flush())
        .await
        .expect("the batch is stored once the server is back")
        .unwrap();

    // Nothing stored is lost. An acknowledgement the killed server had not yet written
    // may come back as a redelivery (at-least-once), so duplicates are allowed only among
    // the messages consumed before the kill.
    let all: BTreeSet<String> = (0..12)
        .map(|i| format!("a{i}"))
        .chain((0..200).map(|i| format!("b{i}")))
        .collect();
    let mut missing: BTreeSet<String> = all.difference(&consumed).cloned().collect();
    while !missing.is_empty() {
        let delivery = next(&mut sub).await;
        let body = text(&delivery);
        assert!(
            missing.remove(&body) || consumed.contains(&body),
            "{body} delivered twice after the restart"
        );
        delivery.ack().await.unwrap();
    }
    drop(server);
}

#[tokio::test]
async fn a_publish_to_a_vanished_server_fails_as_transport_not_as_full() {
    let Some(_) = nats_url() else { return };
    let store = tempfile::tempdir().unwrap();
    let mut server = PrivateServer::start(store.path(), free_port(), &[]);
    let mut cfg = config(&server.url(), "vanished");
    cfg.publish_patience = Duration::from_millis(500);
    let bus = JetStreamBus::connect(cfg).await.unwrap();
    server.kill();

    let message = Message::json(&"lost?").unwrap().with_id("v1");
    let result = bus.publish(Topic::Alerts, message).await;
    assert!(matches!(result, Err(BusError::Transport(_))), "{result:?}");
}
