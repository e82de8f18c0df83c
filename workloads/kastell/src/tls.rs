//! HTTPS for the stages' `--listen` endpoints: TLS 1.3 only, through rustls, with the
//! certificate chain and key read from PEM files and, when a client CA is given, client
//! certificates verified against it (mutual TLS). The files are re-read when they change,
//! so a certificate rotated by cert-manager is served without a restart.
//!
//! With a client CA, a client that presents no certificate still completes the handshake
//! but is answered 403 on every path except `/healthz` and `/readyz`: the kubelet's HTTPS
//! probes cannot present one, and a second, plain-HTTP port for them would break the
//! rule that plain HTTP is served only on loopback. A client that presents a certificate
//! the CA did not sign fails the handshake. docs/cluster.md describes the flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Router;
use kastell_cases::api::guard::Guarded;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its handshake by then is dropped, so half-open
/// connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The paths served to a client without a certificate when mutual TLS is on: the
/// kubelet's probes.
pub const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// The TLS flags of the stage commands; each can also come from its environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM, leaf first) to serve the endpoint over HTTPS (TLS 1.3 only).
    #[arg(long, env = "KASTELL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "KASTELL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates: turns on mutual TLS, every
    /// path except /healthz and /readyz then needs a client certificate signed by them.
    #[arg(long, env = "KASTELL_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve with, when TLS is configured.
    pub fn files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// Where the serving certificate, its key and the client CA are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the PEM in {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the client CA {path} holds a certificate that is not a usable trust anchor")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client-certificate verifier from {path}")]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("building the TLS 1.3 server configuration (does the key match the certificate?)")]
    Config(#[source] rustls::Error),
}

/// A TLS 1.3 server configuration that follows its files: [`ServerTls::reload_if_changed`]
/// swaps in a new configuration when their contents change, and each new connection
/// takes the configuration current at its handshake.
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    fingerprint: std::sync::Mutex<[u8; 32]>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and builds the configuration.
    ///
    /// # Errors
    ///
    /// When a file cannot be read or parsed, holds no certificate, or the key does not fit
    /// the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let contents = read_all(&files)?;
        let config = build(&files, &contents)?;
        Ok(ServerTls {
            fingerprint: std::sync::Mutex::new(fingerprint(&contents)),
            current: ArcSwap::from_pointee(config),
            files,
        })
    }

    /// Whether client certificates are verified.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The files served from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files; when their contents changed, builds and swaps in the new
    /// configuration. Returns whether it did. A configuration that cannot be built keeps
    /// the old one in service (cert-manager writes the files one by one, so a check can
    /// fall between a new certificate and its key) and is tried again next time.
    ///
    /// # Errors
    ///
    /// When the files changed but cannot be read or do not make a configuration.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = read_all(&self.files)?;
        let now = fingerprint(&contents);
        let mut known = self
            .fingerprint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *known == now {
            return Ok(false);
        }
        let config = build(&self.files, &contents)?;
        self.current.store(Arc::new(config));
        *known = now;
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`, logging each reload and each
    /// failed one.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        cert = %tls.files.cert.display(),
                        mutual = tls.mutual(),
                        "tls certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        cert = %tls.files.cert.display(),
                        reason = %kastell_core::error_chain(&e),
                        "tls files changed but could not be loaded; serving the previous ones"
                    ),
                }
            }
        })
    }
}

/// The three files' contents: certificate, key, client CA (empty without one).
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
}

fn read_all(files: &TlsFiles) -> Result<Contents, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok(Contents {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
        client_ca: match &files.client_ca {
            Some(path) => read(path)?,
            None => Vec::new(),
        },
    })
}

fn fingerprint(contents: &Contents) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [&contents.cert, &contents.key, &contents.client_ca] {
        // The length first, so moving bytes from one file to the next changes the hash.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, contents: &Contents) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&files.cert, &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|source| TlsError::Pem {
        path: files.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, &contents.client_ca)? {
                roots.add(cert).map_err(|source| TlsError::ClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
            // Anonymous clients finish the handshake so the probes can reach /healthz
            // and /readyz; `require_client_cert` refuses them everything else. A
            // certificate that is presented is still verified in the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    // axum serves HTTP/1.1 only (its http2 feature is off).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The peer of a connection, as the handlers see it through `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client presented a certificate that the client CA verified.
    pub client_verified: bool,
}

impl Connected<IncomingStream<'_, Guarded<TlsListener>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Guarded<TlsListener>>) -> Self {
        *stream.remote_addr()
    }
}

/// A listener that hands axum connections whose TLS handshake succeeded. Handshakes run
/// in tasks of their own, so a client that stalls in its handshake delays nobody else.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `tls`.
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read.
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(listener, tls, sender));
        Ok(TlsListener {
            local,
            accepted,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closes the socket: axum drops the listener when it stops accepting.
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    sender: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        // A flood of connections that never finish their handshake waits in the kernel's
        // backlog instead of taking a task and a file handle each.
        let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
            return;
        };
        let (stream, addr) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // As axum does for its own listener: errors such as too many open files
                // pass, so wait a little instead of spinning.
                tracing::warn!(reason = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sender.is_closed() {
            return;
        }
        let acceptor = TlsAcceptor::from(tls.config());
        let sender = sender.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, reason = %e, "tls handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(peer = %addr, "tls handshake timed out");
                        return;
                    }
                };
            let client_verified = stream.get_ref().1.peer_certificates().is_some();
            let peer = Peer {
                addr,
                client_verified,
            };
            drop(permit);
            let _ = sender.send((stream, peer)).await;
        });
    }
}

/// Handshakes in progress at once on an HTTPS endpoint.
const MAX_PENDING_HANDSHAKES: usize = 256;

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this receiver is gone, so this is not
            // reached; waiting forever is what a listener with no more clients does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            client_verified: false,
        })
    }
}

/// Refuses a client without a verified certificate everything but the probe paths.
async fn require_client_cert(
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if peer.client_verified || PROBE_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    tracing::info!(peer = %peer.addr, path = request.uri().path(), "request without a client certificate refused");
    (
        StatusCode::FORBIDDEN,
        "a client certificate signed by the configured client CA is required\n",
    )
        .into_response()
}

/// Serves `router` over HTTPS on `listener` until `shutdown` completes, then lets the
/// requests in flight finish; connections are capped and closed when idle
/// ([`kastell_cases::api::guard`]).
///
/// # Errors
///
/// When the listener's address cannot be read or the server fails.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    tls: Arc<ServerTls>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let router = if tls.mutual() {
        router.layer(axum::middleware::from_fn(require_client_cert))
    } else {
        router
    };
    let listener = Guarded::new(TlsListener::new(listener, tls)?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves `router` on `listener`: over HTTPS with `tls`, else over plain HTTP, which is
/// refused off loopback.
///
/// # Errors
///
/// Plain HTTP off loopback, or the server failing.
pub async fn serve_either<F>(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    shutdown: F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    match tls {
        Some(tls) => {
            tracing::info!(%addr, mutual = tls.mutual(), "https endpoint listening");
            serve(listener, router, tls, shutdown).await?;
        }
        None => {
            kastell_cases::check_listen_addr(addr, false)?;
            tracing::info!(%addr, "http endpoint listening (loopback)");
            axum::serve(Guarded::new(listener), router)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
    }
    Ok(())
}
