//! The Grafana dashboards in charts/kastell/dashboards query only what Kastell exports.
//!
//! The exported metrics are scraped, not listed by hand: `kastell run` replays the bundled
//! examples and its `/metrics` is read over HTTP; the metrics that exist only in cluster
//! stages (the ingest transports' per-sensor metrics, the operator's) are registered
//! through their own constructors, given one series each, and read from their text
//! exposition. Every panel's PromQL is parsed with promql-parser and each selector's
//! metric, each matcher's label and each `by`/`without`/`on`/`ignoring` label is checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kastell::pipeline::{bind, run, Mode};
use promql_parser::label::Matchers;
use promql_parser::parser::{self, Expr, LabelModifier};
use tokio::sync::oneshot;

/// Metric name to the label names its series carry.
type Catalogue = BTreeMap<String, BTreeSet<String>>;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Adds every series of a text exposition to the catalogue.
fn add_exposition(catalogue: &mut Catalogue, text: &str) {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    for sample in scrape.samples {
        let labels: BTreeSet<String> = sample.labels.keys().cloned().collect();
        // prometheus-parse folds a histogram's _bucket/_sum/_count lines into one sample;
        // PromQL names them one by one, and only _bucket carries `le`.
        let names = match sample.value {
            prometheus_parse::Value::Histogram(_) => {
                let base = sample.metric.clone();
                let mut bucket = labels.clone();
                bucket.insert("le".into());
                catalogue
                    .entry(format!("{base}_bucket"))
                    .or_default()
                    .extend(bucket);
                vec![format!("{base}_sum"), format!("{base}_count")]
            }
            _ => vec![sample.metric.clone()],
        };
        for name in names {
            catalogue.entry(name).or_default().extend(labels.clone());
        }
    }
}

/// A playbook the test adds to a copy of the bundled examples so that the respond stage's
/// refusal and dry-run series exist: every opened case starts it, it runs in dry run and
/// its rate limit of one action an hour refuses all but the first.
const PROBE_PLAYBOOK: &str = "\
apiVersion: kastell.eu/v1alpha1
kind: Playbook
metadata:
  name: dashboards-probe
  namespace: soc
spec:
  trigger:
    events: [case-opened]
  dryRun: true
  rateLimit: {maxActionsPerHour: 1}
  steps:
    - name: note
      type: log
      message: case {{ case.id }} opened
";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `/metrics` of `kastell run` serving after replaying the bundled examples, with the
/// example playbook's pending actions approved and rejected through the case API.
async fn scrape_run() -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("examples/soc"), config.path());
    std::fs::write(config.path().join("dashboards-probe.yaml"), PROBE_PLAYBOOK).unwrap();
    let setup = kastell::setup::prepare(config.path(), &[]).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let key = kastell::apikey::create_key(
        data.path(),
        "dashboards-test",
        kastell_cases::auth::Role::Lead,
        kastell_core::Tlp::Red,
    )
    .await
    .unwrap();
    let listener = bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let (replayed_tx, replayed) = oneshot::channel();
    let mode = Mode::Serve {
        listener,
        shutdown: Box::pin(async {
            let _ = stopped.await;
        }),
        on_replayed: Box::new(move |summary| {
            let _ = replayed_tx.send(summary.alerts);
        }),
    };
    let data_dir = data.path().to_owned();
    let data_dir_for_analyst = data_dir.clone();
    let pipeline = tokio::spawn(async move { run(setup, &data_dir, mode).await });
    let alerts = replayed.await.unwrap();
    assert!(alerts > 0, "the bundled examples raise alerts");
    analyst_works(&data_dir_for_analyst).await;
    decide_pending_actions(&base, &key).await;
    let text = scrape_after_decisions(&base).await;
    let _ = stop.send(());
    pipeline.await.unwrap().unwrap();
    text
}

/// An analyst acknowledges an alert and closes a case, so the mean-time gauges have
/// values (they have no series while nothing was acknowledged or resolved).
async fn analyst_works(data: &Path) {
    use kastell_core::store::{AlertFilter, AlertTriage, CaseFilter, Resolution};
    use kastell_core::CaseStore;
    let store = kastell_core::SqliteStore::open_dir(data).await.unwrap();
    let alert = store.list_alerts(&AlertFilter::default()).await.unwrap()[0].clone();
    store
        .triage_alert(&alert.id, &AlertTriage::Acknowledge, "analyst-1")
        .await
        .unwrap();
    let case = store.list_cases(&CaseFilter::default()).await.unwrap()[0].clone();
    store
        .close_case(case.id, Resolution::TruePositive, "handled", "analyst-1")
        .await
        .unwrap();
}

/// Approves the first pending action of the example playbook and rejects the second, as
/// an analyst would on the page, so the approval and rejection counters move.
async fn decide_pending_actions(base: &str, key: &str) {
    let client = reqwest::Client::new();
    let page: serde_json::Value = client
        .get(format!("{base}/api/v1/actions?status=pending"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pending: Vec<i64> = page["items"]
        .as_array()
        .expect("a page of actions")
        .iter()
        .filter_map(|a| a["id"].as_i64())
        .collect();
    assert!(
        pending.len() >= 2,
        "the example playbook leaves actions pending: {page}"
    );
    let decisions = [
        (
            pending[0],
            "approve",
            serde_json::json!({"comment": "dashboards test"}),
        ),
        (
            pending[1],
            "reject",
            serde_json::json!({"reason": "dashboards test"}),
        ),
    ];
    for (id, decision, body) in decisions {
        let answer = client
            .post(format!("{base}/api/v1/actions/{id}/{decision}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{decision} {id}: {}",
            answer.status()
        );
    }
}

/// `/metrics` once the respond stage has counted the approval and the rejection; the
/// stage learns of them from the bus, after the API answered.
async fn scrape_after_decisions(base: &str) -> String {
    let decided = |text: &str| {
        [
            "kastell_respond_approvals_total 1",
            "kastell_respond_rejections_total 1",
        ]
        .iter()
        .all(|line| text.lines().any(|l| l == *line))
    };
    let mut text = String::new();
    for _ in 0..300 {
        let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        text = response.text().await.unwrap();
        if decided(&text) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the respond stage never counted the approval and the rejection:\n{text}");
}

/// The cluster-only metrics, registered by their own code and given one series each so
/// their label names show in the exposition.
fn cluster_only_expositions() -> Vec<String> {
    let registry = prometheus::Registry::new();
    let ingest = kastell_ingest::transport::IngestMetrics::register_in(&registry).unwrap();
    let sensor = ingest.sensor("probe");
    // Reading a reason's count creates its series, as a reject would.
    assert_eq!(sensor.rejects("probe"), 0);
    let ingest_text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();

    let operator = kastell_operator::controller::metrics::Metrics::new().unwrap();
    operator.reconciled("probe", 0.0);
    operator.failed("probe", "probe");
    vec![ingest_text, operator.render()]
}

/// Every metric and label a query uses, with the label's metric where it is tied to one
/// selector (matchers) and without it for grouping labels.
#[derive(Default, Debug)]
struct Uses {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<(Vec<String>, Vec<String>)>,
}

fn metrics_under(expr: &Expr) -> Vec<String> {
    let mut uses = Uses::default();
    walk(expr, &mut uses);
    uses.selectors.into_iter().map(|(m, _)| m).collect()
}

fn matcher_labels(matchers: &Matchers) -> Vec<String> {
    matchers
        .matchers
        .iter()
        .chain(matchers.or_matchers.iter().flatten())
        .map(|m| m.name.clone())
        .filter(|n| n != "__name__")
        .collect()
}

fn modifier_labels(modifier: &Option<LabelModifier>) -> Vec<String> {
    match modifier {
        Some(LabelModifier::Include(l)) | Some(LabelModifier::Exclude(l)) => l.labels.clone(),
        None => Vec::new(),
    }
}

fn walk(expr: &Expr, uses: &mut Uses) {
    match expr {
        Expr::VectorSelector(vs) => {
            let name = vs.name.clone().expect("every selector names its metric");
            uses.selectors.push((name, matcher_labels(&vs.matchers)));
        }
        Expr::MatrixSelector(ms) => walk(&Expr::VectorSelector(ms.vs.clone()), uses),
        Expr::Aggregate(agg) => {
            let labels = modifier_labels(&agg.modifier);
            if !labels.is_empty() {
                uses.grouping.push((metrics_under(&agg.expr), labels));
            }
            walk(&agg.expr, uses);
            if let Some(param) = &agg.param {
                walk(param, uses);
            }
        }
        Expr::Binary(bin) => {
            if let Some(modifier) = &bin.modifier {
                let mut labels = modifier_labels(&modifier.matching);
                if let Some(extra) = modifier.card.labels() {
                    labels.extend(extra.labels.iter().cloned());
                }
                if !labels.is_empty() {
                    let mut metrics = metrics_under(&bin.lhs);
                    metrics.extend(metrics_under(&bin.rhs));
                    uses.grouping.push((metrics, labels));
                }
            }
            walk(&bin.lhs, uses);
            walk(&bin.rhs, uses);
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(s) => walk(&s.expr, uses),
        Expr::Call(call) => call.args.args.iter().for_each(|a| walk(a, uses)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Grafana's global variables, replaced by values of the same type so the query parses.
fn expand_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// Every problem with one query; empty when all it uses is exported.
fn check_query(expr: &str, catalogue: &Catalogue) -> Vec<String> {
    let parsed = match parser::parse(&expand_grafana_variables(expr)) {
        Ok(parsed) => parsed,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut uses = Uses::default();
    walk(&parsed, &mut uses);
    let mut problems = Vec::new();
    for (metric, labels) in &uses.selectors {
        let Some(exported) = catalogue.get(metric) else {
            problems.push(format!("metric {metric} is not exported"));
            continue;
        };
        for label in labels.iter().filter(|l| !exported.contains(*l)) {
            problems.push(format!("{metric} has no label {label}"));
        }
    }
    // A grouping label must exist on at least one of the metrics below it: `by (le)` over
    // a histogram's buckets, `by (feed)` over a ratio whose other side is unlabelled.
    for (metrics, labels) in &uses.grouping {
        for label in labels {
            let known = metrics
                .iter()
                .any(|m| catalogue.get(m).is_some_and(|l| l.contains(label)));
            if !known {
                problems.push(format!("grouping label {label} is on none of {metrics:?}"));
            }
        }
    }
    problems
}

/// (dashboard file, panel title, expression) of every query of every dashboard.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = repo_root().join("charts/kastell/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(dashboard["uid"].is_string(), "{name} has no uid");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name} has no panels");
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            for target in targets {
                let expr = target["expr"].as_str().expect("a PromQL expr");
                queries.push((name.clone(), title.clone(), expr.to_owned()));
            }
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_uses_only_exported_metrics_and_labels() {
    let mut catalogue = Catalogue::new();
    add_exposition(&mut catalogue, &scrape_run().await);
    for text in cluster_only_expositions() {
        add_exposition(&mut catalogue, &text);
    }
    // The replay of the bundled examples fills the SOC and intel series, its playbooks and
    // the probe's the response series.
    for metric in [
        "kastell_cases_alerts_total",
        "kastell_enrich_indicators",
        "kastell_respond_actions_total",
        "kastell_respond_playbook_runs_total",
        "kastell_respond_rate_limited_total",
    ] {
        assert!(catalogue.contains_key(metric), "{metric} not scraped");
    }

    let queries = dashboard_queries();
    let files: BTreeSet<&str> = queries.iter().map(|(f, _, _)| f.as_str()).collect();
    for expected in [
        "soc-overview.json",
        "ingest-health.json",
        "threat-intel.json",
        "response.json",
    ] {
        assert!(files.contains(expected), "{expected} is missing");
    }
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|(file, panel, expr)| {
            check_query(expr, &catalogue)
                .into_iter()
                .map(move |p| format!("{file} / {panel}: {p}\n    {expr}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_catches_unknown_metrics_labels_and_bad_syntax() {
    let mut catalogue = Catalogue::new();
    add_exposition(
        &mut catalogue,
        "# TYPE a_total counter\na_total{sensor=\"s\"} 1\n\
         # TYPE h histogram\nh_bucket{sensor=\"s\",le=\"1\"} 1\nh_bucket{sensor=\"s\",le=\"+Inf\"} 1\n\
         h_sum{sensor=\"s\"} 1\nh_count{sensor=\"s\"} 1\n",
    );
    let ok = |e: &str| check_query(e, &catalogue);
    assert!(ok("sum by (sensor) (rate(a_total[$__rate_interval]))").is_empty());
    assert!(ok("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))").is_empty());
    assert_eq!(ok("b_total"), ["metric b_total is not exported"]);
    assert_eq!(ok("a_total{feed=\"x\"}"), ["a_total has no label feed"]);
    assert_eq!(
        ok("sum by (rule) (a_total)"),
        ["grouping label rule is on none of [\"a_total\"]"]
    );
    assert_eq!(ok("h_sum{le=\"1\"}"), ["h_sum has no label le"]);
    assert!(ok("sum(a_total")
        .first()
        .unwrap()
        .starts_with("does not parse"));
}

/// The chart's dashboard files, by file name.
fn chart_dashboards() -> BTreeMap<String, String> {
    let dir = repo_root().join("charts/kastell/dashboards");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_plain_manifests_copy_every_chart_dashboard_unchanged() {
    let dir = repo_root().join("manifests/dashboards");
    let copies: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let chart = chart_dashboards();
    assert_eq!(
        copies.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "manifests/dashboards holds other files than charts/kastell/dashboards"
    );
    for (name, text) in &chart {
        assert!(
            copies[name] == *text,
            "manifests/dashboards/{name} differs from charts/kastell/dashboards/{name}: \
             cp charts/kastell/dashboards/*.json manifests/dashboards/"
        );
    }
}

/// `kustomize build manifests/dashboards`, or why it cannot run.
fn kustomize_build() -> Result<String, String> {
    let kustomize = std::env::var_os("KASTELL_KUSTOMIZE")
        .ok_or("KASTELL_KUSTOMIZE is unset (run tests/tools/ensure-kustomize)")?;
    let output = std::process::Command::new(kustomize)
        .arg("build")
        .arg(repo_root().join("manifests/dashboards"))
        .output()
        .map_err(|e| format!("running kustomize: {e}"))?;
    assert!(
        output.status.success(),
        "kustomize build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn the_dashboards_kustomization_renders_one_valid_config_map_per_dashboard() {
    let rendered = match kustomize_build() {
        Ok(rendered) => rendered,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let objects: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let chart = chart_dashboards();
    assert_eq!(objects.len(), chart.len(), "{rendered}");
    for (name, text) in &chart {
        let wanted = format!("kastell-dashboard-{}", name.trim_end_matches(".json"));
        let object = objects
            .iter()
            .find(|o| o["metadata"]["name"].as_str() == Some(wanted.as_str()))
            .unwrap_or_else(|| panic!("no ConfigMap {wanted} in:\n{rendered}"));
        assert_eq!(object["kind"], "ConfigMap");
        assert_eq!(object["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(
            object["metadata"]["annotations"]["grafana_folder"],
            "Kastell"
        );
        assert!(
            object["data"][name.as_str()].as_str() == Some(text.as_str()),
            "{wanted} does not carry {name} unchanged"
        );
    }

    let Some(validator) = std::env::var_os("KASTELL_KUBERNETES_VALIDATE") else {
        println!("SKIPPED: kubernetes-validate part: KASTELL_KUBERNETES_VALIDATE is unset");
        return;
    };
    let file = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    let output = std::process::Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.35"])
        .arg(file.path())
        .output()
        .expect("running kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.matches(" passed for resource ").count(),
        chart.len(),
        "{stdout}"
    );
}
