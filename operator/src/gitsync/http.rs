//! The transport libgit2 fetches `https://` (and loopback `http://`) remotes over: git's
//! smart HTTP protocol (fetch only) on reqwest and rustls, so that a git remote is reached
//! over TLS 1.3 like every other connection Kastell makes. libgit2's own HTTPS transport
//! uses OpenSSL and accepts TLS 1.2; the operator builds git2 without it, and registers
//! this one in its place.
//!
//! libgit2 asks a registered transport for a stream per request and reads and writes it
//! synchronously, on the thread that called `fetch`. A fetch states its TLS roots and
//! credentials with [`with_session`] around the libgit2 call; the transport picks them up
//! from that thread, since libgit2 hands the transport factory nothing but the remote.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use reqwest::header::{self, HeaderValue};
use reqwest::{redirect, StatusCode};

/// How long connecting may take, and the longest silence while reading an answer. No limit
/// on the whole request: a large repository's first fetch streams for as long as it needs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the transport could not be set up for a fetch.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("registering the git HTTPS transport with libgit2: {0}")]
    Register(String),
    #[error("ca.crt of spec.git.credentialsSecret: {0}")]
    Certificate(String),
    #[error("building the git HTTPS client: {0}")]
    Client(String),
}

/// What one fetch's requests carry: the TLS roots and the HTTPS credentials.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// PEM certificates of the CAs the server's certificate must chain to; the system's
    /// CA certificates when `None`.
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A fetch's client, credentials and the runtime its requests run on.
struct Session {
    client: reqwest::Client,
    authorization: Option<HeaderValue>,
    runtime: Runtime,
}

/// libgit2 reads synchronously; the requests are async. On the operator's blocking
/// threads the operator's runtime drives them; a caller outside any runtime gets one of
/// its own for the fetch.
enum Runtime {
    Shared(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Runtime {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match self {
            Runtime::Shared(handle) => handle.block_on(future),
            Runtime::Own(runtime) => runtime.block_on(future),
        }
    }
}

thread_local! {
    static SESSION: RefCell<Option<Arc<Session>>> = const { RefCell::new(None) };
}

/// Registers the transport for `https` and `http`, once per process.
///
/// libgit2 keeps registered transports in a global list that it reads without a lock
/// whenever it opens a remote, so registering must happen before any fetch starts: the
/// operator does it when the git sync starts, and [`with_session`] does it before a fetch
/// as well, for callers that fetch without the sync.
///
/// # Errors
///
/// [`HttpError::Register`] when libgit2 refuses (the same error on every later call).
pub fn register() -> Result<(), HttpError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for scheme in ["https", "http"] {
                // SAFETY: the OnceLock runs this once per process, before any fetch of the
                // operator's opens a remote (see the function's documentation).
                unsafe { git2::transport::register(scheme, factory) }
                    .map_err(|e| format!("{scheme}: {}", e.message()))?;
            }
            Ok(())
        })
        .clone()
        .map_err(HttpError::Register)
}

/// Runs `fetch` (a libgit2 fetch on this thread) with the TLS roots and credentials of
/// `options` applied to the remote's HTTP requests.
///
/// # Errors
///
/// When the transport cannot be registered, `ca.crt` holds no certificate, or the client
/// cannot be built.
pub fn with_session<T>(options: &HttpOptions, fetch: impl FnOnce() -> T) -> Result<T, HttpError> {
    register()?;
    let session = Arc::new(session(options)?);
    SESSION.with(|current| *current.borrow_mut() = Some(session));
    // Cleared even when the fetch panics, so a later fetch on this pooled thread cannot
    // inherit another platform's credentials.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SESSION.with(|current| current.borrow_mut().take());
        }
    }
    let _clear = Clear;
    Ok(fetch())
}

fn session(options: &HttpOptions) -> Result<Session, HttpError> {
    let tls = crate::casemirror::client::tls13_config(options.ca_pem.as_deref())
        .map_err(HttpError::Certificate)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // A redirect would take the fetch to a host the residency check never saw, with
        // the credentials.
        .redirect(redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        // Some forges serve the smart protocol only to user agents that start with `git/`,
        // as libgit2's and git's own do.
        .user_agent(concat!(
            "git/2.0 (kastell-operator/",
            env!("CARGO_PKG_VERSION"),
            ")"
        ))
        .build()
        .map_err(|e| HttpError::Client(e.to_string()))?;
    let authorization = match &options.password {
        // Sent with the first request rather than after a 401, as git does once it knows
        // the credentials: the connection is TLS 1.3 to the configured host only.
        Some(password) => {
            let user = options.username.as_deref().unwrap_or("git");
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                HttpError::Client("the credentials are not valid header text".into())
            })?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(handle) => Runtime::Shared(handle),
        Err(_) => Runtime::Own(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| HttpError::Client(e.to_string()))?,
        ),
    };
    Ok(Session {
        client,
        authorization,
        runtime,
    })
}

fn factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    let session = SESSION
        .with(|current| current.borrow().clone())
        .ok_or_else(|| {
            git2::Error::from_str(
                "the git HTTPS transport was used outside a Kastell fetch (no TLS settings)",
            )
        })?;
    // Stateless RPC: every request is a fresh HTTP exchange, as smart HTTP is.
    Transport::smart(remote, true, Subtransport { session })
}

struct Subtransport {
    session: Arc<Session>,
}

impl SmartSubtransport for Subtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        check_scheme(url).map_err(|reason| git2::Error::from_str(&reason))?;
        let base = url.trim_end_matches('/');
        let (method, url, content_type) = match action {
            Service::UploadPackLs => (
                reqwest::Method::GET,
                format!("{base}/info/refs?service=git-upload-pack"),
                "application/x-git-upload-pack-advertisement",
            ),
            Service::UploadPack => (
                reqwest::Method::POST,
                format!("{base}/git-upload-pack"),
                "application/x-git-upload-pack-result",
            ),
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str(
                    "the git HTTPS transport only fetches; pushing is not supported",
                ))
            }
        };
        Ok(Box::new(Exchange {
            session: self.session.clone(),
            method,
            shown: redacted(&url),
            url,
            content_type,
            request: Vec::new(),
            response: None,
            chunk: Bytes::new(),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// `url` without the password (or token) a user may have written into it, for messages
/// that end up on the platform's status and in Events.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL (an scp-like SSH address): nothing to take out.
        Err(_) => url.to_owned(),
    }
}

/// `https://`, or `http://` to a loopback address: the repository and the credentials
/// would otherwise cross the network in clear.
fn check_scheme(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if crate::casemirror::client::is_loopback(&parsed) => Ok(()),
        _ => Err(format!(
            "{url}: plain http:// is only allowed to a loopback address; use https:// \
             (TLS 1.3)"
        )),
    }
}

/// One smart-HTTP request and its answer, as the stream libgit2 writes the request to and
/// reads the answer from. The request is sent at the first read.
struct Exchange {
    session: Arc<Session>,
    method: reqwest::Method,
    url: String,
    /// `url` as messages show it, without a password.
    shown: String,
    /// The Content-Type a smart server answers with; anything else is a dumb server or a
    /// login page.
    content_type: &'static str,
    request: Vec<u8>,
    response: Option<reqwest::Response>,
    chunk: Bytes,
}

impl Exchange {
    fn send(&mut self) -> io::Result<reqwest::Response> {
        let session = self.session.clone();
        let mut request = session
            .client
            .request(self.method.clone(), &self.url)
            .header(header::ACCEPT, self.content_type)
            .header(header::PRAGMA, "no-cache");
        if self.method == reqwest::Method::POST {
            request = request
                .header(
                    header::CONTENT_TYPE,
                    "application/x-git-upload-pack-request",
                )
                .body(std::mem::take(&mut self.request));
        }
        if let Some(authorization) = &session.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let response = session
            .runtime
            .block_on(request.send())
            .map_err(|e| io::Error::other(describe(&self.shown, &e)))?;
        let status = response.status();
        tracing::debug!(url = %self.shown, %status, "git http request");
        if !status.is_success() {
            let reason = refusal(status, &response, session.authorization.is_some());
            return Err(io::Error::other(format!("{}: {reason}", self.shown)));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(self.content_type) {
            return Err(io::Error::other(format!(
                "{}: not a git smart-HTTP answer (Content-Type {content_type:?}, expected \
                 {}); is spec.git.url the repository's URL?",
                self.shown, self.content_type
            )));
        }
        Ok(response)
    }
}

impl Read for Exchange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.send()?);
        }
        while self.chunk.is_empty() {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            match self.session.runtime.block_on(response.chunk()) {
                Ok(Some(chunk)) => self.chunk = chunk,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(describe(&self.shown, &e))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl Write for Exchange {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other(
                "libgit2 wrote to a git HTTP request after reading its answer",
            ));
        }
        self.request.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a smart-HTTP server said no, in terms of what to change.
fn refusal(status: StatusCode, response: &reqwest::Response, sent_credentials: bool) -> String {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if sent_credentials => format!(
            "HTTP {status}: the server refused the username and password of \
             spec.git.credentialsSecret"
        ),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "HTTP {status}: the server requires credentials; set username and password in \
             spec.git.credentialsSecret"
        ),
        StatusCode::NOT_FOUND => format!("HTTP {status}: no repository at this URL"),
        s if s.is_redirection() => {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            format!(
                "HTTP {status}: the server redirects to {location}; redirects are not \
                 followed (their target escapes the residency check): set spec.git.url to \
                 the repository's own URL"
            )
        }
        _ => format!("HTTP {status}"),
    }
}

/// A request error as a sentence: a TLS refusal says what to fix, anything else keeps the
/// whole chain of causes.
fn describe(url: &str, error: &reqwest::Error) -> String {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if let Some(tls) = find_rustls_error(error) {
        if let Some(reason) = tls_reason(&host, tls) {
            return format!("{url}: {reason}");
        }
    }
    format!("{url}: {}", chain(error))
}

fn tls_reason(host: &str, error: &rustls::Error) -> Option<String> {
    use rustls::{AlertDescription, CertificateError};
    Some(match error {
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
        | rustls::Error::PeerIncompatible(_) => format!(
            "the server {host} does not speak TLS 1.3 ({error}); Kastell accepts no older TLS \
             version: enable TLS 1.3 on the git server"
        ),
        rustls::Error::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "the TLS handshake with {host} failed ({error}); the server may not offer TLS \
             1.3, the only version Kastell accepts"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "the certificate of {host} is not signed by a trusted CA ({error}); put the CA \
             that signed it in ca.crt of spec.git.credentialsSecret (without it, the system's \
             CA certificates are trusted)"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("the certificate of {host} is not valid for that name ({error})")
        }
        rustls::Error::InvalidCertificate(_) => {
            format!("the certificate of {host} is refused ({error})")
        }
        _ => return None,
    })
}

/// The rustls error behind a request error. hyper wraps it in an `io::Error`, whose
/// `source()` skips the wrapped error itself, so each `io::Error` is opened by hand.
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(check_scheme("https://git.example.eu/soc.git").is_ok());
        assert!(check_scheme("http://127.0.0.1:8080/soc.git").is_ok());
        assert!(check_scheme("http://localhost/soc.git").is_ok());
        let refused = check_scheme("http://git.example.eu/soc.git").unwrap_err();
        assert!(refused.contains("TLS 1.3"), "{refused}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("https://ada:glpat-secret@git.example.eu/soc.git"),
            "https://ada:***@git.example.eu/soc.git"
        );
        assert_eq!(
            redacted("https://git.example.eu/soc.git"),
            "https://git.example.eu/soc.git"
        );
    }

    #[test]
    fn tls_refusals_say_what_to_fix() {
        let version = tls_reason(
            "git.example.eu",
            &rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
        )
        .unwrap();
        assert!(version.contains("does not speak TLS 1.3"), "{version}");
        let issuer = tls_reason(
            "git.example.eu",
            &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )
        .unwrap();
        assert!(issuer.contains("ca.crt"), "{issuer}");
        assert!(tls_reason("h", &rustls::Error::DecryptError).is_none());
    }

    #[test]
    fn a_rustls_error_is_found_inside_io_errors() {
        let wrapped = io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let outer = io::Error::new(io::ErrorKind::ConnectionAborted, wrapped);
        assert!(matches!(
            find_rustls_error(&outer),
            Some(rustls::Error::InvalidCertificate(_))
        ));
    }
}
