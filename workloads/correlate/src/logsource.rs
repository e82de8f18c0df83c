//! Logsource routing and field mapping: which ingested events a Sigma logsource means,
//! and where a Sigma field name is found on those events.
//!
//! Events arrive as ECS from the ingest stage, each with `event.dataset` (`suricata.eve`
//! or `wazuh.alerts`) and the sensor's whole record kept under `suricata.eve` or `wazuh`.
//! A rule applies only to the events its logsource routes to, and each of its field names
//! is looked up through the logsource's [`FieldMapping`]: first the mapped ECS paths,
//! then the raw sensor field. The tables are documented in `docs/detection.md`.

use serde_json::{Map, Value};

use crate::rule::LogSource;

/// Suricata EVE's dataset name, as ingest writes it.
pub const SURICATA_DATASET: &str = "suricata.eve";
/// Wazuh alerts' dataset name, as ingest writes it.
pub const WAZUH_DATASET: &str = "wazuh.alerts";

const SYSMON_CHANNEL: &str = "Microsoft-Windows-Sysmon/Operational";

/// The events one logsource applies to, and how its fields are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub routes: Vec<Route>,
    pub fields: FieldMapping,
    /// The logsource is another product's (Zeek's) read from Suricata records: only its
    /// mapped fields exist, so a rule naming any other field cannot be evaluated.
    pub strict: bool,
}

/// Where a Sigma field name is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedField {
    /// Event paths, in order.
    pub paths: Vec<String>,
    /// `false`: the first path present holds the value. `true`: every path is a spelling
    /// of the field and any of them may match (a proxy's `c-uri` is the full URL in some
    /// logs and the path in others).
    pub any: bool,
    /// Whether the name was in the mapping table.
    pub mapped: bool,
}

/// A set of events of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Suricata EVE records of these `event_type`s; empty means every record.
    Suricata { event_types: Vec<&'static str> },
    /// Wazuh alerts that pass the filter.
    Wazuh(WazuhFilter),
}

/// Which Wazuh alerts a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WazuhFilter {
    /// Every alert.
    Any,
    /// Alerts decoded from one of these syslog programs: `predecoder.program_name`, or
    /// the decoder's name or parent.
    Program(&'static [&'static str]),
    /// Alerts read from a log file whose path ends with one of these.
    Location(&'static [&'static str]),
    /// Alerts whose `rule.groups` holds this group.
    Group(&'static str),
    /// Windows EventChannel records of one of these channels, and of one of these event
    /// ids unless the list is empty.
    Windows {
        channels: &'static [&'static str],
        event_ids: &'static [&'static str],
    },
}

impl Route {
    /// The dataset the route's events carry.
    pub fn dataset(&self) -> &'static str {
        match self {
            Route::Suricata { .. } => SURICATA_DATASET,
            Route::Wazuh(_) => WAZUH_DATASET,
        }
    }

    /// Whether the event (known to be of the route's dataset) is one of the route's.
    pub fn accepts(&self, fields: &Map<String, Value>) -> bool {
        match self {
            Route::Suricata { event_types } => {
                event_types.is_empty()
                    || eve_event_type(fields).is_some_and(|t| event_types.contains(&t))
            }
            Route::Wazuh(filter) => wazuh_accepts(filter, fields),
        }
    }
}

/// The EVE `event_type` of a Suricata event, from the record ingest keeps.
pub fn eve_event_type(fields: &Map<String, Value>) -> Option<&str> {
    fields
        .get("suricata")?
        .get("eve")?
        .get("event_type")?
        .as_str()
}

fn wazuh_accepts(filter: &WazuhFilter, fields: &Map<String, Value>) -> bool {
    let Some(alert) = fields.get("wazuh") else {
        return false;
    };
    let text = |path: &[&str]| -> Option<&str> {
        let mut value = alert;
        for key in path {
            value = value.get(key)?;
        }
        value.as_str()
    };
    match filter {
        WazuhFilter::Any => true,
        WazuhFilter::Program(programs) => [
            text(&["predecoder", "program_name"]),
            text(&["decoder", "parent"]),
            text(&["decoder", "name"]),
        ]
        .into_iter()
        .flatten()
        .any(|name| programs.contains(&name)),
        WazuhFilter::Location(suffixes) => {
            text(&["location"]).is_some_and(|l| suffixes.iter().any(|s| l.ends_with(s)))
        }
        WazuhFilter::Group(group) => alert
            .get("rule")
            .and_then(|r| r.get("groups"))
            .and_then(Value::as_array)
            .is_some_and(|groups| groups.iter().any(|g| g.as_str() == Some(group))),
        WazuhFilter::Windows {
            channels,
            event_ids,
        } => {
            let channel_ok = text(&["data", "win", "system", "channel"])
                .is_some_and(|c| channels.iter().any(|want| want.eq_ignore_ascii_case(c)));
            let id_ok = event_ids.is_empty()
                || text(&["data", "win", "system", "eventID"])
                    .is_some_and(|id| event_ids.contains(&id));
            channel_ok && id_ok
        }
    }
}

/// How a logsource's Sigma field names become event paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldMapping {
    /// DNS logs (category `dns`, Zeek `dns`) from Suricata `dns` records.
    Dns,
    /// Proxy and web server logs (categories `proxy`, `webserver`, Zeek `http`) from
    /// Suricata `http` records.
    Http,
    /// Connection logs (categories `firewall`, `network_connection`, Zeek `conn`) from
    /// Suricata `flow` and `alert` records.
    Flow,
    /// Zeek `smb_files`/`smb_mapping` from Suricata `smb` records.
    Smb,
    /// Zeek `ssl`/`x509` from Suricata `tls` records.
    Tls,
    /// Kastell's own `product: suricata`: EVE field names.
    SuricataEve,
    /// Kastell's own `product: wazuh`: Wazuh alert field names.
    WazuhAlert,
    /// Linux logs through Wazuh: decoded fields under `data`.
    Linux,
    /// Windows EventChannel through Wazuh: Sysmon and Security field names.
    Windows,
    /// Raw mode (`kastell detect`): the Sigma name is the path on a flat event.
    Raw,
}

/// Sigma's generic network field names, shared by the Suricata-backed mappings.
const NETWORK: &[(&str, &[&str])] = &[
    ("src_ip", &["source.ip"]),
    ("dst_ip", &["destination.ip"]),
    ("src_port", &["source.port"]),
    ("dst_port", &["destination.port"]),
    ("id.orig_h", &["source.ip"]),
    ("id.resp_h", &["destination.ip"]),
    ("id.orig_p", &["source.port"]),
    ("id.resp_p", &["destination.port"]),
    ("c-ip", &["source.ip"]),
    ("proto", &["network.transport"]),
    ("community_id", &["network.community_id"]),
];

const DNS: &[(&str, &[&str])] = &[
    ("query", &["dns.question.name", "suricata.eve.dns.rrname"]),
    (
        "answer",
        &["dns.answers.data", "suricata.eve.dns.answers.rdata"],
    ),
    (
        "answers",
        &["dns.answers.data", "suricata.eve.dns.answers.rdata"],
    ),
    (
        "record_type",
        &["dns.question.type", "suricata.eve.dns.rrtype"],
    ),
    (
        "qtype_name",
        &["dns.question.type", "suricata.eve.dns.rrtype"],
    ),
    (
        "response_code",
        &["dns.response_code", "suricata.eve.dns.rcode"],
    ),
    (
        "rcode_name",
        &["dns.response_code", "suricata.eve.dns.rcode"],
    ),
    ("trans_id", &["dns.id"]),
];

/// Names whose paths are alternatives that may each match.
const EITHER: &[&str] = &["c-uri"];

const HTTP: &[(&str, &[&str])] = &[
    ("c-uri", &["url.full", "url.original"]),
    ("cs-uri", &["url.original", "suricata.eve.http.url"]),
    ("uri", &["url.original", "suricata.eve.http.url"]),
    ("c-uri-stem", &["url.path"]),
    ("cs-uri-stem", &["url.path"]),
    ("c-uri-query", &["url.query"]),
    ("cs-uri-query", &["url.query"]),
    ("c-uri-extension", &["url.extension"]),
    ("cs-host", &["url.domain", "suricata.eve.http.hostname"]),
    ("r-dns", &["url.domain", "suricata.eve.http.hostname"]),
    ("host", &["url.domain", "suricata.eve.http.hostname"]),
    (
        "cs-method",
        &["http.request.method", "suricata.eve.http.http_method"],
    ),
    (
        "method",
        &["http.request.method", "suricata.eve.http.http_method"],
    ),
    (
        "sc-status",
        &["http.response.status_code", "suricata.eve.http.status"],
    ),
    (
        "status_code",
        &["http.response.status_code", "suricata.eve.http.status"],
    ),
    (
        "c-useragent",
        &["user_agent.original", "suricata.eve.http.http_user_agent"],
    ),
    (
        "cs-user-agent",
        &["user_agent.original", "suricata.eve.http.http_user_agent"],
    ),
    (
        "user_agent",
        &["user_agent.original", "suricata.eve.http.http_user_agent"],
    ),
    (
        "cs-referrer",
        &["http.request.referrer", "suricata.eve.http.http_refer"],
    ),
    (
        "cs-referer",
        &["http.request.referrer", "suricata.eve.http.http_refer"],
    ),
    (
        "referrer",
        &["http.request.referrer", "suricata.eve.http.http_refer"],
    ),
    ("cs-version", &["http.version"]),
    ("sc-bytes", &["http.response.body.bytes"]),
    ("response_body_len", &["http.response.body.bytes"]),
    (
        "resp_mime_types",
        &[
            "http.response.mime_type",
            "suricata.eve.http.http_content_type",
        ],
    ),
    ("cs-username", &["user.name"]),
    ("r-ip", &["destination.ip"]),
    ("s-ip", &["destination.ip"]),
];

const FLOW: &[(&str, &[&str])] = &[
    ("orig_bytes", &["source.bytes"]),
    ("resp_bytes", &["destination.bytes"]),
    ("orig_pkts", &["source.packets"]),
    ("resp_pkts", &["destination.packets"]),
    ("service", &["network.protocol"]),
    ("app_proto", &["network.protocol"]),
];

const SMB: &[(&str, &[&str])] = &[
    (
        "path",
        &["suricata.eve.smb.share", "suricata.eve.smb.named_pipe"],
    ),
    ("name", &["suricata.eve.smb.filename"]),
    ("share_type", &["suricata.eve.smb.share_type"]),
];

const TLS: &[(&str, &[&str])] = &[
    (
        "server_name",
        &["tls.client.server_name", "suricata.eve.tls.sni"],
    ),
    ("ja3", &["tls.client.ja3"]),
    ("ja3s", &["tls.server.ja3s"]),
    ("version", &["tls.version"]),
    (
        "subject",
        &["tls.server.subject", "suricata.eve.tls.subject"],
    ),
    (
        "issuer",
        &["tls.server.issuer", "suricata.eve.tls.issuerdn"],
    ),
    (
        "certificate.subject",
        &["tls.server.subject", "suricata.eve.tls.subject"],
    ),
    (
        "certificate.issuer",
        &["tls.server.issuer", "suricata.eve.tls.issuerdn"],
    ),
    ("certificate.serial", &["tls.server.x509.serial_number"]),
];

/// Sysmon and Security field names with an ECS home; the raw EventChannel value (which
/// the Wazuh agent escapes once more) is the fallback.
const WINDOWS: &[(&str, &[&str])] = &[
    ("EventID", &["event.code", "wazuh.data.win.system.eventID"]),
    ("Channel", &["wazuh.data.win.system.channel"]),
    (
        "Provider_Name",
        &["event.provider", "wazuh.data.win.system.providerName"],
    ),
    ("Computer", &["wazuh.data.win.system.computer"]),
    (
        "Image",
        &["process.executable", "wazuh.data.win.eventdata.image"],
    ),
    (
        "CommandLine",
        &[
            "process.command_line",
            "wazuh.data.win.eventdata.commandLine",
        ],
    ),
    (
        "ParentImage",
        &[
            "process.parent.executable",
            "wazuh.data.win.eventdata.parentImage",
        ],
    ),
    (
        "ParentCommandLine",
        &[
            "process.parent.command_line",
            "wazuh.data.win.eventdata.parentCommandLine",
        ],
    ),
    (
        "OriginalFileName",
        &[
            "process.pe.original_file_name",
            "wazuh.data.win.eventdata.originalFileName",
        ],
    ),
    (
        "CurrentDirectory",
        &[
            "process.working_directory",
            "wazuh.data.win.eventdata.currentDirectory",
        ],
    ),
    (
        "ProcessId",
        &["process.pid", "wazuh.data.win.eventdata.processId"],
    ),
    (
        "ParentProcessId",
        &[
            "process.parent.pid",
            "wazuh.data.win.eventdata.parentProcessId",
        ],
    ),
    (
        "ProcessGuid",
        &["process.entity_id", "wazuh.data.win.eventdata.processGuid"],
    ),
    (
        "TargetFilename",
        &["file.path", "wazuh.data.win.eventdata.targetFilename"],
    ),
    ("Hashes", &["wazuh.data.win.eventdata.hashes"]),
    (
        "DestinationIp",
        &["destination.ip", "wazuh.data.win.eventdata.destinationIp"],
    ),
    (
        "DestinationPort",
        &[
            "destination.port",
            "wazuh.data.win.eventdata.destinationPort",
        ],
    ),
    (
        "DestinationHostname",
        &[
            "wazuh.data.win.eventdata.destinationHostname",
            "destination.domain",
        ],
    ),
    (
        "SourceIp",
        &["source.ip", "wazuh.data.win.eventdata.sourceIp"],
    ),
    (
        "SourcePort",
        &["source.port", "wazuh.data.win.eventdata.sourcePort"],
    ),
    (
        "QueryName",
        &["dns.question.name", "wazuh.data.win.eventdata.queryName"],
    ),
];

const LINUX: &[(&str, &[&str])] = &[
    ("srcip", &["source.ip"]),
    ("dstip", &["destination.ip"]),
    ("srcuser", &["source.user.name"]),
    ("dstuser", &["destination.user.name"]),
];

impl FieldMapping {
    /// Where a Sigma field name is found: the paths to try, in order.
    ///
    /// A mapped name gives its ECS paths and the raw sensor field. A name without a
    /// mapping is looked up as written (a dotted path), then under the sensor's raw
    /// namespace.
    pub fn resolve(self, field: &str) -> ResolvedField {
        let table: &[&[(&str, &[&str])]] = match self {
            FieldMapping::Dns => &[DNS, NETWORK],
            FieldMapping::Http => &[HTTP, NETWORK],
            FieldMapping::Flow => &[FLOW, NETWORK],
            FieldMapping::Smb => &[SMB, NETWORK],
            FieldMapping::Tls => &[TLS, NETWORK],
            FieldMapping::SuricataEve | FieldMapping::WazuhAlert => &[],
            FieldMapping::Linux => &[LINUX],
            FieldMapping::Windows => &[WINDOWS],
            FieldMapping::Raw => &[],
        };
        if let Some(paths) = table
            .iter()
            .flat_map(|t| t.iter())
            .find(|(name, _)| *name == field)
            .map(|(_, paths)| paths)
        {
            return ResolvedField {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                any: EITHER.contains(&field),
                mapped: true,
            };
        }
        let mut paths = vec![field.to_owned()];
        match self {
            FieldMapping::Dns
            | FieldMapping::Http
            | FieldMapping::Flow
            | FieldMapping::Smb
            | FieldMapping::Tls
            | FieldMapping::SuricataEve => paths.push(format!("suricata.eve.{field}")),
            FieldMapping::WazuhAlert => paths.push(format!("wazuh.{field}")),
            FieldMapping::Raw => {}
            FieldMapping::Linux => paths.push(format!("wazuh.data.{field}")),
            FieldMapping::Windows => {
                // Wazuh writes EventChannel names in camel case: `TargetObject` is
                // `targetObject`.
                let camel = lower_first(field);
                paths.push(format!("wazuh.data.win.eventdata.{camel}"));
                paths.push(format!("wazuh.data.win.system.{camel}"));
            }
        }
        ResolvedField {
            paths,
            any: false,
            mapped: false,
        }
    }
}

fn lower_first(field: &str) -> String {
    let mut chars = field.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// EVE event types Kastell's own `product: suricata` logsource accepts as `service`.
const EVE_EVENT_TYPES: &[&str] = &[
    "alert", "anomaly", "dcerpc", "dhcp", "dnp3", "dns", "drop", "fileinfo", "flow", "ftp",
    "ftp_data", "http", "http2", "ike", "krb5", "modbus", "mqtt", "netflow", "nfs", "pgsql",
    "quic", "rdp", "rfb", "sip", "smb", "smtp", "snmp", "ssh", "stats", "tftp", "tls",
];

/// Sigma's Windows services and their EventChannel channels (Sigma taxonomy appendix).
const WINDOWS_SERVICES: &[(&str, &[&str])] = &[
    ("application", &["Application"]),
    (
        "application-experience",
        &[
            "Microsoft-Windows-Application-Experience/Program-Telemetry",
            "Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant",
        ],
    ),
    (
        "applocker",
        &[
            "Microsoft-Windows-AppLocker/MSI and Script",
            "Microsoft-Windows-AppLocker/EXE and DLL",
            "Microsoft-Windows-AppLocker/Packaged app-Deployment",
            "Microsoft-Windows-AppLocker/Packaged app-Execution",
        ],
    ),
    (
        "appmodel-runtime",
        &["Microsoft-Windows-AppModel-Runtime/Admin"],
    ),
    (
        "appxdeployment-server",
        &["Microsoft-Windows-AppXDeploymentServer/Operational"],
    ),
    (
        "appxpackaging-om",
        &["Microsoft-Windows-AppxPackaging/Operational"],
    ),
    (
        "bitlocker",
        &["Microsoft-Windows-BitLocker/BitLocker Management"],
    ),
    (
        "bits-client",
        &["Microsoft-Windows-Bits-Client/Operational"],
    ),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    (
        "codeintegrity-operational",
        &["Microsoft-Windows-CodeIntegrity/Operational"],
    ),
    ("dhcp", &["Microsoft-Windows-DHCP-Server/Operational"]),
    (
        "diagnosis-scripted",
        &["Microsoft-Windows-Diagnosis-Scripted/Operational"],
    ),
    (
        "dns-client",
        &["Microsoft-Windows-DNS Client Events/Operational"],
    ),
    ("dns-server", &["DNS Server"]),
    (
        "dns-server-analytic",
        &["Microsoft-Windows-DNS-Server/Analytical"],
    ),
    ("dns-server-audit", &["Microsoft-Windows-DNS-Server/Audit"]),
    (
        "driver-framework",
        &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"],
    ),
    (
        "firewall-as",
        &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"],
    ),
    ("hyper-v-worker", &["Microsoft-Windows-Hyper-V-Worker"]),
    (
        "iis-configuration",
        &["Microsoft-IIS-Configuration/Operational"],
    ),
    (
        "kernel-event-tracing",
        &["Microsoft-Windows-Kernel-EventTracing"],
    ),
    (
        "kernel-shimengine",
        &[
            "Microsoft-Windows-Kernel-ShimEngine/Operational",
            "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
        ],
    ),
    ("ldap", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    ("msexchange-management", &["MSExchange Management"]),
    ("ntfs", &["Microsoft-Windows-Ntfs/Operational"]),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    ("openssh", &["OpenSSH/Operational"]),
    ("powershell", &["Microsoft-Windows-PowerShell/Operational"]),
    ("powershell-classic", &["Windows PowerShell"]),
    (
        "printservice-admin",
        &["Microsoft-Windows-PrintService/Admin"],
    ),
    (
        "printservice-operational",
        &["Microsoft-Windows-PrintService/Operational"],
    ),
    ("security", &["Security"]),
    (
        "security-mitigations",
        &[
            "Microsoft-Windows-Security-Mitigations/Kernel Mode",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ],
    ),
    ("sense", &["Microsoft-Windows-SENSE/Operational"]),
    (
        "servicebus-client",
        &[
            "Microsoft-ServiceBus-Client/Operational",
            "Microsoft-ServiceBus-Client/Admin",
        ],
    ),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    (
        "smbclient-security",
        &["Microsoft-Windows-SmbClient/Security"],
    ),
    ("sysmon", &[SYSMON_CHANNEL]),
    ("system", &["System"]),
    (
        "taskscheduler",
        &["Microsoft-Windows-TaskScheduler/Operational"],
    ),
    (
        "terminalservices-localsessionmanager",
        &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"],
    ),
    ("vhdmp", &["Microsoft-Windows-VHDMP/Operational"]),
    (
        "windefend",
        &["Microsoft-Windows-Windows Defender/Operational"],
    ),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
];

const POWERSHELL_CHANNELS: &[&str] = &[
    "Microsoft-Windows-PowerShell/Operational",
    "PowerShellCore/Operational",
];

/// Sigma's Windows categories and the events behind them (Sigma taxonomy appendix).
const WINDOWS_CATEGORIES: &[(&str, &[&str], &[&str])] = &[
    ("process_creation", &[SYSMON_CHANNEL], &["1"]),
    ("file_change", &[SYSMON_CHANNEL], &["2"]),
    ("network_connection", &[SYSMON_CHANNEL], &["3"]),
    ("sysmon_status", &[SYSMON_CHANNEL], &["4", "16"]),
    ("process_termination", &[SYSMON_CHANNEL], &["5"]),
    ("driver_load", &[SYSMON_CHANNEL], &["6"]),
    ("image_load", &[SYSMON_CHANNEL], &["7"]),
    ("create_remote_thread", &[SYSMON_CHANNEL], &["8"]),
    ("raw_access_thread", &[SYSMON_CHANNEL], &["9"]),
    ("process_access", &[SYSMON_CHANNEL], &["10"]),
    ("file_event", &[SYSMON_CHANNEL], &["11"]),
    ("registry_event", &[SYSMON_CHANNEL], &["12", "13", "14"]),
    ("registry_add", &[SYSMON_CHANNEL], &["12"]),
    ("registry_delete", &[SYSMON_CHANNEL], &["12"]),
    ("registry_set", &[SYSMON_CHANNEL], &["13"]),
    ("registry_rename", &[SYSMON_CHANNEL], &["14"]),
    ("create_stream_hash", &[SYSMON_CHANNEL], &["15"]),
    ("pipe_created", &[SYSMON_CHANNEL], &["17", "18"]),
    ("wmi_event", &[SYSMON_CHANNEL], &["19", "20", "21"]),
    ("dns_query", &[SYSMON_CHANNEL], &["22"]),
    ("file_delete", &[SYSMON_CHANNEL], &["23"]),
    ("clipboard_capture", &[SYSMON_CHANNEL], &["24"]),
    ("process_tampering", &[SYSMON_CHANNEL], &["25"]),
    ("file_delete_detected", &[SYSMON_CHANNEL], &["26"]),
    ("file_block_executable", &[SYSMON_CHANNEL], &["27"]),
    ("file_block_shredding", &[SYSMON_CHANNEL], &["28"]),
    ("file_executable_detected", &[SYSMON_CHANNEL], &["29"]),
    ("sysmon_error", &[SYSMON_CHANNEL], &["255"]),
    ("ps_classic_start", &["Windows PowerShell"], &["400"]),
    (
        "ps_classic_provider_start",
        &["Windows PowerShell"],
        &["600"],
    ),
    ("ps_classic_script", &["Windows PowerShell"], &["800"]),
    ("ps_module", POWERSHELL_CHANNELS, &["4103"]),
    ("ps_script", POWERSHELL_CHANNELS, &["4104"]),
];

/// Where a logsource's events come from, or `None` when no ingested source carries them.
pub fn route(logsource: &LogSource) -> Option<Routing> {
    let lower = |v: &Option<String>| v.as_deref().map(str::to_ascii_lowercase);
    let (product, category, service) = (
        lower(&logsource.product),
        lower(&logsource.category),
        lower(&logsource.service),
    );
    let suricata = |event_types: &[&'static str], fields| Routing {
        routes: vec![Route::Suricata {
            event_types: event_types.to_vec(),
        }],
        fields,
        strict: false,
    };
    let zeek = |event_types: &[&'static str], fields| Routing {
        strict: true,
        ..suricata(event_types, fields)
    };
    let wazuh = |filter, fields| Routing {
        routes: vec![Route::Wazuh(filter)],
        fields,
        strict: false,
    };
    const CONNECTIONS: &[&str] = &["flow", "netflow", "alert", "drop"];
    match (product.as_deref(), category.as_deref(), service.as_deref()) {
        (None, Some("dns"), None) => Some(suricata(&["dns"], FieldMapping::Dns)),
        (None, Some("proxy" | "webserver"), None) => Some(suricata(&["http"], FieldMapping::Http)),
        (None, Some("firewall" | "network_connection"), None) => {
            Some(suricata(CONNECTIONS, FieldMapping::Flow))
        }
        (Some("zeek"), None, Some(service)) => match service {
            "dns" => Some(zeek(&["dns"], FieldMapping::Dns)),
            "http" => Some(zeek(&["http"], FieldMapping::Http)),
            "conn" => Some(zeek(&["flow", "netflow"], FieldMapping::Flow)),
            "smb_files" | "smb_mapping" => Some(zeek(&["smb"], FieldMapping::Smb)),
            "ssl" | "x509" => Some(zeek(&["tls"], FieldMapping::Tls)),
            _ => None,
        },
        (Some("suricata"), None, None) => Some(suricata(&[], FieldMapping::SuricataEve)),
        (Some("suricata"), None, Some(service)) => EVE_EVENT_TYPES
            .iter()
            .find(|t| **t == service)
            .map(|t| suricata(&[*t], FieldMapping::SuricataEve)),
        (Some("wazuh"), None, None | Some("alerts")) => {
            Some(wazuh(WazuhFilter::Any, FieldMapping::WazuhAlert))
        }
        (Some("linux"), None, service) => {
            let filter = match service {
                None | Some("syslog") => WazuhFilter::Group("syslog"),
                Some("sshd") => WazuhFilter::Program(&["sshd"]),
                Some("auth") => WazuhFilter::Location(&["/var/log/auth.log", "/var/log/secure"]),
                Some("sudo") => WazuhFilter::Program(&["sudo"]),
                Some("cron") => WazuhFilter::Program(&["cron", "CRON", "crond"]),
                Some("vsftpd") => WazuhFilter::Program(&["vsftpd"]),
                Some(_) => return None,
            };
            Some(wazuh(filter, FieldMapping::Linux))
        }
        (Some("windows"), Some(category), None) => WINDOWS_CATEGORIES
            .iter()
            .find(|(name, _, _)| *name == category)
            .map(|(_, channels, event_ids)| {
                wazuh(
                    WazuhFilter::Windows {
                        channels,
                        event_ids,
                    },
                    FieldMapping::Windows,
                )
            }),
        (Some("windows"), None, Some(service)) => WINDOWS_SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, channels)| {
                wazuh(
                    WazuhFilter::Windows {
                        channels,
                        event_ids: &[],
                    },
                    FieldMapping::Windows,
                )
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logsource(
        product: Option<&str>,
        category: Option<&str>,
        service: Option<&str>,
    ) -> LogSource {
        LogSource {
            product: product.map(str::to_owned),
            category: category.map(str::to_owned),
            service: service.map(str::to_owned),
            definition: None,
        }
    }

    #[test]
    fn network_categories_route_to_suricata_records() {
        let dns = route(&logsource(None, Some("dns"), None)).unwrap();
        assert_eq!(
            dns.routes,
            [Route::Suricata {
                event_types: vec!["dns"]
            }]
        );
        assert_eq!(dns.fields, FieldMapping::Dns);
        let proxy = route(&logsource(None, Some("proxy"), None)).unwrap();
        assert_eq!(proxy.fields, FieldMapping::Http);
        assert!(!proxy.strict);
        let zeek = route(&logsource(Some("zeek"), None, Some("smb_files"))).unwrap();
        assert_eq!(zeek.fields, FieldMapping::Smb);
        assert!(zeek.strict);
        assert!(route(&logsource(Some("zeek"), None, Some("dce_rpc"))).is_none());
        assert!(route(&logsource(Some("aws"), None, Some("cloudtrail"))).is_none());
        assert!(route(&logsource(Some("suricata"), None, Some("alerts"))).is_none());
    }

    #[test]
    fn windows_and_linux_route_to_wazuh() {
        let sysmon = route(&logsource(Some("windows"), Some("process_creation"), None)).unwrap();
        assert_eq!(
            sysmon.routes,
            [Route::Wazuh(WazuhFilter::Windows {
                channels: &[SYSMON_CHANNEL],
                event_ids: &["1"]
            })]
        );
        let sshd = route(&logsource(Some("Linux"), None, Some("sshd"))).unwrap();
        assert_eq!(sshd.routes, [Route::Wazuh(WazuhFilter::Program(&["sshd"]))]);
        assert!(route(&logsource(Some("linux"), Some("process_creation"), None)).is_none());
    }

    #[test]
    fn mapped_fields_come_first_then_the_raw_field() {
        let paths = |m: FieldMapping, f: &str| m.resolve(f).paths;
        assert_eq!(
            paths(FieldMapping::Dns, "query"),
            ["dns.question.name", "suricata.eve.dns.rrname"]
        );
        assert_eq!(paths(FieldMapping::Flow, "dst_port"), ["destination.port"]);
        assert_eq!(
            paths(FieldMapping::Http, "cs-cookie"),
            ["cs-cookie", "suricata.eve.cs-cookie"]
        );
        assert!(!FieldMapping::Http.resolve("cs-cookie").mapped);
        assert!(FieldMapping::Http.resolve("c-uri").any);
        assert!(!FieldMapping::Http.resolve("cs-host").any);
        assert_eq!(
            paths(FieldMapping::Windows, "TargetObject"),
            [
                "TargetObject",
                "wazuh.data.win.eventdata.targetObject",
                "wazuh.data.win.system.targetObject"
            ]
        );
        assert_eq!(
            paths(FieldMapping::WazuhAlert, "rule.groups"),
            ["rule.groups", "wazuh.rule.groups"]
        );
    }
}
