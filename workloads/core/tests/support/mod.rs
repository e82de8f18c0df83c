//! A private nats-server for the tests that must kill or reconfigure their server, so
//! that they disturb no other test using the shared one.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A nats-server of this test's own, so that killing it disturbs no other test.
pub struct PrivateServer {
    child: Child,
    pub port: u16,
}

impl PrivateServer {
    /// Starts `nats-server -js` on 127.0.0.1:`port` with its store in `store`, plus `extra`
    /// arguments.
    pub fn start(store: &Path, port: u16, extra: &[&OsStr]) -> PrivateServer {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (KASTELL_NATS_URL says it is installed)");
        // Owned by the guard from here on, so a failed start is still stopped.
        let server = PrivateServer { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on 127.0.0.1:{port}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is still alive (it has not crashed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the server's status")
            .is_none()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
