//! The `engine serve` test fixture shared by tests/server*.rs (included with `#[path]`): the tiny
//! random test model, a small corpus indexed by it, and a real server on an ephemeral port.
//!
//! The tiny model is random, so dense retrieval is not semantic. The fixture uses
//! `encoder.template = "none"` and `pooling = "mean"`: a query equal to a passage's embedded text
//! ("title\ntext") then gets exactly that passage's vector and ranks its document first.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::config::Config;
use engine::encoder::testing::write_tiny_model;
use engine::encoder::{Embed, Encoder};
use engine::index::{AnnParams, Backend};
use engine::pipeline::{self, Document, IndexOptions, Silent};
use engine::server::{self, ServeOptions};
use engine::store::{Database, DbOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Corpus ids contain '/' and other characters that need percent-encoding.
pub fn corpus() -> Vec<Document> {
    let docs = [
        ("wiki/Rust_(programming_language)", "Rust (programming language)", "Rust is a general-purpose programming language emphasizing performance, type safety and concurrency."),
        ("wiki/Dense_retrieval", "Dense retrieval", "Dense retrieval encodes queries and passages as vectors and ranks passages by inner product."),
        ("wiki/Okapi_BM25", "Okapi BM25", "BM25 is a bag-of-words ranking function used by search engines."),
        ("wiki/HNSW", "Hierarchical navigable small world", "HNSW is a graph-based approximate nearest neighbour search algorithm."),
        ("wiki/LLM", "Large language model", "A large language model is trained with self-supervised learning on vast amounts of text."),
        ("wiki/Inverted_index", "Inverted index", "An inverted index maps words to their locations in a set of documents."),
        ("wiki/Vector_database", "Vector database", "A vector database stores embeddings and supports similarity search over them."),
        ("wiki/Garbage_collection", "Garbage collection", "Garbage collection is a form of automatic memory management."),
        ("wiki/Concurrency", "Concurrency", "Concurrency is the ability of parts of a program to run out of order."),
        ("wiki/Mozilla", "Mozilla", "Mozilla is a free software community founded in 1998."),
        ("wiki/Type_safety", "Type safety", "Type safety is the extent to which a language prevents type errors."),
        ("wiki/WebAssembly", "WebAssembly", "WebAssembly is a portable binary instruction format."),
        ("notes/odd id?&=#%", "Odd id", "A document whose id needs percent-encoding in a URL path."),
        ("notes/untitled", "", "rust programming language"),
    ];
    docs.iter()
        .map(|(id, title, text)| Document {
            id: id.to_string(),
            title: title.to_string(),
            text: text.to_string(),
            metadata: json!({ "source": "test", "len": text.len() }),
        })
        .collect()
}

/// The text a passage was embedded from: a query equal to it finds the document first.
pub fn query_for(d: &Document) -> String {
    pipeline::passage_text(&d.title, &d.text)
}

pub fn enc(id: &str) -> String {
    // encodeURIComponent's set, enough for these ids.
    let mut out = String::new();
    for b in id.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'(' | b')' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn base_config(model: &Path) -> Config {
    let mut c = Config::default();
    c.model.path = model.to_path_buf();
    c.model.device = engine::config::Device::Cpu;
    c.encoder.template = engine::encoder::Template::None;
    c.encoder.pooling = engine::encoder::Pooling::Mean;
    c.encoder.batch_size = 8;
    // The tiny tokenizer is byte-level (a token per byte): whole passages as queries need room.
    c.encoder.max_query_tokens = 512;
    c.server.max_query_tokens = 512;
    c.index.backend = Backend::Flat;
    c.index.chunk_tokens = 512;
    c.index.chunk_overlap = 32;
    c
}

/// A model folder and a database indexed with it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
    pub db: PathBuf,
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

/// A fixture indexed with `tweak` applied to [`base_config`] (servers on it need the same
/// encoder settings).
pub fn fixture_with(tweak: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(&dir.path().join("tiny-llama"), 7).unwrap();
    let db = dir.path().join("db");
    let mut config = base_config(&model);
    tweak(&mut config);
    let encoder = Encoder::from_config(&config).unwrap();
    let opts = DbOptions {
        backend: Backend::Flat,
        params: AnnParams::from_config(&config.index),
        chunk_tokens: config.index.chunk_tokens,
        chunk_overlap: config.index.chunk_overlap,
    };
    let database = Database::create_or_open(&db, &encoder.fingerprint(), &opts).unwrap();
    let iopts = IndexOptions::from_config(&config);
    pipeline::index_documents(&database, &encoder, corpus(), &iopts, &Silent).unwrap();
    drop(database);
    Fixture { dir, model, db }
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<engine::Result<()>>>,
}

impl TestServer {
    pub async fn start(
        fx: &Fixture,
        tweak: impl FnOnce(&mut Config),
        api_key: Option<&str>,
    ) -> Self {
        Self::start_with_keys(fx, tweak, api_key, None).await
    }

    /// A server with an admin key and a read key.
    pub async fn start_with_keys(
        fx: &Fixture,
        tweak: impl FnOnce(&mut Config),
        api_key: Option<&str>,
        read_api_key: Option<&str>,
    ) -> Self {
        let mut config = base_config(&fx.model);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = oneshot::channel::<()>();
        let opts = ServeOptions {
            config,
            db: fx.db.clone(),
            api_key: api_key.map(str::to_string),
            read_api_key: read_api_key.map(str::to_string),
        };
        let task = tokio::spawn(server::serve(listener, opts, async {
            let _ = rx.await;
        }));
        let s =
            TestServer { base, client: reqwest::Client::new(), stop: Some(stop), task: Some(task) };
        s.wait_ready().await;
        s
    }

    pub async fn wait_ready(&self) {
        let t = Instant::now();
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
                assert_eq!(r.status(), 503, "readyz before ready");
            }
            assert!(t.elapsed() < Duration::from_secs(60), "server not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> (u16, Value) {
        let r = self.client.post(self.url(path)).bearer_auth(key).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) -> engine::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

/// Asserts the API's error shape and returns its code.
pub fn error_code(status: u16, body: &Value, expected_status: u16) -> String {
    assert_eq!(status, expected_status, "{body}");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code: {body}"));
    assert!(body["error"]["message"].is_string(), "{body}");
    code.to_string()
}

pub fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}
