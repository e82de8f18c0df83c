//! Access control over real alerts: 401 without valid credentials on every `/api/v1`
//! route the OpenAPI document lists, 403 where the role lacks the permission, TLP
//! ceilings hiding cases (and their alerts and actions) as if absent, case updates
//! audited with their caller, and OIDC tokens signed by a key from a JWKS.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kastell_cases::auth::{Oidc, OidcConfig, Role};
use kastell_cases::{router, ApiState, CaseSettings, Grouper, Metrics};
use kastell_core::store::NewAction;
use kastell_core::{CaseStore, InProcessBus, Tlp};
use serde_json::{json, Value};
use support::{api_key, eve_alert, sqlite_store, TR0LLOPE};
use tower::ServiceExt;

struct Fixture {
    store: Arc<dyn CaseStore>,
    state: ApiState,
    /// The IcedID cookie case, with a pending action, and the certificate case.
    cookie_case: i64,
    cert_case: i64,
    action: i64,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let (dir, store) = sqlite_store().await;
    let grouper = Grouper::new(Arc::clone(&store), CaseSettings::default().grouping_window);
    // tr0llope line 17: the IcedID cookie request; line 29: the OpenSSL demo certificate.
    let cookie = eve_alert(TR0LLOPE, 17, 2032086);
    let cert = eve_alert(TR0LLOPE, 29, 2011540);
    grouper.file(&cookie).await.unwrap();
    grouper.file(&cert).await.unwrap();
    let case_of = |alert_id: &str| {
        let store = Arc::clone(&store);
        let alert_id = alert_id.to_owned();
        async move {
            store
                .get_alert(&alert_id)
                .await
                .unwrap()
                .unwrap()
                .case_id
                .unwrap()
        }
    };
    let cookie_case = case_of(&cookie.id).await;
    let cert_case = case_of(&cert.id).await;
    let (action, _) = store
        .create_action(&NewAction {
            case_id: cookie_case,
            alert_id: cookie.id.clone(),
            playbook: "soc/icedid-containment".into(),
            step: "block-c2".into(),
            step_type: "webhook".into(),
            approval_required: true,
            params: json!({"ip": "67.205.184.237"}),
        })
        .await
        .unwrap();
    let bus = Arc::new(InProcessBus::new(16));
    let state = ApiState::new(Arc::clone(&store), bus, Metrics::new().unwrap());
    Fixture {
        store,
        state,
        cookie_case,
        cert_case,
        action: action.id,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    www_authenticate: Option<String>,
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let www_authenticate = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        www_authenticate,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn every_api_route_answers_401_without_valid_credentials() {
    let f = fixture().await;
    let key = api_key(&f.store, "admin-1", Role::Admin, Tlp::Red).await;
    let router = router(f.state.clone());
    let doc = call(&router, Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK, "the document is public");
    let mut checked = 0;
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1") {
            continue;
        }
        let uri = path.replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let wrong_key = format!("{}0", key);
            for auth in [None, Some("Basic YTpi"), Some(wrong_key.as_str())] {
                let auth = auth.map(|a| {
                    if a.starts_with("kst_") {
                        bearer(a)
                    } else {
                        a.to_owned()
                    }
                });
                let answer = call(&router, method.clone(), &uri, auth.as_deref(), None).await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri} {auth:?}"
                );
                // The TheHive-compatible routes answer TheHive's error shape.
                let thehive = item[method.as_str().to_lowercase()]["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|t| t == "thehive"));
                if thehive {
                    assert_eq!(answer.body["type"], "AuthenticationError", "{uri}");
                } else {
                    assert_eq!(answer.body["error"], "unauthenticated", "{uri}");
                }
                assert!(answer.body["message"].as_str().unwrap().len() > 10);
                assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} routes checked");
    // Health and metrics stay open for probes and Prometheus.
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            call(&router, Method::GET, open, None, None).await.status,
            StatusCode::OK
        );
    }
    // The same key through `X-API-Key` works too.
    let request = Request::builder()
        .uri("/api/v1/cases")
        .header("x-api-key", key.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        router.oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn roles_get_what_the_matrix_gives_them() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Amber).await);
    let auditor = bearer(&api_key(&f.store, "auditor-1", Role::Auditor, Tlp::Red).await);
    let responder = bearer(&api_key(&f.store, "responder-1", Role::Responder, Tlp::Amber).await);
    let approve = format!("/api/v1/actions/{}/approve", f.action);
    for who in [&analyst, &auditor] {
        let answer = call(&router, Method::POST, &approve, Some(who), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.body["error"], "forbidden");
        assert!(answer.body["message"].as_str().unwrap().contains("respond"));
    }
    let audit = call(&router, Method::GET, "/api/v1/audit", Some(&analyst), None).await;
    assert_eq!(audit.status, StatusCode::FORBIDDEN);
    let audit = call(
        &router,
        Method::GET,
        "/api/v1/audit?limit=2",
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(audit.status, StatusCode::OK);
    assert_eq!(audit.body[0]["seq"], 1);
    assert_eq!(audit.body[0]["action"], "alert.create");
    assert_eq!(audit.body.as_array().unwrap().len(), 2);
    let case = format!("/api/v1/cases/{}", f.cert_case);
    let rename = json!({"title": "Demo certificate seen from 66.63.168.75"});
    let answer = call(
        &router,
        Method::PATCH,
        &case,
        Some(&auditor),
        Some(rename.clone()),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "an auditor changes nothing"
    );
    // Assigning and closing are a lead's.
    let assign = json!({"assignee": "analyst-1"});
    let answer = call(&router, Method::PATCH, &case, Some(&analyst), Some(assign)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = call(&router, Method::PATCH, &case, Some(&analyst), Some(rename)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body["title"],
        "Demo certificate seen from 66.63.168.75"
    );
    let approved = call(&router, Method::POST, &approve, Some(&responder), None).await;
    assert_eq!(approved.status, StatusCode::OK);
    assert_eq!(approved.body["decided_by"], "apikey:responder-1");
}

#[tokio::test]
async fn an_amber_reader_never_sees_a_red_case() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let amber_lead = bearer(&api_key(&f.store, "lead-2", Role::Lead, Tlp::Amber).await);
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Amber).await);
    let case = format!("/api/v1/cases/{}", f.cookie_case);

    let too_high = call(
        &router,
        Method::PATCH,
        &case,
        Some(&amber_lead),
        Some(json!({"tlp": "red"})),
    )
    .await;
    assert_eq!(too_high.status, StatusCode::FORBIDDEN, "{}", too_high.body);
    assert!(too_high.body["message"]
        .as_str()
        .unwrap()
        .contains("ceiling"));
    let red = call(
        &router,
        Method::PATCH,
        &case,
        Some(&lead),
        Some(json!({"tlp": "red", "pap": "red"})),
    )
    .await;
    assert_eq!(red.status, StatusCode::OK, "{}", red.body);
    assert_eq!(red.body["tlp"], "red");

    let hidden = call(&router, Method::GET, &case, Some(&analyst), None).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.body["message"],
        format!("case {} not found", f.cookie_case)
    );
    let cases = call(&router, Method::GET, "/api/v1/cases", Some(&analyst), None).await;
    let ids: Vec<i64> = cases.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![f.cert_case]);
    let alerts = call(&router, Method::GET, "/api/v1/alerts", Some(&analyst), None).await;
    let items = alerts.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["case_id"], f.cert_case);
    let of_case = format!("/api/v1/alerts?case={}", f.cookie_case);
    let none = call(&router, Method::GET, &of_case, Some(&analyst), None).await;
    assert!(none.body["items"].as_array().unwrap().is_empty());
    let action = format!("/api/v1/actions/{}", f.action);
    assert_eq!(
        call(&router, Method::GET, &action, Some(&analyst), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let actions = call(
        &router,
        Method::GET,
        "/api/v1/actions",
        Some(&analyst),
        None,
    )
    .await;
    assert!(actions.body["items"].as_array().unwrap().is_empty());
    let edit = call(
        &router,
        Method::PATCH,
        &case,
        Some(&analyst),
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(edit.status, StatusCode::NOT_FOUND);
    // The lead cleared to RED still reads it.
    assert_eq!(
        call(&router, Method::GET, &case, Some(&lead), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn case_updates_are_checked_and_audited_with_their_caller() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let case = format!("/api/v1/cases/{}", f.cert_case);
    let before = f.store.audit_entries(0, 1000).await.unwrap().len();
    for (bad, status) in [
        (
            json!({"severity": "urgent"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"owner": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"title": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"tlp": "purple"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"tags": "one"}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let answer = call(
            &router,
            Method::PATCH,
            &case,
            Some(&lead),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(answer.status, status, "{bad}: {}", answer.body);
        assert!(answer.body["message"].as_str().is_some());
    }
    let missing = call(
        &router,
        Method::PATCH,
        "/api/v1/cases/999",
        Some(&lead),
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        f.store.audit_entries(0, 1000).await.unwrap().len(),
        before,
        "nothing half-written"
    );

    let update = json!({
        "status": "in_progress", "assignee": "analyst-1", "tags": ["lab", "lab", "benign"],
        "description": "The OpenSSL demo certificate of a lab server.", "severity": "informational"
    });
    let answer = call(&router, Method::PATCH, &case, Some(&lead), Some(update)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["tags"], json!(["lab", "benign"]));
    assert_eq!(answer.body["status"], "in_progress");
    let entries = f.store.audit_entries(before as i64, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(
        (entry.actor.as_str(), entry.action.as_str()),
        ("apikey:lead-1", "case.update")
    );
    assert_eq!(entry.object_id, f.cert_case.to_string());
    assert_eq!(entry.before.as_ref().unwrap()["status"], "open");
    assert_eq!(entry.after.as_ref().unwrap()["assignee"], "analyst-1");

    // Closing takes a resolution and a summary, once.
    let close = format!("{case}/close");
    let by_patch = call(
        &router,
        Method::PATCH,
        &case,
        Some(&lead),
        Some(json!({"status": "closed"})),
    )
    .await;
    assert_eq!(by_patch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(by_patch.body["message"]
        .as_str()
        .unwrap()
        .contains("/close"));
    for bad in [
        json!({"resolution": "solved", "summary": "x"}),
        json!({"resolution": "benign"}),
        json!({"resolution": "benign", "summary": " "}),
        json!({"resolution": "benign", "summary": "x", "score": 3}),
    ] {
        let answer = call(
            &router,
            Method::POST,
            &close,
            Some(&lead),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Amber).await);
    let good = json!({"resolution": "benign", "summary": "A lab server's demo certificate."});
    let answer = call(
        &router,
        Method::POST,
        &close,
        Some(&analyst),
        Some(good.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "closing is a lead's");
    let answer = call(
        &router,
        Method::POST,
        &close,
        Some(&lead),
        Some(good.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "closed");
    assert_eq!(answer.body["resolution"], "benign");
    assert!(answer.body["closed_at"].is_string());
    let again = call(&router, Method::POST, &close, Some(&lead), Some(good)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["error"], "conflict");
    let all = f.store.audit_entries(0, 1000).await.unwrap();
    assert_eq!(
        kastell_core::audit::verify(&all),
        kastell_core::Verdict::Intact {
            entries: all.len() as i64
        }
    );
}

/// An ES256 key pair as an identity provider would hold it: the private key to sign,
/// the public one in a JWKS under `kid`.
fn signing_key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    (
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk,
    )
}

fn token(key: &EncodingKey, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn oidc_tokens_are_checked_against_the_jwks_and_carry_their_role() {
    let f = fixture().await;
    let (key, jwk) = signing_key("idp-1");
    let (other_key, _) = signing_key("idp-1");
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();
    let config = OidcConfig {
        jwks: jwks_path.to_str().unwrap().to_owned(),
        issuer: Some("https://idp.soc.example/realms/soc".into()),
        audience: Some("kastell".into()),
        role_claim: "realm_access.roles".into(),
        tlp_claim: Some("tlp".into()),
        default_tlp: Tlp::Amber,
    };
    let oidc = Oidc::load(config).await.unwrap();
    let router = router(f.state.clone().with_oidc(oidc));
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: Value| {
        let mut base = json!({
            "iss": "https://idp.soc.example/realms/soc", "aud": "kastell",
            "sub": "0b5c", "preferred_username": "carol", "exp": now + 300,
            "realm_access": {"roles": ["offline_access", "responder"]},
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    let good = bearer(&token(&key, "idp-1", claims(json!({}))));
    let approve = format!("/api/v1/actions/{}/approve", f.action);
    let answer = call(&router, Method::POST, &approve, Some(&good), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["decided_by"], "oidc:carol");

    let bad = [
        (
            "expired",
            token(&key, "idp-1", claims(json!({"exp": now - 3600}))),
        ),
        (
            "other issuer",
            token(
                &key,
                "idp-1",
                claims(json!({"iss": "https://evil.example"})),
            ),
        ),
        (
            "other audience",
            token(&key, "idp-1", claims(json!({"aud": "grafana"}))),
        ),
        (
            "other signer",
            token(&other_key, "idp-1", claims(json!({}))),
        ),
        ("unknown kid", token(&key, "idp-2", claims(json!({})))),
        (
            "no role",
            token(
                &key,
                "idp-1",
                claims(json!({"realm_access": {"roles": ["offline_access"]}})),
            ),
        ),
        (
            "HS256",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(b"the jwks is public"),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (why, token) in bad {
        let answer = call(
            &router,
            Method::GET,
            "/api/v1/cases",
            Some(&bearer(&token)),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(answer.body["error"], "unauthenticated", "{why}");
    }

    // The TLP claim sets the ceiling: a GREEN token does not see the AMBER cases.
    let green = bearer(&token(&key, "idp-1", claims(json!({"tlp": "green"}))));
    let cases = call(&router, Method::GET, "/api/v1/cases", Some(&green), None).await;
    assert_eq!(cases.status, StatusCode::OK);
    assert!(cases.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn alerts_are_acknowledged_and_ignored_with_a_reason() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Amber).await);
    let auditor = bearer(&api_key(&f.store, "auditor-1", Role::Auditor, Tlp::Red).await);
    let alerts = call(&router, Method::GET, "/api/v1/alerts", Some(&analyst), None).await;
    let ids: Vec<String> = alerts.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let ack = format!("/api/v1/alerts/{}/acknowledge", ids[0]);
    let ignore = format!("/api/v1/alerts/{}/ignore", ids[1]);
    assert_eq!(
        call(&router, Method::POST, &ack, Some(&auditor), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let answer = call(&router, Method::POST, &ack, Some(&analyst), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "acknowledged");
    assert_eq!(answer.body["triaged_by"], "apikey:analyst-1");
    let blank = call(
        &router,
        Method::POST,
        &ignore,
        Some(&analyst),
        Some(json!({"reason": ""})),
    )
    .await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reason = json!({"reason": "The lab's own certificate."});
    let answer = call(
        &router,
        Method::POST,
        &ignore,
        Some(&analyst),
        Some(reason.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "ignored");
    assert_eq!(answer.body["status_reason"], "The lab's own certificate.");
    let missing = call(
        &router,
        Method::POST,
        "/api/v1/alerts/0000/ignore",
        Some(&analyst),
        Some(reason),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let ignored = call(
        &router,
        Method::GET,
        "/api/v1/alerts?status=ignored",
        Some(&analyst),
        None,
    )
    .await;
    assert_eq!(ignored.body["items"].as_array().unwrap().len(), 1);
    let bad = call(
        &router,
        Method::GET,
        "/api/v1/alerts?status=done",
        Some(&analyst),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_its_next_request_with_the_reason() {
    use kastell_core::store::keys::KeyStore;
    let f = fixture().await;
    let router = router(f.state.clone());
    let key = bearer(&api_key(&f.store, "soc-bot", Role::Analyst, Tlp::Amber).await);
    let first = call(&router, Method::GET, "/api/v1/cases", Some(&key), None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    // `kastell apikey revoke` runs in another process, with its own handle on the store.
    let cli = kastell_core::SqliteStore::open_dir(&f._dir.path().join("data"))
        .await
        .unwrap();
    let listed = cli.list_api_keys().await.unwrap();
    assert!(listed[0].last_used_at.is_some(), "the request was recorded");
    assert!(serde_json::to_string(&listed)
        .unwrap()
        .find("argon2")
        .is_none());
    let revoked = cli.revoke_api_key("soc-bot", "cli:admin").await.unwrap();
    assert!(revoked.revoked_at.is_some());

    let refused = call(&router, Method::GET, "/api/v1/cases", Some(&key), None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["error"], "key_revoked");
    assert!(refused.body["message"]
        .as_str()
        .unwrap()
        .starts_with("the API key was revoked at "));
    let thehive = call(&router, Method::GET, "/api/v1/case/1", Some(&key), None).await;
    assert_eq!(thehive.status, StatusCode::UNAUTHORIZED);

    let last = f
        .store
        .audit_entries(0, i64::MAX)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("apikey.revoke", "cli:admin")
    );
    assert!(matches!(
        cli.revoke_api_key("soc-bot", "cli:admin").await,
        Err(kastell_core::StoreError::Conflict { .. })
    ));
    assert!(matches!(
        cli.revoke_api_key("nobody", "cli:admin").await,
        Err(kastell_core::StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn closing_checks_the_role_before_the_body() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Red).await);
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let close = format!("/api/v1/cases/{}/close", f.cookie_case);
    let bad = json!({"resolution": "no-such-resolution"});
    let refused = call(
        &router,
        Method::POST,
        &close,
        Some(&analyst),
        Some(bad.clone()),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let invalid = call(&router, Method::POST, &close, Some(&lead), Some(bad)).await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        invalid.body
    );
    let good = json!({"resolution": "true_positive", "summary": "IcedID contained"});
    let closed = call(&router, Method::POST, &close, Some(&lead), Some(good)).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
}

#[tokio::test]
async fn nul_characters_are_refused_in_every_body() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let case = format!("/api/v1/cases/{}", f.cookie_case);
    let attempts = [
        (
            Method::POST,
            "/api/v1/cases".to_owned(),
            json!({"title": "a\u{0}b"}),
        ),
        (Method::PATCH, case.clone(), json!({"title": "IcedID\u{0}"})),
        (
            Method::POST,
            format!("{case}/comments"),
            json!({"text": "\u{0}"}),
        ),
        (
            Method::POST,
            "/api/v1/case".to_owned(),
            json!({"title": "x\u{0}", "description": "d"}),
        ),
    ];
    for (method, uri, body) in attempts {
        let answer = call(&router, method.clone(), &uri, Some(&lead), Some(body)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {uri}: {}",
            answer.body
        );
        let reason = answer.body.to_string();
        assert!(reason.contains("NUL"), "{method} {uri}: {reason}");
    }
    let title = call(&router, Method::GET, &case, Some(&lead), None).await;
    assert!(!title.body["title"].as_str().unwrap().contains('\u{0}'));
    // A backslash followed by "u0000" is text, not NUL.
    let text = json!({"title": "C:\\u0000 path"});
    let kept = call(&router, Method::PATCH, &case, Some(&lead), Some(text)).await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    assert_eq!(kept.body["title"], "C:\\u0000 path");
}

#[tokio::test]
async fn a_huge_path_id_is_not_echoed_back() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let huge = "9".repeat(20_000);
    for uri in [
        format!("/api/v1/cases/{huge}"),
        format!("/api/v1/alerts/{huge}"),
        format!("/api/v1/case/{huge}"),
        format!("/api/v1/no-such-route/{huge}"),
    ] {
        let answer = call(&router, Method::GET, &uri, Some(&lead), None).await;
        assert!(answer.status.is_client_error(), "{}", answer.status);
        let body = answer.body.to_string();
        assert!(body.len() < 512, "{} bytes: {}", body.len(), &body[..200]);
    }
}

#[tokio::test]
async fn figures_count_only_what_the_caller_may_read() {
    let f = fixture().await;
    let router = router(f.state.clone());
    let lead = bearer(&api_key(&f.store, "lead-1", Role::Lead, Tlp::Red).await);
    let analyst = bearer(&api_key(&f.store, "analyst-1", Role::Analyst, Tlp::Amber).await);
    let case = format!("/api/v1/cases/{}", f.cookie_case);
    let red = call(
        &router,
        Method::PATCH,
        &case,
        Some(&lead),
        Some(json!({"tlp": "red"})),
    )
    .await;
    assert_eq!(red.status, StatusCode::OK, "{}", red.body);
    for id in [f.cookie_case, f.cert_case] {
        let close = format!("/api/v1/cases/{id}/close");
        let body = json!({"resolution": "true_positive", "summary": "done"});
        let closed = call(&router, Method::POST, &close, Some(&lead), Some(body)).await;
        assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    }
    let range = "/api/v1/figures?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let totals = |body: &Value| {
        let rows = body["by_severity"].as_array().unwrap();
        let sum = |key: &str| rows.iter().map(|r| r[key].as_i64().unwrap()).sum::<i64>();
        (sum("alerts"), sum("resolved"))
    };
    let all = call(&router, Method::GET, range, Some(&lead), None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(totals(&all.body), (2, 2));
    let amber = call(&router, Method::GET, range, Some(&analyst), None).await;
    assert_eq!(amber.status, StatusCode::OK, "{}", amber.body);
    assert_eq!(
        totals(&amber.body),
        (1, 1),
        "the RED case and its alert are not counted"
    );
}
