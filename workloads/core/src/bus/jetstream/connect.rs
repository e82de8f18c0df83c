//! Turns [`Security`] into the NATS client's connect options: TLS 1.3 with rustls and
//! credentials read from files (as mounted from Kubernetes Secrets).

use std::path::Path;
use std::sync::Arc;

use async_nats::ConnectOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::Security;
use super::JetStreamError;

/// Connect options carrying the configured TLS and credentials.
pub(super) async fn connect_options(security: &Security) -> Result<ConnectOptions, JetStreamError> {
    // No retry of the first connection: a wrong address or certificate is reported at once,
    // and Kubernetes restarts a stage that starts before NATS. Later disconnects are
    // retried by the client.
    let mut options = ConnectOptions::new().name("kastell");

    if let Some(ca_file) = &security.tls_ca_file {
        let tls = tls_config(
            ca_file,
            security.tls_client_cert_file.as_deref(),
            security.tls_client_key_file.as_deref(),
        )?;
        options = options.require_tls(true).tls_client_config(tls);
    }
    if let Some(path) = &security.credentials_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| JetStreamError::ReadFile {
                    what: "NATS credentials",
                    path: path.clone(),
                    source,
                })?;
    }
    if let Some(path) = &security.user_password_file {
        let line = first_line(path, "NATS user and password").await?;
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| JetStreamError::Malformed {
                path: path.clone(),
                expected: "user:password on the first line",
            })?;
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    if let Some(path) = &security.token_file {
        options = options.token(first_line(path, "NATS token").await?);
    }
    Ok(options)
}

/// A rustls client configuration that speaks TLS 1.3 only and trusts only `ca_file`.
fn tls_config(
    ca_file: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, JetStreamError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|source| JetStreamError::Tls(format!("{}: {source}", ca_file.display())))?;
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| JetStreamError::Tls(source.to_string()))?
        .with_root_certificates(roots);

    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certificates(cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| {
                JetStreamError::Tls(format!("{}: {source}", key_file.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| JetStreamError::Tls(source.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(JetStreamError::Tls(
            "a client certificate needs both its certificate and its key file".to_owned(),
        )),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, JetStreamError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| JetStreamError::Tls(format!("{}: {source}", path.display())))?;
    if certs.is_empty() {
        return Err(JetStreamError::Tls(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

async fn first_line(path: &Path, what: &'static str) -> Result<String, JetStreamError> {
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| JetStreamError::ReadFile {
                what,
                path: path.to_owned(),
                source,
            })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}
