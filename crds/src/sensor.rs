//! Sensor: one telemetry source feeding the ingest stage.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::CommonStatus;

/// A telemetry source: what it writes and how Kastell receives it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kastell.eu",
    version = "v1alpha1",
    kind = "Sensor",
    namespaced,
    status = "SensorStatus",
    category = "kastell",
    doc = "A telemetry source feeding Kastell's ingest stage",
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.format"),
    printcolumn(
        name = "Transport",
        type_ = "string",
        json_path = ".spec.transport.type"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SensorSpec {
    /// The record format the sensor writes.
    pub format: SensorFormat,
    /// How records reach Kastell.
    pub transport: Transport,
    /// For `json-lines`: the field holding the event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_field: Option<String>,
    /// The zone of times the sensor writes without one (RFC 3164 syslog, OSSEC
    /// alerts.log, JSON-lines times without an offset): `UTC`, a fixed offset such as
    /// `+01:00`, or an IANA zone such as `Europe/Berlin`, whose daylight-saving changes
    /// are followed. UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Extra field renames applied after normalisation: source path to ECS path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
    /// For `greenbone`: how much the scanned hosts matter, which raises or lowers the
    /// severity of their remediation cases. Hosts not in `hostCriticality` get this;
    /// `medium` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<HostCriticality>,
    /// For `greenbone`: criticality by host, as the scanner names it (address or name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_criticality: BTreeMap<String, HostCriticality>,
}

/// How much a host matters to the organisation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostCriticality {
    Low,
    Medium,
    High,
    Critical,
}

/// Supported record formats.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SensorFormat {
    /// Suricata EVE JSON, one object per line.
    SuricataEve,
    /// Zeek logs, TSV or JSON.
    Zeek,
    /// Wazuh's alerts.json.
    WazuhAlerts,
    /// OSSEC alerts (JSON or classic alerts.log).
    Ossec,
    /// Syslog RFC 5424 or RFC 3164.
    Syslog,
    /// Generic JSON lines with a configured timestamp field.
    JsonLines,
    /// Greenbone / OpenVAS scan reports.
    Greenbone,
}

impl SensorFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorFormat::SuricataEve => "suricata-eve",
            SensorFormat::Zeek => "zeek",
            SensorFormat::WazuhAlerts => "wazuh-alerts",
            SensorFormat::Ossec => "ossec",
            SensorFormat::Syslog => "syslog",
            SensorFormat::JsonLines => "json-lines",
            SensorFormat::Greenbone => "greenbone",
        }
    }
}

/// How records are received.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// `file`, `http`, `syslog-tcp`, `syslog-udp` or `syslog-tls`.
    #[serde(rename = "type")]
    pub kind: TransportKind,
    /// For `file`: the file to read, relative to the resource's directory when not
    /// absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For listeners: the port to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// For listeners: the IP address to listen on (default `127.0.0.1`). `kastell run`
    /// refuses a plain (non-TLS) listener off loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// For `syslog-tcp` and `syslog-tls`: how messages are delimited in the stream
    /// (RFC 6587). Default `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framing: Option<SyslogFraming>,
    /// For `syslog-tls`, and for `http` to serve HTTPS: the server's certificate and key
    /// (TLS 1.3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TransportTls>,
    /// For `file`: follow the file as it grows, across rotation, with a checkpoint,
    /// instead of reading it once. Followed only by `kastell run` without `--once`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// For `file` with `follow`: the directory of the checkpoint file, relative to the
    /// resource's directory when not absolute (default: the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    /// For `http`, `syslog-tcp` and `syslog-tls`: the most connections the listener
    /// holds open at once (default 4096). Past it, a new connection is refused at once
    /// (plain HTTP answers 503 with `Retry-After`; HTTPS and syslog close it before the
    /// TLS handshake, which counts under the cap) and counted in
    /// `kastell_ingest_connections_refused_total`. Sensors sharing an HTTP address share
    /// one cap: the largest of theirs, counting 4096 for a Sensor that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: Option<u32>,
}

/// Why a listener Sensor cannot listen where it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddressError {
    #[error("a listener needs spec.transport.port")]
    NoPort,
    #[error("spec.transport.port must be between 1 and 65535, not 0")]
    PortZero,
    #[error("spec.transport.bindAddress {0:?} is not an IP address")]
    NotAnIp(String),
    #[error(
        "a plain (non-TLS) listener may only bind to loopback, not {0}; use syslog-tls, or http with tls"
    )]
    PlainOffLoopback(std::net::SocketAddr),
}

/// The most `spec.transport.maxConnections` may say; the schema's bound, checked again
/// where resources are read without a Kubernetes API server (`kastell run`, `validate`).
pub const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

impl Transport {
    /// `maxConnections` when it is within the schema's range (1 to
    /// [`MAX_CONNECTIONS_LIMIT`]); the problem otherwise.
    pub fn max_connections(&self) -> Result<Option<u32>, String> {
        match self.max_connections {
            Some(n) if n == 0 || n > MAX_CONNECTIONS_LIMIT => Err(format!(
                "spec.transport.maxConnections must be between 1 and {MAX_CONNECTIONS_LIMIT}, not {n}"
            )),
            other => Ok(other),
        }
    }

    /// Where a listener transport listens: `bindAddress` (default `127.0.0.1`) and
    /// `port`. A listener without TLS is held to loopback, because what it receives
    /// travels in clear and anyone who reaches the port can write events. `None` for
    /// `file`, which does not listen.
    pub fn listen_address(&self) -> Option<Result<std::net::SocketAddr, ListenAddressError>> {
        let plain = match self.kind {
            TransportKind::File => return None,
            TransportKind::Http => self.tls.is_none(),
            TransportKind::SyslogTcp | TransportKind::SyslogUdp => true,
            TransportKind::SyslogTls => false,
        };
        Some(self.socket_address(plain))
    }

    fn socket_address(&self, plain: bool) -> Result<std::net::SocketAddr, ListenAddressError> {
        let port = self.port.ok_or(ListenAddressError::NoPort)?;
        if port == 0 {
            return Err(ListenAddressError::PortZero);
        }
        let text = self.bind_address.as_deref().unwrap_or("127.0.0.1");
        let ip: std::net::IpAddr = text
            .parse()
            .map_err(|_| ListenAddressError::NotAnIp(text.to_owned()))?;
        let addr = std::net::SocketAddr::new(ip, port);
        if plain && !ip.to_canonical().is_loopback() {
            return Err(ListenAddressError::PlainOffLoopback(addr));
        }
        Ok(addr)
    }
}

/// How a syslog stream delimits messages (RFC 6587).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SyslogFraming {
    /// Octet counting when a message starts with a digit, else one message per line.
    Auto,
    /// One message per line.
    Newline,
    /// Each message preceded by its length and a space.
    OctetCounting,
}

/// A listener's TLS certificate, as PEM files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportTls {
    /// The certificate chain, leaf first, relative to the resource's directory when not
    /// absolute.
    pub cert_file: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// A bundle of CA certificates (PEM), relative to the resource's directory when not
    /// absolute. When set, the listener requires mutual TLS: every client must present a
    /// certificate issued by one of these CAs, and one without, or with another CA's, is
    /// refused during the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// For a Sensor run by the operator: the Secret, in the Sensor's namespace, that holds
    /// these files. `certFile`, `keyFile` and `clientCaFile` then name keys of the Secret
    /// (for example `tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes them), which
    /// are mounted read-only into the ingest pods; the resource itself holds no secret and
    /// can be committed to git. Required under the operator; `kastell run` ignores it and
    /// reads the files relative to the resource's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    File,
    Http,
    SyslogTcp,
    SyslogUdp,
    SyslogTls,
}

/// Observed state of a Sensor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Events accepted since the ingest stage started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_accepted: Option<i64>,
    /// Records rejected since the ingest stage started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_rejected: Option<i64>,
}
