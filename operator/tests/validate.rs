//! `validate_dir` on the bundled example and on repositories broken in the ways a pull
//! request breaks them.

use std::path::{Path, PathBuf};

use kastell_operator::validate_dir;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/soc")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const PLATFORM: &str = "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\n\
metadata: {name: soc, namespace: soc}\n\
spec:\n  residency:\n    jurisdiction: EU\n    allowedHosts: ['*.soc.example.eu']\n";

#[test]
fn the_bundled_example_is_valid() {
    let report = validate_dir(&example()).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.resources["SecOpsPlatform"], 1);
    assert_eq!(report.resources["Sensor"], 2);
    assert!(report.resources["DetectionRule"] >= 10);
}

#[test]
fn each_kind_of_problem_names_its_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "platform.yaml", PLATFORM);
    write(
        dir.path(),
        "rule.yaml",
        "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\nmetadata: {name: bad, namespace: soc}\n\
         spec:\n  sigma: |\n    title: t\n    logsource: {product: linux}\n    detection:\n      \
         sel: {CommandLine|nosuchmodifier: x}\n      condition: sel\n",
    );
    write(
        dir.path(),
        "sensor.yaml",
        "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {name: ids, namespace: soc}\n\
         spec: {format: suricata-eve, transport: {type: file, path: missing.json}}\n",
    );
    write(
        dir.path(),
        "feed.yaml",
        "apiVersion: kastell.eu/v1alpha1\nkind: IntelFeed\nmetadata: {name: f, namespace: soc}\n\
         spec: {type: misp-feed, url: 'https://feeds.example.com/misp/'}\n",
    );
    write(
        dir.path(),
        "playbook.yaml",
        "apiVersion: kastell.eu/v1alpha1\nkind: Playbook\nmetadata: {name: p, namespace: soc}\n\
         spec:\n  trigger: {}\n  steps:\n  - {name: tell, type: webhook, webhook: \
         {url: 'https://hooks.slack.com/services/x'}}\n  - {name: note, type: log}\n",
    );
    write(dir.path(), "broken.yaml", "apiVersion: kastell.eu/v1alpha1\nkind: Case\nmetadata: {name: c}\nspec: {title: t, severity: urgent}\n");

    let report = validate_dir(dir.path()).unwrap();
    let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("broken.yaml") && has("unknown variant `urgent`"),
        "{lines:#?}"
    );
    assert!(
        has("DetectionRule soc/bad: spec.sigma:") && has("nosuchmodifier"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/ids: spec.transport.path: missing.json does not exist"),
        "{lines:#?}"
    );
    assert!(
        has("IntelFeed soc/f: spec.url: host feeds.example.com is outside"),
        "{lines:#?}"
    );
    assert!(
        has("Playbook soc/p: spec.steps[tell].webhook.url: host hooks.slack.com is outside"),
        "{lines:#?}"
    );
    assert!(has("Playbook soc/p") && has("message"), "{lines:#?}");
}

#[test]
fn two_platforms_in_one_namespace_are_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", PLATFORM);
    write(
        dir.path(),
        "b.yaml",
        &PLATFORM.replace("name: soc,", "name: other,"),
    );
    let report = validate_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert!(report.problems[0]
        .message
        .contains("already has the platform soc/soc"));
}

#[test]
fn a_directory_without_resources_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let report = validate_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].message.contains("no Kastell resources"));
}

#[test]
fn sensor_tls_files_are_secret_keys_with_a_secret_and_files_without() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "platform.yaml", PLATFORM);
    let sensor = |name: &str, tls: &str| {
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {{name: {name}, namespace: soc}}\n\
             spec: {{format: syslog, transport: {{type: syslog-tls, port: 6514, tls: {tls}}}}}\n"
        )
    };
    write(
        dir.path(),
        "keys.yaml",
        &sensor(
            "keys",
            "{secretName: edge-tls, certFile: tls.crt, keyFile: tls.key, clientCaFile: ca.crt}",
        ),
    );
    write(
        dir.path(),
        "path.yaml",
        &sensor(
            "path",
            "{secretName: edge-tls, certFile: certs/tls.crt, keyFile: tls.key}",
        ),
    );
    write(
        dir.path(),
        "files.yaml",
        &sensor("files", "{certFile: here.crt, keyFile: missing.key}"),
    );
    write(dir.path(), "here.crt", "");

    let report = validate_dir(dir.path()).unwrap();
    let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has("Sensor soc/files: spec.transport.tls.keyFile: missing.key does not exist"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/path: spec.transport.tls.certFile: \"certs/tls.crt\" is not a key of a Secret"),
        "{lines:#?}"
    );
}

/// What `kastell run` refuses when it starts its listeners, validate reports before.
#[test]
fn listeners_that_cannot_listen_where_they_say_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "platform.yaml", PLATFORM);
    let sensor = |name: &str, transport: &str| {
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {{name: {name}, namespace: soc}}\n\
             spec: {{format: json-lines, transport: {transport}}}\n"
        )
    };
    write(
        dir.path(),
        "open.yaml",
        &sensor("open", "{type: http, port: 19300, bindAddress: 0.0.0.0}"),
    );
    write(
        dir.path(),
        "udp.yaml",
        &sensor("udp", "{type: syslog-udp, port: 5514, bindAddress: '::'}"),
    );
    write(
        dir.path(),
        "noport.yaml",
        &sensor("noport", "{type: syslog-tcp}"),
    );
    write(
        dir.path(),
        "badip.yaml",
        &sensor("badip", "{type: http, port: 19301, bindAddress: example}"),
    );
    write(
        dir.path(),
        "local.yaml",
        &sensor("local", "{type: http, port: 19302}"),
    );
    write(
        dir.path(),
        "portzero.yaml",
        &sensor("portzero", "{type: syslog-tcp, port: 0}"),
    );
    write(
        dir.path(),
        "nocap.yaml",
        &sensor("nocap", "{type: http, port: 19303, maxConnections: 0}"),
    );

    let report = validate_dir(dir.path()).unwrap();
    let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("Sensor soc/open: a plain (non-TLS) listener may only bind to loopback, not 0.0.0.0:19300"), "{lines:#?}");
    assert!(
        has("Sensor soc/udp: a plain (non-TLS) listener may only bind to loopback"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/noport: a listener needs spec.transport.port"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/badip: spec.transport.bindAddress \"example\" is not an IP address"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/portzero: spec.transport.port must be between 1 and 65535, not 0"),
        "{lines:#?}"
    );
    assert!(
        has("Sensor soc/nocap: spec.transport.maxConnections must be between 1 and 1000000, not 0"),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 6, "{lines:#?}");
}

/// A file that is not text is one problem; the rest of the repository is still checked,
/// and the file is named once per line.
#[test]
fn a_binary_file_does_not_stop_the_check() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "platform.yaml", PLATFORM);
    std::fs::write(dir.path().join("x.yaml"), b"\x00\xff\xfe binary").unwrap();
    write(
        dir.path(),
        "sensor.yaml",
        "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {name: ids, namespace: soc}\n\
         spec: {format: suricata-eve, transport: {type: file, path: missing.json}}\n",
    );
    let report = validate_dir(dir.path()).unwrap();
    let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("x.yaml: cannot be read: ")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("missing.json does not exist")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l.matches(".yaml").count() == 1),
        "{lines:#?}"
    );
}
