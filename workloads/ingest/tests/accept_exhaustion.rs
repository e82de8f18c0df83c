//! A flood of connections that uses up the process's file handles must not end a syslog
//! listener: it waits until connections close and accepts again. Its own test binary,
//! because it lowers the process's open-file limit.

mod listeners;

use std::time::Duration;

use kastell_ingest::transport::syslog_framing::Framing;
use listeners::{messages, start_syslog_tcp, wait_for_records, Pipeline};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Lowers the soft limit on open files to `open` + `spare`, returning the old limits.
fn limit_open_files(spare: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to write into.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let new = libc::rlimit {
        rlim_cur: open + spare,
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid rlimit, a soft limit below the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
    old
}

#[tokio::test(flavor = "current_thread")]
async fn running_out_of_file_handles_pauses_the_listener_instead_of_ending_it() {
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(16);
    let shutdown = CancellationToken::new();
    let (addr, server) = start_syslog_tcp(&inlet, Framing::Auto, &shutdown).await;

    let old = limit_open_files(40);
    // Connect until the process has no file handle left; the listener meets the same
    // wall when it accepts the connections still waiting in its backlog.
    let mut flood = Vec::new();
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => flood.push(stream),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    // Give the listener time to run into the limit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.is_finished(),
        "the listener ended: {:?}",
        server.await
    );
    drop(flood);
    // SAFETY: restoring the limits read before.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);

    let message = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{message}\n").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), wait_for_records(&inlet, 1))
        .await
        .expect("the message after the flood was read");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let (events, _) = pipeline.drain().await;
    assert_eq!(messages(&events), [message]);
}
