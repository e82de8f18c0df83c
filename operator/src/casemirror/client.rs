//! A client of the few cases API calls the mirror needs (docs/cases-api.md): open a case,
//! read it and its observables, change it, close it. Its own small types rather than the
//! cases crate's models, so that the operator depends on the API's wire format only.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{redirect, Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// How long one call may take; the reconcile is retried after a failure.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Cases per page when searching the list: the API's largest page.
const LIST_PAGE: usize = 1000;

/// Why a call to the cases API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cases API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("CA certificates of the case store: {0}")]
    Certificate(String),
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("{method} {path}: no answer: {reason}")]
    Unreachable {
        method: Method,
        path: String,
        reason: String,
    },
    #[error("{method} {path}: {status}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {path}: unexpected answer: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },
}

impl ClientError {
    /// The API answered 404: no such case, or one above the key's TLP ceiling (the API
    /// answers both the same way).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// The API refused the request for what it is (4xx), as opposed to not answering or
    /// failing on its side: retrying will not help until something changes.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { status, .. } if status.is_client_error())
    }
}

/// A case as the API answers it, the fields the mirror reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoreCase {
    pub id: i64,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub tlp: String,
    pub pap: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `manual` for a case opened through the API (as the mirror opens them).
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub alert_count: i64,
    pub updated_at: String,
}

/// The cases API of one platform, called with one API key.
#[derive(Clone)]
pub struct CasesClient {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl std::fmt::Debug for CasesClient {
    // NB: the key stays out of every log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CasesClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl CasesClient {
    /// A client of the API at `base`, over TLS 1.3 (rustls) trusting `ca_pem` when given,
    /// else the system's CA certificates. Plain `http://` is accepted for loopback only,
    /// the one place the cases API itself serves it.
    ///
    /// # Errors
    /// A URL that is not `https://` (or loopback `http://`), unreadable CA certificates,
    /// or a client that cannot be built.
    pub fn new(base: &str, key: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let url_error = |reason: &str| ClientError::Url {
            url: base.into(),
            reason: reason.into(),
        };
        let mut url = Url::parse(base).map_err(|e| url_error(&e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(url_error(
                    "plain http only to a loopback address; the API key would cross the \
                     network in clear",
                ))
            }
            _ => return Err(url_error("not an http(s) URL")),
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(ca_pem)?)
            // A redirect could carry the API key to another host.
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(TIMEOUT)
            .user_agent(concat!("kastell-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(CasesClient {
            http,
            base: url,
            key: key.trim().into(),
        })
    }

    /// `POST /api/v1/cases`: opens a case.
    ///
    /// # Errors
    /// No answer, a refusal (the API's message), or an answer that is not a case.
    pub async fn create(&self, body: &Value) -> Result<StoreCase, ClientError> {
        self.call(Method::POST, "api/v1/cases", Some(body)).await
    }

    /// The case opened by hand (`group_key` `manual`, as the mirror opens them) that
    /// carries `tag`, the oldest when there are several; read page by page from `GET
    /// /api/v1/cases`, which has no tag filter. Cases above the key's TLP ceiling are not
    /// listed.
    ///
    /// # Errors
    /// As [`CasesClient::create`].
    pub async fn find_tagged(&self, tag: &str) -> Result<Option<StoreCase>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<StoreCase>,
        }
        let mut offset = 0usize;
        loop {
            let path = format!("api/v1/cases?limit={LIST_PAGE}&offset={offset}");
            let page: Page = self.call(Method::GET, &path, None).await?;
            let listed = page.items.len();
            let found = page
                .items
                .into_iter()
                .filter(|case| case.group_key == "manual" && case.tags.iter().any(|t| t == tag))
                .min_by_key(|case| case.id);
            if found.is_some() || listed < LIST_PAGE {
                return Ok(found);
            }
            offset += listed;
        }
    }

    /// `GET /api/v1/cases/{id}`.
    ///
    /// # Errors
    /// As [`CasesClient::create`]; a missing case is a refusal that
    /// [`ClientError::is_not_found`].
    pub async fn get(&self, id: i64) -> Result<StoreCase, ClientError> {
        self.call(Method::GET, &format!("api/v1/cases/{id}"), None)
            .await
    }

    /// `PATCH /api/v1/cases/{id}` with the changed fields.
    ///
    /// # Errors
    /// As [`CasesClient::create`].
    pub async fn update(&self, id: i64, body: &Value) -> Result<StoreCase, ClientError> {
        self.call(Method::PATCH, &format!("api/v1/cases/{id}"), Some(body))
            .await
    }

    /// `POST /api/v1/cases/{id}/close` with a resolution and summary.
    ///
    /// # Errors
    /// As [`CasesClient::create`].
    pub async fn close(&self, id: i64, body: &Value) -> Result<StoreCase, ClientError> {
        self.call(
            Method::POST,
            &format!("api/v1/cases/{id}/close"),
            Some(body),
        )
        .await
    }

    /// How many observables the case holds (`GET /api/v1/cases/{id}/observables`, which
    /// lists them all).
    ///
    /// # Errors
    /// As [`CasesClient::create`].
    pub async fn observable_count(&self, id: i64) -> Result<i64, ClientError> {
        let list: Vec<Value> = self
            .call(Method::GET, &format!("api/v1/cases/{id}/observables"), None)
            .await?;
        Ok(list.len() as i64)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let url = self.base.join(path).map_err(|e| ClientError::Url {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            method: method.clone(),
            path: format!("/{path}"),
            reason: error_chain(&e.without_url()),
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                method: method.clone(),
                path: format!("/{path}"),
                reason: error_chain(&e.without_url()),
            })?;
        if !status.is_success() {
            // The API's errors are `{"error", "message"}`; anything else is shown short.
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(ClientError::Refused {
                method,
                path: format!("/{path}"),
                status,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            method,
            path: format!("/{path}"),
            reason: e.to_string(),
        })
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    tls13_config(ca_pem).map_err(ClientError::Certificate)
}

/// A TLS 1.3-only client configuration trusting the certificates of `ca_pem` when given,
/// else the system's CA certificates; shared with the git sync's HTTPS transport.
///
/// # Errors
///
/// `ca_pem` without a readable PEM certificate.
pub(crate) fn tls13_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("no PEM certificate found".into());
            }
            for cert in certs {
                roots.add(cert).map_err(|e| e.to_string())?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(reason = %error, "unreadable system CA certificate");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(CasesClient::new("http://127.0.0.1:8080", "k", None).is_ok());
        assert!(CasesClient::new("http://localhost:8080/", "k", None).is_ok());
        let refused = CasesClient::new("http://soc-cases.soc.svc:8080", "k", None).unwrap_err();
        assert!(refused.to_string().contains("loopback"), "{refused}");
        assert!(CasesClient::new("ftp://127.0.0.1/", "k", None).is_err());
        assert!(CasesClient::new("https://soc-cases.soc.svc:8080", "k", None).is_ok());
    }

    #[test]
    fn a_ca_secret_without_a_certificate_is_refused() {
        let error = CasesClient::new("https://x.example.eu", "k", Some(b"not pem")).unwrap_err();
        assert!(matches!(error, ClientError::Certificate(_)), "{error}");
    }
}
