//! The operator process: health and metrics endpoints, leader election, then every
//! controller, the git sync and its webhook, until the Lease is lost or a signal arrives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::controller::health::{self, Health};
use crate::controller::leader::{Election, LeaderError};
use crate::controller::{self, Context, Metrics};
use crate::gitsync::{self, Syncer};

/// How `kastell operator` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Image of the stages when a platform names none.
    pub stage_image: String,
    /// The Lease to hold; `None` runs without leader election (one replica only).
    pub election: Option<Election>,
    /// Address of the git push webhook (`/hooks/git/{namespace}/{platform}`); `None`
    /// serves no webhook. Only the leader listens, so a Service reaches the replica that
    /// syncs.
    pub webhook_listen: Option<SocketAddr>,
    /// Where the git sync caches the platforms' repositories.
    pub git_cache: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs the operator.
///
/// # Errors
///
/// When there is no usable kubeconfig or service account, the listen address is taken,
/// or leadership is lost (the process should exit and be restarted as a standby).
pub async fn serve(options: Options) -> Result<(), ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(ServeError::Client)?;
    let metrics = Arc::new(Metrics::new().map_err(ServeError::Metrics)?);
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        leading: false.into(),
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(addr = %options.listen, "serving /healthz, /readyz and /metrics");
    let router = health::router(health.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "health endpoints stopped");
        }
    });

    if let Some(election) = &options.election {
        election.acquire(&client).await?;
    }
    health.leading.store(true, Ordering::Relaxed);
    let pod = options
        .election
        .as_ref()
        .map_or_else(|| "kastell-operator".to_owned(), |e| e.identity.clone());
    let context = Arc::new(Context::new(
        client.clone(),
        metrics,
        options.stage_image,
        pod,
    ));
    let syncer = Syncer::new(context.clone(), options.git_cache.clone());
    if let Some(addr) = options.webhook_listen {
        serve_webhook(addr, syncer.clone()).await?;
    }
    let work = async {
        futures::join!(controller::run(context), gitsync::run(syncer, None));
    };
    match &options.election {
        Some(election) => {
            tokio::select! {
                () = work => Ok(()),
                lost = election.keep(&client) => Err(lost.into()),
            }
        }
        None => {
            work.await;
            Ok(())
        }
    }
}

async fn serve_webhook(addr: SocketAddr, syncer: Arc<Syncer>) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!(%addr, "serving the git webhook /hooks/git/{{namespace}}/{{platform}}");
    let router = gitsync::webhook::router(syncer);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "git webhook stopped");
        }
    });
    Ok(())
}

/// The default Lease duration: a new leader takes over within this after a crash.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
