//! Processes that share a SQLite store (the cases and respond stages) open it at the same
//! time; on a new file each applies the migrations, and they must take turns.

use kastell_core::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opened_together_on_a_new_directory_all_open() {
    // Several rounds, each on a new directory: the collision needs the opens to overlap,
    // which one round may not give.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = dir.path().to_owned();
                tokio::spawn(async move { SqliteStore::open_dir(&path).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            if let Err(e) = open.await.unwrap() {
                panic!("{}", kastell_core::error_chain(&e));
            }
        }
    }
}
