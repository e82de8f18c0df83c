//! The analyst web page in a real browser: `kastell run` serves the bundled example with
//! a lead's API key and a test OIDC provider (`tests/browser/idp.mjs`), and
//! `tests/browser/run.mjs` drives Debian's Chromium through sign-in (pasted key and by
//! redirect), the alert queue, an alert, promotion, an approval and closing a case, saving
//! a screenshot of each page under the build's scratch directory (docs/screenshots with
//! KASTELL_UPDATE_SCREENSHOTS=1).
//!
//! Needs `tests/tools/ensure-browser` (Chromium and playwright-core); .ci/run exports
//! `KASTELL_CHROMIUM` and `KASTELL_BROWSER_TESTS` from it. Without them the test prints
//! "SKIPPED: …" and passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where Chromium and the browser tests' directory are, or why the test cannot run.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .ok_or(format!("{name} is unset (run tests/tools/ensure-browser)"))
    };
    let chromium = var("KASTELL_CHROMIUM")?;
    let tests = var("KASTELL_BROWSER_TESTS")?;
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if !tests.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "no playwright-core in {}/node_modules",
            tests.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Err("node is not installed".to_owned());
    }
    Ok((chromium, tests))
}

/// A child process (`kastell run`, the test identity provider), stopped however the test
/// ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kastell run` on a port the system picks and returns it with its address, read
/// from the line it prints once the replay is through and the listener is bound.
fn start_server(data: &Path, issuer: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .current_dir(repo_root())
        // Tokens of the test identity provider, for the page's sign-in by redirect.
        .env("KASTELL_OIDC_JWKS", format!("{issuer}/jwks"))
        .env("KASTELL_OIDC_ISSUER", issuer)
        .env("KASTELL_OIDC_AUDIENCE", CLIENT_ID)
        .env("KASTELL_OIDC_CLIENT_ID", CLIENT_ID)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kastell run");
    let stderr = child.stderr.take().expect("piped stderr");
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.split("case API on http://").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        })
        .expect("kastell run stopped before serving");
    // Drained so that the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, address)
}

/// The page's client id at the test identity provider.
const CLIENT_ID: &str = "kastell-web";

/// Starts `tests/browser/idp.mjs`, the test's OIDC provider, and returns it with its
/// issuer URL, read from the line it prints once listening.
fn start_identity_provider(tests: &Path) -> (Server, String) {
    let mut child = Command::new("node")
        .arg(tests.join("idp.mjs"))
        .args([CLIENT_ID, "lead"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting node tests/browser/idp.mjs");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let issuer = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("issuer ").map(str::to_owned))
        .expect("the identity provider stopped before listening");
    (server, issuer)
}

/// Waits until `/readyz` answers 200. One plain HTTP/1.0 request over a socket: enough
/// for a probe, and it needs neither an async runtime nor a TLS provider.
fn wait_ready(address: &str) {
    for _ in 0..200 {
        let answer = TcpStream::connect(address).and_then(|mut stream| {
            stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: kastell\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        });
        if answer
            .is_ok_and(|text| text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the case API on {address} never became ready");
}

/// Where the page's screenshots go: the build's scratch directory, so an ordinary run
/// leaves the work tree clean, or docs/screenshots when KASTELL_UPDATE_SCREENSHOTS=1 asks
/// to refresh the ones the documentation shows.
fn screenshot_dir() -> PathBuf {
    if std::env::var("KASTELL_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        repo_root().join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

#[test]
fn an_analyst_signs_in_triages_approves_and_closes_a_case_in_chromium() {
    let (chromium, tests) = match browser_tools() {
        Ok(tools) => tools,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let created = Command::new(env!("CARGO_BIN_EXE_kastell"))
        .args([
            "apikey",
            "create",
            "--name",
            "browser-test",
            "--role",
            "lead",
            "--data",
        ])
        .arg(&data)
        .output()
        .expect("running kastell apikey create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();

    let (_provider, issuer) = start_identity_provider(&tests);
    let (_server, address) = start_server(&data, &issuer);
    wait_ready(&address);
    let screenshots = screenshot_dir();
    println!("screenshots go to {}", screenshots.display());

    let run = Command::new("node")
        .arg(tests.join("run.mjs"))
        .current_dir(&tests)
        .env("KASTELL_BASE_URL", format!("http://{address}"))
        .env("KASTELL_API_KEY", &key)
        .env("KASTELL_OIDC_ISSUER", &issuer)
        .env("KASTELL_CHROMIUM", &chromium)
        .env("KASTELL_SCREENSHOTS", &screenshots)
        .output()
        .expect("running node tests/browser/run.mjs");
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "browser steps failed:\n{report}");
    assert!(report.contains(" 0 failed"), "{report}");
}
