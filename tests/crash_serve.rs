//! `engine serve` killed with SIGKILL while it applies updates: after each restart every
//! acknowledged write is in the store, and BM25 agrees with the store (each document is found
//! by a word of its stored text and by no word of an older version).
//!
//! The server is the release binary on the tiny random model; updates rewrite the same ids, so
//! the document count never changes and only the repair marker can bring BM25 back in step.

#[path = "common/serve_bin.rs"]
mod serve_bin;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use engine::encoder::testing::write_tiny_model;
use serde_json::{json, Value};

const DOCS: usize = 12;
const TRIALS: u64 = 4;

fn write_config(dir: &Path, model: &Path) -> std::path::PathBuf {
    let cfg = dir.join("crash.toml");
    let toml = format!(
        "[model]\npath = {model:?}\ndevice = \"cpu\"\n\
         [encoder]\ntemplate = \"none\"\npooling = \"mean\"\nbatch_size = 8\n\
         [index]\nbackend = \"hnsw\"\nchunk_tokens = 256\nchunk_overlap = 16\n"
    );
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

/// The text of version `round` of document `i` in trial `trial`: one word names that version.
fn text(trial: u64, round: u64, i: usize) -> String {
    format!("kiln pottery glaze v{trial}x{round}x{i} fired at high heat")
}

fn word(trial: u64, round: u64, i: usize) -> String {
    format!("v{trial}x{round}x{i}")
}

/// Starts `engine serve` on the database `db`; returns the child and its base URL.
fn start(cfg: &Path, db: &Path) -> (Child, String) {
    serve_bin::start(cfg, &["--db".as_ref(), db.as_os_str()])
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} not ready after 60 s");
}

async fn bm25_top(client: &reqwest::Client, base: &str, q: &str) -> Vec<String> {
    let r: Value = client
        .post(format!("{base}/search"))
        .json(&json!({ "query": q, "k": 3, "mode": "bm25" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_updates_the_server_restarts_with_bm25_in_step_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(&dir.path().join("tiny-llama"), 3).unwrap();
    let cfg = write_config(dir.path(), &model);
    let corpus = dir.path().join("corpus.jsonl");
    let lines: String = (0..DOCS)
        .map(|i| {
            json!({ "_id": format!("doc-{i}"), "title": "Kiln", "text": text(0, 0, i) }).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let db = dir.path().join("db");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("--config")
        .arg(&cfg)
        .arg("index")
        .arg(&corpus)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let client = reqwest::Client::new();
    // The last acknowledged (trial, round) of each document.
    let mut acked: HashMap<usize, (u64, u64)> = (0..DOCS).map(|i| (i, (0, 0))).collect();
    for trial in 1..=TRIALS {
        let (mut child, base) = start(&cfg, &db);
        wait_ready(&client, &base).await;
        // Rewrite documents until the kill, one request of three documents at a time, and
        // record only what the server acknowledged.
        let kill_after = Duration::from_millis(150 + 170 * trial);
        let started = Instant::now();
        let mut round = 0u64;
        while started.elapsed() < kill_after {
            round += 1;
            let ids: Vec<usize> = (0..3).map(|j| (round as usize * 3 + j) % DOCS).collect();
            let docs: Vec<Value> = ids
                .iter()
                .map(|&i| json!({ "id": format!("doc-{i}"), "title": "Kiln", "text": text(trial, round, i) }))
                .collect();
            let sent = client
                .post(format!("{base}/documents"))
                .json(&json!({ "documents": docs }))
                .timeout(kill_after.saturating_sub(started.elapsed()).max(Duration::from_millis(1)))
                .send()
                .await;
            if let Ok(r) = sent {
                if r.status().is_success() {
                    for &i in &ids {
                        acked.insert(i, (trial, round));
                    }
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (mut child, base) = start(&cfg, &db);
        wait_ready(&client, &base).await;
        let status: Value =
            client.get(format!("{base}/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(status["documents"], DOCS, "trial {trial}: {status}");
        for i in 0..DOCS {
            let id = format!("doc-{i}");
            let doc: Value = client
                .get(format!("{base}/documents/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let stored = doc["text"].as_str().unwrap_or_else(|| panic!("{id}: {doc}"));
            let version = stored
                .split_whitespace()
                .find_map(|w| {
                    let v = w.strip_prefix('v')?;
                    let mut p = v.split('x').map(|n| n.parse::<u64>().ok());
                    Some((p.next()??, p.next()??))
                })
                .unwrap();
            assert!(
                version >= acked[&i],
                "trial {trial}: {id} holds {version:?}, older than acknowledged {:?}",
                acked[&i]
            );
            let (t, r) = version;
            assert_eq!(
                bm25_top(&client, &base, &word(t, r, i)).await.first(),
                Some(&id),
                "trial {trial}: BM25 misses {id}'s stored text"
            );
            let (at, ar) = acked[&i];
            if (at, ar) != version {
                assert!(
                    !bm25_top(&client, &base, &word(at, ar, i)).await.contains(&id),
                    "trial {trial}: BM25 still indexes an older text of {id}"
                );
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
