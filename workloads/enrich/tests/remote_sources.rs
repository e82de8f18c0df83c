//! MISP REST, TAXII 2.1 and plain HTTP feeds fetched from servers on 127.0.0.1 that
//! these tests start, serving real fixtures (tests/fixtures, see the SOURCE notes): the
//! paging of both protocols (and a MISP that ignores paging), the restSearch filters and
//! key header, conditional requests, the atomic swap, a failing fetch keeping the last
//! good set, and the residency policy refusing a host.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kastell_core::ObservableKind;
use kastell_crds::intel::{FeedKind, IntelFeedSpec};
use kastell_enrich::feed::FeedDef;
use kastell_enrich::http::{EndpointCheck, FetchError, Http};
use kastell_enrich::misp_api::{self, RestFilters};
use kastell_enrich::refresh::Refresher;
use kastell_enrich::taxii;
use serde_json::{json, Value};

const KEY: &str = "kastell-test-key-0123456789";

fn fixture(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn http() -> Http {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Http::new(None, Duration::from_secs(10)).unwrap()
}

// ---- MISP REST ----

/// Every attribute of the fixture events, flattened as restSearch returns them with
/// `includeContext`: each carries its `Event`. The CIRCL event's numbers are turned into
/// JSON numbers, the other's stay strings, as different MISP versions write them.
fn rest_attributes() -> Vec<Value> {
    let mut out = Vec::new();
    for (file, numbers_as_ints) in [
        ("misp-rest/long_event.json", false),
        ("misp-rest/57c4445b-c548-4654-af0b-4be3950d210f.json", true),
    ] {
        let event = fixture(file)["Event"].clone();
        let mut context = json!({
            "id": event["id"], "uuid": event["uuid"], "info": event["info"], "date": event["date"],
            "threat_level_id": event["threat_level_id"], "Tag": event["Tag"],
        });
        if numbers_as_ints {
            let level: u64 = match &event["threat_level_id"] {
                Value::String(s) => s.parse().unwrap(),
                Value::Number(n) => n.as_u64().unwrap(),
                other => panic!("threat level {other}"),
            };
            context["threat_level_id"] = json!(level);
        }
        let mut attributes: Vec<Value> = event["Attribute"].as_array().cloned().unwrap_or_default();
        for object in event["Object"].as_array().into_iter().flatten() {
            attributes.extend(object["Attribute"].as_array().cloned().unwrap_or_default());
        }
        for mut attribute in attributes {
            attribute["Event"] = context.clone();
            if numbers_as_ints {
                attribute["to_ids"] = json!(if attribute["to_ids"] == json!(true) {
                    1
                } else {
                    0
                });
            }
            out.push(attribute);
        }
    }
    out
}

#[derive(Clone)]
struct Misp {
    attributes: Arc<Vec<Value>>,
    ignores_paging: bool,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn rest_search(
    State(misp): State<Misp>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Authentication failed."})),
        )
            .into_response();
    }
    misp.bodies.lock().unwrap().push(body.clone());
    let page = body["page"].as_u64().unwrap_or(1) as usize;
    let limit = body["limit"].as_u64().unwrap_or(0) as usize;
    let chosen: Vec<Value> = if misp.ignores_paging || limit == 0 {
        misp.attributes.to_vec()
    } else {
        misp.attributes
            .iter()
            .skip((page - 1) * limit)
            .take(limit)
            .cloned()
            .collect()
    };
    Json(json!({"response": {"Attribute": chosen}})).into_response()
}

async fn misp_server(ignores_paging: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let state = Misp {
        attributes: Arc::new(rest_attributes()),
        ignores_paging,
        bodies: Arc::clone(&bodies),
    };
    let app = Router::new()
        .route("/attributes/restSearch", post(rest_search))
        .with_state(state);
    (format!("http://{}", serve(app).await), bodies)
}

#[tokio::test]
async fn misp_rest_pages_through_a_huge_event_with_filters_and_the_key() {
    let (base, bodies) = misp_server(false).await;
    let filters = RestFilters {
        tags: vec!["tlp:white".into(), "!tlp:red".into()],
        to_ids: Some(true),
        published: Some(true),
        types: vec!["sha256".into(), "url".into()],
        last: Some("30d".into()),
        from: Some("2016-01-01".into()),
        enforce_warninglist: true,
    };
    let (store, report, paging) = misp_api::search(&http(), "misp", &base, KEY, &filters, 100, 50)
        .await
        .unwrap();
    // 370 + 9 attributes: pages of 100, 100, 100, 79.
    assert_eq!((paging.pages, paging.repeated), (4, 0));
    assert_eq!(report.attributes, 379);
    assert_eq!(report.events_loaded, 2);
    // long_event: 250 indicators (as from its feed file); the CIRCL event: md5, sha1 and
    // sha256 of its ransomware sample (its filename and regkey|value are unsupported).
    assert_eq!(report.indicators, 250 + 3);
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[0]["tags"], json!(["tlp:white", "!tlp:red"]));
    assert_eq!(sent[0]["type"], json!(["sha256", "url"]));
    assert_eq!(
        (sent[0]["to_ids"].clone(), sent[0]["published"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        (sent[0]["last"].clone(), sent[0]["from"].clone()),
        (json!("30d"), json!("2016-01-01"))
    );
    assert_eq!(sent[0]["enforceWarninglist"], json!(true));
    assert_eq!(
        sent.iter()
            .map(|b| b["page"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(store.len(), 253);
}

#[tokio::test]
async fn misp_rest_numbers_as_ints_keep_the_threat_level() {
    let (base, _) = misp_server(false).await;
    let (store, _, _) = misp_api::search(
        &http(),
        "misp",
        &base,
        KEY,
        &RestFilters::default(),
        1000,
        5,
    )
    .await
    .unwrap();
    let circl_event = fixture("misp-rest/57c4445b-c548-4654-af0b-4be3950d210f.json");
    let sha256 = circl_event["Event"]["Attribute"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "sha256")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = store.lookup_value(ObservableKind::Sha256, &sha256);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].context.threat_level,
        kastell_enrich::ThreatLevel::Low
    );
    assert_eq!(
        found[0].context.reference.as_deref(),
        Some("57c4445b-c548-4654-af0b-4be3950d210f")
    );
    assert!(found[0].context.tags.iter().any(|t| t == "tlp:white"));
}

#[tokio::test]
async fn misp_rest_server_that_ignores_paging_is_read_once() {
    let (base, bodies) = misp_server(true).await;
    let (_, report, paging) = misp_api::search(
        &http(),
        "misp",
        &base,
        KEY,
        &RestFilters::default(),
        100,
        50,
    )
    .await
    .unwrap();
    // Page 1 returned all 379 attributes (more than the limit, so page 2 was asked for);
    // page 2 brought nothing new, so paging stopped.
    assert_eq!((paging.pages, paging.repeated), (2, 379));
    assert_eq!(report.attributes, 379);
    assert_eq!(report.indicators, 253);
    assert_eq!(bodies.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn misp_rest_wrong_key_is_a_clear_error() {
    let (base, _) = misp_server(false).await;
    let error = misp_api::search(
        &http(),
        "misp",
        &base,
        "wrong",
        &RestFilters::default(),
        100,
        5,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("403"), "{error}");
}

// ---- TAXII 2.1 ----

#[derive(Clone)]
struct Taxii {
    data: Arc<Value>,
    base: Arc<Mutex<String>>,
    accept_ok: Arc<AtomicBool>,
}

const TAXII: &str = "application/taxii+json;version=2.1";

fn taxii_json(value: Value) -> Response {
    ([("content-type", TAXII)], Json(value)).into_response()
}

fn check_accept(taxii: &Taxii, headers: &HeaderMap) {
    if headers.get("accept").and_then(|v| v.to_str().ok()) != Some(TAXII) {
        taxii.accept_ok.store(false, Ordering::SeqCst);
    }
}

async fn discovery(State(taxii): State<Taxii>, headers: HeaderMap) -> Response {
    check_accept(&taxii, &headers);
    let mut doc = taxii.data["/discovery"].clone();
    let base = taxii.base.lock().unwrap().clone();
    // The fixture names localhost:5000; the test server lives elsewhere.
    for key in ["default"] {
        if let Some(text) = doc[key].as_str() {
            doc[key] = json!(text.replace("http://localhost:5000", &base));
        }
    }
    let roots: Vec<Value> = doc["api_roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!(r.as_str().unwrap().replace("http://localhost:5000", &base)))
        .collect();
    doc["api_roots"] = json!(roots);
    taxii_json(doc)
}

async fn api_root(
    State(taxii): State<Taxii>,
    axum::extract::Path(root): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    check_accept(&taxii, &headers);
    match taxii.data.get(&root) {
        Some(root) => taxii_json(root["information"].clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn collections(
    State(taxii): State<Taxii>,
    axum::extract::Path(root): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    check_accept(&taxii, &headers);
    let Some(root) = taxii.data.get(&root) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let listed: Vec<Value> = root["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"id": c["id"], "title": c["title"], "can_read": c["can_read"], "can_write": c["can_write"], "media_types": c["media_types"]}))
        .collect();
    taxii_json(json!({"collections": listed}))
}

/// Objects in `date_added` order (the manifest lists the date of each object, index by
/// index), filtered by `added_after`, paged by `limit` with the offset as `next`.
async fn objects(
    State(taxii): State<Taxii>,
    axum::extract::Path((root, id)): axum::extract::Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    check_accept(&taxii, &headers);
    let Some(collection) = taxii.data.get(&root).and_then(|r| {
        r["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == json!(id))
            .cloned()
    }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let objects = collection["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let manifest = collection["manifest"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut dated: Vec<(String, Value)> = objects
        .into_iter()
        .zip(manifest)
        .map(|(o, m)| (m["date_added"].as_str().unwrap().to_owned(), o))
        .filter(|(added, _)| {
            query
                .get("added_after")
                .is_none_or(|after| added.as_str() > after.as_str())
        })
        .collect();
    dated.sort_by(|a, b| a.0.cmp(&b.0));
    let start: usize = query.get("next").and_then(|n| n.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = dated
        .iter()
        .skip(start)
        .take(limit)
        .map(|(_, o)| o.clone())
        .collect();
    let end = start + page.len();
    let mut envelope = json!({"more": end < dated.len(), "objects": page});
    if end < dated.len() {
        envelope["next"] = json!(end.to_string());
    }
    taxii_json(envelope)
}

async fn taxii_server() -> (String, Arc<AtomicBool>) {
    let accept_ok = Arc::new(AtomicBool::new(true));
    let base = Arc::new(Mutex::new(String::new()));
    let state = Taxii {
        data: Arc::new(fixture("taxii/default_data.json")),
        base: Arc::clone(&base),
        accept_ok: Arc::clone(&accept_ok),
    };
    let app = Router::new()
        .route("/taxii2/", get(discovery))
        .route("/{root}/", get(api_root))
        .route("/{root}/collections/", get(collections))
        .route("/{root}/collections/{id}/objects/", get(objects))
        .with_state(state);
    let addr = serve(app).await;
    let url = format!("http://{addr}");
    *base.lock().unwrap() = url.clone();
    (url, accept_ok)
}

const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";

#[tokio::test]
async fn taxii_discovery_to_objects_with_pagination() {
    let (base, accept_ok) = taxii_server().await;
    let (store, report, progress) = taxii::fetch(
        &http(),
        "medallion",
        &format!("{base}/taxii2/"),
        None,
        Some(COLLECTION),
        None,
        3,
        100,
    )
    .await
    .unwrap();
    assert!(
        accept_ok.load(Ordering::SeqCst),
        "every request asks for the TAXII media type"
    );
    // 8 objects in pages of 3, 3, 2; four indicator objects, two of them older versions
    // of indicator--6770298f… (its newest says http://x4z9arb.cn/4712).
    assert_eq!((progress.pages, progress.objects), (3, 8));
    assert_eq!((report.indicator_objects, report.superseded), (4, 2));
    assert_eq!(report.indicators, 2);
    assert!(store.contains(ObservableKind::Url, "http://x4z9arb.cn/4712"));
    assert!(!store.contains(ObservableKind::Url, "http://z4z10farb.cn/4712"));
    assert!(store.contains(
        ObservableKind::Sha256,
        "ef537f25c895bfa782526529a9b63d97aa631564d5d789c2b765448c8635fb6c"
    ));
    assert_eq!(progress.collection, COLLECTION);
}

#[tokio::test]
async fn taxii_added_after_fetches_only_newer_objects() {
    let (base, _) = taxii_server().await;
    let (store, report, progress) = taxii::fetch(
        &http(),
        "medallion",
        &format!("{base}/trustgroup1/"),
        None,
        Some("High Value Indicator Collection"),
        Some("2016-12-01T00:00:00.000000Z"),
        100,
        100,
    )
    .await
    .unwrap();
    // Added after: the indicator's 2nd and 3rd versions, the marking and two malware.
    assert_eq!((progress.pages, progress.objects), (1, 5));
    assert_eq!((report.indicator_objects, report.indicators), (2, 1));
    assert_eq!(store.len(), 1);
    assert_eq!(
        progress.added_last,
        Some("2016-12-01T00:00:00.000000Z".to_owned())
    );
}

#[tokio::test]
async fn taxii_unknown_collection_is_an_error() {
    let (base, _) = taxii_server().await;
    let error = taxii::fetch(
        &http(),
        "m",
        &format!("{base}/taxii2/"),
        None,
        Some("nope"),
        None,
        10,
        10,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, taxii::TaxiiError::NoCollection(_)),
        "{error}"
    );
}

// ---- refresh over HTTP ----

#[derive(Clone)]
struct ListServer {
    requests: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn list_file(State(server): State<ListServer>, headers: HeaderMap) -> Response {
    server.requests.fetch_add(1, Ordering::SeqCst);
    if server.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    // MISP's own freetext feed fixture (8.8.8.8 8.8.4.4 on one line), defanged.
    (
        [("etag", "\"v1\"")],
        "8.8.8[.]8 8.8.4.4\nhxxp://evil[.]example/a\n",
    )
        .into_response()
}

fn feed_def(kind: FeedKind, url: &str, interval: &str) -> FeedDef {
    let spec: IntelFeedSpec = serde_json::from_value(json!({
        "type": kind, "url": url, "refreshInterval": interval,
    }))
    .unwrap();
    FeedDef {
        name: "list".into(),
        spec,
        base_dir: ".".into(),
    }
}

#[tokio::test]
async fn refresh_uses_conditional_requests_and_keeps_the_last_good_set() {
    let server = ListServer {
        requests: Arc::new(AtomicUsize::new(0)),
        failing: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/list.txt", get(list_file))
        .with_state(server.clone());
    let url = format!("http://{}/list.txt", serve(app).await);
    let mut refresher = Refresher::new(vec![feed_def(FeedKind::PlainList, &url, "10ms")], http());
    let current = refresher.current();
    assert!(current.load().is_empty());

    assert_eq!(refresher.refresh_due().await, 1);
    let first = current.load_full();
    assert_eq!(first.len(), 3);
    assert!(first.contains(ObservableKind::Url, "http://evil.example/a"));
    let status = &refresher.feeds()[0].status;
    assert_eq!(status.indicator_count, Some(3));
    assert!(status.last_success.is_some() && status.last_error.is_none());

    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refresher.refresh_due().await, 0, "a 304 loads nothing");
    assert!(
        Arc::ptr_eq(&first, &current.load_full()),
        "unchanged feed: same set"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    server.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refresher.refresh_due().await, 0);
    let status = &refresher.feeds()[0].status;
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("500"),
        "{status:?}"
    );
    assert_eq!(status.indicator_count, Some(3));
    assert_eq!(current.load().len(), 3, "the last good set stays");
}

#[tokio::test]
async fn residency_policy_refuses_hosts_outside_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let check: EndpointCheck = Arc::new(|url: &str| {
        if url.starts_with("https://feeds.example.eu/") {
            Ok(())
        } else {
            Err("host is outside the platform's residency policy".to_owned())
        }
    });
    let http = Http::new(Some(check), Duration::from_secs(5)).unwrap();
    assert!(matches!(
        http.allowed("https://intel.example.com/feed.csv"),
        Err(FetchError::Refused { .. })
    ));
    assert!(http.allowed("https://feeds.example.eu/x.csv").is_ok());
    assert!(matches!(
        http.allowed("http://feeds.example.eu/x.csv"),
        Err(FetchError::Insecure(_))
    ));
    let mut refresher = Refresher::new(
        vec![feed_def(
            FeedKind::Csv,
            "https://intel.example.com/feed.csv",
            "1h",
        )],
        http,
    );
    assert_eq!(refresher.refresh_due().await, 0);
    let error = refresher.feeds()[0]
        .status
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("refused by the residency policy"), "{error}");
}

// ---- MISP feed over HTTP ----

#[derive(Clone)]
struct FeedFiles {
    dir: std::path::PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    bump: Arc<AtomicBool>,
}

async fn feed_file(
    State(feed): State<FeedFiles>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    feed.requests.lock().unwrap().push(file.clone());
    let Ok(bytes) = std::fs::read(feed.dir.join(&file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if file == "manifest.json" && feed.bump.load(Ordering::SeqCst) {
        // One event edited upstream: its manifest timestamp moves on.
        let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
        manifest["88391e76-0480-5c3e-a69e-44c22b13ebd0"]["timestamp"] = json!("9999999999");
        return Json(manifest).into_response();
    }
    bytes.into_response()
}

#[tokio::test]
async fn remote_misp_feed_fetches_only_changed_events() {
    // The demo feed directory: five real TweetFeed events and the demo event.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/intel/tweetfeed");
    let feed = FeedFiles {
        dir: dir.clone(),
        requests: Arc::new(Mutex::new(Vec::new())),
        bump: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/feed/{file}", get(feed_file))
        .with_state(feed.clone());
    let url = format!("http://{}/feed/", serve(app).await);
    let (on_disk, _) = kastell_enrich::load_misp_feed_dir("tweetfeed", &dir).unwrap();
    let mut cache = kastell_enrich::misp_remote::FeedCache::default();

    let (store, report) =
        kastell_enrich::misp_remote::fetch(&http(), "tweetfeed", &url, &mut cache)
            .await
            .unwrap();
    assert_eq!(
        (report.events_listed, report.events_loaded, cache.fetched),
        (6, 6, 6)
    );
    assert_eq!(store.len(), on_disk.len());
    assert_eq!(feed.requests.lock().unwrap().len(), 7);

    let (store, _) = kastell_enrich::misp_remote::fetch(&http(), "tweetfeed", &url, &mut cache)
        .await
        .unwrap();
    assert_eq!(
        cache.fetched, 0,
        "unchanged timestamps: only the manifest is fetched"
    );
    assert_eq!(store.len(), on_disk.len());
    assert_eq!(feed.requests.lock().unwrap().len(), 8);

    feed.bump.store(true, Ordering::SeqCst);
    let (store, _) = kastell_enrich::misp_remote::fetch(&http(), "tweetfeed", &url, &mut cache)
        .await
        .unwrap();
    assert_eq!(cache.fetched, 1);
    assert_eq!(store.len(), on_disk.len());
    let requests = feed.requests.lock().unwrap().clone();
    assert_eq!(
        &requests[8..],
        ["manifest.json", "88391e76-0480-5c3e-a69e-44c22b13ebd0.json"]
    );
}
