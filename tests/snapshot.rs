//! Snapshots (issue 16): `engine snapshot` / `POST /snapshots` write one archive of a database,
//! `engine restore` brings it back in a new folder with identical search results, and a
//! snapshot taken during writes holds every write acknowledged before it.

#[path = "common/server.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use engine::encoder::{Embed, Encoder, TextKind};
use engine::fusion::Fusion;
use engine::lexical::LexicalIndex;
use engine::search::{SearchIndex, SearchMode};
use engine::store::{lexical_dir, Database, DocHit, LEXICAL_PENDING};
use fixture::*;
use serde_json::{json, Value};

fn engine_cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env_remove("ENGINE_API_KEY").args(args);
    c.output().unwrap()
}

/// Runs the CLI and returns its stdout as JSON, failing with its stderr.
fn cli_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = engine_cli(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the CLI expecting failure; its stderr.
fn cli_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = engine_cli(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// Every corpus query's hits in every mode, with their passages, from the database at `db`.
fn all_results(db: &Path, encoder: &Encoder) -> Vec<Vec<DocHit>> {
    let index = SearchIndex::open(Database::open(db, None).unwrap(), false).unwrap();
    let fusion = Fusion::Rrf { k: 60 };
    let mut out = Vec::new();
    for d in corpus() {
        let q = query_for(&d);
        let v = encoder.embed(&[q.as_str()], TextKind::Query).unwrap().remove(0);
        for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
            out.push(index.search(mode, &q, Some(&v), 5, &fusion).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_snapshot_answers_every_search_as_the_original() {
    let fx = fixture();
    let encoder = Encoder::from_config(&base_config(&fx.model)).unwrap();
    let dir = fx.dir.path();
    // From the server, while it serves: POST /snapshots.
    let s = TestServer::start(&fx, |c| c.server.snapshot_dir = dir.join("snaps"), None).await;
    let (st, r) = s.post("/snapshots", &json!({})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["kind"].as_str(), r["documents"].as_u64()),
        (Some("dense"), Some(corpus().len() as u64))
    );
    let served = PathBuf::from(r["path"].as_str().unwrap());
    assert!(served.starts_with(dir.join("snaps")) && served.is_file(), "{r}");
    // The CLI on a database the server holds points to POST /snapshots.
    let out = dir.join("cli.tar");
    let err =
        cli_fails(&[os("snapshot"), os("--db"), fx.db.as_os_str(), os("--out"), out.as_os_str()]);
    assert!(err.contains("in use") && err.contains("POST /snapshots"), "{err}");
    s.stop().await.unwrap();
    // From the CLI.
    let r =
        cli_json(&[os("snapshot"), os("--db"), fx.db.as_os_str(), os("--out"), out.as_os_str()]);
    assert_eq!(r["snapshot"]["documents"], corpus().len());

    let original = all_results(&fx.db, &encoder);
    for (i, archive) in [&served, &out].into_iter().enumerate() {
        let restored = dir.join(format!("restored-{i}"));
        let r = cli_json(&[os("restore"), archive.as_os_str(), os("--db"), restored.as_os_str()]);
        assert_eq!(r["snapshot"]["kind"], "dense");
        // It opens cleanly: BM25 in step with the store, nothing to repair.
        assert!(!restored.join(LEXICAL_PENDING).exists());
        let db = Database::open(&restored, Some(&encoder.fingerprint())).unwrap();
        assert_eq!(db.manifest(), Database::open(&fx.db, None).unwrap().manifest());
        drop(db);
        assert_eq!(all_results(&restored, &encoder), original, "archive {}", archive.display());
        // A folder that holds something is never restored over.
        let err =
            cli_fails(&[os("restore"), archive.as_os_str(), os("--db"), restored.as_os_str()]);
        assert!(err.contains("not empty"), "{err}");
    }
    // Not an archive: a clear error, and no folder left behind.
    let junk = dir.join("junk.tar");
    std::fs::write(&junk, b"not a tar file at all").unwrap();
    let target = dir.join("from-junk");
    let err = cli_fails(&[os("restore"), junk.as_os_str(), os("--db"), target.as_os_str()]);
    assert!(err.contains("not an engine snapshot"), "{err}");
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_during_writes_holds_every_write_acknowledged_before_it() {
    const ADMIN: &str = "admin-key";
    let fx = fixture();
    let dir = fx.dir.path().to_path_buf();
    let s = Arc::new(
        TestServer::start_with_keys(
            &fx,
            |c| c.server.snapshot_dir = dir.join("snaps"),
            Some(ADMIN),
            Some("read-key"),
        )
        .await,
    );
    // Snapshots need the admin key.
    assert_eq!(s.post("/snapshots", &json!({})).await.0, 401);
    assert_eq!(s.post_with_key("/snapshots", &json!({}), "read-key").await.0, 403);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = format!("w/{i}");
                let doc = json!({ "documents": [{ "id": id, "title": "Written", "text": format!("concurrent write number {i} zebra{i}") }] });
                let (st, r) = s.post_with_key("/documents", &doc, ADMIN).await;
                assert_eq!(st, 200, "{r}");
                acked.lock().unwrap().push(id);
                i += 1;
            }
        })
    };
    // Snapshots while the writer runs: each must hold every write acknowledged before it.
    let mut checks = Vec::new();
    for _ in 0..3 {
        while acked.lock().unwrap().len() < checks.len() * 3 + 2 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let before = acked.lock().unwrap().clone();
        let (st, r) = s.post_with_key("/snapshots", &json!({}), ADMIN).await;
        assert_eq!(st, 200, "{r}");
        checks.push((PathBuf::from(r["path"].as_str().unwrap()), before));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    Arc::try_unwrap(s).ok().unwrap().stop().await.unwrap();

    for (i, (archive, before)) in checks.iter().enumerate() {
        let restored = dir.join(format!("restored-{i}"));
        engine::snapshot::restore(archive, &restored).unwrap();
        assert!(!restored.join(LEXICAL_PENDING).exists());
        let db = Database::open(&restored, None).unwrap();
        let documents = db.manifest().documents;
        assert!(documents >= (corpus().len() + before.len()) as u64);
        // BM25 in step with the store, opened as is (no repair).
        assert!(lexical_dir(&restored).is_dir());
        let lex = LexicalIndex::open(&lexical_dir(&restored)).expect("BM25 index restored");
        assert_eq!(lex.count(), documents);
        for id in before {
            assert!(db.get_document(id).unwrap().is_some(), "{id} missing from snapshot {i}");
            assert!(lex.contains(id).unwrap(), "{id} missing from BM25 in snapshot {i}");
        }
    }
}
