//! Arbitrary requests against a running `engine serve` (the release binary, over TCP, on the
//! tiny random model): every answer is a well-formed HTTP response below 500, and the server
//! stays up. The input picks the method, route and content type and supplies the query string
//! and body, so most inputs get past HTTP framing to the route handlers.
//!
//! `ENGINE_BIN` names the server binary (default: the release build of the parent crate).
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const PATHS: &[&str] = &[
    "/search",
    "/documents",
    "/documents/doc-1",
    "/documents/",
    "/embed",
    "/v1/embeddings",
    "/status",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/info",
    "/health",
    "/",
];
const CONTENT_TYPES: &[Option<&str>] =
    &[Some("application/json"), Some("text/plain"), None, Some("application/json; charset=utf-8")];

struct Server {
    _child: Child,
    addr: String,
}

fn engine_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENGINE_BIN") {
        return bin.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("release/engine")
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let model = engine::encoder::testing::write_tiny_model(&dir.join("tiny"), 5).unwrap();
        let cfg = dir.join("fuzz.toml");
        std::fs::write(
            &cfg,
            format!(
                "[model]\npath = {model:?}\n[encoder]\ntemplate = \"none\"\npooling = \"mean\"\n\
                 [index]\nbackend = \"hnsw\"\n[server]\nmax_queue_seconds = 30.0\n"
            ),
        )
        .unwrap();
        let corpus = dir.join("corpus.jsonl");
        std::fs::write(
            &corpus,
            "{\"_id\":\"doc-1\",\"title\":\"Kiln\",\"text\":\"A kiln fires clay.\"}\n\
             {\"_id\":\"doc-2\",\"title\":\"Tides\",\"text\":\"The moon pulls the sea.\"}\n",
        )
        .unwrap();
        let bin = engine_bin();
        let db = dir.join("db");
        let status = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .arg("index")
            .arg(&corpus)
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{}: {e} (set ENGINE_BIN)", bin.display()));
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .args(["serve", "--addr", &addr, "--db"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while status_of(&addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            != Some(200)
        {
            assert!(t.elapsed() < Duration::from_secs(60), "server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { _child: child, addr }
    })
}

/// Sends one raw request and returns the response's status code (None: no connection).
fn status_of(addr: &str, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).ok()?;
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    let code = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some(code)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let server = server();
    let method = METHODS[data[0] as usize % METHODS.len()];
    let path = PATHS[data[1] as usize % PATHS.len()];
    let content_type = CONTENT_TYPES[data[2] as usize % CONTENT_TYPES.len()];
    let rest = &data[3..];
    let (query, body) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    // Query bytes percent-encoded, so the request line stays valid HTTP.
    let query: String = query
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'=' | b'&' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        request.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let code = status_of(&server.addr, &bytes);
    let code = code.unwrap_or_else(|| panic!("no HTTP response to {method} {target}: server down?"));
    assert!(code < 500, "{method} {target} ({} body bytes) answered {code}", body.len());
});
