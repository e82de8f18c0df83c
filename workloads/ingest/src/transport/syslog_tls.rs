//! Syslog over TLS (RFC 5425): TLS 1.3 only, through rustls, with the certificate chain
//! and key read from PEM files; after the handshake a connection is read exactly as a
//! TCP one (octet counting, which RFC 5425 mandates, or lines from senders that send
//! them anyway).
//!
//! The acceptor built here also serves the HTTPS listener. With a client CA bundle it
//! asks every client for a certificate and accepts only those that chain to one of the
//! bundle's CAs (mutual TLS, RFC 5425 section 5.1's certificate-based authentication).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::transport::connections::Connections;
use crate::transport::inlet::Inlet;
use crate::transport::syslog_framing::Framing;
use crate::transport::syslog_tcp::{accept_next, read_stream};

/// A client that has not finished its handshake by then is dropped, so idle
/// connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading the certificate chain {path}")]
    Certificates {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the certificate file {0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("reading the private key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("building the TLS 1.3 server configuration")]
    Config(#[source] rustls::Error),
    #[error("reading the client CA bundle {path}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the client CA bundle {0} holds no certificate")]
    NoClientCa(PathBuf),
    #[error("the client CA bundle {path} holds a certificate that is not a usable CA")]
    BadClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier for {path}")]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// A TLS 1.3-only acceptor for the chain in `cert_path` (leaf first) and the key in
/// `key_path`, both PEM, that asks clients for no certificate.
///
/// # Errors
///
/// When a file cannot be read, holds nothing usable, or the key does not fit.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    server_acceptor(cert_path, key_path, None)
}

/// A TLS 1.3-only acceptor as [`tls_acceptor`] builds it, that with `client_ca` (a PEM
/// bundle of one or more CA certificates) requires every client to present a certificate
/// chaining to one of them; a client without one, or with one from another CA, fails the
/// handshake.
///
/// # Errors
///
/// As [`tls_acceptor`], and when the bundle cannot be read, holds no certificate or a
/// certificate that cannot serve as a trust anchor.
pub fn server_acceptor(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsSetupError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect)
        .map_err(|source| TlsSetupError::Certificates {
            path: cert_path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsSetupError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Verifies client certificates against the CAs of the bundle at `path`, with rustls's
/// WebPKI verifier (signature, validity period, client-auth key usage); anonymous
/// clients are refused.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsSetupError> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|source| TlsSetupError::ClientCa {
            path: path.to_owned(),
            source,
        })?;
    if cas.is_empty() {
        return Err(TlsSetupError::NoClientCa(path.to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|source| TlsSetupError::BadClientCa {
            path: path.to_owned(),
            source,
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsSetupError::ClientVerifier {
            path: path.to_owned(),
            source,
        })
}

/// Accepts TLS connections until `shutdown` is cancelled, then waits for each
/// connection to finish the message it is on. Past the cap of `connections`, a new
/// connection is closed at once, before its handshake.
///
/// # Errors
///
/// When accepting a connection fails for a reason other than the peer going away.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inlet: Arc<Inlet>,
    framing: Framing,
    connections: Connections,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    let local = listener.local_addr()?;
    tracing::info!(sensor = inlet.sensor(), listen = %local, max_connections = connections.max(), "syslog tls listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept_next(&listener, inlet.sensor()) => accepted?,
            () = shutdown.cancelled() => break,
        };
        // Handshakes count too: they are where a flood of idle connections would sit.
        let Some(slot) = connections.admit(peer) else {
            continue;
        };
        let (inlet, shutdown, acceptor) = (Arc::clone(&inlet), shutdown.clone(), acceptor.clone());
        tasks.spawn(async move {
            let _slot = slot;
            // A handshake still going when the listener stops has nothing of a message.
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let handshake = tokio::select! {
                done = handshake => done,
                () = shutdown.cancelled() => return,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(sensor = inlet.sensor(), peer = %peer, reason = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(sensor = inlet.sensor(), peer = %peer, "tls handshake timed out");
                    return;
                }
            };
            let origin = format!("syslog-tls:{peer}");
            read_stream(stream, peer, &origin, &inlet, framing, &shutdown).await;
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}
