use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use k8s_openapi::api::core::v1::{
    HTTPGetAction, PodSpec, Probe, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kastell_crds::SecOpsPlatform;

use super::*;

pub(crate) fn platform(yaml: &str) -> SecOpsPlatform {
    serde_yaml::from_str(yaml).expect("test platform parses")
}

const PLATFORM: &str = r#"
apiVersion: kastell.eu/v1alpha1
kind: SecOpsPlatform
metadata: {name: soc, namespace: secops, uid: 6d2b9a44-1111-4222-8333-444455556666}
spec:
  residency:
    jurisdiction: EU
    allowedHosts: [misp.cert.example.eu]
    allowedNetworks: [10.20.0.0/16]
  workloads:
    correlate: {replicas: 3}
    cases: {replicas: 4}
"#;

const SENSOR: &str = r#"
apiVersion: kastell.eu/v1alpha1
kind: Sensor
metadata: {name: syslog, namespace: secops}
spec:
  format: syslog
  transport: {type: syslog-udp, port: 5514}
"#;

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "kastell.eu/v1alpha1".into(),
        kind: "SecOpsPlatform".into(),
        name: "soc".into(),
        uid: "6d2b9a44-1111-4222-8333-444455556666".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn bundles(rule_text: &str) -> BTreeMap<Stage, Bundle> {
    let mut bundles = BTreeMap::new();
    let mut ingest = Bundle::default();
    ingest.insert(BundleEntry {
        key: "Sensor.syslog.yaml".into(),
        yaml: SENSOR.into(),
    });
    // As assembled: ingest carries the rules correlate runs (crate::assemble).
    ingest.insert(BundleEntry {
        key: "DetectionRule.r.yaml".into(),
        yaml: rule_text.into(),
    });
    bundles.insert(Stage::Ingest, ingest);
    let mut correlate = Bundle::default();
    correlate.insert(BundleEntry {
        key: "DetectionRule.r.yaml".into(),
        yaml: rule_text.into(),
    });
    bundles.insert(Stage::Correlate, correlate);
    bundles
}

fn build(platform: &SecOpsPlatform, bundles: &BTreeMap<Stage, Bundle>) -> PlatformObjects {
    let regions: BTreeSet<String> = crate::regions::allowed_regions(&platform.spec.residency);
    platform_objects(&BuildInput {
        platform,
        owner: owner(),
        default_image: "ghcr.io/kastell-eu/kastell:0.1.0",
        regions: &regions,
        bundles,
    })
}

/// The pod template's spec of a workload.
fn pod_spec(workload: &Workload) -> &PodSpec {
    workload.template().spec.as_ref().expect("a pod spec")
}

/// A pod's volume by name.
fn volume<'a>(pod: &'a PodSpec, name: &str) -> Option<&'a Volume> {
    pod.volumes.iter().flatten().find(|v| v.name == name)
}

/// The mount of a volume in a pod's container.
fn mount<'a>(pod: &'a PodSpec, volume: &str) -> &'a VolumeMount {
    let mut mounts = pod.containers[0].volume_mounts.iter().flatten();
    mounts
        .find(|m| m.name == volume)
        .unwrap_or_else(|| panic!("no mount of {volume}"))
}

/// A pod's Secret volume by name.
fn secret_volume(pod: &PodSpec, name: &str) -> Option<SecretVolumeSource> {
    volume(pod, name).and_then(|v| v.secret.clone())
}

/// The keys a Secret volume mounts, in order.
fn secret_keys(secret: &SecretVolumeSource) -> Vec<String> {
    secret
        .items
        .iter()
        .flatten()
        .map(|i| i.key.clone())
        .collect()
}

/// A probe's HTTP GET.
fn http_get(probe: &Option<Probe>) -> &HTTPGetAction {
    probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("an HTTP probe")
}

/// The components a NetworkPolicy selects (`app.kubernetes.io/component In [...]`).
fn components(policy: &NetworkPolicySpec) -> Vec<String> {
    let expressions = policy
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref());
    expressions.expect("a component selector")[0]
        .values
        .clone()
        .unwrap_or_default()
}

/// The CIDR of a peer's ipBlock.
fn cidr(peer: &NetworkPolicyPeer) -> &str {
    &peer.ip_block.as_ref().expect("an ipBlock").cidr
}

/// The value a selector requires of a label.
fn label<'a>(selector: &'a Option<LabelSelector>, key: &str) -> &'a str {
    let labels = selector.as_ref().and_then(|s| s.match_labels.as_ref());
    &labels.expect("match labels")[key]
}

#[test]
fn five_stages_each_with_its_objects() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    assert_eq!(objects.workloads.len(), 5);
    assert_eq!(objects.services.len(), 5);
    assert_eq!(objects.service_accounts.len(), 5);
    assert_eq!(objects.roles.len(), 5);
    assert_eq!(objects.role_bindings.len(), 5);
    assert_eq!(objects.config_maps.len(), 5);
    assert_eq!(objects.volume_claims.len(), 1, "sqlite cases store");
    let names: Vec<_> = objects
        .workloads
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "soc-ingest",
            "soc-correlate",
            "soc-enrich",
            "soc-cases",
            "soc-respond"
        ]
    );
    for d in &objects.workloads {
        let owners = d.metadata().owner_references.as_ref().unwrap();
        assert_eq!(owners[0].uid, owner().uid);
        assert_eq!(d.metadata().namespace.as_deref(), Some("secops"));
    }
    let replicas: Vec<_> = objects
        .workloads
        .iter()
        .map(|d| d.replicas().unwrap())
        .collect();
    assert_eq!(
        replicas,
        [1, 3, 1, 1, 1],
        "sqlite keeps cases at one replica"
    );
}

#[test]
fn pods_meet_the_restricted_standard_and_probe_health() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    for d in &objects.workloads {
        let pod = pod_spec(d);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".into()])
            );
            assert_eq!(
                http_get(&c.liveness_probe).path.as_deref(),
                Some("/healthz")
            );
            assert_eq!(
                http_get(&c.readiness_probe).path.as_deref(),
                Some("/readyz")
            );
            assert!(c.resources.as_ref().unwrap().requests.is_some());
            assert_eq!(c.image.as_deref(), Some("ghcr.io/kastell-eu/kastell:0.1.0"));
        }
    }
}

#[test]
fn each_container_runs_its_stage_command_on_the_mounted_bundle() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    for d in &objects.workloads {
        let container = &pod_spec(d).containers[0];
        let args = container.args.clone().unwrap();
        assert_eq!(
            args,
            [
                container.name.as_str(),
                "--config",
                "/etc/kastell/config",
                "--listen",
                "0.0.0.0:8080"
            ],
            "the stage command `kastell <stage>` (see docs/cluster.md)"
        );
    }
}

#[test]
fn pods_are_pinned_to_the_allowed_regions_by_an_unforgeable_label() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let pod = pod_spec(&objects.workloads[0]).clone();
    let required = pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    let expression = &required.node_selector_terms[0]
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(expression.key, "node-restriction.kubernetes.io/region");
    assert_eq!(expression.operator, "In");
    let values = expression.values.as_ref().unwrap();
    assert!(values.contains(&"eu-central-1".to_owned()));
    assert!(!values.contains(&"eu-west-2".to_owned()));
}

#[test]
fn a_changed_bundle_changes_only_its_stage_template_hash() {
    let p = platform(PLATFORM);
    let before = build(&p, &bundles("rule one"));
    let after = build(&p, &bundles("rule two"));
    let hash = |o: &PlatformObjects, i: usize| {
        o.workloads[i]
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash(&before, 1), hash(&after, 1), "correlate rolls");
    // Ingest gets the new rule through its mounted ConfigMap, which it reloads itself.
    assert_eq!(hash(&before, 0), hash(&after, 0), "ingest does not");
    assert_eq!(
        before.config_maps[0].data.as_ref().unwrap()["DetectionRule.r.yaml"],
        "rule one"
    );
    assert_eq!(
        after.config_maps[0].data.as_ref().unwrap()["DetectionRule.r.yaml"],
        "rule two"
    );
    assert_eq!(
        before.config_maps[1].data.as_ref().unwrap()["DetectionRule.r.yaml"],
        "rule one"
    );
}

#[test]
fn network_policies_allow_pipeline_sensors_and_allowed_networks_only() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let names: Vec<_> = objects
        .network_policies
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["soc-pipeline", "soc-sensors", "soc-allowed-egress"]);
    let egress = objects.network_policies[2]
        .spec
        .as_ref()
        .unwrap()
        .egress
        .as_ref()
        .unwrap();
    let peers = egress[0].to.as_ref().unwrap();
    assert_eq!(cidr(&peers[0]), "10.20.0.0/16");
    let sensors = objects.network_policies[1]
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .unwrap();
    let port = &sensors[0].ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("UDP"));
    let service_ports: Vec<_> = objects.services[0]
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(service_ports, [8080, 5514]);
}

#[test]
fn roles_grant_only_the_stage_configuration() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let ingest = objects.roles[0].rules.as_ref().unwrap();
    assert_eq!(ingest.len(), 1);
    assert_eq!(
        ingest[0].resource_names,
        Some(vec!["soc-ingest-config".into()])
    );
    assert_eq!(ingest[0].verbs, ["get", "watch"]);
    let cases = objects.roles[3].rules.as_ref().unwrap();
    assert_eq!(
        cases[1].resources,
        Some(vec!["cases".into(), "cases/status".into()])
    );
}

#[test]
fn respond_may_quarantine_pods_in_the_platform_namespace_only() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let respond = objects.roles[4].rules.as_ref().unwrap();
    let pods = respond
        .iter()
        .find(|r| r.resources == Some(vec!["pods".into()]))
        .expect("a rule on pods");
    assert_eq!(pods.verbs, ["get", "list", "patch"]);
    let policies = respond
        .iter()
        .find(|r| r.resources == Some(vec!["networkpolicies".into()]))
        .expect("a rule on networkpolicies");
    assert_eq!(policies.verbs, ["get", "create", "patch", "delete"]);
    // No other stage touches pods or policies.
    for role in &objects.roles[..4] {
        assert!(role.rules.as_ref().unwrap().iter().all(|r| {
            r.resources != Some(vec!["pods".into()])
                && r.resources != Some(vec!["networkpolicies".into()])
        }));
    }
}

#[test]
fn enrich_mounts_the_secrets_its_feeds_name() {
    let mut bundles = bundles("a");
    let mut enrich = Bundle::default();
    for (name, secret, key) in [
        ("circl", "misp-keys", "circl"),
        ("local", "misp-keys", "local"),
        ("other", "other-misp", "apikey"),
    ] {
        enrich.insert(BundleEntry {
            key: format!("IntelFeed.{name}.yaml"),
            yaml: format!(
                "apiVersion: kastell.eu/v1alpha1\nkind: IntelFeed\nmetadata: {{name: {name}, \
                 namespace: soc}}\nspec:\n  type: misp-api\n  url: https://misp.example.eu\n  \
                 apiKeySecret: {{name: {secret}, key: {key}}}\n"
            ),
        });
    }
    bundles.insert(Stage::Enrich, enrich);
    let objects = build(&platform(PLATFORM), &bundles);
    let pod = |stage: usize| pod_spec(&objects.workloads[stage]).clone();
    let enrich = pod(2);
    let mounts: Vec<(String, bool)> = enrich.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.mount_path.starts_with("/etc/kastell/secrets/"))
        .map(|m| (m.mount_path.clone(), m.read_only == Some(true)))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/etc/kastell/secrets/misp-keys".to_owned(), true),
            ("/etc/kastell/secrets/other-misp".to_owned(), true)
        ]
    );
    let volume = enrich
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("misp-keys"))
        .unwrap();
    assert_eq!(
        secret_keys(volume.secret.as_ref().unwrap()),
        ["circl", "local"]
    );
    // Other stages never see the feeds' keys.
    for stage in [0, 1, 3, 4] {
        assert!(pod(stage)
            .volumes
            .unwrap_or_default()
            .iter()
            .all(|v| !v.name.starts_with("feed-secret")));
    }
}

/// Bundles whose ingest stage also runs two TLS listeners that share one Secret (an HTTPS
/// endpoint and a mutual-TLS syslog receiver), each Sensor's entry as admission makes it.
fn tls_sensor_bundles() -> BTreeMap<Stage, Bundle> {
    use crate::admission::Member;
    let mut bundles = bundles("a");
    let ingest = bundles.get_mut(&Stage::Ingest).unwrap();
    for (name, transport) in [
        (
            "https",
            "{type: http, port: 8443, bindAddress: 0.0.0.0, tls: {secretName: edge-tls, \
             certFile: tls.crt, keyFile: tls.key}}",
        ),
        (
            "syslog-tls",
            "{type: syslog-tls, port: 6514, bindAddress: 0.0.0.0, tls: {secretName: edge-tls, \
             certFile: tls.crt, keyFile: tls.key, clientCaFile: ca.crt}}",
        ),
    ] {
        let sensor: kastell_crds::Sensor = serde_yaml::from_str(&format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\n\
             metadata: {{name: {name}, namespace: secops}}\n\
             spec: {{format: syslog, transport: {transport}}}\n"
        ))
        .unwrap();
        ingest.insert(sensor.admit(None).outcome.expect("admitted"));
    }
    bundles
}

#[test]
fn ingest_mounts_the_secret_its_tls_sensors_name_where_their_files_point() {
    let objects = build(&platform(PLATFORM), &tls_sensor_bundles());
    let ingest = pod_spec(&objects.workloads[0]);
    let secret = secret_volume(ingest, "sensor-tls-0").expect("the Sensors' Secret");
    assert_eq!(secret.secret_name.as_deref(), Some("edge-tls"));
    assert_eq!(secret_keys(&secret), ["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(secret.default_mode, Some(0o440));
    assert_eq!(secret.optional, Some(false));
    assert!(
        volume(ingest, "sensor-tls-1").is_none(),
        "one volume per Secret"
    );
    let mount = mount(ingest, "sensor-tls-0");
    assert_eq!(mount.mount_path, "/etc/kastell/sensor-tls/edge-tls");
    assert_eq!(mount.read_only, Some(true));
    for d in &objects.workloads[1..] {
        assert!(
            volume(pod_spec(d), "sensor-tls-0").is_none(),
            "{}",
            d.name()
        );
    }

    // The ingest stage reads the mounted bundle as a directory: each file it would open
    // is a key of the mounted Secret.
    let dir = tempfile::tempdir().unwrap();
    let sensors = objects.config_maps[0].data.as_ref().unwrap();
    for (key, yaml) in sensors.iter().filter(|(k, _)| k.starts_with("Sensor.")) {
        std::fs::write(dir.path().join(key), yaml).unwrap();
    }
    let (resources, errors) = kastell_crds::load_dir(dir.path()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let mut opened = BTreeSet::new();
    let listeners: Vec<_> = resources
        .sensors
        .iter()
        .filter_map(|s| Some((s, s.object.spec.transport.tls.as_ref()?)))
        .collect();
    assert_eq!(listeners.len(), 2);
    for (sensor, tls) in listeners {
        let files = [
            Some(&tls.cert_file),
            Some(&tls.key_file),
            tls.client_ca_file.as_ref(),
        ];
        for file in files.into_iter().flatten() {
            let path = sensor.resolve(file);
            let key = path.strip_prefix(&mount.mount_path).unwrap();
            opened.insert(key.to_str().unwrap().to_owned());
        }
    }
    let keys: BTreeSet<String> = secret_keys(&secret).into_iter().collect();
    assert_eq!(opened, keys);

    // A Sensor refused by admission is not in the bundle and mounts nothing.
    let objects = build(&platform(PLATFORM), &bundles("a"));
    assert!(volume(pod_spec(&objects.workloads[0]), "sensor-tls-0").is_none());
}

/// A platform in cluster mode: mutual TLS between stages, NATS over TLS with a client
/// certificate and a creds file, PostgreSQL with its own CA.
pub(crate) const WIRED_PLATFORM: &str = r#"
apiVersion: kastell.eu/v1alpha1
kind: SecOpsPlatform
metadata: {name: soc, namespace: secops, uid: 6d2b9a44-1111-4222-8333-444455556666}
spec:
  residency: {jurisdiction: EU}
  tls: {secretName: soc-stages-tls, mutual: true}
  bus:
    type: nats
    url: tls://nats.secops.svc:4222
    credentialsSecret: {name: soc-nats, key: kastell.creds}
    userPasswordSecret: {name: soc-nats-user, key: user-password}
    tokenSecret: {name: soc-nats-token, key: token}
    tls: {secretName: soc-nats-tls, clientCertificate: true}
  storage:
    type: postgresql
    postgresql:
      host: pg.secops.svc
      database: kastell cases
      user: kastell
      passwordSecret: {name: soc-pg, key: password}
      caSecret: soc-pg-ca
"#;

fn env_of(container: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            // A value, or a field of the pod itself; never a Secret's content.
            let field = e.value_from.as_ref().map(|from| {
                assert!(
                    from.secret_key_ref.is_none(),
                    "{} refers to a Secret",
                    e.name
                );
                format!("fieldRef:{}", from.field_ref.as_ref().unwrap().field_path)
            });
            (
                e.name.clone(),
                e.value.clone().or(field).unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn stages_get_their_secrets_mounted_read_only_and_named_by_environment() {
    let objects = build(&platform(WIRED_PLATFORM), &bundles("a"));
    for d in &objects.workloads {
        let pod = pod_spec(d);
        let container = &pod.containers[0];
        let stage = container.name.as_str();
        let env = env_of(container);
        assert_eq!(env["KASTELL_TLS_CERT"], "/etc/kastell/tls/tls.crt");
        assert_eq!(env["KASTELL_TLS_KEY"], "/etc/kastell/tls/tls.key");
        assert_eq!(env["KASTELL_TLS_CLIENT_CA"], "/etc/kastell/tls/ca.crt");
        assert_eq!(env["KASTELL_NATS_URL"], "tls://nats.secops.svc:4222");
        assert_eq!(env["KASTELL_NATS_CA_FILE"], "/etc/kastell/nats-tls/ca.crt");
        assert_eq!(
            env["KASTELL_NATS_CERT_FILE"],
            "/etc/kastell/nats-tls/tls.crt"
        );
        assert_eq!(
            env["KASTELL_NATS_KEY_FILE"],
            "/etc/kastell/nats-tls/tls.key"
        );
        assert_eq!(
            env["KASTELL_NATS_CREDS_FILE"],
            "/etc/kastell/nats-creds/nats.creds"
        );
        assert_eq!(
            env["KASTELL_NATS_USER_PASSWORD_FILE"],
            "/etc/kastell/nats-user-password/user-password"
        );
        assert_eq!(
            env["KASTELL_NATS_TOKEN_FILE"],
            "/etc/kastell/nats-token/token"
        );
        let holds_store = stage == "cases" || stage == "respond";
        assert_eq!(env.contains_key("KASTELL_STORE"), holds_store, "{stage}");
        if holds_store {
            assert_eq!(
                env["KASTELL_STORE"],
                "postgres://kastell@pg.secops.svc:5432/kastell%20cases\
                 ?sslmode=verify-full&sslrootcert=%2Fetc%2Fkastell%2Fstore-tls%2Fca.crt"
            );
            assert_eq!(
                env["KASTELL_STORE_PASSWORD_FILE"],
                "/etc/kastell/store-password/password"
            );
        }

        let secret = |name: &str| secret_volume(pod, name);
        let tls = secret("tls").expect("the tls volume");
        assert_eq!(tls.secret_name.as_deref(), Some("soc-stages-tls"));
        assert_eq!(secret_keys(&tls), ["tls.crt", "tls.key", "ca.crt"]);
        assert_eq!(tls.default_mode, Some(0o440));
        let creds = secret("nats-creds").unwrap().items.unwrap();
        assert_eq!(
            (creds[0].key.as_str(), creds[0].path.as_str()),
            ("kastell.creds", "nats.creds")
        );
        let user = secret("nats-user-password").unwrap();
        assert_eq!(user.secret_name.as_deref(), Some("soc-nats-user"));
        let user = user.items.unwrap();
        assert_eq!(
            (user[0].key.as_str(), user[0].path.as_str()),
            ("user-password", "user-password")
        );
        let token = secret("nats-token").unwrap();
        assert_eq!(token.secret_name.as_deref(), Some("soc-nats-token"));
        assert_eq!(token.items.unwrap()[0].path, "token");
        assert_eq!(secret("store-password").is_some(), holds_store, "{stage}");
        assert_eq!(secret("store-tls").is_some(), holds_store, "{stage}");
        for mount in container.volume_mounts.as_ref().unwrap() {
            let is_secret = secret(&mount.name).is_some();
            if is_secret {
                assert_eq!(mount.read_only, Some(true), "{stage}: {}", mount.name);
            }
        }

        for probe in [&container.liveness_probe, &container.readiness_probe] {
            assert_eq!(http_get(probe).scheme.as_deref(), Some("HTTPS"));
        }
    }
    // The SQLite volume claim is not made for a PostgreSQL platform; ingest and respond
    // write their --data to a claim per replica, the other stages to an emptyDir.
    assert!(objects.volume_claims.is_empty());
    for d in &objects.workloads {
        let pod = pod_spec(d);
        let data = volume(pod, "data");
        match d {
            Workload::StatefulSet(set) if d.name() != "soc-correlate" => {
                assert!(data.is_none(), "{}", d.name());
                let claims = set.spec.as_ref().unwrap().volume_claim_templates.clone();
                assert_eq!(claims.unwrap()[0].metadata.name.as_deref(), Some("data"));
            }
            _ => assert!(data.unwrap().empty_dir.is_some(), "{}", d.name()),
        }
        assert_eq!(mount(pod, "data").mount_path, "/var/lib/kastell");
    }
}

#[test]
fn without_tls_or_secrets_stages_get_no_extra_environment_and_probe_over_http() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    for d in &objects.workloads {
        let pod = pod_spec(d);
        let container = &pod.containers[0];
        if d.name() == "soc-correlate" {
            let names: Vec<String> = env_of(container).into_keys().collect();
            assert_eq!(names, ["KASTELL_REPLICAS", "KASTELL_REPLICA_INDEX"]);
        } else {
            assert_eq!(container.env, None, "{}", d.name());
        }
        assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()));
        assert_eq!(http_get(&container.liveness_probe).scheme, None);
    }
}

#[test]
fn the_gaps_that_keep_stages_from_starting_are_named() {
    let gaps = wiring::cluster_gaps(&platform(PLATFORM));
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!(gaps[0].contains("spec.tls"));
    assert!(gaps[1].contains("postgresql"));
    assert!(wiring::cluster_gaps(&platform(WIRED_PLATFORM)).is_empty());
}

#[test]
fn respond_on_sqlite_gets_no_store_of_its_own() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let data = |i: usize| volume(pod_spec(&objects.workloads[i]), "data").cloned();
    assert!(
        data(0).is_none(),
        "ingest: its claim template, not a pod volume"
    );
    assert!(data(2).unwrap().empty_dir.is_some(), "enrich");
    assert!(data(3).unwrap().persistent_volume_claim.is_some(), "cases");
    assert!(data(4).is_none(), "respond");
}

#[test]
fn one_way_tls_mounts_no_client_ca_and_verify_ca_is_passed_on() {
    let yaml = WIRED_PLATFORM
        .replace("mutual: true", "mutual: false")
        .replace("clientCertificate: true", "clientCertificate: false")
        .replace("      caSecret: soc-pg-ca\n", "      sslMode: verify-ca\n");
    let objects = build(&platform(&yaml), &bundles("a"));
    let pod = pod_spec(&objects.workloads[3]);
    let env = env_of(&pod.containers[0]);
    assert!(!env.contains_key("KASTELL_TLS_CLIENT_CA"));
    assert!(!env.contains_key("KASTELL_NATS_CERT_FILE"));
    assert_eq!(
        env["KASTELL_STORE"],
        "postgres://kastell@pg.secops.svc:5432/kastell%20cases?sslmode=verify-ca"
    );
    let tls = secret_volume(pod, "tls").unwrap();
    assert_eq!(secret_keys(&tls), ["tls.crt", "tls.key"]);
    assert!(volume(pod, "store-tls").is_none());
}

/// Every object the operator builds, against the Kubernetes 1.35 OpenAPI schemas.
#[test]
fn built_objects_pass_kubernetes_validate_strict() {
    let Some(validator) = validator() else {
        eprintln!(
            "SKIPPED: built_objects_pass_kubernetes_validate_strict: kubernetes-validate not \
             found (set KASTELL_KUBERNETES_VALIDATE or run tests/tools/ensure-kubernetes-validate)"
        );
        return;
    };
    let plain = build(&platform(PLATFORM), &bundles("a"));
    let wired = build(&platform(WIRED_PLATFORM), &tls_sensor_bundles());
    let reachable = build(&platform(REACHABLE_PLATFORM), &bundles("a"));
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut write = |kind: &str, value: serde_json::Value| {
        let path = dir.path().join(format!("{:03}-{kind}.yaml", files.len()));
        std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
        files.push(path);
    };
    for o in plain
        .workloads
        .iter()
        .chain(&wired.workloads)
        .chain(&reachable.workloads)
    {
        let value = match o {
            Workload::Deployment(d) => serde_json::to_value(d),
            Workload::StatefulSet(s) => serde_json::to_value(s),
        };
        write(&o.kind().to_ascii_lowercase(), value.unwrap());
    }
    let objects = plain;
    for o in &objects.services {
        write("service", serde_json::to_value(o).unwrap());
    }
    for o in &objects.service_accounts {
        write("sa", serde_json::to_value(o).unwrap());
    }
    for o in &objects.roles {
        write("role", serde_json::to_value(o).unwrap());
    }
    for o in &objects.role_bindings {
        write("rb", serde_json::to_value(o).unwrap());
    }
    for o in &objects.config_maps {
        write("cm", serde_json::to_value(o).unwrap());
    }
    for o in objects
        .network_policies
        .iter()
        .chain(&reachable.network_policies)
    {
        write("np", serde_json::to_value(o).unwrap());
    }
    for o in &objects.volume_claims {
        write("pvc", serde_json::to_value(o).unwrap());
    }
    let output = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.35"])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches(" passed for resource ").count(),
        files.len(),
        "{stdout}"
    );
}

pub(crate) fn validator() -> Option<String> {
    if let Ok(path) = std::env::var("KASTELL_KUBERNETES_VALIDATE") {
        return Some(path);
    }
    Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubernetes-validate".into())
}

fn stateful_set(objects: &PlatformObjects, name: &str) -> k8s_openapi::api::apps::v1::StatefulSet {
    match objects.workloads.iter().find(|w| w.name() == name) {
        Some(Workload::StatefulSet(set)) => set.clone(),
        other => panic!("{name} is not a StatefulSet: {other:?}"),
    }
}

#[test]
fn correlate_replicas_each_read_their_own_share_of_the_partitions() {
    let objects = build(&platform(PLATFORM), &bundles("a"));
    let set = stateful_set(&objects, "soc-correlate");
    let spec = set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("soc-correlate"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert!(
        spec.volume_claim_templates.is_none(),
        "correlate keeps nothing"
    );
    let env = env_of(&spec.template.spec.as_ref().unwrap().containers[0]);
    assert_eq!(env["KASTELL_REPLICAS"], "3");
    assert_eq!(
        env["KASTELL_REPLICA_INDEX"],
        "fieldRef:metadata.labels['apps.kubernetes.io/pod-index']"
    );
    // Another replica count is another template: every replica restarts with its share.
    let one = build(
        &platform(&PLATFORM.replace("correlate: {replicas: 3}", "correlate: {replicas: 1}")),
        &bundles("a"),
    );
    let set = stateful_set(&one, "soc-correlate");
    let env = env_of(&set.spec.unwrap().template.spec.unwrap().containers[0]);
    assert_eq!(env["KASTELL_REPLICAS"], "1");
}

#[test]
fn ingest_and_respond_keep_their_data_on_a_claim_per_replica_unless_asked_not_to() {
    let objects = build(&platform(WIRED_PLATFORM), &bundles("a"));
    for name in ["soc-ingest", "soc-respond"] {
        let set = stateful_set(&objects, name);
        let spec = set.spec.unwrap();
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        assert!(claim.metadata.owner_references.is_none(), "{name}");
        // The residency check finds the bound volumes by these labels.
        let labels = claim.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "soc");
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim_spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
        let size = &claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, "1Gi");
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }

    let yaml = WIRED_PLATFORM.replace(
        "  residency: {jurisdiction: EU}\n",
        "  residency: {jurisdiction: EU}\n  workloads:\n    ingest:\n      dataVolume: \
         {type: emptyDir}\n    respond:\n      replicas: 2\n      dataVolume: {size: 5Gi, \
         storageClassName: eu-ssd}\n",
    );
    let objects = build(&platform(&yaml), &bundles("a"));
    let ingest = &objects.workloads[0];
    assert_eq!(ingest.kind(), "Deployment");
    let data = volume(pod_spec(ingest), "data");
    assert!(data.unwrap().empty_dir.is_some());
    let respond = stateful_set(&objects, "soc-respond").spec.unwrap();
    assert_eq!(respond.replicas, Some(2));
    let claim = respond.volume_claim_templates.unwrap()[0]
        .spec
        .clone()
        .unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("eu-ssd"));
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"].0,
        "5Gi"
    );
    // Enrich and cases stay Deployments whatever is asked.
    assert_eq!(objects.workloads[2].kind(), "Deployment");
    assert_eq!(objects.workloads[3].kind(), "Deployment");
}

/// A platform whose NATS and PostgreSQL are outside its pods, with analysts and a
/// Prometheus let in.
const REACHABLE_PLATFORM: &str = r#"
apiVersion: kastell.eu/v1alpha1
kind: SecOpsPlatform
metadata: {name: soc, namespace: secops, uid: 6d2b9a44-1111-4222-8333-444455556666}
spec:
  residency:
    jurisdiction: EU
    allowedNetworks: [10.20.0.0/16]
  bus:
    type: nats
    url: "tls://10.20.1.5:4443, nats://nats.messaging.svc.cluster.local, nats://nats.soc.example.eu:4222"
  storage:
    type: postgresql
    postgresql:
      host: 192.0.2.10
      port: 6432
      database: kastell
      user: kastell
      passwordSecret: {name: soc-pg, key: password}
  network:
    casesApiFrom:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}
    metricsNamespace: monitoring
    metricsPodSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
"#;

fn policy<'a>(
    objects: &'a PlatformObjects,
    name: &str,
) -> &'a k8s_openapi::api::networking::v1::NetworkPolicySpec {
    objects
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.spec.as_ref())
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
}

fn ports(
    rule_ports: &Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>,
) -> Vec<i32> {
    rule_ports
        .iter()
        .flatten()
        .map(|p| match p.port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
            _ => panic!("a numbered port"),
        })
        .collect()
}

#[test]
fn the_bus_and_the_store_are_reachable_and_chosen_peers_let_in() {
    let objects = build(&platform(REACHABLE_PLATFORM), &bundles("a"));
    let names: Vec<_> = objects
        .network_policies
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "soc-pipeline",
            "soc-sensors",
            "soc-allowed-egress",
            "soc-bus-egress",
            "soc-store-egress",
            "soc-cases-api",
            "soc-metrics"
        ]
    );

    // NATS: every stage; an address by itself, a Service by any pod of the cluster, a
    // name outside the cluster by the allowed networks; each on its own port.
    let bus = policy(&objects, "soc-bus-egress");
    assert_eq!(components(bus).len(), 5);
    let rules = bus.egress.as_ref().unwrap();
    let first_peer = |at: usize| &rules[at].to.as_ref().unwrap()[0];
    assert_eq!(rules.len(), 3);
    assert_eq!(ports(&rules[0].ports), [4443]);
    assert_eq!(cidr(first_peer(0)), "10.20.1.5/32");
    assert_eq!(ports(&rules[1].ports), [4222]);
    assert_eq!(first_peer(1).namespace_selector, Some(Default::default()));
    assert_eq!(ports(&rules[2].ports), [4222]);
    assert_eq!(cidr(first_peer(2)), "10.20.0.0/16");

    // PostgreSQL: the stages holding the case store only.
    let store = policy(&objects, "soc-store-egress");
    assert_eq!(components(store), ["cases", "respond"]);
    let rule = &store.egress.as_ref().unwrap()[0];
    assert_eq!(ports(&rule.ports), [6432]);
    assert_eq!(cidr(&rule.to.as_ref().unwrap()[0]), "192.0.2.10/32");

    let api = policy(&objects, "soc-cases-api");
    assert_eq!(components(api), ["cases"]);
    let rule = &api.ingress.as_ref().unwrap()[0];
    assert_eq!(ports(&rule.ports), [8080]);
    let from = &rule.from.as_ref().unwrap()[0];
    assert_eq!(
        label(&from.namespace_selector, "kubernetes.io/metadata.name"),
        "ingress-nginx"
    );

    let metrics = policy(&objects, "soc-metrics");
    let rule = &metrics.ingress.as_ref().unwrap()[0];
    assert_eq!(ports(&rule.ports), [8080]);
    let from = &rule.from.as_ref().unwrap()[0];
    assert_eq!(
        label(&from.namespace_selector, "kubernetes.io/metadata.name"),
        "monitoring"
    );
    assert_eq!(
        label(&from.pod_selector, "app.kubernetes.io/name"),
        "prometheus"
    );

    // A name outside the cluster with no allowed network: its port, to any address.
    let open = REACHABLE_PLATFORM.replace("    allowedNetworks: [10.20.0.0/16]\n", "");
    let objects = build(&platform(&open), &bundles("a"));
    let rules = policy(&objects, "soc-bus-egress").egress.clone().unwrap();
    assert_eq!(rules[2].to, None);
    assert_eq!(ports(&rules[2].ports), [4222]);
}
