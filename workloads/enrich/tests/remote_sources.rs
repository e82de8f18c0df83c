//! MISP REST, TAXII 2.1 and plain HTTP feeds fetched from servers on 127.0.0.1 that
//! these tests start, serving real fixtures (tests/fixtures, see the SOURCE notes): the
//! paging of both protocols (and a MISP that ignores paging), the restSearch filters and
//! key header, conditional requests, the atomic swap, a failing fetch keeping the last
//! good set (and its gauge), the residency policy refusing a host, the API key read from
//! a mounted Secret, and sightings sent back to MISP.

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
use kastell_enrich::metrics::IntelMetrics;
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
    /// The query of every objects request, in order.
    queries: Arc<Mutex<Vec<std::collections::HashMap<String, String>>>>,
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
    taxii.queries.lock().unwrap().push(query.clone());
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
    let dated_page: Vec<&(String, Value)> = dated.iter().skip(start).take(limit).collect();
    let page: Vec<Value> = dated_page.iter().map(|(_, o)| o.clone()).collect();
    let end = start + page.len();
    let mut envelope = json!({"more": end < dated.len(), "objects": page});
    if end < dated.len() {
        envelope["next"] = json!(end.to_string());
    }
    // TAXII 2.1 §3.4.3: the date_added of the first and last object of the page (the
    // objects themselves carry none in this fixture).
    let mut response = taxii_json(envelope);
    if let (Some(first), Some(last)) = (dated_page.first(), dated_page.last()) {
        let headers = response.headers_mut();
        headers.insert("x-taxii-date-added-first", first.0.parse().unwrap());
        headers.insert("x-taxii-date-added-last", last.0.parse().unwrap());
    }
    response
}

async fn taxii_server() -> (String, Arc<AtomicBool>) {
    let (url, accept_ok, _) = taxii_server_recording().await;
    (url, accept_ok)
}

type Queries = Arc<Mutex<Vec<std::collections::HashMap<String, String>>>>;

async fn taxii_server_recording() -> (String, Arc<AtomicBool>, Queries) {
    let accept_ok = Arc::new(AtomicBool::new(true));
    let base = Arc::new(Mutex::new(String::new()));
    let queries = Queries::default();
    let state = Taxii {
        data: Arc::new(fixture("taxii/default_data.json")),
        base: Arc::clone(&base),
        accept_ok: Arc::clone(&accept_ok),
        queries: Arc::clone(&queries),
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
    (url, accept_ok, queries)
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
    // The fixture's objects carry no date_added: the page's X-TAXII-Date-Added-Last
    // (the latest manifest date of the collection) is where the next fetch starts.
    assert_eq!(
        progress.added_last,
        Some("2017-12-31T13:49:53.935000Z".to_owned())
    );
}

#[tokio::test]
async fn taxii_refresh_asks_for_what_was_added_after_the_last_header() {
    let (base, _, queries) = taxii_server_recording().await;
    let spec: IntelFeedSpec = serde_json::from_value(json!({
        "type": "taxii", "url": format!("{base}/taxii2/"), "collection": COLLECTION,
        "refreshInterval": "10ms",
    }))
    .unwrap();
    let def = FeedDef::new("medallion", spec, ".");
    let mut cache = kastell_enrich::feed::FeedCache::default();
    let first = kastell_enrich::feed::load_cached(&def, &http(), &mut cache)
        .await
        .unwrap();
    // As the direct fetch above: 2 indicators from 8 objects on one page of 1,000.
    assert_eq!(first.store.len(), 2);
    assert_eq!(
        cache.taxii.added_after(),
        Some("2017-12-31T13:49:53.935000Z")
    );
    let second = kastell_enrich::feed::load_cached(&def, &http(), &mut cache)
        .await
        .unwrap();
    let asked: Vec<Option<String>> = queries
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.get("added_after").cloned())
        .collect();
    assert_eq!(
        asked,
        vec![None, Some("2017-12-31T13:49:53.935000Z".to_owned())]
    );
    // Nothing new was added: the second load holds the collection from the cache.
    assert_eq!(second.store.len(), 2);
    assert!(second
        .store
        .contains(ObservableKind::Url, "http://x4z9arb.cn/4712"));
    assert_eq!(cache.taxii.objects().len(), 8);
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
    /// Serve a second version of the list, one value longer.
    grown: Arc<AtomicBool>,
}

async fn list_file(State(server): State<ListServer>, headers: HeaderMap) -> Response {
    server.requests.fetch_add(1, Ordering::SeqCst);
    if server.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if server.grown.load(Ordering::SeqCst) {
        if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v2\"") {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        return (
            [("etag", "\"v2\"")],
            "8.8.8[.]8 8.8.4.4\nhxxp://evil[.]example/a\nevil[.]example\n",
        )
            .into_response();
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
    FeedDef::new("list", spec, ".")
}

#[tokio::test]
async fn refresh_uses_conditional_requests_and_keeps_the_last_good_set() {
    let server = ListServer {
        requests: Arc::new(AtomicUsize::new(0)),
        failing: Arc::new(AtomicBool::new(false)),
        grown: Arc::new(AtomicBool::new(false)),
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

#[tokio::test]
async fn the_indicator_gauge_follows_every_refresh_and_keeps_the_last_good_count() {
    let server = ListServer {
        requests: Arc::new(AtomicUsize::new(0)),
        failing: Arc::new(AtomicBool::new(false)),
        grown: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/list.txt", get(list_file))
        .with_state(server.clone());
    let url = format!("http://{}/list.txt", serve(app).await);
    let registry = prometheus::Registry::new();
    let metrics = IntelMetrics::register_in(&registry).unwrap();
    let mut refresher = Refresher::new(vec![feed_def(FeedKind::PlainList, &url, "10ms")], http())
        .with_metrics(metrics.clone());

    refresher.refresh_due().await;
    assert_eq!(metrics.indicators("list"), 3);

    server.grown.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refresher.refresh_due().await, 1);
    assert_eq!(metrics.indicators("list"), 4, "set again after the refresh");

    server.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(refresher.refresh_due().await, 0);
    assert!(refresher.feeds()[0].status.last_error.is_some());
    assert_eq!(
        metrics.indicators("list"),
        4,
        "a failed refresh keeps the last good count"
    );
}

// ---- the API key from a mounted Secret ----

fn misp_api_def(url: &str, key: Value, secrets: &Path) -> FeedDef {
    let mut spec = json!({"type": "misp-api", "url": url});
    for (field, value) in key.as_object().unwrap() {
        spec[field] = value.clone();
    }
    let mut def = FeedDef::new("circl", serde_json::from_value(spec).unwrap(), secrets);
    def.secrets_dir = secrets.to_owned();
    def
}

#[tokio::test]
async fn misp_api_key_comes_from_the_mounted_secret_or_a_file() {
    let (url, _) = misp_server(false).await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("misp-credentials")).unwrap();
    // A mounted key file often ends in a newline; the header carries the key alone.
    std::fs::write(
        secrets.path().join("misp-credentials/authkey"),
        format!("{KEY}\n"),
    )
    .unwrap();
    let from_secret = misp_api_def(
        &url,
        json!({"apiKeySecret": {"name": "misp-credentials", "key": "authkey"}}),
        secrets.path(),
    );
    let loaded = kastell_enrich::feed::load(&from_secret, &http())
        .await
        .unwrap();
    assert!(!loaded.store.is_empty());

    let from_file = misp_api_def(
        &url,
        json!({"apiKeyFile": "misp-credentials/authkey"}),
        secrets.path(),
    );
    let by_file = kastell_enrich::feed::load(&from_file, &http())
        .await
        .unwrap();
    assert_eq!(by_file.store.len(), loaded.store.len());
}

#[tokio::test]
async fn a_missing_or_odd_api_key_is_a_clear_error() {
    let (url, bodies) = misp_server(false).await;
    let secrets = tempfile::tempdir().unwrap();
    let error_of = |key: Value| {
        let def = misp_api_def(&url, key, secrets.path());
        async move {
            kastell_core::error_chain(&kastell_enrich::feed::load(&def, &http()).await.unwrap_err())
        }
    };
    let missing = error_of(json!({"apiKeySecret": {"name": "misp", "key": "authkey"}})).await;
    let path = secrets.path().join("misp/authkey");
    assert!(
        missing.starts_with(&format!(
            "spec.apiKeySecret misp/authkey: no key file at {} (the Secret misp must be \
             mounted as a volume at {}/misp)",
            path.display(),
            secrets.path().display()
        )),
        "{missing}"
    );
    let none = error_of(json!({})).await;
    assert_eq!(
        none,
        "feed type MispApi needs an API key: set spec.apiKeySecret or spec.apiKeyFile"
    );
    let escaping = error_of(json!({"apiKeySecret": {"name": "..", "key": "passwd"}})).await;
    assert!(
        escaping.contains("is not a Secret name and key"),
        "{escaping}"
    );
    std::fs::create_dir(secrets.path().join("blank")).unwrap();
    std::fs::write(secrets.path().join("blank/authkey"), "\n").unwrap();
    let empty = error_of(json!({"apiKeySecret": {"name": "blank", "key": "authkey"}})).await;
    assert!(empty.contains("is empty"), "{empty}");
    assert!(
        bodies.lock().unwrap().is_empty(),
        "no request without a key"
    );
}

// ---- sightings back to MISP ----

/// The `Authorization` header and body of each request.
type Recorded = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone, Default)]
struct SightingLog {
    requests: Recorded,
}

async fn sightings_add(
    State(log): State<SightingLog>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    log.requests.lock().unwrap().push((key, body));
    // MISP answers an accepted sighting with its message.
    Json(json!({"message": "Sighting added"})).into_response()
}

#[tokio::test]
async fn matches_are_sent_back_to_misp_as_batched_sightings() {
    let (misp_url, _) = misp_server(false).await;
    let log = SightingLog::default();
    let app = Router::new()
        .route("/sightings/add", post(sightings_add))
        .with_state(log.clone());
    let sightings_url = format!("http://{}", serve(app).await);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("key"), KEY).unwrap();

    // The indicators come from the MISP REST server; the sightings go to another local
    // server standing for the same instance, which records them.
    let mut def = misp_api_def(
        &misp_url,
        json!({"apiKeyFile": "key", "sightings": {"batchSize": 2, "maxRequestsPerMinute": 600}}),
        secrets.path(),
    );
    let loaded = kastell_enrich::feed::load(&def, &http()).await.unwrap();
    def.spec.url = Some(sightings_url);
    let target = kastell_enrich::feed::sighting_target(&def)
        .unwrap()
        .expect("sightings asked");

    let values: Vec<kastell_enrich::Indicator> = loaded.store.indicators().take(5).collect();
    let (sightings, task) = kastell_enrich::sightings::start(vec![target], http(), 64);
    for indicator in values.iter().chain(&values) {
        let hit = kastell_enrich::Hit {
            observable: kastell_core::Observable {
                kind: indicator.kind,
                value: indicator.value.clone(),
                field: "source.ip".into(),
            },
            indicator: indicator.clone(),
        };
        sightings.offer(&hit);
    }
    drop(sightings);
    let report = task.await.unwrap();

    let expected: std::collections::BTreeSet<String> = values
        .iter()
        .map(|i| {
            if i.attribute_type.contains('|') {
                i.value.clone()
            } else {
                i.attribute_value.clone()
            }
        })
        .collect();
    let requests = log.requests.lock().unwrap().clone();
    let mut sent = std::collections::BTreeSet::new();
    for (key, body) in &requests {
        assert_eq!(key.as_deref(), Some(KEY));
        assert_eq!(body["source"], json!("kastell"));
        assert_eq!(body["type"], json!("0"));
        let batch = body["values"].as_array().unwrap();
        assert!(!batch.is_empty() && batch.len() <= 2, "{body}");
        for value in batch {
            sent.insert(value.as_str().unwrap().to_owned());
        }
    }
    assert_eq!(sent, expected);
    assert_eq!(report.offered, 10);
    assert_eq!(report.requests, requests.len() as u64);
    let values_sent: usize = requests
        .iter()
        .map(|(_, body)| body["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(report.sent, values_sent as u64);
    assert_eq!((report.dropped, report.failed_requests), (0, 0));
}

#[tokio::test]
async fn offering_a_sighting_never_waits_for_misp() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("key"), KEY).unwrap();
    // Nothing listens on port 9 here; the sender never gets to run before the offers
    // are made, as this test's runtime has one thread and the offers do not yield.
    let def = misp_api_def(
        "http://127.0.0.1:9",
        json!({"apiKeyFile": "key", "sightings": {}}),
        secrets.path(),
    );
    let target = kastell_enrich::feed::sighting_target(&def)
        .unwrap()
        .unwrap();
    assert_eq!(target.settings.batch_size, 500);
    let (sightings, task) = kastell_enrich::sightings::start(vec![target], http(), 4);
    let context = Arc::new(kastell_enrich::IndicatorContext {
        feed: "circl".into(),
        ..Default::default()
    });
    for n in 0..100u8 {
        let value = format!("192.0.2.{n}");
        let indicator =
            kastell_enrich::Indicator::new(ObservableKind::Ip, &value, Arc::clone(&context));
        sightings.offer(&kastell_enrich::Hit {
            observable: kastell_core::Observable {
                kind: ObservableKind::Ip,
                value,
                field: "source.ip".into(),
            },
            indicator,
        });
    }
    let report = sightings.stats();
    assert_eq!((report.offered, report.dropped), (100, 96));
    task.abort();
}

#[test]
fn sightings_are_only_for_misp_api_feeds() {
    let spec: IntelFeedSpec = serde_json::from_value(json!({
        "type": "taxii", "url": "https://taxii.example.eu/taxii2/", "sightings": {},
    }))
    .unwrap();
    let error = kastell_enrich::feed::sighting_target(&FeedDef::new("t", spec, "."))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "spec.sightings is for misp-api feeds (a MISP instance); this feed is Taxii"
    );
}
