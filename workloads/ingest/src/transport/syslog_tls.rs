//! Syslog over TLS (RFC 5425): TLS 1.3 only, through rustls, with the certificate chain
//! and key read from PEM files; after the handshake a connection is read exactly as a
//! TCP one (octet counting, which RFC 5425 mandates, or lines from senders that send
//! them anyway).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::transport::inlet::Inlet;
use crate::transport::syslog_framing::Framing;
use crate::transport::syslog_tcp::{is_transient, read_stream};

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
}

/// A TLS 1.3-only acceptor for the chain in `cert_path` (leaf first) and the key in
/// `key_path`, both PEM.
///
/// # Errors
///
/// When a file cannot be read, holds nothing usable, or the key does not fit.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsSetupError> {
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
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until `shutdown` is cancelled, then waits for each
/// connection to finish the message it is on.
///
/// # Errors
///
/// When accepting a connection fails for a reason other than the peer going away.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inlet: Arc<Inlet>,
    framing: Framing,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let local = listener.local_addr()?;
    tracing::info!(sensor = inlet.sensor(), listen = %local, "syslog tls listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            },
            () = shutdown.cancelled() => break,
        };
        let (inlet, shutdown, acceptor) = (Arc::clone(&inlet), shutdown.clone(), acceptor.clone());
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
    connections.close();
    connections.wait().await;
    Ok(())
}
