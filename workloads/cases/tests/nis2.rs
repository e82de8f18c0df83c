//! The NIS2 significant-incident flag through the API: read by any role that sees the
//! case, set by a lead (manage permission) and not by an analyst, hidden with a case above
//! the caller's TLP, audited with its caller.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use kastell_cases::auth::Role;
use kastell_cases::{router, ApiState, CaseSettings, Grouper, Metrics};
use kastell_core::store::CaseUpdate;
use kastell_core::{InProcessBus, Tlp};
use serde_json::{json, Value};
use support::{api_key, eve_alert, sqlite_store, TR0LLOPE};
use tower::ServiceExt;

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
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

#[tokio::test]
async fn a_lead_flags_a_case_as_a_significant_incident() {
    let (_dir, store) = sqlite_store().await;
    let grouper = Grouper::new(Arc::clone(&store), CaseSettings::default().grouping_window);
    // tr0llope line 17: the IcedID cookie request.
    let alert = eve_alert(TR0LLOPE, 17, 2032086);
    grouper.file(&alert).await.unwrap();
    let case = store
        .get_alert(&alert.id)
        .await
        .unwrap()
        .unwrap()
        .case_id
        .unwrap();
    let bus = Arc::new(InProcessBus::new(16));
    let app = router(ApiState::new(
        Arc::clone(&store),
        bus,
        Metrics::new().unwrap(),
    ));
    let lead = api_key(&store, "lead", Role::Lead, Tlp::Red).await;
    let analyst = api_key(&store, "analyst", Role::Analyst, Tlp::Red).await;
    let clear = api_key(&store, "clear", Role::Lead, Tlp::Clear).await;
    let uri = format!("/api/v1/cases/{case}/significant-incident");

    let (status, body) = call(&app, Method::GET, &uri, &analyst, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"case_id": case, "significant_incident": false})
    );

    let flag = Some(json!({"significant_incident": true}));
    let (status, body) = call(&app, Method::PUT, &uri, &analyst, flag.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&app, Method::PUT, &uri, &lead, flag.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["significant_incident"], true);
    assert!(store.significant_incident(case).await.unwrap());
    let (_, body) = call(&app, Method::GET, &uri, &analyst, None).await;
    assert_eq!(body["significant_incident"], true);

    let (status, body) = call(
        &app,
        Method::PUT,
        &uri,
        &lead,
        Some(json!({"significant": true})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let missing = "/api/v1/cases/9999/significant-incident";
    let (status, _) = call(&app, Method::PUT, missing, &lead, flag.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Above the caller's TLP the case does not exist for them.
    let amber = CaseUpdate {
        tlp: Some(Tlp::Amber),
        ..CaseUpdate::default()
    };
    store.update_case(case, &amber, "cli:test").await.unwrap();
    let (status, _) = call(&app, Method::GET, &uri, &clear, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, Method::PUT, &uri, &clear, flag).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let audit = store.audit_entries(0, 1000).await.unwrap();
    let entry = audit
        .iter()
        .find(|e| e.action == "case.significant_incident")
        .expect("the flag is audited");
    assert_eq!(entry.actor, "apikey:lead");
    assert_eq!(entry.object_id, case.to_string());
}
