//! Whether a DetectionRule, Sensor, IntelFeed or Playbook may go into its stage's bundle,
//! decided by the code the stages run (the correlate stage's Sigma compiler, the respond
//! stage's playbook compiler) and by the platform's residency policy on outbound
//! endpoints. Pure: the controllers turn a [`Verdict`] into conditions and bundle entries.

use std::path::PathBuf;

use kastell_correlate::RuleDocument;
use kastell_crds::load::Loaded;
use kastell_crds::sensor::TransportKind;
use kastell_crds::{DetectionRule, IntelFeed, Playbook, Sensor};
use kastell_respond::PlaybookSet;
use kube::ResourceExt;
use serde::Serialize;

use crate::build::{BundleEntry, Stage};
use crate::residency::EndpointPolicy;

/// Why a resource was refused: the condition reason, and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `InvalidSpec`, `CompileFailed` or `EndpointNotAllowed`.
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    /// True when the refusal is the residency policy's.
    pub fn is_residency(&self) -> bool {
        self.reason == REASON_ENDPOINT_NOT_ALLOWED
    }
}

pub const REASON_COMPILE_FAILED: &str = "CompileFailed";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
pub const REASON_ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";

/// What admission found about one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub stage: Stage,
    /// The ConfigMap key its YAML lives under in the stage's bundle.
    pub key: String,
    /// The bundle entry when admitted, else why not.
    pub outcome: Result<BundleEntry, Refused>,
    /// For a rule: the Sigma `id` and `title` it compiled to.
    pub rule: Option<(String, String)>,
}

/// A resource kind that goes into a stage's bundle.
pub trait Member: kube::Resource<DynamicType = ()> + Serialize + Clone {
    const KIND: &'static str;
    const STAGE: Stage;

    /// Checks the resource against the stage's compiler and the endpoint policy (`None`
    /// when the namespace has no SecOpsPlatform, so there is no policy yet).
    fn admit(&self, policy: Option<&EndpointPolicy>) -> Verdict;

    /// Whether the verdict also depends on the other members of the namespace (a Sigma
    /// correlation rule compiles only with the rules it names).
    fn depends_on_namespace(&self) -> bool {
        false
    }

    /// The verdict among the namespace's members of the same kind (this one included).
    fn admit_among(&self, policy: Option<&EndpointPolicy>, _namespace: &[Self]) -> Verdict {
        self.admit(policy)
    }
}

fn bundle_key(kind: &str, name: &str) -> String {
    format!("{kind}.{name}.yaml")
}

/// The resource as its stage loads it: spec and identity, no status or managed fields.
fn entry<K: Member>(resource: &K) -> Result<BundleEntry, Refused> {
    let mut value = serde_json::to_value(resource).map_err(|e| invalid(e.to_string()))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
        object.insert(
            "metadata".into(),
            serde_json::json!({
                "name": resource.name_any(),
                "namespace": resource.namespace(),
            }),
        );
    }
    let yaml = serde_yaml::to_string(&value).map_err(|e| invalid(e.to_string()))?;
    Ok(BundleEntry {
        key: bundle_key(K::KIND, &resource.name_any()),
        yaml,
    })
}

fn invalid(message: String) -> Refused {
    Refused {
        reason: REASON_INVALID_SPEC,
        message,
    }
}

fn verdict<K: Member>(resource: &K, refused: Option<Refused>) -> Verdict {
    Verdict {
        stage: K::STAGE,
        key: bundle_key(K::KIND, &resource.name_any()),
        outcome: match refused {
            Some(refused) => Err(refused),
            None => entry(resource),
        },
        rule: None,
    }
}

fn check_endpoint(policy: Option<&EndpointPolicy>, field: &str, url: &str) -> Result<(), Refused> {
    match policy.map(|p| p.check(url)) {
        Some(Err(refusal)) => Err(Refused {
            reason: REASON_ENDPOINT_NOT_ALLOWED,
            message: format!(
                "{field}: {refusal}; add the host to the SecOpsPlatform's \
                 spec.residency.allowedHosts or use an endpoint inside the allowed region"
            ),
        }),
        _ => Ok(()),
    }
}

fn key_of(resource: &impl kube::Resource) -> String {
    format!(
        "{}/{}",
        resource.meta().namespace.as_deref().unwrap_or("default"),
        resource.meta().name.as_deref().unwrap_or("")
    )
}

impl Member for DetectionRule {
    const KIND: &'static str = "DetectionRule";
    const STAGE: Stage = Stage::Correlate;

    fn admit(&self, _policy: Option<&EndpointPolicy>) -> Verdict {
        if let Some((id, title)) = correlation_identity(&self.spec.sigma) {
            // Compiled with the rules it names by `check_correlations`.
            let mut verdict = verdict(self, None);
            verdict.rule = Some((id, title));
            return verdict;
        }
        let document = RuleDocument::new(key_of(self), self.spec.sigma.clone());
        match document.compile() {
            Ok(compiled) => {
                let rule = compiled.rule_ref();
                let mut verdict = verdict(self, None);
                verdict.rule = Some((rule.id.clone(), rule.title.clone()));
                verdict
            }
            Err(error) => verdict(
                self,
                Some(Refused {
                    reason: REASON_COMPILE_FAILED,
                    message: format!("spec.sigma: {error}"),
                }),
            ),
        }
    }

    fn depends_on_namespace(&self) -> bool {
        correlation_identity(&self.spec.sigma).is_some()
    }

    fn admit_among(&self, policy: Option<&EndpointPolicy>, namespace: &[Self]) -> Verdict {
        let mut verdicts: Vec<Verdict> = namespace.iter().map(|r| r.admit(policy)).collect();
        check_correlations(namespace, &mut verdicts);
        let key = bundle_key(Self::KIND, &self.name_any());
        verdicts
            .into_iter()
            .find(|v| v.key == key)
            .unwrap_or_else(|| self.admit(policy))
    }
}

/// The `id` (else `name`) and `title` of a Sigma correlation rule; `None` for any other
/// document, including one that is not YAML (the single-rule compiler reports that).
fn correlation_identity(sigma: &str) -> Option<(String, String)> {
    let value: serde_yaml::Value = serde_yaml::from_str(sigma).ok()?;
    value.get("correlation")?;
    let text = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    Some((
        text("id").or_else(|| text("name")).unwrap_or_default(),
        text("title").unwrap_or_default(),
    ))
}

/// Compiles the admitted rules of a namespace as one set, as the correlate stage does,
/// and refuses each correlation rule the set compiler reports (a rule it names that is
/// missing or refused, a bad group-by or condition). A correlation cannot be compiled
/// alone: what it means depends on the rules it names.
pub fn check_correlations(rules: &[DetectionRule], verdicts: &mut [Verdict]) {
    let correlations: Vec<&DetectionRule> = rules
        .iter()
        .filter(|r| correlation_identity(&r.spec.sigma).is_some())
        .collect();
    if correlations.is_empty() {
        return;
    }
    let admitted = |rule: &DetectionRule| {
        let key = bundle_key(DetectionRule::KIND, &rule.name_any());
        verdicts
            .iter()
            .any(|v| v.key == key && v.stage == Stage::Correlate && v.outcome.is_ok())
    };
    let documents: Vec<RuleDocument> = rules
        .iter()
        .filter(|r| admitted(r))
        .map(|r| RuleDocument::new(key_of(r), r.spec.sigma.clone()))
        .collect();
    let (_, errors) = kastell_correlate::RuleSet::compile(documents);
    for rule in correlations {
        let resource = key_of(rule);
        let Some(error) = errors
            .iter()
            .find(|e| e.resource.as_deref() == Some(resource.as_str()))
        else {
            continue;
        };
        let key = bundle_key(DetectionRule::KIND, &rule.name_any());
        if let Some(verdict) = verdicts
            .iter_mut()
            .find(|v| v.key == key && v.stage == Stage::Correlate)
        {
            verdict.outcome = Err(Refused {
                reason: REASON_COMPILE_FAILED,
                message: format!("spec.sigma: {error}"),
            });
        }
    }
}

impl Member for Sensor {
    const KIND: &'static str = "Sensor";
    const STAGE: Stage = Stage::Ingest;

    fn admit(&self, _policy: Option<&EndpointPolicy>) -> Verdict {
        let transport = &self.spec.transport;
        let refused = match (transport.kind, transport.port, &transport.path) {
            (TransportKind::File, _, None) => Some(invalid(
                "spec.transport.path is required for the file transport".into(),
            )),
            (TransportKind::File, _, Some(_)) => None,
            (_, None, _) => Some(invalid(format!(
                "spec.transport.port is required for the {:?} transport",
                transport.kind
            ))),
            (_, Some(_), _) => None,
        };
        match refused.or_else(|| check_sensor_tls(transport).err()) {
            Some(refused) => verdict(self, Some(refused)),
            None => verdict(&with_mounted_tls(self), None),
        }
    }
}

/// The TLS settings a Sensor's listener uses: an `http` or `syslog-tls` transport's. The
/// ingest stage reads no other transport's `tls`, so nothing is mounted for it.
pub fn listener_tls(
    transport: &kastell_crds::sensor::Transport,
) -> Option<&kastell_crds::sensor::TransportTls> {
    match transport.kind {
        TransportKind::Http | TransportKind::SyslogTls => transport.tls.as_ref(),
        _ => None,
    }
}

/// Under the operator the ingest pods hold no file but those mounted into them, so a
/// listener's certificate, key and client CA must come from a Secret the Sensor names,
/// each file field naming one of its keys.
fn check_sensor_tls(transport: &kastell_crds::sensor::Transport) -> Result<(), Refused> {
    if transport.kind == TransportKind::SyslogTls && transport.tls.is_none() {
        return Err(invalid(
            "spec.transport.tls is required for the syslog-tls transport: name the Secret \
             holding the certificate and key in spec.transport.tls.secretName and its keys \
             in certFile and keyFile"
                .into(),
        ));
    }
    let Some(tls) = listener_tls(transport) else {
        return Ok(());
    };
    let Some(secret) = &tls.secret_name else {
        return Err(invalid(
            "spec.transport.tls.secretName is required under the operator: the ingest pods \
             have no files but those mounted from a Secret; put the certificate, the key \
             (and the client CA) in a Secret of this namespace, name it in \
             spec.transport.tls.secretName and name its keys in certFile, keyFile (and \
             clientCaFile), for example tls.crt, tls.key and ca.crt"
                .into(),
        ));
    };
    match secret_key_problem(tls, secret) {
        Some(message) => Err(invalid(message)),
        None => Ok(()),
    }
}

/// A listener's TLS file fields as (field, value): `certFile`, `keyFile` and, when set,
/// `clientCaFile`.
pub fn tls_files(tls: &kastell_crds::sensor::TransportTls) -> Vec<(&'static str, &str)> {
    let mut files = vec![
        ("certFile", tls.cert_file.as_str()),
        ("keyFile", tls.key_file.as_str()),
    ];
    if let Some(ca) = &tls.client_ca_file {
        files.push(("clientCaFile", ca.as_str()));
    }
    files
}

/// With `secretName` each file field names a key of the Secret: the first that cannot be
/// one, as a message naming the field. Shared with `kastell validate`.
pub fn secret_key_problem(
    tls: &kastell_crds::sensor::TransportTls,
    secret: &str,
) -> Option<String> {
    let (field, file) = tls_files(tls)
        .into_iter()
        .find(|(_, file)| !is_secret_key(file))?;
    Some(format!(
        "spec.transport.tls.{field}: {file:?} is not a key of a Secret: with secretName each \
         file field names a key of the Secret {secret} (letters, digits, '-', '_' and '.'), \
         such as tls.crt"
    ))
}

/// A valid key of a Secret's data (the API server's rule), which is also a plain file
/// name, so it cannot point outside the Secret's directory.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The Sensor as the ingest stage gets it under the operator: its listener's file fields
/// made paths into the mounted Secret (`crate::build::wiring::SENSOR_TLS_DIR`), so the
/// stage opens the mounted files without knowing it runs in a cluster.
fn with_mounted_tls(sensor: &Sensor) -> Sensor {
    let mut sensor = sensor.clone();
    let uses_tls = listener_tls(&sensor.spec.transport).is_some();
    if let Some(tls) = sensor.spec.transport.tls.as_mut().filter(|_| uses_tls) {
        if let Some(secret) = tls.secret_name.clone() {
            let dir = crate::build::wiring::SENSOR_TLS_DIR;
            let mounted = |key: &str| format!("{dir}/{secret}/{key}");
            tls.cert_file = mounted(&tls.cert_file);
            tls.key_file = mounted(&tls.key_file);
            tls.client_ca_file = tls.client_ca_file.as_deref().map(mounted);
        }
    }
    sensor
}

impl Member for IntelFeed {
    const KIND: &'static str = "IntelFeed";
    const STAGE: Stage = Stage::Enrich;

    fn admit(&self, policy: Option<&EndpointPolicy>) -> Verdict {
        let refused = match (&self.spec.url, &self.spec.path) {
            (None, None) => Some(invalid("spec.url or spec.path is required".into())),
            (Some(url), _) => check_endpoint(policy, "spec.url", url).err(),
            (None, Some(_)) => None,
        };
        verdict(self, refused)
    }
}

impl Member for Playbook {
    const KIND: &'static str = "Playbook";
    const STAGE: Stage = Stage::Respond;

    fn admit(&self, policy: Option<&EndpointPolicy>) -> Verdict {
        let loaded = Loaded {
            object: self.clone(),
            file: PathBuf::from(format!("{}/{}", Self::KIND, self.name_any())),
            document: 0,
        };
        let (_, problems) = PlaybookSet::compile([loaded]);
        let mut refused = problems.into_iter().next().map(|p| Refused {
            reason: REASON_COMPILE_FAILED,
            message: p.reason,
        });
        for (field, url) in playbook_endpoints(&self.spec) {
            if refused.is_some() {
                break;
            }
            refused = check_endpoint(policy, &field, &url).err();
        }
        verdict(self, refused)
    }
}

/// Every place a playbook's steps connect to, as (field, URL): webhooks, chat
/// notifications, the SMTP server (as `smtp://host:port`), HTTP calls and their release
/// requests, Wazuh managers and Cortex. Shared with `kastell validate`, so a pull request
/// is refused for the same endpoints as the operator refuses.
pub fn playbook_endpoints(spec: &kastell_crds::playbook::PlaybookSpec) -> Vec<(String, String)> {
    let mut endpoints = Vec::new();
    for step in &spec.steps {
        let field = |path: &str| format!("spec.steps[{}].{path}", step.name);
        if let Some(webhook) = &step.webhook {
            endpoints.push((field("webhook.url"), webhook.url.clone()));
        }
        if let Some(notify) = &step.notify {
            if let Some(url) = &notify.url {
                endpoints.push((field("notify.url"), url.clone()));
            }
            if let Some(smtp) = &notify.smtp {
                let host = if smtp.host.contains(':') {
                    format!("[{}]", smtp.host)
                } else {
                    smtp.host.clone()
                };
                endpoints.push((
                    field("notify.smtp.host"),
                    format!("smtp://{host}:{}", smtp.port),
                ));
            }
        }
        if let Some(http) = &step.http {
            endpoints.push((field("http.url"), http.url.clone()));
            if let Some(release) = &http.release {
                endpoints.push((field("http.release.url"), release.url.clone()));
            }
        }
        if let Some(wazuh) = &step.wazuh {
            endpoints.push((field("wazuh.url"), wazuh.url.clone()));
        }
        if let Some(cortex) = step.enrich.as_ref().and_then(|e| e.cortex.as_ref()) {
            endpoints.push((field("enrich.cortex.url"), cortex.url.clone()));
        }
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use kastell_crds::platform::Residency;

    fn policy() -> EndpointPolicy {
        let residency = Residency {
            allowed_hosts: vec!["misp.cert.example.eu".into()],
            ..Residency::default()
        };
        EndpointPolicy::from_residency(&residency).0
    }

    fn rule(sigma: &str) -> DetectionRule {
        serde_yaml::from_str(&format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\n\
             metadata: {{name: r1, namespace: secops}}\nspec:\n  sigma: {sigma:?}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_rule_that_compiles_is_admitted_with_its_id_and_title() {
        let sigma = "title: Whoami\nid: 3f1b2c4d-0000-4000-8000-000000000001\n\
                     logsource: {product: linux}\n\
                     detection:\n  sel:\n    process.name: whoami\n  condition: sel\n";
        let verdict = rule(sigma).admit(None);
        let entry = verdict.outcome.expect("admitted");
        assert_eq!(entry.key, "DetectionRule.r1.yaml");
        assert!(entry.yaml.contains("whoami"));
        assert!(!entry.yaml.contains("status"));
        assert_eq!(verdict.rule.unwrap().1, "Whoami");
    }

    #[test]
    fn a_rule_that_does_not_compile_carries_the_compiler_message() {
        let sigma = "title: Broken\nlogsource: {product: linux}\n\
                     detection:\n  sel:\n    process.name: whoami\n  condition: sel and nothere\n";
        let refused = rule(sigma).admit(None).outcome.unwrap_err();
        assert_eq!(refused.reason, REASON_COMPILE_FAILED);
        assert!(
            refused.message.starts_with("spec.sigma: "),
            "{}",
            refused.message
        );
        assert!(refused.message.contains("nothere"), "{}", refused.message);
    }

    /// The chained example of the Sigma correlation specification
    /// (tests/fixtures/correlation): its correlations compile with the rules they name,
    /// and one whose rule is missing is refused naming it, alone or among the namespace.
    #[test]
    fn correlations_are_compiled_with_the_rules_they_name() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/correlation/failed-logins-then-success.yml"
        ))
        .unwrap();
        let documents: Vec<&str> = text.split("\n---\n").collect();
        let named = |name: &str, sigma: &str| -> DetectionRule {
            let mut rule = rule(sigma);
            rule.metadata.name = Some(name.into());
            rule
        };
        let all: Vec<DetectionRule> = documents
            .iter()
            .enumerate()
            .map(|(i, sigma)| named(&format!("r{i}"), sigma))
            .collect();
        let mut verdicts: Vec<Verdict> = all.iter().map(|r| r.admit(None)).collect();
        check_correlations(&all, &mut verdicts);
        for verdict in &verdicts {
            assert!(
                verdict.outcome.is_ok(),
                "{}: {:?}",
                verdict.key,
                verdict.outcome
            );
        }
        assert_eq!(
            verdicts[0].rule.as_ref().unwrap().0,
            "b180ead8-d58f-40b2-ae54-c8940995b9b6"
        );
        assert!(all[0].depends_on_namespace());
        assert!(!all[2].depends_on_namespace());

        // Without `successful_login` (document 3) the ordered correlation cannot compile.
        let without: Vec<DetectionRule> = all[..3].to_vec();
        let verdict = without[0].admit_among(None, &without);
        let refused = verdict.outcome.unwrap_err();
        assert_eq!(refused.reason, REASON_COMPILE_FAILED);
        assert!(
            refused.message.starts_with("spec.sigma: "),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("successful_login"),
            "{}",
            refused.message
        );
        assert!(without[1].admit_among(None, &without).outcome.is_ok());
    }

    fn sensor(transport: &str) -> Sensor {
        serde_yaml::from_str(&format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\n\
             metadata: {{name: edge, namespace: secops}}\n\
             spec: {{format: syslog, transport: {transport}}}\n"
        ))
        .unwrap()
    }

    /// The refusal of a Sensor with this transport, whose message must start with `start`.
    fn refused_sensor(transport: &str, start: &str) -> Refused {
        let refused = sensor(transport).admit(None).outcome.unwrap_err();
        assert_eq!(refused.reason, REASON_INVALID_SPEC, "{transport}");
        assert!(
            refused.message.starts_with(start),
            "{transport}: {}",
            refused.message
        );
        refused
    }

    #[test]
    fn a_listener_certificate_must_come_from_a_secret_named_by_the_sensor() {
        for kind in ["http", "syslog-tls"] {
            refused_sensor(
                &format!(
                    "{{type: {kind}, port: 6514, tls: {{certFile: tls/ingest.crt, keyFile: \
                     tls/ingest.key}}}}"
                ),
                "spec.transport.tls.secretName is required under the operator",
            );
        }
        refused_sensor(
            "{type: syslog-tls, port: 6514}",
            "spec.transport.tls is required",
        );
        // A path is not a key: it could not be mounted, nor could `..` stay in the Secret.
        for (field, tls) in [
            (
                "keyFile",
                "{secretName: edge-tls, certFile: tls.crt, keyFile: tls/ingest.key}",
            ),
            (
                "clientCaFile",
                "{secretName: edge-tls, certFile: tls.crt, keyFile: tls.key, clientCaFile: ..}",
            ),
        ] {
            let refused = refused_sensor(
                &format!("{{type: http, port: 8443, tls: {tls}}}"),
                &format!("spec.transport.tls.{field}: "),
            );
            assert!(refused.message.contains("edge-tls"), "{}", refused.message);
        }
        // Transports whose listener has no TLS are admitted as before.
        for transport in [
            "{type: http, port: 8080}",
            "{type: syslog-tcp, port: 601, tls: {certFile: a.crt, keyFile: a.key}}",
        ] {
            assert!(sensor(transport).admit(None).outcome.is_ok(), "{transport}");
        }
    }

    #[test]
    fn the_bundle_names_the_mounted_secret_files() {
        let sensor = sensor(
            "{type: syslog-tls, port: 6514, tls: {secretName: edge-tls, certFile: tls.crt, \
             keyFile: tls.key, clientCaFile: ca.crt}}",
        );
        let entry = sensor.admit(None).outcome.expect("admitted");
        assert_eq!(entry.key, "Sensor.edge.yaml");
        let bundled: Sensor = serde_yaml::from_str(&entry.yaml).unwrap();
        let tls = bundled.spec.transport.tls.unwrap();
        assert_eq!(tls.cert_file, "/etc/kastell/sensor-tls/edge-tls/tls.crt");
        assert_eq!(tls.key_file, "/etc/kastell/sensor-tls/edge-tls/tls.key");
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some("/etc/kastell/sensor-tls/edge-tls/ca.crt")
        );
        // The resource itself is left as written (its status is written against it).
        assert_eq!(sensor.spec.transport.tls.unwrap().cert_file, "tls.crt");
    }

    #[test]
    fn feeds_outside_the_allowed_hosts_are_refused() {
        let feed = |url: &str| -> IntelFeed {
            serde_yaml::from_str(&format!(
                "apiVersion: kastell.eu/v1alpha1\nkind: IntelFeed\n\
                 metadata: {{name: f, namespace: secops}}\nspec: {{type: misp-feed, url: {url:?}}}\n"
            ))
            .unwrap()
        };
        assert!(feed("https://misp.cert.example.eu/f")
            .admit(Some(&policy()))
            .outcome
            .is_ok());
        let refused = feed("https://feeds.example.com/x")
            .admit(Some(&policy()))
            .outcome
            .unwrap_err();
        assert!(refused.is_residency());
        assert!(
            refused.message.contains("feeds.example.com"),
            "{}",
            refused.message
        );
        assert!(feed("https://feeds.example.com/x")
            .admit(None)
            .outcome
            .is_ok());
    }

    #[test]
    fn every_outbound_endpoint_of_a_playbook_is_held_to_the_policy() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/playbooks/contain-brute-force.yaml"
        ))
        .unwrap();
        let playbook: Playbook = serde_yaml::from_str(&text).unwrap();
        let fields: Vec<String> = playbook_endpoints(&playbook.spec)
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        for path in [
            "notify.url",
            "notify.smtp.host",
            "http.url",
            "wazuh.url",
            "enrich.cortex.url",
        ] {
            assert!(
                fields.iter().any(|f| f.ends_with(path)),
                "{path} not in {fields:?}"
            );
        }
        let soc = |hosts: &[&str]| {
            let residency = Residency {
                allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                ..Residency::default()
            };
            EndpointPolicy::from_residency(&residency).0
        };
        assert!(playbook
            .admit(Some(&soc(&["*.soc.example.eu"])))
            .outcome
            .is_ok());
        let without_mail = soc(&[
            "cortex.soc.example.eu",
            "mattermost.soc.example.eu",
            "wazuh-manager.soc.example.eu",
            "awx.soc.example.eu",
        ]);
        let refused = playbook.admit(Some(&without_mail)).outcome.unwrap_err();
        assert!(refused.is_residency());
        assert!(
            refused.message.contains("notify.smtp.host")
                && refused.message.contains("smtp.soc.example.eu"),
            "{}",
            refused.message
        );
    }
}
