//! The file tail: restart without loss or duplicates, rotation by rename and by
//! copytruncate (also while stopped), and a partial last line at shutdown.

mod listeners;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kastell_core::{Event, Subscription};
use kastell_ingest::transport::tail::{tail_file, Checkpoint, PartialLines, TailConfig};
use kastell_ingest::transport::Inlet;
use listeners::Pipeline;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Run {
    inlet: Arc<Inlet>,
    shutdown: CancellationToken,
    task: JoinHandle<Checkpoint>,
}

fn config(dir: &Path) -> TailConfig {
    let mut config = TailConfig::new(dir.join("app.log"), dir.join("app.log.checkpoint"));
    config.poll_interval = Duration::from_millis(10);
    config
}

fn start(pipeline: &Pipeline, config: &TailConfig) -> Run {
    let inlet = pipeline.syslog_inlet(16);
    let shutdown = CancellationToken::new();
    let task = {
        let (inlet, shutdown, config) = (Arc::clone(&inlet), shutdown.clone(), config.clone());
        tokio::spawn(async move { tail_file(&config, &inlet, shutdown).await.unwrap() })
    };
    Run {
        inlet,
        shutdown,
        task,
    }
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn lines(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

fn expected(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let delivery = sub.next().await.unwrap();
        let event: Event = delivery.message.decode().unwrap();
        out.push(event.get_str("message").unwrap().to_owned());
        delivery.ack().await.unwrap();
    }
    out
}

/// Stops a run while reading what it still publishes; returns those messages. `taken`
/// counts every message read so far, by this run and earlier ones (the test sensor's
/// metrics are shared by all runs).
async fn stop(
    run: Run,
    sub: &mut Box<dyn Subscription>,
    taken: usize,
) -> (Vec<String>, Checkpoint) {
    run.shutdown.cancel();
    let mut task = run.task;
    let mut out = Vec::new();
    let checkpoint = loop {
        tokio::select! {
            done = &mut task => break done.unwrap(),
            delivery = sub.next() => {
                let delivery = delivery.unwrap();
                let event: Event = delivery.message.decode().unwrap();
                out.push(event.get_str("message").unwrap().to_owned());
            }
        }
    };
    let metrics = run.inlet.metrics();
    let published = (metrics.records() - metrics.rejects("partial_line")) as usize;
    out.extend(take(sub, published - taken - out.len()).await);
    (out, checkpoint)
}

#[tokio::test]
async fn a_restart_mid_file_neither_loses_nor_repeats_lines_and_completes_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    append(&config.path, &lines(1..=100));
    let mut pipeline = Pipeline::new(4).await;

    let run = start(&pipeline, &config);
    let mut seen = take(&mut pipeline.events, 30).await;
    let (rest, checkpoint) = stop(run, &mut pipeline.events, 30).await;
    seen.extend(rest);
    assert!(seen.len() < 100, "the first run stopped mid-file");
    assert_eq!(checkpoint.line as usize, seen.len());

    append(&config.path, "line 101 part");
    let run = start(&pipeline, &config);
    seen.extend(take(&mut pipeline.events, 100 - seen.len()).await);
    append(&config.path, "ial\n");
    append(&config.path, &lines(102..=120));
    seen.extend(take(&mut pipeline.events, 20).await);
    let (rest, checkpoint) = stop(run, &mut pipeline.events, seen.len()).await;
    assert!(rest.is_empty(), "{rest:?}");

    let mut want = expected(1..=100);
    want.push("line 101 partial".to_owned());
    want.extend(expected(102..=120));
    assert_eq!(seen, want);
    assert_eq!(checkpoint.line, 120);
    assert_eq!(
        checkpoint.offset,
        std::fs::metadata(&config.path).unwrap().len()
    );
}

#[tokio::test]
async fn rotation_by_rename_keeps_the_old_files_last_lines_and_follows_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    append(&config.path, &lines(1..=5));
    let mut pipeline = Pipeline::new(64).await;
    let run = start(&pipeline, &config);
    let mut seen = take(&mut pipeline.events, 5).await;

    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&config.path, &rotated).unwrap();
    append(&rotated, &lines(6..=7));
    append(&config.path, &lines(8..=10));
    seen.extend(take(&mut pipeline.events, 5).await);
    let (rest, checkpoint) = stop(run, &mut pipeline.events, 10).await;
    assert!(rest.is_empty());
    assert_eq!(seen, expected(1..=10));
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&config.path).unwrap());
    assert_eq!(checkpoint.inode, inode);
    assert_eq!(checkpoint.line, 10);
}

#[tokio::test]
async fn copytruncate_is_noticed_and_the_file_read_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    append(&config.path, &lines(1..=5));
    let mut pipeline = Pipeline::new(64).await;
    let run = start(&pipeline, &config);
    let mut seen = take(&mut pipeline.events, 5).await;

    std::fs::copy(&config.path, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&config.path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&config.path, "new 1\nnew 2\n");
    seen.extend(take(&mut pipeline.events, 2).await);
    let (rest, checkpoint) = stop(run, &mut pipeline.events, 7).await;
    assert!(rest.is_empty());
    let mut want = expected(1..=5);
    want.extend(["new 1".to_owned(), "new 2".to_owned()]);
    assert_eq!(seen, want);
    assert_eq!(checkpoint.offset, 12);
}

#[tokio::test]
async fn a_file_rotated_while_the_tail_was_stopped_is_finished_before_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    append(&config.path, &lines(1..=3));
    let mut pipeline = Pipeline::new(64).await;
    let run = start(&pipeline, &config);
    let mut seen = take(&mut pipeline.events, 3).await;
    let (rest, _) = stop(run, &mut pipeline.events, 3).await;
    assert!(rest.is_empty());

    append(&config.path, &lines(4..=5));
    std::fs::rename(&config.path, dir.path().join("app.log.1")).unwrap();
    append(&config.path, &lines(6..=7));
    let run = start(&pipeline, &config);
    seen.extend(take(&mut pipeline.events, 4).await);
    let (rest, checkpoint) = stop(run, &mut pipeline.events, seen.len()).await;
    assert!(rest.is_empty());
    assert_eq!(seen, expected(1..=7));
    assert_eq!(checkpoint.line, 7);
}

#[tokio::test]
async fn a_partial_last_line_can_be_rejected_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.partial_lines = PartialLines::RejectAtShutdown;
    append(&config.path, "line 1\nline 2 with no end");
    let mut pipeline = Pipeline::new(64).await;
    let run = start(&pipeline, &config);
    let seen = take(&mut pipeline.events, 1).await;
    let inlet = Arc::clone(&run.inlet);
    let (rest, checkpoint) = stop(run, &mut pipeline.events, 1).await;
    assert!(rest.is_empty());
    assert_eq!(seen, expected(1..=1));
    assert_eq!(
        checkpoint.offset,
        std::fs::metadata(&config.path).unwrap().len()
    );
    assert_eq!(inlet.metrics().rejects("partial_line"), 1);
    let (events, letters) = pipeline.drain().await;
    assert!(events.is_empty());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["kind"], "partial_line");
    assert_eq!(letters[0]["raw"], "line 2 with no end");
    assert_eq!(letters[0]["line"], 2);
}

#[tokio::test]
async fn a_corrupt_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::write(&config.checkpoint, "not json").unwrap();
    let pipeline = Pipeline::new(4).await;
    let inlet = pipeline.syslog_inlet(4);
    let err = tail_file(&config, &inlet, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not a tail checkpoint"),
        "{err}"
    );
}
