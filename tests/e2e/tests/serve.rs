//! `kastell run` without `--once`: after the replay the case API serves what the pipeline
//! stored, and approving a pending action makes the respond stage run it.

use std::net::SocketAddr;
use std::time::Duration;

use kastell::pipeline::{bind, run, Mode};
use serde_json::Value;
use tokio::sync::oneshot;

async fn get(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    assert_ne!(
        response.status(),
        401,
        "GET {url} needs the client's API key"
    );
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Polls until the action has left `approved`, i.e. the respond stage has run it.
async fn wait_for_outcome(client: &reqwest::Client, base: &str, id: i64) -> Value {
    for _ in 0..200 {
        let action = get(client, format!("{base}/api/v1/actions/{id}")).await;
        if action["status"] != "approved" && action["status"] != "pending" {
            return action;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("action {id} was never run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_pending_action_runs_it_and_rejecting_needs_a_reason() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let setup = kastell::setup::prepare(&kastell_e2e::example_dir(), &[])
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let listener = bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let (replayed_tx, replayed) = oneshot::channel();
    let mode = Mode::Serve {
        listener,
        shutdown: Box::pin(async {
            let _ = stopped.await;
        }),
        on_replayed: Box::new(move |summary| {
            let _ = replayed_tx.send(summary.actions_pending);
        }),
    };
    let data_dir = data.path().to_owned();
    // The API answers only authenticated callers: a responder key, made the way
    // `kastell apikey create` makes it, in the store the pipeline opens.
    let key = kastell::apikey::create_key(
        &data_dir,
        "analyst-1",
        "responder".parse().unwrap(),
        "amber".parse().unwrap(),
    )
    .await
    .unwrap();
    let pipeline = tokio::spawn(async move { run(setup, &data_dir, mode).await });
    let pending_after_replay = replayed.await.unwrap();
    assert!(pending_after_replay > 0);

    let anonymous = reqwest::Client::new()
        .get(format!("{base}/api/v1/cases"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let cases = get(&client, format!("{base}/api/v1/cases")).await;
    assert!(!cases["items"].as_array().unwrap().is_empty());
    let pending = get(&client, format!("{base}/api/v1/actions?status=pending")).await;
    let pending = pending["items"].as_array().unwrap().clone();
    assert_eq!(pending.len() as u64, pending_after_replay);

    // The demo webhook points at 127.0.0.1:9099, where nothing listens: once approved,
    // the step runs and fails with a connection error, recorded on the action.
    let first = pending[0]["id"].as_i64().unwrap();
    let approved = client
        .post(format!("{base}/api/v1/actions/{first}/approve"))
        .send()
        .await
        .unwrap();
    assert!(approved.status().is_success(), "{}", approved.status());
    let ran = wait_for_outcome(&client, &base, first).await;
    assert_eq!(ran["status"], "failed", "{ran}");
    assert_eq!(ran["decided_by"], "apikey:analyst-1");

    // A second decision on the same action is a conflict.
    let again = client
        .post(format!("{base}/api/v1/actions/{first}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let second = pending[1]["id"].as_i64().unwrap();
    let no_reason = client
        .post(format!("{base}/api/v1/actions/{second}/reject"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(no_reason.status().is_client_error());
    let rejected = client
        .post(format!("{base}/api/v1/actions/{second}/reject"))
        .json(&serde_json::json!({"reason": "benign lab traffic"}))
        .send()
        .await
        .unwrap();
    assert!(rejected.status().is_success());
    let action = get(&client, format!("{base}/api/v1/actions/{second}")).await;
    assert_eq!(action["status"], "rejected");
    assert_eq!(action["reason"], "benign lab traffic");

    stop.send(()).unwrap();
    let summary = pipeline.await.unwrap().unwrap();
    assert_eq!(summary.actions_pending, pending_after_replay - 2);
    // Everything the pipeline and the responder changed is on an intact audit chain.
    let verdict = kastell::audit::verify(data.path()).await.unwrap();
    assert!(
        matches!(verdict, kastell_core::Verdict::Intact { entries } if entries > 2),
        "{verdict}"
    );
}
