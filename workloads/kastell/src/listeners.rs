//! The listening Sensors of a resource set, turned into running ingest listeners: HTTP
//! (JSON lines and `_bulk`), syslog over UDP, TCP and TLS, and followed files. Plain
//! listeners are refused off loopback (DESIGN.md: TLS everywhere except loopback).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kastell_core::Bus;
use kastell_crds::sensor::{Sensor, SyslogFraming, TransportKind};
use kastell_crds::{Loaded, ResourceSet};
use kastell_ingest::transport::http::{self, HttpIngest};
use kastell_ingest::transport::syslog_framing::Framing;
use kastell_ingest::transport::tail::{tail_file, TailConfig};
use kastell_ingest::transport::{
    syslog_tcp, syslog_tls, syslog_udp, Connections, Decoder, IngestMetrics, Inlet,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE_RECORDS,
};
use kastell_ingest::{Format, IngestStats, Ingestor};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One listening Sensor, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    pub sensor: String,
    pub format: String,
    pub kind: ListenerKind,
    /// The Sensor's `maxConnections`, for the listeners that hold connections.
    pub max_connections: Option<usize>,
}

/// What to listen on.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerKind {
    Http {
        addr: SocketAddr,
        /// HTTPS with this certificate chain and key (PEM), when the Sensor sets `tls`,
        /// and the client CA bundle that makes it mutual TLS.
        tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    },
    SyslogUdp {
        addr: SocketAddr,
    },
    SyslogTcp {
        addr: SocketAddr,
        framing: Framing,
    },
    SyslogTls {
        addr: SocketAddr,
        framing: Framing,
        cert: PathBuf,
        key: PathBuf,
        /// Mutual TLS: the CA bundle client certificates must chain to.
        client_ca: Option<PathBuf>,
    },
    Tail {
        path: PathBuf,
        checkpoint: PathBuf,
    },
}

/// The listeners the Sensors declare; a Sensor that cannot listen becomes a problem
/// line naming its file. File Sensors without `follow` are replays, not listeners.
pub fn plan(
    resources: &ResourceSet,
    data_dir: &Path,
    problems: &mut Vec<String>,
) -> Vec<ListenerPlan> {
    let mut plans = Vec::new();
    for sensor in &resources.sensors {
        match plan_one(sensor, data_dir) {
            Ok(Some(plan)) => plans.push(plan),
            Ok(None) => {}
            Err(e) => problems.push(format!(
                "{}: sensor {}: {e:#}",
                sensor.file.display(),
                sensor.key()
            )),
        }
    }
    plans
}

fn plan_one(sensor: &Loaded<Sensor>, data_dir: &Path) -> anyhow::Result<Option<ListenerPlan>> {
    let spec = &sensor.object.spec;
    let name = sensor.object.metadata.name.clone().unwrap_or_default();
    let transport = &spec.transport;
    let framing = match transport.framing.unwrap_or(SyslogFraming::Auto) {
        SyslogFraming::Auto => Framing::Auto,
        SyslogFraming::Newline => Framing::NewLine,
        SyslogFraming::OctetCounting => Framing::OctetCounting,
    };
    // The rule on where a listener may bind is the one `kastell validate` applies.
    let addr = || -> anyhow::Result<SocketAddr> {
        let addr = transport
            .listen_address()
            .context("a file Sensor does not listen")??;
        Ok(addr)
    };
    let kind = match transport.kind {
        TransportKind::File if !transport.follow => return Ok(None),
        TransportKind::File => {
            let path = sensor.resolve(
                transport
                    .path
                    .as_deref()
                    .context("transport type file needs spec.transport.path")?,
            );
            let dir = transport
                .checkpoint_dir
                .as_deref()
                .map_or_else(|| data_dir.to_owned(), |d| sensor.resolve(d));
            ListenerKind::Tail {
                path,
                checkpoint: dir.join(format!("{name}.checkpoint.json")),
            }
        }
        TransportKind::Http => match &transport.tls {
            Some(tls) => ListenerKind::Http {
                addr: addr()?,
                tls: Some((
                    sensor.resolve(&tls.cert_file),
                    sensor.resolve(&tls.key_file),
                    tls.client_ca_file.as_deref().map(|ca| sensor.resolve(ca)),
                )),
            },
            None => ListenerKind::Http {
                addr: addr()?,
                tls: None,
            },
        },
        TransportKind::SyslogUdp => ListenerKind::SyslogUdp { addr: addr()? },
        TransportKind::SyslogTcp => ListenerKind::SyslogTcp {
            addr: addr()?,
            framing,
        },
        TransportKind::SyslogTls => {
            let tls = transport
                .tls
                .as_ref()
                .context("syslog-tls needs spec.transport.tls")?;
            ListenerKind::SyslogTls {
                addr: addr()?,
                framing,
                cert: sensor.resolve(&tls.cert_file),
                key: sensor.resolve(&tls.key_file),
                client_ca: tls.client_ca_file.as_deref().map(|ca| sensor.resolve(ca)),
            }
        }
    };
    let format = spec.format.as_str().to_owned();
    decoder(&name, &format)?;
    Ok(Some(ListenerPlan {
        sensor: name,
        format,
        kind,
        max_connections: transport
            .max_connections()
            .map_err(anyhow::Error::msg)?
            .map(|n| n as usize),
    }))
}

/// The Sensor's decoder: its format's parser (syslog messages included).
fn decoder(sensor: &str, format: &str) -> anyhow::Result<Decoder> {
    let format: Format = format.parse()?;
    Ok(Decoder::Format(Ingestor::new(format, sensor)))
}

/// Binds and starts every planned listener; they run until `shutdown` is cancelled.
/// HTTP Sensors on the same address share one server.
///
/// # Errors
///
/// When an address cannot be bound or a TLS certificate cannot be loaded.
pub async fn start(
    plans: &[ListenerPlan],
    bus: Arc<dyn Bus>,
    metrics: &IngestMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    start_counted(plans, bus, metrics, Arc::new(IngestStats::new()), shutdown).await
}

/// [`start`], counting what every listener takes in into `stats`.
///
/// # Errors
///
/// When an address cannot be bound or a TLS certificate cannot be loaded.
pub async fn start_counted(
    plans: &[ListenerPlan],
    bus: Arc<dyn Bus>,
    metrics: &IngestMetrics,
    stats: Arc<IngestStats>,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    // Sensors on one address share one server, and so its TLS setting and its cap.
    type HttpServer = (
        Option<(PathBuf, PathBuf, Option<PathBuf>)>,
        Vec<Arc<Inlet>>,
        usize,
    );
    let mut http_servers: BTreeMap<SocketAddr, HttpServer> = BTreeMap::new();
    let mut tasks = Vec::new();
    // Labelled by transport and address, as the metrics show them.
    let connections = |transport: &str, addr: &SocketAddr, max: usize| {
        Connections::new(max, &format!("{transport}:{addr}"), metrics)
    };
    for plan in plans {
        let inlet = Arc::new(Inlet::new(
            decoder(&plan.sensor, &plan.format)?,
            Arc::clone(&bus),
            Arc::clone(&stats),
            metrics.sensor(&plan.sensor),
            DEFAULT_QUEUE_RECORDS,
        ));
        let token = shutdown.clone();
        let sensor = plan.sensor.clone();
        let max_connections = plan.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let task = match &plan.kind {
            ListenerKind::Http { addr, tls } => {
                let (server_tls, inlets, cap) = http_servers
                    .entry(*addr)
                    .or_insert_with(|| (tls.clone(), Vec::new(), 0));
                // Each Sensor's own cap, the default where it sets none; the largest wins.
                *cap = (*cap).max(max_connections);
                anyhow::ensure!(
                    server_tls == tls,
                    "sensor {sensor}: shares http {addr} with {} but not its tls setting",
                    inlets.first().map_or("another sensor", |i| i.sensor())
                );
                inlets.push(inlet);
                continue;
            }
            ListenerKind::SyslogUdp { addr } => {
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("sensor {sensor}: listening on udp {addr}"))?;
                tokio::spawn(async move {
                    log_end(&sensor, syslog_udp::serve_udp(socket, inlet, token).await)
                })
            }
            ListenerKind::SyslogTcp { addr, framing } => {
                let listener = bind_tcp(&sensor, *addr).await?;
                let framing = *framing;
                let connections = connections("syslog-tcp", addr, max_connections);
                tokio::spawn(async move {
                    log_end(
                        &sensor,
                        syslog_tcp::serve_tcp(listener, inlet, framing, connections, token).await,
                    )
                })
            }
            ListenerKind::SyslogTls {
                addr,
                framing,
                cert,
                key,
                client_ca,
            } => {
                let acceptor = syslog_tls::server_acceptor(cert, key, client_ca.as_deref())
                    .with_context(|| format!("sensor {sensor}: loading its TLS certificate"))?;
                let listener = bind_tcp(&sensor, *addr).await?;
                let framing = *framing;
                let connections = connections("syslog-tls", addr, max_connections);
                tokio::spawn(async move {
                    log_end(
                        &sensor,
                        syslog_tls::serve_tls(
                            listener,
                            acceptor,
                            inlet,
                            framing,
                            connections,
                            token,
                        )
                        .await,
                    )
                })
            }
            ListenerKind::Tail { path, checkpoint } => {
                let config = TailConfig::new(path, checkpoint);
                tokio::spawn(
                    async move { log_end(&sensor, tail_file(&config, &inlet, token).await) },
                )
            }
        };
        tasks.push(task);
    }
    for (addr, (tls, inlets, cap)) in http_servers {
        let sensors: Vec<String> = inlets.iter().map(|i| i.sensor().to_owned()).collect();
        let listener = bind_tcp(&sensors.join(","), addr).await?;
        let router = http::router(HttpIngest::new(inlets));
        let token = shutdown.clone();
        let label = sensors.join(",");
        let acceptor = match &tls {
            Some((cert, key, client_ca)) => Some(
                syslog_tls::server_acceptor(cert, key, client_ca.as_deref())
                    .with_context(|| format!("sensor {label}: loading its TLS certificate"))?,
            ),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let connections = connections(scheme, &addr, cap);
        tasks.push(tokio::spawn(async move {
            let stopped = async move { token.cancelled().await };
            let ended = match acceptor {
                Some(acceptor) => {
                    http::serve_tls(listener, acceptor, router, connections, stopped).await
                }
                None => http::serve(listener, router, connections, stopped).await,
            };
            log_end(&label, ended);
        }));
    }
    Ok(tasks)
}

async fn bind_tcp(sensor: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("sensor {sensor}: listening on tcp {addr}"))
}

fn log_end<T, E: std::error::Error>(sensor: &str, ended: Result<T, E>) {
    if let Err(e) = ended {
        tracing::error!(sensor, reason = %kastell_core::error_chain(&e), "ingest listener stopped");
    }
}
