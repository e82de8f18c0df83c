//! Fetching feeds over HTTP: one reqwest client speaking TLS 1.3 only (rustls, ring),
//! every URL held against the platform's residency policy before it is requested,
//! conditional requests (ETag / If-Modified-Since) so an unchanged feed costs a 304.
//!
//! Plain `http://` is accepted only for loopback hosts, as everywhere in Kastell (tests
//! and standalone mode serve feeds on 127.0.0.1).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderValue, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{Client, Method, StatusCode};
use url::Url;

/// Checks an outbound URL against the residency policy: `Err` holds the reason the URL
/// is refused. The operator's `EndpointPolicy::check` is the usual one.
pub type EndpointCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} refused by the residency policy: {reason}")]
    Refused { url: String, reason: String },
    #[error("{0} is not an https URL (plain http only on loopback)")]
    Insecure(String),
    #[error("{url}: unsupported URL scheme {scheme}: use https, http (loopback only) or a path")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("{0} is not a URL")]
    NotAUrl(String),
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("TLS 1.3 configuration")]
    Tls(#[source] rustls::Error),
    #[error("requesting {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
}

/// What a previous fetch of the same URL returned, for a conditional request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The answer to a (conditional) request.
#[derive(Debug)]
pub enum Fetched {
    /// 304: what the validators describe is still current.
    NotModified,
    Body {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

/// The client every feed fetch goes through.
#[derive(Clone)]
pub struct Http {
    client: Client,
    check: Option<EndpointCheck>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("policy", &self.check.is_some())
            .finish()
    }
}

impl Http {
    /// A client trusting the system's CA certificates, with `check` (when given)
    /// deciding which hosts may be reached.
    ///
    /// # Errors
    ///
    /// When the TLS configuration or the client cannot be built.
    pub fn new(check: Option<EndpointCheck>, timeout: Duration) -> Result<Self, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(FetchError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = Client::builder()
            .use_preconfigured_tls(tls)
            // A redirect could lead to a host the residency policy was not asked about.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("kastell-enrich/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Http { client, check })
    }

    /// Refuses a URL the policy does not allow, or plain HTTP off loopback.
    ///
    /// # Errors
    ///
    /// [`FetchError::Refused`], [`FetchError::Insecure`] or [`FetchError::NotAUrl`].
    pub fn allowed(&self, url: &str) -> Result<Url, FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::NotAUrl(url.to_owned()))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).to_canonical().is_loopback(),
            Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(FetchError::Insecure(url.to_owned())),
            scheme => {
                return Err(FetchError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                })
            }
        }
        if let Some(check) = &self.check {
            check(url).map_err(|reason| FetchError::Refused {
                url: url.to_owned(),
                reason,
            })?;
        }
        Ok(parsed)
    }

    /// GET, conditional when validators are given.
    ///
    /// # Errors
    ///
    /// A refused URL, a transport error or a status other than 2xx / 304.
    pub async fn get(
        &self,
        url: &str,
        previous: Option<&Validators>,
        headers: HeaderMap,
    ) -> Result<Fetched, FetchError> {
        let mut headers = headers;
        if let Some(previous) = previous {
            if let Some(etag) = previous
                .etag
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(IF_NONE_MATCH, etag);
            }
            if let Some(date) = previous
                .last_modified
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(IF_MODIFIED_SINCE, date);
            }
        }
        self.send(Method::GET, url, headers, None).await
    }

    /// POST a JSON body and read the answer.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn post_json(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, FetchError> {
        match self.send(Method::POST, url, headers, Some(body)).await? {
            Fetched::Body { bytes, .. } => Ok(bytes),
            Fetched::NotModified => Ok(Vec::new()),
        }
    }

    /// GET, and the answer's headers with its body (TAXII puts paging state in them).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); a 304 is an error here ([`FetchError::Status`]), as no
    /// validators are sent.
    pub async fn get_with_headers(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<(Vec<u8>, HeaderMap), FetchError> {
        let (fetched, answer_headers) = self.send_full(Method::GET, url, headers, None).await?;
        match fetched {
            Fetched::Body { bytes, .. } => Ok((bytes, answer_headers)),
            Fetched::NotModified => Err(FetchError::Status {
                url: url.to_owned(),
                status: StatusCode::NOT_MODIFIED,
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<&serde_json::Value>,
    ) -> Result<Fetched, FetchError> {
        self.send_full(method, url, headers, body)
            .await
            .map(|(fetched, _)| fetched)
    }

    async fn send_full(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<&serde_json::Value>,
    ) -> Result<(Fetched, HeaderMap), FetchError> {
        let parsed = self.allowed(url)?;
        let request_error = |source| FetchError::Request {
            url: url.to_owned(),
            source,
        };
        let mut request = self.client.request(method, parsed).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok((Fetched::NotModified, response.headers().clone()));
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status,
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let answer_headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(request_error)?.to_vec();
        Ok((Fetched::Body { bytes, validators }, answer_headers))
    }
}
