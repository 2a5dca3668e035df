//! `engine bench serve`: requests/s and latency percentiles of `POST /search` over loopback at
//! several client concurrencies, beside the same figures for the query encoder called directly,
//! so the serving overhead (HTTP, JSON, queueing, ANN search) and the gain from dynamic batching
//! are both visible. Bounded in requests and time per level.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ServeOptions;
use crate::config::Config;
use crate::encoder::{Embed, Encoder, TextKind};
use crate::error::{Error, Result};
use crate::index::AnnParams;
use crate::pipeline::{self, Document, IndexOptions, Silent};
use crate::store::{Database, DbOptions};

#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    pub config: Config,
    /// Synthetic documents indexed before the run.
    pub documents: usize,
    /// Client concurrencies measured.
    pub concurrency: Vec<usize>,
    /// Requests per level (at most).
    pub requests: usize,
    /// Time per level (at most).
    pub max_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// "http /search" or "encoder only".
    pub what: String,
    pub concurrency: usize,
    pub requests: usize,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

const WORDS: &[&str] = &[
    "search",
    "engine",
    "vector",
    "dense",
    "retrieval",
    "language",
    "model",
    "passage",
    "query",
    "index",
    "graph",
    "neighbour",
    "memory",
    "rust",
    "server",
    "batch",
    "latency",
    "throughput",
    "document",
    "token",
    "embedding",
    "semantic",
    "lexical",
    "ranking",
    "score",
    "network",
    "river",
    "mountain",
    "history",
    "science",
    "music",
    "garden",
    "city",
    "ocean",
    "winter",
];

/// Deterministic pseudo-text of `n` words.
fn words(seed: usize, n: usize) -> String {
    (0..n)
        .map(|i| WORDS[(seed * 7919 + i * 104_729 + i * i * 31) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summarize(what: &str, concurrency: usize, mut lat_ms: Vec<f64>, wall: Duration) -> LevelReport {
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    LevelReport {
        what: what.into(),
        concurrency,
        requests: lat_ms.len(),
        requests_per_s: lat_ms.len() as f64 / wall.as_secs_f64(),
        p50_ms: percentile(&lat_ms, 0.5),
        p99_ms: percentile(&lat_ms, 0.99),
    }
}

/// Runs the whole benchmark: indexes a synthetic corpus into a temporary database, serves it on
/// an ephemeral loopback port and measures. `log` receives progress lines.
pub fn run(opts: &ServeBenchOptions, log: impl Fn(&str)) -> Result<Vec<LevelReport>> {
    let tmp = std::env::temp_dir().join(format!("engine-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = run_in(&tmp, opts, &log);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(
    dir: &std::path::Path,
    opts: &ServeBenchOptions,
    log: &dyn Fn(&str),
) -> Result<Vec<LevelReport>> {
    let config = &opts.config;
    log(&format!("loading {}", config.model.path.display()));
    let encoder = Encoder::from_config(config)?;
    let docs: Vec<Document> = (0..opts.documents)
        .map(|i| Document {
            id: format!("doc/{i}"),
            title: words(i + 1_000_000, 3),
            text: words(i, 40),
            metadata: serde_json::Value::Null,
        })
        .collect();
    let db_opts = DbOptions {
        backend: config.index.backend.compiled_in()?,
        params: AnnParams::from_config(&config.index),
        chunk_tokens: config.index.chunk_tokens,
        chunk_overlap: config.index.chunk_overlap,
    };
    let db_dir = dir.join("db");
    {
        let db = Database::create_or_open(&db_dir, &encoder.fingerprint(), &db_opts)?;
        log(&format!("indexing {} synthetic documents", docs.len()));
        pipeline::index_documents(
            &db,
            &encoder,
            docs,
            &IndexOptions::from_config(config),
            &Silent,
        )?;
    }
    let queries: Vec<String> = (0..64).map(|i| words(i + 500, 8 + i % 8)).collect();
    let mut reports = Vec::new();

    // The query encoder alone: one query per call, `c` threads calling at once.
    let encoder = Arc::new(encoder);
    for &c in &opts.concurrency {
        reports.push(encoder_level(&encoder, &queries, c, opts)?);
        log(&format!("encoder only, {c} concurrent: done"));
    }
    drop(encoder);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_opts = ServeOptions {
            config: config.clone(),
            db: db_dir.clone(),
            api_key: None,
            read_api_key: None,
        };
        let server = tokio::spawn(super::serve(listener, serve_opts, async {
            let _ = stopped.await;
        }));
        let t = Instant::now();
        loop {
            if let Ok((200, _)) = get(&addr, "/readyz").await {
                break;
            }
            if server.is_finished() || t.elapsed() > Duration::from_secs(600) {
                return Err(Error::InvalidInput("bench server did not become ready".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log(&format!("server ready on {addr}"));
        for &c in &opts.concurrency {
            reports.push(http_level(&addr, &queries, c, opts).await?);
            log(&format!("http /search, {c} concurrent: done"));
        }
        let _ = stop.send(());
        server.await.map_err(|e| Error::InvalidInput(format!("server task: {e}")))??;
        Ok::<_, Error>(())
    })?;
    // Interleave for reading: encoder and HTTP rows of one concurrency together.
    reports.sort_by_key(|r| (r.concurrency, r.what.clone()));
    Ok(reports)
}

fn encoder_level(
    encoder: &Arc<Encoder>,
    queries: &[String],
    c: usize,
    opts: &ServeBenchOptions,
) -> Result<LevelReport> {
    // Warm-up.
    encoder.embed(&[queries[0].as_str()], TextKind::Query)?;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(opts.max_seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..c)
        .map(|_| {
            let (encoder, next, queries) = (encoder.clone(), next.clone(), queries.to_vec());
            let total = opts.requests;
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        return Ok(lat);
                    }
                    let t = Instant::now();
                    let p = encoder.prepare(&queries[i % queries.len()], TextKind::Query)?;
                    encoder.embed_batch(&[&p])?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| Error::InvalidInput("bench thread panicked".into()))??);
    }
    Ok(summarize("encoder only", c, lat, started.elapsed()))
}

async fn http_level(
    addr: &str,
    queries: &[String],
    c: usize,
    opts: &ServeBenchOptions,
) -> Result<LevelReport> {
    let body = |q: &str| serde_json::json!({ "query": q, "k": 10 }).to_string();
    // Warm-up.
    let mut conn = Conn::connect(addr).await?;
    conn.post("/search", &body(&queries[0])).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(opts.max_seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (next, queries, addr) = (next.clone(), queries.to_vec(), addr.to_string());
            let total = opts.requests;
            tokio::spawn(async move {
                let mut conn = Conn::connect(&addr).await?;
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        return Ok::<_, Error>(lat);
                    }
                    let t = Instant::now();
                    let (status, resp) =
                        conn.post("/search", &body(&queries[i % queries.len()])).await?;
                    if status != 200 {
                        return Err(Error::InvalidInput(format!(
                            "search answered {status}: {resp}"
                        )));
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| Error::InvalidInput(format!("client task: {e}")))??);
    }
    Ok(summarize("http /search", c, lat, started.elapsed()))
}

/// A minimal keep-alive HTTP/1.1 client (the server's JSON replies carry Content-Length), so
/// the library needs no HTTP client dependency for this benchmark.
struct Conn {
    sock: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Self> {
        let sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        Ok(Conn { sock, host: addr.to_string(), buf: Vec::new() })
    }

    async fn post(&mut self, path: &str, body: &str) -> Result<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.sock.write_all(req.as_bytes()).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<(u16, String)> {
        let bad = |m: &str| Error::Io(std::io::Error::other(format!("bad HTTP response: {m}")));
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 =
            head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| bad("no content-length"))?;
        let start = head_end + 4;
        while self.buf.len() < start + len {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[start..start + len]).to_string();
        self.buf.drain(..start + len);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::other("connection closed")));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut conn = Conn::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.sock.write_all(req.as_bytes()).await?;
    conn.read_response().await
}

/// A fixed-width table of the reports.
pub fn format_table(reports: &[LevelReport]) -> String {
    let mut out = format!(
        "{:<14} {:>11} {:>9} {:>10} {:>9} {:>9}\n",
        "what", "concurrency", "requests", "req/s", "p50 ms", "p99 ms"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<14} {:>11} {:>9} {:>10.1} {:>9.1} {:>9.1}\n",
            r.what, r.concurrency, r.requests, r.requests_per_s, r.p50_ms, r.p99_ms
        ));
    }
    out
}
