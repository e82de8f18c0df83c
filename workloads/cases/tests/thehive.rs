//! The TheHive-compatible endpoints in process, without Python: TheHive's error shape
//! for every failure, the idempotent alert create, merge, closing through a status, the
//! TLP ceiling, and the Query API's filters over real alerts of the IcedID capture.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kastell_cases::auth::Role;
use kastell_cases::{router, ApiState, CaseSettings, Grouper, Metrics};
use kastell_core::{CaseStore, InProcessBus, Tlp};
use serde_json::{json, Value};
use support::{api_key, eve_alert, line, sqlite_store, TR0LLOPE};
use tower::ServiceExt;

struct Api {
    router: Router,
    store: Arc<dyn CaseStore>,
    lead: String,
    analyst: String,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let (dir, store) = sqlite_store().await;
    // Two pipeline alerts: tr0llope lines 16 (IcedID M4) and 29 (OpenSSL demo CA).
    let grouper = Grouper::new(Arc::clone(&store), CaseSettings::default().grouping_window);
    for alert in [
        eve_alert(TR0LLOPE, 16, 2030053),
        eve_alert(TR0LLOPE, 29, 2011540),
    ] {
        grouper.file(&alert).await.unwrap();
    }
    let bus = Arc::new(InProcessBus::new(16));
    let state = ApiState::new(Arc::clone(&store), bus, Metrics::new().unwrap());
    Api {
        router: router(state),
        lead: api_key(&store, "lead-1", Role::Lead, Tlp::Red).await,
        analyst: api_key(&store, "analyst-1", Role::Analyst, Tlp::Amber).await,
        store,
        _dir: dir,
    }
}

async fn call(
    api: &Api,
    key: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if !key.is_empty() {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = api
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// TheHive's error shape, exactly `{"type", "message"}`; returns the message.
fn thehive_error(answer: &(StatusCode, Value), status: StatusCode, kind: &str) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    let object = answer.1.as_object().expect("an error is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["message", "type"], "{}", answer.1);
    assert_eq!(object["type"], kind);
    object["message"].as_str().unwrap().to_owned()
}

/// The TheHive alert an integration would send for tr0llope line 17.
fn cookie_alert() -> Value {
    let eve: Value = serde_json::from_str(&line(TR0LLOPE, 17)).unwrap();
    json!({
        "type": "suricata",
        "source": "tr0llope",
        "sourceRef": eve["flow_id"].to_string(),
        "title": eve["alert"]["signature"],
        "description": "IcedID cookie request",
        "severity": 3,
        "date": 1_667_227_648_168_i64,
        "observables": [{"dataType": "ip", "data": eve["dest_ip"], "ioc": true}],
    })
}

#[tokio::test]
async fn alert_create_is_idempotent_and_errors_have_thehive_shape() {
    let api = api().await;
    let first = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/alert",
        Some(cookie_alert()),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let again = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/alert",
        Some(cookie_alert()),
    )
    .await;
    assert_eq!(again.0, StatusCode::OK);
    assert_eq!(again.1["_id"], first.1["_id"]);
    assert_eq!(again.1["observableCount"], 1);
    let stored = api.store.list_alerts(&Default::default()).await.unwrap();
    assert_eq!(stored.len(), 3, "two pipeline alerts and one TheHive alert");

    let mut bad = cookie_alert();
    bad["severity"] = json!(5);
    let answer = call(&api, &api.analyst, Method::POST, "/api/v1/alert", Some(bad)).await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest").contains("severity")
    );
    let mut bad = cookie_alert();
    bad["observables"] = json!([{"dataType": "file", "data": {"name": "x"}}]);
    let answer = call(&api, &api.analyst, Method::POST, "/api/v1/alert", Some(bad)).await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest")
            .contains("attachments")
    );

    let answer = call(&api, "", Method::GET, "/api/v1/case/~1", None).await;
    thehive_error(&answer, StatusCode::UNAUTHORIZED, "AuthenticationError");
    let answer = call(&api, &api.analyst, Method::GET, "/api/v1/case/~x", None).await;
    thehive_error(&answer, StatusCode::NOT_FOUND, "NotFoundError");
    let answer = call(
        &api,
        &api.analyst,
        Method::PATCH,
        "/api/v1/case/1",
        Some(json!({"tlp": 1})),
    )
    .await;
    thehive_error(&answer, StatusCode::FORBIDDEN, "AuthorizationError");
    let answer = call(
        &api,
        &api.lead,
        Method::PATCH,
        "/api/v1/case/1",
        Some(json!({"status": "TruePositive"})),
    )
    .await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest").contains("summary")
    );
    let answer = call(
        &api,
        &api.lead,
        Method::PATCH,
        "/api/v1/case/1",
        Some(json!({"status": "Resolved"})),
    )
    .await;
    thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest");
}

#[tokio::test]
async fn merge_close_and_the_tlp_ceiling() {
    let api = api().await;
    let alert = call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/alert",
        Some(cookie_alert()),
    )
    .await
    .1;
    let id = alert["_id"].as_str().unwrap();
    // Merge into the case the pipeline opened for the M4 request of the same host.
    let uri = format!("/api/v1/alert/{id}/merge/~1");
    let (status, case) = call(&api, &api.lead, Method::POST, &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{case}");
    assert_eq!(case["_id"], "~1");
    let (_, read) = call(
        &api,
        &api.lead,
        Method::GET,
        &format!("/api/v1/alert/{id}"),
        None,
    )
    .await;
    assert_eq!(read["status"], "Imported");
    assert_eq!(read["caseId"], "~1");

    let close = json!({"status": "Duplicated", "summary": "Same infection as case 2"});
    let (status, _) = call(
        &api,
        &api.lead,
        Method::PATCH,
        "/api/v1/case/~1",
        Some(close),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, case) = call(&api, &api.lead, Method::GET, "/api/v1/case/~1", None).await;
    assert_eq!(case["status"], "Duplicated");
    assert_eq!(case["stage"], "Closed");
    assert_eq!(case["summary"], "Same infection as case 2");
    assert!(case["endDate"].as_i64().unwrap() >= case["_createdAt"].as_i64().unwrap());

    // RED: gone for the AMBER analyst, on every TheHive path and in queries.
    let red = json!({"tlp": 4});
    let (status, _) = call(&api, &api.lead, Method::PATCH, "/api/v1/case/~1", Some(red)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let answer = call(&api, &api.analyst, Method::GET, "/api/v1/case/~1", None).await;
    thehive_error(&answer, StatusCode::NOT_FOUND, "NotFoundError");
    let answer = call(
        &api,
        &api.analyst,
        Method::GET,
        &format!("/api/v1/alert/{id}"),
        None,
    )
    .await;
    thehive_error(&answer, StatusCode::NOT_FOUND, "NotFoundError");
    let count = json!({"query": [{"_name": "listCase"}, {"_name": "count"}]});
    let (_, seen) = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/query",
        Some(count.clone()),
    )
    .await;
    let (_, all) = call(&api, &api.lead, Method::POST, "/api/v1/query", Some(count)).await;
    assert_eq!((seen, all), (json!(1), json!(2)));
}

#[tokio::test]
async fn the_query_api_filters_sorts_and_pages_alerts() {
    let api = api().await;
    call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/alert",
        Some(cookie_alert()),
    )
    .await;
    let query = json!({"query": [
        {"_name": "listAlert"},
        {"_name": "filter", "_and": [
            {"_gte": {"_field": "severity", "_value": 3}},
            {"_eq": {"_field": "stage", "_value": "New"}}]},
        {"_name": "sort", "_fields": [{"date": "desc"}]},
        {"_name": "page", "from": 0, "to": 10}
    ], "excludeFields": ["description"]});
    let (status, alerts) = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/query?name=alerts",
        Some(query),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{alerts}");
    let titles: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    // The M4 request and the cookie request are high (3); the demo CA alert is low.
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles.contains(&"ET MALWARE Win32/IcedID Request Cookie"));
    assert!(alerts
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a.get("description").is_none()));
    let dates: Vec<i64> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["date"].as_i64().unwrap())
        .collect();
    assert!(dates[0] >= dates[1]);

    let by_type = json!({"query": [
        {"_name": "listAlert"},
        {"_name": "filter", "_eq": {"_field": "type", "_value": "kastell"}},
        {"_name": "count"}]});
    let (_, count) = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/query",
        Some(by_type),
    )
    .await;
    assert_eq!(
        count,
        json!(2),
        "the pipeline's alerts show as type kastell"
    );

    let unsupported = json!({"query": [{"_name": "listUser"}]});
    let answer = call(
        &api,
        &api.analyst,
        Method::POST,
        "/api/v1/query",
        Some(unsupported),
    )
    .await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest").contains("listUser")
    );
}

/// Copies the store's first case until there are `total` cases, straight in SQL: the
/// scan bound is about row counts, and 10,000 audited API calls would only slow the test.
async fn fill_cases(dir: &std::path::Path, total: i64) {
    use sqlx::Connection;
    let path = dir.join("data").join(kastell_core::store::SQLITE_FILE);
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in [
        "CREATE TEMP TABLE copy AS SELECT * FROM cases ORDER BY id LIMIT 1".to_owned(),
        "UPDATE copy SET id = NULL".to_owned(),
        format!(
            "WITH RECURSIVE n(i) AS (SELECT (SELECT COUNT(*) FROM cases) UNION ALL \
             SELECT i + 1 FROM n WHERE i < {total} - 1) \
             INSERT INTO cases SELECT copy.* FROM copy, n"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut db)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_query_api_pages_in_the_store_and_bounds_what_it_reads() {
    let api = api().await;
    let list = |steps: Vec<Value>| {
        let mut query = vec![json!({"_name": "listCase"})];
        query.extend(steps);
        json!({ "query": query })
    };
    let (_, all) = call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/query",
        Some(list(vec![])),
    )
    .await;
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 2);
    let page = list(vec![json!({"_name": "page", "from": 1, "to": 2})]);
    let (status, second) = call(&api, &api.lead, Method::POST, "/api/v1/query", Some(page)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        second,
        json!([all[1].clone()]),
        "the store's page is the page in memory"
    );

    let huge = list(vec![json!({"_name": "page", "from": 0, "to": 5000})]);
    let answer = call(&api, &api.lead, Method::POST, "/api/v1/query", Some(huge)).await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest")
            .contains("at most 1000")
    );

    fill_cases(api._dir.path(), 10_002).await;
    let filtered = list(vec![
        json!({"_name": "filter", "_eq": {"_field": "status", "_value": "New"}}),
        json!({"_name": "count"}),
    ]);
    let answer = call(
        &api,
        &api.lead,
        Method::POST,
        "/api/v1/query",
        Some(filtered),
    )
    .await;
    assert!(
        thehive_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "BadRequest")
            .contains("more than 10000 cases")
    );
    let paged = list(vec![
        json!({"_name": "page", "from": 10_000, "to": 10_010}),
        json!({"_name": "count"}),
    ]);
    let (status, count) = call(&api, &api.lead, Method::POST, "/api/v1/query", Some(paged)).await;
    assert_eq!((status, count), (StatusCode::OK, json!(2)));
}
