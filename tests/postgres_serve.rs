//! The binary against a real PostgreSQL (`ENGINE_TEST_POSTGRES_URL`; skipped without it,
//! required when CI=true): every store command with `--store`, and `engine serve --store` on
//! the tiny random model: two servers on one database see each other's writes, a server on a
//! read-only connection (as on a streaming replica) refuses writes with 403, and a server
//! killed with SIGKILL in the middle of a write leaves no part of that write in the database.

mod common;

#[path = "common/serve_bin.rs"]
mod serve_bin;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::pg;
use engine::encoder::testing::write_tiny_model;
use serde_json::{json, Value};

fn write_config(dir: &Path, model: &Path) -> PathBuf {
    let cfg = dir.join("pg.toml");
    let toml = format!(
        "[model]\npath = {model:?}\ndevice = \"cpu\"\n\
         [encoder]\ntemplate = \"none\"\npooling = \"mean\"\nbatch_size = 8\n\
         [index]\nbackend = \"hnsw\"\nchunk_tokens = 256\nchunk_overlap = 16\n"
    );
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

/// A model, a config and `docs` indexed into the store at `url` through `engine index`.
fn setup(url: &str, docs: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(&dir.path().join("tiny-llama"), 3).unwrap();
    let cfg = write_config(dir.path(), &model);
    let corpus = dir.path().join("corpus.jsonl");
    let lines: String = (0..docs)
        .map(|i| {
            let text = format!("kiln number {i} fires clay");
            json!({ "_id": format!("doc-{i}"), "title": "Kiln", "text": text }).to_string() + "\n"
        })
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("--config")
        .arg(&cfg)
        .arg("index")
        .arg(&corpus)
        .args(["--store", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, cfg)
}

/// `engine serve --store URL` on an ephemeral port; the child and its base URL.
fn start(cfg: &Path, url: &str) -> (Child, String) {
    serve_bin::start(cfg, &["--store".as_ref(), url.as_ref()])
}

/// Blocking HTTP for these tests (their PostgreSQL client is the blocking one, which must not
/// run inside an async runtime).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Self {
        Http { rt: tokio::runtime::Runtime::new().unwrap(), client: reqwest::Client::new() }
    }

    fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.rt.block_on(async {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        })
    }

    fn get(&self, url: String) -> (u16, Value) {
        self.send(self.client.get(url))
    }

    fn post(&self, url: String, body: Value) -> (u16, Value) {
        self.send(self.client.post(url).json(&body))
    }

    fn wait_ready(&self, base: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            let ok = self.rt.block_on(async {
                let r = self.client.get(format!("{base}/readyz")).send().await;
                r.is_ok_and(|r| r.status() == 200)
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server at {base} not ready after 60 s");
    }
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().into()).collect()
}

#[test]
fn two_servers_on_one_postgres_see_each_others_writes_and_a_replica_server_refuses_them() {
    let Some(db) = pg::database("serve_two") else { return };
    let (_dir, cfg) = setup(&db.url, 3);
    let http = Http::new();
    let (a, base_a) = start(&cfg, &db.url);
    let (b, base_b) = start(&cfg, &db.url);
    let read_only = pg::with_options(&db.url, "-c default_transaction_read_only=on");
    let (r, base_r) = start(&cfg, &read_only);
    for base in [&base_a, &base_b, &base_r] {
        http.wait_ready(base);
    }

    let doc = json!({ "id": "new-1", "title": "Glaze", "text": "pottery glaze melts in the kiln" });
    let (status, body) = http.post(format!("{base_a}/documents"), json!({ "documents": [doc] }));
    assert_eq!(status, 200, "{body}");
    // Acknowledged by A, so B sees it: the document, BM25-mode and dense searches, the count.
    let (status, got) = http.get(format!("{base_b}/documents/new-1"));
    assert_eq!((status, got["text"].as_str()), (200, Some("pottery glaze melts in the kiln")));
    let search = json!({ "query": "pottery glaze", "mode": "bm25", "k": 3 });
    let (_, hits) = http.post(format!("{base_b}/search"), search);
    assert_eq!(hit_ids(&hits).first().map(String::as_str), Some("new-1"), "{hits}");
    let dense =
        json!({ "query": "Glaze\npottery glaze melts in the kiln", "mode": "dense", "k": 1 });
    assert_eq!(hit_ids(&http.post(format!("{base_b}/search"), dense).1), ["new-1"]);
    assert_eq!(http.get(format!("{base_b}/status")).1["documents"], 4);
    // And the other way round: B deletes, A no longer has it.
    let deleted = http.send(http.client.delete(format!("{base_b}/documents/new-1")));
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    assert_eq!(http.get(format!("{base_a}/documents/new-1")).0, 404);

    // Snapshots are of the embedded store.
    let (status, body) = http.post(format!("{base_a}/snapshots"), json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("postgres_store")), "{body}");
    // The read-only server reads, and refuses writes naming the primary.
    assert_eq!(http.get(format!("{base_r}/documents/doc-1")).0, 200);
    let doc = json!({ "id": "new-2", "title": "x", "text": "refused" });
    let (status, body) = http.post(format!("{base_r}/documents"), json!({ "documents": [doc] }));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "read_only", "{body}");
    assert_eq!(http.get(format!("{base_a}/documents/new-2")).0, 404);
    for child in [a, b, r] {
        stop(child);
    }
}

#[test]
fn killing_engine_serve_mid_write_leaves_no_half_document_in_postgres() {
    let Some(db) = pg::database("serve_kill") else { return };
    let (_dir, cfg) = setup(&db.url, 2);
    let http = Http::new();
    let (a, base) = start(&cfg, &db.url);
    http.wait_ready(&base);
    // Every passage insert now takes a while, so the kill lands inside the write's transaction.
    let mut admin = db.client();
    admin
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.3); \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER slow BEFORE INSERT ON engine_passages \
               FOR EACH ROW EXECUTE FUNCTION slow();",
        )
        .unwrap();
    // Three documents of several passages each (the tiny tokenizer has a token per byte).
    let long = "the kiln fires porcelain at high heat while the glaze melts. ".repeat(12);
    let docs: Vec<Value> = (0..3)
        .map(|i| json!({ "id": format!("half-{i}"), "title": "Long", "text": long.clone() }))
        .collect();
    let writer = {
        let url = format!("{base}/documents");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            // Killed mid-way: the answer is a broken connection, not an acknowledgement.
            rt.block_on(reqwest::Client::new().post(url).json(&json!({ "documents": docs })).send())
                .map(|r| r.status().as_u16())
        })
    };
    let inserting = "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE 'INSERT INTO engine_passages%' AND state = 'active'";
    let t = Instant::now();
    while admin.query_one(inserting, &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the write never reached PostgreSQL");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A passage or two into the transaction.
    std::thread::sleep(Duration::from_millis(500));
    stop(a);
    let answer = writer.join().unwrap();
    assert!(!matches!(answer, Ok(200)), "the write was acknowledged before the kill");

    // PostgreSQL rolls the dead connection's transaction back; once it is gone, nothing of the
    // write is there and every stored document has all its passages.
    let t = Instant::now();
    while admin.query_one(inserting, &[]).unwrap().get::<_, i64>(0) > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the killed write never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    admin.batch_execute("DROP TRIGGER slow ON engine_passages").unwrap();
    let mut count = |sql: &str| admin.query_one(sql, &[]).unwrap().get::<_, i64>(0);
    assert_eq!(count("SELECT count(*) FROM engine_documents WHERE id LIKE 'half-%'"), 0);
    assert_eq!(count("SELECT count(*) FROM engine_passages WHERE doc_id LIKE 'half-%'"), 0);
    assert_eq!(
        count(
            "SELECT count(*) FROM engine_documents d WHERE NOT EXISTS \
             (SELECT 1 FROM engine_passages p WHERE p.doc_id = d.id)"
        ),
        0
    );
    // A fresh server sees the two indexed documents, and takes the write whole.
    let (b, base) = start(&cfg, &db.url);
    http.wait_ready(&base);
    assert_eq!(http.get(format!("{base}/status")).1["documents"], 2);
    let docs: Vec<Value> = (0..3)
        .map(|i| json!({ "id": format!("half-{i}"), "title": "Long", "text": long.clone() }))
        .collect();
    let (status, body) = http.post(format!("{base}/documents"), json!({ "documents": docs }));
    assert_eq!(status, 200, "{body}");
    let passages = count("SELECT count(*) FROM engine_passages WHERE doc_id = 'half-2'");
    assert!(passages > 1, "expected several passages per document, got {passages}");
    stop(b);
}

/// `engine index / search / eval / delete / check --store URL` with the test hash embedder, on
/// a small BEIR dataset: every mode finds the obvious document and scores it.
#[test]
fn every_store_command_works_on_postgres() {
    let Some(db) = pg::database("cli") else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    let docs = [
        ("bread", "Why bread rises", "Yeast ferments sugar and the gas makes the dough rise."),
        ("tides", "Ocean tides", "The gravity of the moon pulls the oceans and causes the tides."),
        ("stars", "Stars", "A star fuses hydrogen into helium in its core."),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, t, x)| json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(data.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        data.join("queries.jsonl"),
        "{\"_id\":\"q1\",\"text\":\"what makes dough rise\"}\n{\"_id\":\"q2\",\"text\":\"moon gravity tides\"}\n",
    )
    .unwrap();
    std::fs::write(
        data.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\tbread\t1\nq2\ttides\t1\n",
    )
    .unwrap();
    let engine = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .env("ENGINE_TEST_HASH_ENCODER", "64")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let url = db.url.as_str();
    let data = data.to_str().unwrap();
    let v = engine(&["index", data, "--store", url, "--verify"]);
    assert_eq!(v["status"]["documents"], 3, "{v}");
    assert_eq!(v["verify"]["recall"], 1.0, "{v}");
    for mode in ["dense", "bm25", "hybrid"] {
        let v = engine(&["search", "--store", url, "--mode", mode, "moon gravity tides"]);
        assert_eq!(v["hits"][0]["id"], "tides", "{mode}: {v}");
        let v = engine(&["eval", "--store", url, "--dataset", data, "--mode", mode]);
        assert!(v["ndcg@10"].as_f64().unwrap() > 0.5, "{mode}: {v}");
    }
    let v = engine(&["search", "--store", url, "--exact", "--mode", "dense", "dough rise"]);
    assert_eq!(v["hits"][0]["id"], "bread", "{v}");
    // The config's [store] url stands in for --store.
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .env("ENGINE_TEST_HASH_ENCODER", "64")
        .env("ENGINE__STORE__URL", url)
        .args(["search", "--mode", "bm25", "dough"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("bread"));
    let v = engine(&["delete", "--store", url, "stars", "nope"]);
    assert_eq!((v["deleted"].as_u64(), v["status"]["documents"].as_u64()), (Some(1), Some(2)));
    let v = engine(&["check", "--store", url]);
    assert_eq!(v["recall_at_10"], 1.0, "{v}");
    let v = engine(&["info", "--store", url]);
    assert_eq!((v["documents"].as_u64(), v["read_only"].as_bool()), (Some(2), Some(false)), "{v}");
}

/// `engine copy` moves a database folder into PostgreSQL with its vectors (no encoder is loaded:
/// the configured model does not exist), both answer the same exact dense search, and a second
/// run finds everything already stored.
#[test]
fn copy_moves_a_folder_into_postgres_with_its_vectors_and_resumes() {
    let Some(db) = pg::database("copy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs: String = (0..40)
        .map(|i| {
            json!({"_id": format!("d{i}"), "title": format!("Title {i}"),
                   "text": format!("word{i} shared text number {} and more {}", i % 7, i % 3),
                   "metadata": {"n": i}})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&corpus, docs).unwrap();
    let folder = dir.path().join("db");
    let engine = |args: &[&str], env: &[(&str, &str)]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .env("ENGINE_TEST_HASH_ENCODER", "64")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (folder_s, url) = (folder.to_str().unwrap(), db.url.as_str());
    engine(&["index", corpus.to_str().unwrap(), "--db", folder_s, "--backend", "flat"], &[]);
    let no_model = [("ENGINE__MODEL__PATH", "/nonexistent/model.gguf")];
    let v = engine(&["copy", "--db", folder_s, "--store", url, "--batch", "16"], &no_model);
    assert_eq!((v["copied"].as_u64(), v["unchanged"].as_u64()), (Some(40), Some(0)), "{v}");
    assert_eq!(v["status"]["documents"], 40, "{v}");
    let from = engine(&["info", "--db", folder_s], &[]);
    assert_eq!(v["status"]["passages"], from["passages"], "{v} {from}");
    for q in ["word3 shared text", "number 5 and more 2", "Title 17"] {
        let a = engine(&["search", "--db", folder_s, "--mode", "dense", "-k", "10", q], &[]);
        let b =
            engine(&["search", "--store", url, "--exact", "--mode", "dense", "-k", "10", q], &[]);
        assert_eq!(hit_ids(&a), hit_ids(&b), "{q}");
    }
    let got = engine(&["search", "--store", url, "--mode", "bm25", "word17"], &[]);
    assert_eq!(got["hits"][0]["id"], "d17", "{got}");
    let v = engine(&["copy", "--db", folder_s, "--store", url], &no_model);
    assert_eq!((v["copied"].as_u64(), v["unchanged"].as_u64()), (Some(0), Some(40)), "{v}");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["copy", "--db", folder_s, "--store", "/not/a/url"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PostgreSQL URL"));
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .env_remove("ENGINE__STORE__URL")
        .args(["copy", "--db", folder_s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --store URL"), "{out:?}");
}
