//! The stage commands, `kastell ingest|correlate|enrich|cases|respond`: one stage of the
//! pipeline per process, as the operator's Deployments run them. Each is configured from
//! flags (or their environment variables) and a resource directory, connects to the bus,
//! serves `/healthz`, `/readyz` and `/metrics` (the cases stage its whole API), reloads
//! its resources when the directory changes and, on SIGINT or SIGTERM, stops taking new
//! work, finishes and acknowledges what it holds, and exits. docs/cluster.md describes
//! them for operators.

mod consume;
mod endpoint;
mod ingest;
pub mod partitions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::ValueEnum;
use kastell_core::bus::jetstream::{JetStreamBus, JetStreamConfig, Security};
use kastell_core::{Bus, BusError, CaseStore, InProcessBus, Message, Topic};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The five stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Ingest,
    Correlate,
    Enrich,
    Cases,
    Respond,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Correlate => "correlate",
            Stage::Enrich => "enrich",
            Stage::Cases => "cases",
            Stage::Respond => "respond",
        }
    }
}

/// Which bus the stage talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BusKind {
    /// NATS JetStream: the cluster bus, shared by the stage processes.
    Nats,
    /// The in-process bus: nothing reaches another process; for trying a stage's
    /// endpoints and configuration alone.
    Memory,
}

/// The flags every stage command takes; each can also come from its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct StageArgs {
    /// Resource directory: a directory of resource YAML, or the operator's per-stage
    /// bundle as mounted from its ConfigMap.
    #[arg(long, env = "KASTELL_CONFIG", default_value = "/etc/kastell/config")]
    pub config: PathBuf,
    /// Address of /healthz, /readyz and /metrics (the cases stage serves its API there
    /// too). HTTPS with --tls-cert and --tls-key, else plain HTTP, which the cases stage
    /// serves only on loopback; see docs/cluster.md.
    #[arg(long, env = "KASTELL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// The bus.
    #[arg(long, env = "KASTELL_BUS", value_enum, default_value_t = BusKind::Nats)]
    pub bus: BusKind,
    /// NATS server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    #[arg(long, env = "KASTELL_NATS_URL")]
    pub nats_url: Option<String>,
    /// Prefix of the subjects and streams, so that several instances share one account.
    #[arg(long, env = "KASTELL_NATS_NAMESPACE", default_value = "kastell")]
    pub nats_namespace: String,
    /// CA certificates (PEM) to trust for NATS over TLS 1.3; setting it turns TLS on.
    #[arg(long, env = "KASTELL_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies clients.
    #[arg(long, env = "KASTELL_NATS_CERT_FILE", requires = "nats_key_file")]
    pub nats_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "KASTELL_NATS_KEY_FILE", requires = "nats_cert_file")]
    pub nats_key_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and NKey seed).
    #[arg(long, env = "KASTELL_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// A file holding `user:password` on its first line.
    #[arg(long, env = "KASTELL_NATS_USER_PASSWORD_FILE")]
    pub nats_user_password_file: Option<PathBuf>,
    /// A file holding a NATS token on its first line.
    #[arg(long, env = "KASTELL_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// Partitions of the events topic on NATS [default: the platform's
    /// spec.bus.eventPartitions, else 8]. Every stage must use the same number.
    #[arg(long, env = "KASTELL_EVENT_PARTITIONS")]
    pub event_partitions: Option<u32>,
    /// correlate: this replica's index, 0-based (a StatefulSet's pod index).
    #[arg(long, env = "KASTELL_REPLICA_INDEX", default_value_t = 0)]
    pub replica_index: u32,
    /// correlate: how many replicas share the events partitions.
    #[arg(long, env = "KASTELL_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
    /// correlate: the partitions to read, such as `0-3` or `1,5` (instead of
    /// --replica-index and --replicas).
    #[arg(long, env = "KASTELL_PARTITIONS", value_parser = partitions::parse_partition_list)]
    pub partitions: Option<partitions::PartitionList>,
    /// How often the resource directory is checked for a change.
    #[arg(long, env = "KASTELL_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    pub reload_interval: Duration,
    /// Where the stage keeps its state: ingest its file-tail checkpoints and dead letters,
    /// cases and respond their SQLite store when `--store` is not given.
    #[arg(long, env = "KASTELL_DATA", default_value = "/var/lib/kastell")]
    pub data: PathBuf,
    /// The case store of cases and respond: a directory for SQLite, or a
    /// `postgres://` URL [default: the --data directory].
    #[arg(long, env = "KASTELL_STORE")]
    pub store: Option<String>,
    /// A file holding the PostgreSQL password on its first line, set into the `--store`
    /// URL: the password then stays out of the environment and the process arguments.
    #[arg(long, env = "KASTELL_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    kastell_enrich::refresh::parse_interval(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 5s, 1m or 500ms"))
}

/// Runs one stage until SIGINT or SIGTERM (or until its input ends, on the in-process
/// bus), then stops it gracefully.
///
/// # Errors
///
/// When the configuration cannot be read, the bus or store cannot be reached, the
/// address cannot be bound, or the stage fails.
pub async fn run(stage: Stage, args: StageArgs) -> anyhow::Result<()> {
    let signal = crate::shutdown::on_signal().context("installing the signal handlers")?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let signal = signal.await;
            tracing::info!(signal, "stopping: finishing the work in hand");
            stop.cancel();
        });
    }
    let span = tracing::info_span!("stage", stage = stage.as_str());
    async move {
        let tls = server_tls(&args, &stop)?;
        let bus = connect_bus(&args).await?;
        tracing::info!(
            bus = ?args.bus,
            config = %args.config.display(),
            https = tls.is_some(),
            "stage starting"
        );
        match stage {
            Stage::Ingest => ingest::run(&args, bus, tls, stop).await,
            _ => consume::run(stage, &args, bus, tls, stop).await,
        }
    }
    .instrument(span)
    .await
}

/// The endpoint's TLS configuration when `--tls-cert` is given, re-read every
/// `--reload-interval` until `stop` so a rotated certificate is picked up.
fn server_tls(
    args: &StageArgs,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<crate::tls::ServerTls>>> {
    let Some(files) = args.tls.files() else {
        return Ok(None);
    };
    let tls = crate::tls::ServerTls::load(files.clone())
        .with_context(|| format!("loading the TLS certificate {}", files.cert.display()))?;
    let tls = Arc::new(tls);
    tls.spawn_reloader(args.reload_interval, stop.clone());
    Ok(Some(tls))
}

async fn connect_bus(args: &StageArgs) -> anyhow::Result<Arc<dyn Bus>> {
    let bus: Arc<dyn Bus> = match args.bus {
        BusKind::Memory => Arc::new(InProcessBus::new(crate::pipeline::BUS_CAPACITY)),
        BusKind::Nats => {
            let url = match &args.nats_url {
                Some(url) => url.clone(),
                None => platform_bus_url(args)?,
            };
            let mut config = JetStreamConfig::new(url.clone());
            config.namespace = args.nats_namespace.clone();
            config.event_partitions = event_partitions(args);
            config.security = Security {
                tls_ca_file: args.nats_ca_file.clone(),
                tls_client_cert_file: args.nats_cert_file.clone(),
                tls_client_key_file: args.nats_key_file.clone(),
                credentials_file: args.nats_creds_file.clone(),
                user_password_file: args.nats_user_password_file.clone(),
                token_file: args.nats_token_file.clone(),
            };
            let bus = JetStreamBus::connect(config)
                .await
                .with_context(|| format!("connecting to NATS JetStream at {url}"))?;
            Arc::new(bus)
        }
    };
    Ok(Arc::new(StageBus(bus)))
}

/// The events topic's partition count: `--event-partitions`, else the platform's, else
/// the default. A resource directory that cannot be read counts as no platform here; the
/// stage reports it when it loads its resources.
fn event_partitions(args: &StageArgs) -> u32 {
    let loaded = match args.event_partitions {
        Some(_) => None,
        None => crate::resources::load(&args.config)
            .ok()
            .map(|(set, _)| set),
    };
    partitions::event_partitions(args.event_partitions, loaded.as_ref())
}

/// The NATS URL of the platform in the resource directory (`spec.bus.url`), which is
/// where the operator's bundle carries it.
fn platform_bus_url(args: &StageArgs) -> anyhow::Result<String> {
    let (resources, _) = crate::resources::load(&args.config)?;
    resources
        .platforms
        .first()
        .and_then(|platform| platform.object.spec.bus.url.clone())
        .context(
            "--bus nats needs --nats-url, KASTELL_NATS_URL or a SecOpsPlatform with \
             spec.bus.url in the resource directory",
        )
}

/// The bus as a stage process uses it: a stage's run functions close their output topic
/// when their input ends, which in one process tells the next stage to finish. Here the
/// next stage is another process, and a reload restarts the stage on the same bus, so
/// closing is left to nobody.
struct StageBus(Arc<dyn Bus>);

#[async_trait]
impl Bus for StageBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        self.0.publish(topic, message).await
    }

    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<kastell_core::bus::PendingPublish, BusError> {
        self.0.start_publish(topic, message).await
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn kastell_core::Subscription>, BusError> {
        self.0.subscribe(topic, group).await
    }

    async fn subscribe_partition(
        &self,
        topic: Topic,
        group: &str,
        partition: kastell_core::bus::Partition,
    ) -> Result<Box<dyn kastell_core::Subscription>, BusError> {
        self.0.subscribe_partition(topic, group, partition).await
    }

    async fn close(&self, _topic: Topic) {}
}

/// Opens the case store named by `--store` (or the SQLite store in `--data`).
async fn open_store(args: &StageArgs) -> anyhow::Result<Arc<dyn CaseStore>> {
    let target = args
        .store
        .clone()
        .unwrap_or_else(|| args.data.display().to_string());
    let url: kastell_core::StoreUrl = target.parse().with_context(|| {
        format!("--store: {target:?} is neither a directory, a SQLite file nor a postgres:// URL")
    })?;
    let url = match (url, &args.store_password_file) {
        (kastell_core::StoreUrl::Postgres(raw), Some(file)) => {
            kastell_core::StoreUrl::Postgres(with_password(&raw, file)?)
        }
        (_, Some(_)) => anyhow::bail!("--store-password-file needs a postgres:// --store"),
        (url, None) => url,
    };
    // StoreUrl's Display hides a password.
    let store = kastell_core::store::open(&url)
        .await
        .with_context(|| format!("opening the case store {url}"))?;
    Ok(store)
}

/// `raw` with the password read from the first line of `file`.
fn with_password(raw: &str, file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the store password file {}", file.display()))?;
    let password = text.lines().next().unwrap_or_default();
    // NB: an error here must not quote `raw`, which may hold a password already.
    let mut url = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    url.set_password(Some(password))
        .map_err(|()| anyhow::anyhow!("--store: the URL has no host to log in to"))?;
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_postgres_store_fails_without_showing_its_password() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StageArgs,
        }
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let cli = Cli::parse_from(["t", "--store", "postgres://u:pw@127.0.0.1:1/kastell"]);
        let error = format!("{:#}", open_store(&cli.args).await.err().unwrap());
        assert!(error.contains("opening the case store"), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }

    #[test]
    fn the_password_file_goes_into_the_store_url_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "p@ss:w/rd\n").unwrap();
        let url = with_password(
            "postgres://kastell@db.secops.svc:5432/kastell?sslmode=verify-full",
            &file,
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://kastell:p%40ss%3Aw%2Frd@db.secops.svc:5432/kastell?sslmode=verify-full"
        );
    }

    /// The operator's wiring against a real PostgreSQL (KASTELL_POSTGRES_URL): the URL
    /// without its password, and the password from a file.
    #[tokio::test]
    async fn a_postgres_store_opens_with_the_password_from_a_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StageArgs,
        }
        let Some(full) = std::env::var("KASTELL_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            println!("SKIPPED: KASTELL_POSTGRES_URL not set (tests/services/ensure-postgres)");
            return;
        };
        let mut url = url::Url::parse(&full).unwrap();
        let password = url
            .password()
            .expect("the test URL has a password")
            .to_owned();
        // Percent-decoding; `+` is protected from form decoding's reading it as a space.
        let protected = password.replace('+', "%2B");
        let password = url::form_urlencoded::parse(format!("p={protected}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap();
        url.set_password(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();

        let without = Cli::parse_from(["t", "--store", url.as_str()]);
        assert!(
            open_store(&without.args).await.is_err(),
            "the server must ask for the password, or this test proves nothing"
        );
        let file = file.display().to_string();
        let with = Cli::parse_from(["t", "--store", url.as_str(), "--store-password-file", &file]);
        open_store(&with.args).await.expect("the store opens");
    }

    #[tokio::test]
    async fn a_password_file_without_a_postgres_store_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StageArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let cli = Cli::parse_from(["t", "--data", &data, "--store-password-file", "/pw"]);
        let error = format!("{:#}", open_store(&cli.args).await.err().unwrap());
        assert!(error.contains("needs a postgres://"), "{error}");
    }
}
