//! One ClusterIP Service per stage for the pipeline's own traffic; the ingest Service also
//! carries the listener port of every Sensor that receives over the network.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{platform_name, selector_labels, stage_metadata, BuildInput, Stage, HTTP_PORT};

pub(super) fn service(input: &BuildInput, stage: Stage) -> Service {
    let mut ports = vec![ServicePort {
        name: Some("http".into()),
        port: HTTP_PORT,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }];
    if stage == Stage::Ingest {
        ports.extend(input.sensor_ports().into_iter().map(|p| ServicePort {
            target_port: Some(IntOrString::String(p.name.clone())),
            name: Some(p.name),
            port: p.port,
            protocol: Some(p.protocol.into()),
            ..ServicePort::default()
        }));
    }
    Service {
        metadata: stage_metadata(input, stage),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&platform_name(input), stage)),
            ports: Some(ports),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A port a Sensor receives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPort {
    /// `s-<port>-tcp` / `s-<port>-udp`: port names are at most 15 characters.
    pub name: String,
    pub port: i32,
    pub protocol: &'static str,
}

impl BuildInput<'_> {
    /// The listener ports of the platform's network Sensors, read from the ingest bundle
    /// (so a Sensor refused by validation opens no port).
    pub fn sensor_ports(&self) -> Vec<SensorPort> {
        let Some(bundle) = self.bundles.get(&Stage::Ingest) else {
            return Vec::new();
        };
        let mut ports: Vec<SensorPort> = bundle
            .entries
            .values()
            .filter_map(|yaml| serde_yaml::from_str::<kastell_crds::Sensor>(yaml).ok())
            .filter_map(|sensor| {
                use kastell_crds::sensor::TransportKind as T;
                let port = i32::from(sensor.spec.transport.port?);
                let protocol = match sensor.spec.transport.kind {
                    T::SyslogUdp => "UDP",
                    T::File => return None,
                    T::Http | T::SyslogTcp | T::SyslogTls => "TCP",
                };
                Some(SensorPort {
                    name: format!("s-{port}-{}", protocol.to_ascii_lowercase()),
                    port,
                    protocol,
                })
            })
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        ports.dedup_by(|a, b| a.name == b.name);
        // The stage's own HTTP port cannot double as a sensor port.
        ports.retain(|p| p.port != HTTP_PORT);
        ports
    }
}
