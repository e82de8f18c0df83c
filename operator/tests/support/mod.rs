//! What the git-sync and ownership tests share: the operator run against the test's
//! namespace, and waiting for what it should do.
// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kastell_kube_harness::TestEnv;
use kastell_operator::controller::{self, Context, Metrics};
use kastell_operator::gitsync::{self, Syncer};

/// How long a test waits for the operator before it reports what it saw instead.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The operator's controllers and the git sync, watching only the test's namespace so
/// that tests running side by side do not sync each other's platforms.
pub struct Operator {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub syncer: Arc<Syncer>,
    _cache: tempfile::TempDir,
}

impl Drop for Operator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `identity` names the operator in its Lease and Events, so that a failure shows which
/// test's operator acted.
pub fn start_operator(env: &TestEnv, identity: &str) -> Operator {
    let metrics = Arc::new(Metrics::new().expect("metrics register"));
    let context = Arc::new(Context::new(
        env.client(),
        metrics,
        "ghcr.io/kastell-eu/kastell:test".into(),
        identity.into(),
    ));
    let cache = tempfile::tempdir().unwrap();
    let syncer = Syncer::new(context.clone(), cache.path().to_owned());
    let namespace = Some(env.namespace().to_owned());
    Operator {
        tasks: vec![
            tokio::spawn(gitsync::run(syncer.clone(), namespace)),
            tokio::spawn(controller::run(context)),
        ],
        syncer,
        _cache: cache,
    }
}

pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: not reached; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
