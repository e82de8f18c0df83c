//! The git sync's HTTPS transport against a real git smart-HTTP server on 127.0.0.1: git's
//! own `git http-backend` (the CGI that ships with git) behind a TLS-terminating server
//! written here with tokio-rustls and hyper. A TLS 1.3 fetch reads the repository (the
//! example SOC's real SigmaHQ rules) with the credentials and the CA of the credentials
//! Secret; a server offering only TLS 1.2, and one whose certificate another CA signed,
//! are refused with messages that say so; and the whole sync, driven by the operator
//! against a real kube-apiserver, applies a repository served over HTTPS and reports a
//! TLS 1.2 server in `status.git.lastError`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kastell_crds::{DetectionRule, SecOpsPlatform};
use kastell_kube_harness::{setup, TestEnv};
use kastell_operator::gitsync::fetch::{fetch, Credentials, FetchError, Snapshot};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

mod support;
use support::{eventually, start_operator};

const USER: &str = "ada";
const TOKEN: &str = "glpat-test-token";

/// Whether git and its `git-http-backend` program are installed.
fn have_git_http_backend() -> bool {
    Command::new("git")
        .arg("--exec-path")
        .output()
        .is_ok_and(|out| {
            let exec_path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            out.status.success() && Path::new(&exec_path).join("git-http-backend").exists()
        })
}

/// A CA and a server certificate for 127.0.0.1 and localhost that it signed.
struct Pki {
    ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// `git http-backend` serving the repositories under `root` over TLS on 127.0.0.1, with
/// the TLS versions given, asking for Basic credentials `USER`:`TOKEN`. Records the
/// protocol version of every handshake it completes.
struct GitServer {
    url: String,
    versions: Arc<Mutex<Vec<rustls::ProtocolVersion>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    root: &Path,
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> GitServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let root = root.to_owned();
    let recorded = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, root, recorded) = (acceptor.clone(), root.clone(), recorded.clone());
            tokio::spawn(async move {
                // A refused handshake is what some tests are about: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(version) = tls.get_ref().1.protocol_version() {
                    recorded.lock().unwrap().push(version);
                }
                let service = hyper::service::service_fn(move |request| {
                    let root = root.clone();
                    async move { Ok::<_, Infallible>(cgi(&root, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    GitServer {
        url,
        versions: seen,
        task,
    }
}

/// Runs one request through `git http-backend` as its CGI specification says (RFC 3875),
/// after checking the Basic credentials the way a forge would.
async fn cgi(root: &Path, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{TOKEN}"))
    );
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return Response::builder()
            .status(401)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Full::new(Bytes::from_static(b"authentication required\n")))
            .unwrap();
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &body)
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "git http-backend: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    cgi_response(&output.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(out: &[u8]) -> Response<Full<Bytes>> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI output without a header block");
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let mut response = Response::builder().status(200);
    for line in head.lines() {
        let (name, value) = line.split_once(':').expect("a CGI header line");
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.split_whitespace().next().unwrap().parse().unwrap();
            response = response.status(code);
        } else {
            response = response.header(name, value);
        }
    }
    response
        .body(Full::new(Bytes::copy_from_slice(&out[split.0 + split.1..])))
        .unwrap()
}

/// A repository under `root/soc.git` (a work tree; http-backend serves its `.git`) holding
/// the example SOC's resources, committed with the git command line. Returns the commit
/// and how many documents it holds under `soc/`.
fn example_repository(root: &Path, namespace: &str) -> (String, usize) {
    let work = root.join("soc");
    let examples = kastell_kube_harness::repo_root().join("examples/soc");
    std::fs::create_dir_all(work.join("soc/rules")).unwrap();
    let in_namespace = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .replace("namespace: soc\n", &format!("namespace: {namespace}\n"))
    };
    let mut documents = 0;
    for entry in std::fs::read_dir(examples.join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_owned();
            std::fs::write(work.join("soc/rules").join(name), in_namespace(&path)).unwrap();
            documents += 1;
        }
    }
    let sensors = in_namespace(&examples.join("sensors.yaml"));
    documents += sensors
        .split("\n---")
        .filter(|d| d.contains("kind:"))
        .count();
    std::fs::write(work.join("soc/sensors.yaml"), sensors).unwrap();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .current_dir(&work)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["-c", "user.name=Ada", "-c", "user.email=ada@soc.example.eu"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "the example SOC"]);
    (git(&["rev-parse", "HEAD"]).trim().to_owned(), documents)
}

fn source(url: &str) -> kastell_crds::platform::GitSource {
    serde_json::from_value(json!({
        "url": format!("{url}/soc/.git"), "branch": "main", "path": "soc",
    }))
    .unwrap()
}

fn credentials(ca_pem: &str, password: Option<&str>) -> Credentials {
    let mut data = BTreeMap::new();
    data.insert("username".to_owned(), USER.as_bytes().to_vec());
    if let Some(password) = password {
        data.insert("password".to_owned(), password.as_bytes().to_vec());
    }
    data.insert("ca.crt".to_owned(), ca_pem.as_bytes().to_vec());
    Credentials::from_secret_data(&data)
}

/// The fetch, on a blocking thread as the operator runs it.
async fn fetch_over_https(
    cache: &Path,
    url: &str,
    credentials: Credentials,
) -> Result<Snapshot, FetchError> {
    let (cache, source) = (cache.to_owned(), source(url));
    tokio::task::spawn_blocking(move || fetch(&cache, &source, &credentials))
        .await
        .unwrap()
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls13_fetch_reads_the_repository_with_the_secrets_ca_and_credentials() {
    if !have_git_http_backend() {
        eprintln!(
            "SKIPPED: a_tls13_fetch_reads_the_repository_with_the_secrets_ca_and_credentials: \
             git http-backend absent"
        );
        return;
    }
    install_provider();
    let root = tempfile::tempdir().unwrap();
    let (head, documents) = example_repository(root.path(), "soc");
    let pki = pki();
    let server = serve(root.path(), &pki, &[&rustls::version::TLS13]).await;
    let cache = tempfile::tempdir().unwrap();

    let snapshot = fetch_over_https(
        cache.path(),
        &server.url,
        credentials(&pki.ca_pem, Some(TOKEN)),
    )
    .await
    .expect("the fetch over TLS 1.3");
    assert_eq!(snapshot.commit, head);
    assert_eq!(
        snapshot.documents.len(),
        documents,
        "{:?}",
        snapshot.unreadable
    );
    assert!(snapshot.documents.len() > 20);
    assert!(snapshot.unreadable.is_empty(), "{:?}", snapshot.unreadable);
    assert_eq!(snapshot.author, "Ada <ada@soc.example.eu>");
    let versions = server.versions.lock().unwrap().clone();
    assert!(!versions.is_empty());
    assert!(
        versions
            .iter()
            .all(|v| *v == rustls::ProtocolVersion::TLSv1_3),
        "{versions:?}"
    );

    // Fetched again into the same cache: nothing new, the same commit.
    let again = fetch_over_https(
        cache.path(),
        &server.url,
        credentials(&pki.ca_pem, Some(TOKEN)),
    )
    .await
    .unwrap();
    assert_eq!(again.commit, head);

    // A wrong token and no token: the server's refusal, in words.
    let refused = fetch_over_https(
        cache.path(),
        &server.url,
        credentials(&pki.ca_pem, Some("wrong")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("refused the username and password"),
        "{refused}"
    );
    let anonymous = fetch_over_https(cache.path(), &server.url, credentials(&pki.ca_pem, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(anonymous.contains("requires credentials"), "{anonymous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_offering_only_tls12_is_refused() {
    if !have_git_http_backend() {
        eprintln!("SKIPPED: a_server_offering_only_tls12_is_refused: git http-backend absent");
        return;
    }
    install_provider();
    let root = tempfile::tempdir().unwrap();
    example_repository(root.path(), "soc");
    let pki = pki();
    let server = serve(root.path(), &pki, &[&rustls::version::TLS12]).await;
    let cache = tempfile::tempdir().unwrap();
    let error = fetch_over_https(
        cache.path(),
        &server.url,
        credentials(&pki.ca_pem, Some(TOKEN)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("does not speak TLS 1.3"), "{error}");
    assert!(server.versions.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signed_by_another_ca_is_refused() {
    if !have_git_http_backend() {
        eprintln!(
            "SKIPPED: a_certificate_signed_by_another_ca_is_refused: git http-backend absent"
        );
        return;
    }
    install_provider();
    let root = tempfile::tempdir().unwrap();
    example_repository(root.path(), "soc");
    let (server_pki, other_ca) = (pki(), pki());
    let server = serve(root.path(), &server_pki, &[&rustls::version::TLS13]).await;
    let cache = tempfile::tempdir().unwrap();
    let error = fetch_over_https(
        cache.path(),
        &server.url,
        credentials(&other_ca.ca_pem, Some(TOKEN)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("not signed by a trusted CA"), "{error}");
    assert!(error.contains("ca.crt"), "{error}");

    // Without ca.crt the system's CAs are trusted, and they did not sign it either.
    let mut no_ca = credentials(&server_pki.ca_pem, Some(TOKEN));
    no_ca.ca_certificate = None;
    let error = fetch_over_https(cache.path(), &server.url, no_ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not signed by a trusted CA"), "{error}");
}

async fn git_status(env: &TestEnv, name: &str) -> kastell_crds::platform::GitSyncStatus {
    let platforms: Api<SecOpsPlatform> = env.api();
    platforms
        .get(name)
        .await
        .ok()
        .and_then(|p| p.status)
        .and_then(|s| s.git)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_syncs_a_repository_served_over_tls13_and_reports_a_tls12_server() {
    const TEST: &str =
        "the_operator_syncs_a_repository_served_over_tls13_and_reports_a_tls12_server";
    if !have_git_http_backend() {
        eprintln!("SKIPPED: {TEST}: git http-backend absent");
        return;
    }
    let Some(env) = setup(TEST).await else {
        return;
    };
    install_provider();
    let root = tempfile::tempdir().unwrap();
    let (head, documents) = example_repository(root.path(), env.namespace());
    let pki = pki();
    let modern = serve(root.path(), &pki, &[&rustls::version::TLS13]).await;
    let legacy = serve(root.path(), &pki, &[&rustls::version::TLS12]).await;

    // The TLS 1.2 server's platform in a namespace of its own: one platform per namespace.
    let Some(legacy_env) = setup(&format!("{TEST}-legacy")).await else {
        return;
    };
    for (env, name, server) in [(&env, "soc", &modern), (&legacy_env, "legacy", &legacy)] {
        let secrets: Api<Secret> = env.api();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "soc-git-credentials"},
            "stringData": {"username": USER, "password": TOKEN, "ca.crt": pki.ca_pem},
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let platforms: Api<SecOpsPlatform> = env.api();
        let platform: SecOpsPlatform = serde_json::from_value(json!({
            "apiVersion": "kastell.eu/v1alpha1",
            "kind": "SecOpsPlatform",
            "metadata": {"name": name},
            "spec": {
                "residency": {"jurisdiction": "EU"},
                "git": {
                    "url": format!("{}/soc/.git", server.url),
                    "branch": "main",
                    "path": "soc",
                    "interval": "5s",
                    "credentialsSecret": "soc-git-credentials",
                },
            },
        }))
        .unwrap();
        platforms
            .create(&PostParams::default(), &platform)
            .await
            .unwrap();
    }
    let _legacy_operator = start_operator(&legacy_env, "gitsync-https-test");
    let _operator = start_operator(&env, "gitsync-https-test");

    let git = eventually("status.git.revision of soc", || async {
        let git = git_status(&env, "soc").await;
        match &git.revision {
            Some(revision) if *revision == head => Ok(git),
            _ => Err(format!("{git:?}")),
        }
    })
    .await;
    assert_eq!(git.resources, Some(documents as u32));
    let rules: Api<DetectionRule> = env.api();
    let applied = rules.list(&Default::default()).await.unwrap().items;
    assert!(applied.len() > 20, "{} rules", applied.len());
    let annotations = applied[0].metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("kastell.eu/source-commit"),
        Some(&head),
        "{annotations:?}"
    );

    let error = eventually("status.git.lastError of legacy", || async {
        let git = git_status(&legacy_env, "legacy").await;
        match &git.last_error {
            Some(error) if error.contains("does not speak TLS 1.3") => Ok(error.clone()),
            _ => Err(format!("{git:?}")),
        }
    })
    .await;
    assert!(error.contains(&legacy.url), "{error}");
    assert_eq!(git_status(&legacy_env, "legacy").await.revision, None);
}
