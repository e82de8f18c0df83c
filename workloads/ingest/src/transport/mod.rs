//! The listening transports: HTTP (JSON lines and the Elasticsearch `_bulk` API),
//! syslog over UDP, TCP and TLS, and a file tail that follows rotation. Each hands its
//! framed records to a Sensor's [`Inlet`], which parses, publishes, dead-letters and
//! counts them in the per-sensor [`IngestMetrics`].

mod body_stall;
pub mod bulk;
pub mod connections;
pub mod http;
pub mod http_conn;
pub mod inlet;
pub mod metrics;
pub mod raw_syslog;
pub mod syslog_framing;
pub mod syslog_tcp;
pub mod syslog_tls;
pub mod syslog_udp;
pub mod tail;

pub use connections::{
    Connections, DEFAULT_BODY_STALL_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    SHUTDOWN_GRACE, WRITE_STALL_TIMEOUT,
};
pub use inlet::{
    Admission, Decoder, Delivered, Frame, Inlet, TransportReject, DEFAULT_QUEUE_RECORDS,
};
pub use metrics::{IngestMetrics, SensorMetrics};
pub use raw_syslog::raw_syslog_event;
