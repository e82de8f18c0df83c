//! HTTPS on the stages' `--listen` endpoints, with certificates made here by rcgen and
//! every connection on 127.0.0.1: TLS 1.3 is served and TLS 1.2 refused; with a client CA,
//! a client certificate the CA signed is accepted, one from another CA fails the
//! handshake, and a client without one reaches only the probe paths. The stage processes
//! themselves (`kastell cases`, `kastell correlate` on the in-process bus) serve the same
//! way, the cases stage refuses plain HTTP off loopback, and a rotated certificate is
//! served without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use kastell::tls::{ServerTls, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A leaf for `names`, for the given use; (certificate PEM, key PEM).
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// The files a stage is given: a server certificate for localhost and 127.0.0.1 signed
/// by `ca`, its key, and `ca` as the client CA.
struct ServerFiles {
    dir: tempfile::TempDir,
}

impl ServerFiles {
    fn new(ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles { dir };
        files.write_server(ca);
        std::fs::write(files.client_ca(), ca.pem()).unwrap();
        files
    }

    fn write_server(&self, ca: &Ca) {
        let (cert, key) = ca.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(self.cert(), cert).unwrap();
        std::fs::write(self.key(), key).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn client_ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn tls_files(&self, mutual: bool) -> TlsFiles {
        TlsFiles {
            cert: self.cert(),
            key: self.key(),
            client_ca: mutual.then(|| self.client_ca()),
        }
    }
}

/// A client trusting `server_ca`, speaking only `version`, with an optional client
/// certificate (certificate PEM, key PEM).
fn client(
    server_ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    identity: Option<&(String, String)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What a GET of `path` over `connector` got: `Ok(status)` or `Err(why the connection
/// failed)`. With TLS 1.3 a refused client certificate is reported by the server after
/// the client's side of the handshake completed, so a failure may show up on the read.
async fn get_status(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    Ok(status)
}

fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(|| async { "kastell_test_total 1\n" }))
}

/// Serves [`router`] over HTTPS on an ephemeral loopback port.
async fn serve(tls: Arc<ServerTls>) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(kastell::tls::serve(
        listener,
        router(),
        tls,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn tls_1_3_is_served_and_tls_1_2_refused() {
    let ca = Ca::new("kastell test ca");
    let files = ServerFiles::new(&ca);
    let tls = Arc::new(ServerTls::load(files.tls_files(false)).unwrap());
    assert!(!tls.mutual());
    let addr = serve(tls).await;

    let tls13 = client(&ca, &rustls::version::TLS13, None);
    assert_eq!(get_status(&tls13, addr, "/metrics").await, Ok(200));
    assert_eq!(get_status(&tls13, addr, "/healthz").await, Ok(200));

    let tls12 = client(&ca, &rustls::version::TLS12, None);
    let refused = get_status(&tls12, addr, "/healthz").await.unwrap_err();
    assert!(refused.starts_with("handshake"), "{refused}");
}

#[tokio::test]
async fn mutual_tls_accepts_certificates_of_the_client_ca_and_only_probes_without_one() {
    let ca = Ca::new("kastell test ca");
    let files = ServerFiles::new(&ca);
    let tls = Arc::new(ServerTls::load(files.tls_files(true)).unwrap());
    assert!(tls.mutual());
    let addr = serve(tls).await;

    let signed = ca.issue(&["correlate"], ExtendedKeyUsagePurpose::ClientAuth);
    let with_cert = client(&ca, &rustls::version::TLS13, Some(&signed));
    assert_eq!(get_status(&with_cert, addr, "/metrics").await, Ok(200));
    assert_eq!(get_status(&with_cert, addr, "/readyz").await, Ok(200));

    let anonymous = client(&ca, &rustls::version::TLS13, None);
    assert_eq!(get_status(&anonymous, addr, "/metrics").await, Ok(403));
    assert_eq!(get_status(&anonymous, addr, "/nothing-here").await, Ok(403));
    // The kubelet's probes present no certificate.
    assert_eq!(get_status(&anonymous, addr, "/healthz").await, Ok(200));
    assert_eq!(get_status(&anonymous, addr, "/readyz").await, Ok(200));

    let rogue_ca = Ca::new("another ca");
    let rogue = rogue_ca.issue(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth);
    let with_rogue = client(&ca, &rustls::version::TLS13, Some(&rogue));
    let refused = get_status(&with_rogue, addr, "/healthz").await;
    assert!(refused.is_err(), "{refused:?}");

    let tls12 = client(&ca, &rustls::version::TLS12, Some(&signed));
    assert!(get_status(&tls12, addr, "/metrics").await.is_err());
}

#[tokio::test]
async fn a_rotated_certificate_is_served_after_a_reload() {
    let first_ca = Ca::new("first ca");
    let files = ServerFiles::new(&first_ca);
    let tls = Arc::new(ServerTls::load(files.tls_files(false)).unwrap());
    let addr = serve(Arc::clone(&tls)).await;
    assert_eq!(
        get_status(
            &client(&first_ca, &rustls::version::TLS13, None),
            addr,
            "/healthz"
        )
        .await,
        Ok(200)
    );
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

    // cert-manager renews with a new key; here the issuer changes too, which tells the
    // old certificate from the new one on the wire.
    let second_ca = Ca::new("second ca");
    files.write_server(&second_ca);
    assert!(tls.reload_if_changed().unwrap());
    assert_eq!(
        get_status(
            &client(&second_ca, &rustls::version::TLS13, None),
            addr,
            "/healthz"
        )
        .await,
        Ok(200)
    );
    assert!(get_status(
        &client(&first_ca, &rustls::version::TLS13, None),
        addr,
        "/healthz"
    )
    .await
    .is_err());

    // A key that does not fit (a rotation caught half-written) keeps the served pair.
    let (_, other_key) = second_ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(files.key(), other_key).unwrap();
    assert!(tls.reload_if_changed().is_err());
    assert_eq!(
        get_status(
            &client(&second_ca, &rustls::version::TLS13, None),
            addr,
            "/healthz"
        )
        .await,
        Ok(200)
    );
}

#[test]
fn unusable_files_are_refused_with_the_path() {
    let ca = Ca::new("kastell test ca");
    let files = ServerFiles::new(&ca);
    let missing_key = TlsFiles {
        key: files.dir.path().join("missing.key"),
        ..files.tls_files(false)
    };
    let error = ServerTls::load(missing_key).unwrap_err().to_string();
    assert!(error.contains("missing.key"), "{error}");

    std::fs::write(files.cert(), "not a certificate\n").unwrap();
    let error = ServerTls::load(files.tls_files(false))
        .unwrap_err()
        .to_string();
    assert!(error.contains("tls.crt holds no certificate"), "{error}");
}

/// A stage process on the in-process bus; killed when dropped.
struct StageProcess {
    child: Child,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_stage(stage: &str, listen: &str, tls: &[(&str, &Path)]) -> StageProcess {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stage.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kastell"));
    command
        .args([
            "--log", "info", stage, "--bus", "memory", "--listen", listen,
        ])
        .arg("--config")
        .arg(repo_root().join("examples/soc"))
        .arg("--data")
        .arg(data.path())
        .env_remove("KASTELL_TLS_CERT")
        .env_remove("KASTELL_TLS_KEY")
        .env_remove("KASTELL_TLS_CLIENT_CA")
        .env_remove("KASTELL_STORE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (flag, path) in tls {
        command.arg(flag).arg(path);
    }
    StageProcess {
        child: command.spawn().unwrap(),
        log,
        _data: data,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `path` until the stage answers it; the stage's log when it never does.
async fn wait_for_status(
    stage: &mut StageProcess,
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> u16 {
    for _ in 0..1500 {
        if let Ok(status) = get_status(connector, addr, path).await {
            return status;
        }
        if let Some(exit) = stage.child.try_wait().unwrap() {
            panic!(
                "the stage exited ({exit}): {}",
                std::fs::read_to_string(&stage.log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the stage never answered {path}: {}",
        std::fs::read_to_string(&stage.log).unwrap_or_default()
    );
}

#[tokio::test]
async fn the_cases_stage_serves_its_api_over_mutual_tls() {
    let ca = Ca::new("kastell test ca");
    let files = ServerFiles::new(&ca);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stage = start_stage(
        "cases",
        &addr.to_string(),
        &[
            ("--tls-cert", &files.cert()),
            ("--tls-key", &files.key()),
            ("--tls-client-ca", &files.client_ca()),
        ],
    );
    let anonymous = client(&ca, &rustls::version::TLS13, None);
    assert_eq!(
        wait_for_status(&mut stage, &anonymous, addr, "/readyz").await,
        200
    );
    assert_eq!(get_status(&anonymous, addr, "/api/v1/cases").await, Ok(403));

    let signed = ca.issue(&["analyst-proxy"], ExtendedKeyUsagePurpose::ClientAuth);
    let with_cert = client(&ca, &rustls::version::TLS13, Some(&signed));
    // Past the TLS layer the API's own authentication applies: no API key, 401.
    assert_eq!(get_status(&with_cert, addr, "/api/v1/cases").await, Ok(401));
    assert_eq!(
        get_status(&with_cert, addr, "/api/openapi.json").await,
        Ok(200)
    );

    let tls12 = client(&ca, &rustls::version::TLS12, Some(&signed));
    assert!(get_status(&tls12, addr, "/readyz").await.is_err());
}

#[tokio::test]
async fn the_correlate_stage_serves_its_health_endpoint_over_tls() {
    let ca = Ca::new("kastell test ca");
    let files = ServerFiles::new(&ca);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut stage = start_stage(
        "correlate",
        &addr.to_string(),
        &[("--tls-cert", &files.cert()), ("--tls-key", &files.key())],
    );
    let tls13 = client(&ca, &rustls::version::TLS13, None);
    assert_eq!(
        wait_for_status(&mut stage, &tls13, addr, "/healthz").await,
        200
    );
    assert_eq!(get_status(&tls13, addr, "/metrics").await, Ok(200));
}

#[test]
fn the_cases_stage_refuses_plain_http_off_loopback() {
    // Refused before anything is bound, so no socket opens on 0.0.0.0.
    let mut stage = start_stage("cases", "0.0.0.0:8080", &[]);
    let status = stage.child.wait().unwrap();
    let log = std::fs::read_to_string(&stage.log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("refusing to serve plain HTTP on 0.0.0.0:8080"),
        "{log}"
    );
}

#[test]
fn a_certificate_without_its_key_is_refused_by_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args([
            "cases",
            "--bus",
            "memory",
            "--tls-cert",
            "/nonexistent/tls.crt",
        ])
        .env_remove("KASTELL_TLS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
