//! The ecosystem's interfaces on a real server (issue 16): OpenAI's `/v1/embeddings` and
//! `/v1/models`, text-embeddings-inference's `/embed` body, `/info` and `/health`, the admin and
//! read API keys on every route, and the official `openai` Python client against the server.

#[path = "common/server.rs"]
mod fixture;

use std::path::Path;

use fixture::*;
use serde_json::{json, Value};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(floats).collect()
}

fn openai_vectors(r: &Value) -> Vec<Vec<f32>> {
    r["data"].as_array().unwrap().iter().map(|d| floats(&d["embedding"])).collect()
}

fn close(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-5))
}

/// Decodes standard padded base64 (test-side, independent of the server's encoder).
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) as u32 })
            .fold(0u32, |acc, x| (acc << 6) | x);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

/// The Llama2Vec templates (the fixture's default is none), so query and passage vectors
/// differ.
fn llama2vec(c: &mut engine::config::Config) {
    c.encoder.template = engine::encoder::Template::Llama2Vec;
    c.encoder.pooling = engine::encoder::Pooling::Llama2Vec;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_and_tei_shapes_give_the_engine_shapes_vectors() {
    let fx = fixture_with(llama2vec);
    let s = TestServer::start(
        &fx,
        |c| {
            llama2vec(c);
            c.encoder.max_passage_tokens = 64;
            c.server.max_query_tokens = 48;
        },
        None,
    )
    .await;
    let texts = ["hello world", "Dense retrieval ranks passages.", "other"];
    let (st, own) = s.post("/embed", &json!({ "texts": texts, "kind": "passage" })).await;
    assert_eq!(st, 200, "{own}");
    let passages = vectors(&own["embeddings"]);
    let (_, own_q) = s.post("/embed", &json!({ "texts": texts })).await;
    let queries = vectors(&own_q["embeddings"]);
    assert!(!close(&passages, &queries), "the two templates must differ for this test");

    // /v1/embeddings: list input, float, defaults to passages; the OpenAI response shape.
    let (st, r) = s
        .post(
            "/v1/embeddings",
            &json!({ "model": "tiny-llama", "input": texts, "encoding_format": "float" }),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], "tiny-llama");
    for (i, d) in r["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
    }
    assert!(close(&openai_vectors(&r), &passages), "{r}");
    // Byte-level tiny tokenizer: the texts' bytes plus each text's prompt template.
    let tokens = r["usage"]["prompt_tokens"].as_u64().unwrap();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    assert!(tokens > (bytes + 8 * texts.len()) as u64, "{r}");
    assert_eq!(r["usage"]["total_tokens"], r["usage"]["prompt_tokens"]);
    // No model, no encoding_format: float; a string input; input_type query.
    let (st, r) = s.post("/v1/embeddings", &json!({ "input": texts[1] })).await;
    assert_eq!(st, 200, "{r}");
    assert!(close(&openai_vectors(&r), &passages[1..2]));
    let (_, r) = s
        .post("/v1/embeddings", &json!({ "input": texts, "input_type": "query", "user": "u1" }))
        .await;
    assert!(close(&openai_vectors(&r), &queries), "{r}");
    // base64: little-endian f32 bytes.
    let (st, r) = s
        .post(
            "/v1/embeddings",
            &json!({ "input": texts, "encoding_format": "base64", "dimensions": 64 }),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let decoded: Vec<Vec<f32>> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            unbase64(d["embedding"].as_str().unwrap())
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect();
    assert_eq!(decoded[0].len(), 64);
    assert!(close(&decoded, &passages));

    // Refusals: OpenAI's error shape (message, type, code), a 4xx each.
    let refused = [
        (json!({ "input": "x", "model": "text-embedding-3-small" }), 404, "model_not_found"),
        (json!({ "input": "x", "dimensions": 32 }), 422, "invalid_request"),
        (json!({ "input": "x", "encoding_format": "int8" }), 422, "invalid_request"),
        (json!({ "input": [1, 2, 3] }), 422, "invalid_request"),
        (json!({ "input": [[1, 2], [3]] }), 422, "invalid_request"),
        (json!({ "input": "x", "input_type": "poem" }), 422, "invalid_request"),
        (json!({ "input": [] }), 422, "invalid_request"),
        (json!({ "input": ["ok", " "] }), 422, "invalid_request"),
        (json!({ "input": 5 }), 422, "invalid_request"),
        (json!({ "input": ["ok", null] }), 422, "invalid_request"),
        (json!({ "texts": ["x"] }), 422, "invalid_request"),
        (json!({ "input": "x", "dimensions": -1 }), 422, "invalid_request"),
        (json!({ "input": vec!["t"; 65] }), 422, "too_many_texts"),
        // Over the passage limit of 64 tokens, and a query over server.max_query_tokens.
        (json!({ "input": "p".repeat(70) }), 422, "text_too_long"),
        (json!({ "input": "q".repeat(60), "input_type": "query" }), 422, "query_too_long"),
        (json!([1]), 422, "invalid_request"),
    ];
    for (body, status, code) in refused {
        let (st, b) = s.post("/v1/embeddings", &body).await;
        assert_eq!(error_code(st, &b, status), code, "{body}");
        assert_eq!(b["error"]["type"], "invalid_request_error", "{body}: {b}");
    }
    let (st, b) = s.post("/v1/embeddings", &json!({ "input": "x", "model": "nope" })).await;
    assert_eq!(st, 404);
    assert!(b["error"]["message"].as_str().unwrap().contains("tiny-llama"), "{b}");
    // Malformed JSON is the usual 400.
    let r = s
        .client
        .post(s.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body("{\"input\": ")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 400), "invalid_json");

    // TEI's /embed: a bare [[f32]], query by default, prompt_name passage/document.
    let (st, r) = s.post("/embed", &json!({ "inputs": texts })).await;
    assert_eq!(st, 200, "{r}");
    assert!(close(&vectors(&r), &queries), "{r}");
    let (_, r) = s.post("/embed", &json!({ "inputs": texts[0], "normalize": true })).await;
    assert!(close(&vectors(&r), &queries[..1]), "{r}");
    for name in ["passage", "document"] {
        let (st, r) = s.post("/embed", &json!({ "inputs": texts, "prompt_name": name })).await;
        assert_eq!(st, 200, "{r}");
        assert!(close(&vectors(&r), &passages), "{name}: {r}");
    }
    let (_, r) = s.post("/embed", &json!({ "inputs": texts, "prompt_name": "query" })).await;
    assert!(close(&vectors(&r), &queries));
    // truncate: over the limit refused by default, cut at the end with truncate.
    let long = "abcdefghij".repeat(7);
    let (st, b) = s.post("/embed", &json!({ "inputs": long, "prompt_name": "passage" })).await;
    assert_eq!(error_code(st, &b, 422), "text_too_long");
    assert!(b["error"]["message"].as_str().unwrap().contains("70 tokens"), "{b}");
    let (st, cut) = s
        .post(
            "/embed",
            &json!({ "inputs": [long], "prompt_name": "passage", "truncate": true, "truncation_direction": "Right" }),
        )
        .await;
    assert_eq!(st, 200, "{cut}");
    let (_, head) = s.post("/embed", &json!({ "texts": [&long[..64]], "kind": "passage" })).await;
    assert!(close(&vectors(&cut), &vectors(&head["embeddings"])), "truncated to the first 64");
    // A query is cut to server.max_query_tokens (48 here), below the encoder's own limit.
    let (st, b) = s.post("/embed", &json!({ "inputs": "q".repeat(60) })).await;
    assert_eq!(error_code(st, &b, 422), "query_too_long");
    let (st, cut) = s.post("/embed", &json!({ "inputs": "q".repeat(60), "truncate": true })).await;
    assert_eq!(st, 200, "{cut}");
    let (_, head) = s.post("/embed", &json!({ "texts": ["q".repeat(48)] })).await;
    assert!(close(&vectors(&cut), &vectors(&head["embeddings"])), "query cut to 48 tokens");
    // Cutting never splits a character: 30 three-byte characters are 90 byte-level tokens.
    let (st, r) = s.post("/embed", &json!({ "inputs": "€".repeat(30), "truncate": true })).await;
    assert_eq!(st, 200, "{r}");
    let tei_refused = [
        (json!({ "inputs": "x", "normalize": false }), 422, "invalid_request"),
        (json!({ "inputs": "x", "prompt_name": "title" }), 422, "invalid_request"),
        (json!({ "inputs": "x", "truncation_direction": "Left" }), 422, "invalid_request"),
        (json!({ "inputs": [[1, 2]] }), 422, "invalid_request"),
        (json!({ "inputs": [] }), 422, "invalid_request"),
        (json!({ "inputs": "" }), 422, "invalid_request"),
        (json!({ "inputs": { "a": 1 } }), 422, "invalid_request"),
        (json!({ "inputs": "x", "texts": ["x"] }), 422, "invalid_request"),
        (json!({ "inputs": "x", "truncate": "yes" }), 422, "invalid_request"),
        (json!({ "inputs": vec!["t"; 65] }), 422, "too_many_texts"),
        (json!("just a string"), 422, "invalid_request"),
    ];
    for (body, status, code) in tei_refused {
        let (st, b) = s.post("/embed", &body).await;
        assert_eq!(error_code(st, &b, status), code, "{body}");
    }

    // /info, /health, /v1/models.
    let (st, info) = s.get("/info").await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["model_id"], "tiny-llama");
    assert_eq!(info["dim"], 64);
    assert_eq!(info["max_input_length"], 64);
    assert_eq!(info["max_client_batch_size"], 64);
    assert_eq!(info["model_type"]["embedding"]["pooling"], "llama2vec");
    assert_eq!(s.get("/health").await, (200, json!({ "status": "ok" })));
    let (st, m) = s.get("/v1/models").await;
    assert_eq!(st, 200);
    assert_eq!(m["data"][0]["id"], "tiny-llama");
    assert_eq!(m["object"], "list");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_request_token_budget_bounds_every_embedding_shape() {
    let fx = fixture();
    let s = TestServer::start(&fx, |c| c.server.max_request_tokens = 100, None).await;
    let texts = vec!["x".repeat(40); 3];
    for (path, body) in [
        ("/v1/embeddings", json!({ "input": texts })),
        ("/embed", json!({ "inputs": texts })),
        ("/embed", json!({ "texts": texts, "kind": "passage" })),
    ] {
        let (st, b) = s.post(path, &body).await;
        assert_eq!(error_code(st, &b, 422), "too_many_tokens", "{path} {body}");
    }
    assert_eq!(s.post("/v1/embeddings", &json!({ "input": texts[..2] })).await.0, 200);
    s.stop().await.unwrap();
}

/// Sends a request with an optional `(header, value)` credential.
async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
    cred: &Option<(&str, String)>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.client.request(m, s.url(path));
    if let Some((h, v)) = cred {
        req = req.header(*h, v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json::<Value>().await.unwrap_or(Value::Null))
}

/// Who may call what: every route against every kind of credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_key_and_route_combination_gives_the_documented_status() {
    const ADMIN: &str = "admin-key-1";
    const READ: &str = "read-key-2";
    let fx = fixture();
    let s = TestServer::start_with_keys(&fx, |_| {}, Some(ADMIN), Some(READ)).await;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Cred {
        None,
        Wrong,
        NoScheme,
        Read,
        Admin,
    }
    // Every credential, in every accepted header.
    let creds: Vec<(Cred, Option<(&str, String)>)> = vec![
        (Cred::None, None),
        (Cred::Wrong, Some(("authorization", "Bearer nope".into()))),
        (Cred::Wrong, Some(("api-key", format!("{ADMIN}x")))),
        (Cred::Wrong, Some(("x-api-key", READ[..READ.len() - 1].to_string()))),
        (Cred::NoScheme, Some(("authorization", ADMIN.into()))),
        (Cred::Read, Some(("authorization", format!("Bearer {READ}")))),
        (Cred::Read, Some(("api-key", READ.into()))),
        (Cred::Read, Some(("x-api-key", READ.into()))),
        (Cred::Admin, Some(("authorization", format!("bearer {ADMIN}")))),
        (Cred::Admin, Some(("api-key", ADMIN.into()))),
        (Cred::Admin, Some(("x-api-key", ADMIN.into()))),
    ];
    let q = query_for(&corpus()[0]);
    // (method, path, body, what it needs); writes are checked below.
    #[derive(Clone, Copy, PartialEq)]
    enum Needs {
        Open,
        AnyKey,
    }
    let reads_and_embeds: Vec<(&str, String, Option<Value>, Needs)> = vec![
        ("POST", "/search".into(), Some(json!({ "query": q, "k": 2 })), Needs::AnyKey),
        ("GET", "/search?q=rust&k=2".into(), None, Needs::AnyKey),
        ("GET", "/documents/wiki%2FMozilla".into(), None, Needs::AnyKey),
        ("POST", "/embed".into(), Some(json!({ "texts": ["x"] })), Needs::AnyKey),
        ("POST", "/embed".into(), Some(json!({ "inputs": "x" })), Needs::AnyKey),
        ("POST", "/v1/embeddings".into(), Some(json!({ "input": "x" })), Needs::AnyKey),
        ("GET", "/healthz".into(), None, Needs::Open),
        ("GET", "/readyz".into(), None, Needs::Open),
        ("GET", "/health".into(), None, Needs::Open),
        ("GET", "/info".into(), None, Needs::Open),
        ("GET", "/status".into(), None, Needs::Open),
        ("GET", "/metrics".into(), None, Needs::Open),
        ("GET", "/openapi.json".into(), None, Needs::Open),
        ("GET", "/v1/models".into(), None, Needs::Open),
    ];
    for (method, path, body, needs) in &reads_and_embeds {
        for (cred, header) in &creds {
            let (st, b) = call(&s, method, path, body.clone(), header).await;
            let want = match (needs, cred) {
                (Needs::Open, _) | (_, Cred::Read | Cred::Admin) => 200,
                _ => 401,
            };
            assert_eq!(st, want, "{method} {path} with {cred:?} {header:?}: {b}");
            if st == 401 {
                assert_eq!(b["error"]["code"], "unauthorized");
                assert_eq!(b["error"]["type"], "authentication_error");
            }
        }
    }
    // Writes: only the admin key; the read key is 403; nothing lands without the admin key.
    let admin = Some(("authorization", format!("Bearer {ADMIN}")));
    for (i, (cred, header)) in creds.iter().enumerate() {
        let id = format!("keyed/{i}");
        let doc = json!({ "documents": [{ "id": id, "text": format!("written with {cred:?}") }] });
        let (st, b) = call(&s, "POST", "/documents", Some(doc), header).await;
        let want = match cred {
            Cred::Admin => 200,
            Cred::Read => 403,
            _ => 401,
        };
        assert_eq!(st, want, "POST /documents with {cred:?} {header:?}: {b}");
        if st == 403 {
            assert_eq!(b["error"]["code"], "forbidden");
            assert_eq!(b["error"]["type"], "permission_error");
        }
        let (st, _) = call(&s, "GET", &format!("/documents/keyed%2F{i}"), None, &admin).await;
        assert_eq!(st, if *cred == Cred::Admin { 200 } else { 404 }, "{cred:?} {header:?}");
    }
    for (cred, header) in creds.iter().filter(|(c, _)| *c != Cred::Admin) {
        let (st, b) = call(&s, "DELETE", "/documents/wiki%2FWebAssembly", None, header).await;
        assert_eq!(st, if *cred == Cred::Read { 403 } else { 401 }, "{cred:?}: {b}");
        assert_eq!(call(&s, "GET", "/documents/wiki%2FWebAssembly", None, &admin).await.0, 200);
    }
    assert_eq!(call(&s, "DELETE", "/documents/wiki%2FWebAssembly", None, &admin).await.0, 200);
    assert_eq!(call(&s, "GET", "/documents/wiki%2FWebAssembly", None, &admin).await.0, 404);
    // The key is checked before the body: a keyless malformed write is 401, not 400.
    let r = s
        .client
        .post(s.url("/documents"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await.unwrap();

    // Admin key alone (as before the read key): reads open, embedding and writes keyed.
    let s = TestServer::start(&fx, |_| {}, Some(ADMIN)).await;
    let read = Some(("authorization", format!("Bearer {READ}")));
    for (method, path, body, needs) in &reads_and_embeds {
        let body_for = || body.clone();
        let (st, b) = call(&s, method, path, body_for(), &None).await;
        let embeds = path.contains("embed");
        let want = if *needs == Needs::AnyKey && embeds { 401 } else { 200 };
        assert_eq!(st, want, "{method} {path} without a key: {b}");
        if embeds {
            assert_eq!(call(&s, method, path, body_for(), &admin).await.0, 200, "{path}");
            // The read key of the other server means nothing here.
            assert_eq!(call(&s, method, path, body_for(), &read).await.0, 401, "{path}");
        }
    }
    let doc = json!({ "documents": [{ "id": "a/1", "text": "admin only" }] });
    assert_eq!(call(&s, "POST", "/documents", Some(doc.clone()), &None).await.0, 401);
    assert_eq!(call(&s, "POST", "/documents", Some(doc), &admin).await.0, 200);
    s.stop().await.unwrap();

    // A read key without an admin key, or equal to it, is refused at start.
    for (admin, read) in [(None, Some("r")), (Some("same"), Some("same"))] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = engine::server::ServeOptions {
            config: base_config(&fx.model),
            db: fx.db.clone(),
            api_key: admin.map(str::to_string),
            read_api_key: read.map(str::to_string),
        };
        let err = engine::server::serve(listener, opts, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, engine::Error::Config(_)), "{err}");
    }
}

/// `scripts/openai_client_check.py`: the official `openai` client from PyPI against this server,
/// and its vectors against `engine embed`'s. Skips, saying why, where the client is not
/// installed (scripts/install-deps.sh installs it); `ENGINE_REQUIRE_OPENAI=1` makes that a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_openai_client_gets_engine_embed_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let has_client = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        let why = "python3 cannot import openai (pip install openai; scripts/install-deps.sh does)";
        assert!(std::env::var("ENGINE_REQUIRE_OPENAI").as_deref() != Ok("1"), "{why}");
        eprintln!("SKIPPED the_official_openai_client_gets_engine_embed_vectors: {why}");
        return;
    }
    const READ: &str = "reader";
    let fx = fixture_with(llama2vec);
    let s = TestServer::start_with_keys(&fx, llama2vec, Some("admin"), Some(READ)).await;
    let texts = ["Rust is a programming language.", "Dense retrieval uses vectors.", "hello"];
    let out = tokio::process::Command::new("python3")
        .arg(root.join("scripts/openai_client_check.py"))
        .args([&s.base, "--key", READ])
        .args(texts)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("openai_client_check.py timed out")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai_client_check.py failed:\n{stderr}");
    eprintln!("{}", stderr.trim());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "tiny-llama");
    s.stop().await.unwrap();

    // `engine embed` with the server's settings prints the same vectors (passage, its default).
    let mut config = base_config(&fx.model);
    llama2vec(&mut config);
    let cfg_path = fx.dir.path().join("serve.toml");
    std::fs::write(&cfg_path, toml::to_string(&config).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_engine"));
    cmd.arg("--config").arg(&cfg_path).args(["embed", "--kind", "passage"]).args(texts);
    let cli = cmd.output().unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli_vectors: Vec<Vec<f32>> = String::from_utf8(cli.stdout)
        .unwrap()
        .lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).unwrap()["embedding"]))
        .collect();
    assert_eq!(cli_vectors.len(), texts.len());
    assert!(close(&vectors(&report["openai"]), &cli_vectors), "openai client vs engine embed");
    assert!(close(&vectors(&report["tei"]), &cli_vectors), "TEI shape vs engine embed");
    let mut q = std::process::Command::new(env!("CARGO_BIN_EXE_engine"));
    q.arg("--config").arg(&cfg_path).args(["embed", "--kind", "query"]).args(texts);
    let cli_q = q.output().unwrap();
    let cli_q: Vec<Vec<f32>> = String::from_utf8(cli_q.stdout)
        .unwrap()
        .lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).unwrap()["embedding"]))
        .collect();
    assert!(close(&vectors(&report["openai_query"]), &cli_q), "input_type=query vs engine embed");
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// `server.cors_origins`: preflights answered for listed origins, every response (errors
/// included) carries the headers, other origins and the default get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_allows_the_listed_origins_only() {
    let fx = fixture();
    let s = TestServer::start(
        &fx,
        |c| c.server.cors_origins = vec!["https://app.example/".into()],
        Some("adm"),
    )
    .await;
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/v1/embeddings"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some("https://app.example"));
    let allowed = header(&r, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("api-key"), "{allowed}");
    assert!(header(&r, "access-control-allow-methods").unwrap().contains("POST"));
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // A keyed request, a 401 and a 404 from an allowed origin carry the headers.
    for (path, key, status) in
        [("/v1/embeddings", Some("adm"), 200), ("/v1/embeddings", None, 401), ("/nope", None, 404)]
    {
        let mut req = s
            .client
            .post(s.url(path))
            .header("origin", "https://app.example")
            .json(&json!({ "input": "x" }));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some("https://app.example"),
            "{path} {status}"
        );
        assert!(header(&r, "access-control-expose-headers").unwrap().contains("retry-after"));
    }
    s.stop().await.unwrap();
    // Default: no CORS headers at all.
    let s = TestServer::start(&fx, |_| {}, None).await;
    let r = s.client.get(s.url("/healthz")).header("origin", "https://app.example").send();
    assert_eq!(header(&r.await.unwrap(), "access-control-allow-origin"), None);
    s.stop().await.unwrap();
    // A malformed origin stops the server at start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = base_config(&fx.model);
    config.server.cors_origins = vec!["https://app.example/path".into()];
    let opts = engine::server::ServeOptions {
        config,
        db: fx.db.clone(),
        api_key: None,
        read_api_key: None,
    };
    let err = engine::server::serve(listener, opts, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("CORS origin"), "{err}");
}

/// The flags through the binary: `--read-api-key` from `ENGINE_READ_API_KEY`, `--api-key`,
/// `--cors-origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_serve_takes_the_key_and_cors_flags() {
    use tokio::io::AsyncBufReadExt;
    let fx = fixture();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["serve", "--addr", "127.0.0.1:0", "--api-key", "adm"])
        .args(["--cors-origin", "http://localhost:3000", "--db"])
        .arg(&fx.db)
        .env("ENGINE_READ_API_KEY", "rd")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(rest) = l.split("engine serve: ready at ").nth(1) {
                return rest.split('/').take(3).collect::<Vec<_>>().join("/");
            }
        }
        panic!("engine serve exited before it was ready");
    })
    .await
    .expect("engine serve not ready after 120 s");
    let c = reqwest::Client::new();
    let search = format!("{base}/search?q=rust&k=2");
    assert_eq!(c.get(&search).send().await.unwrap().status(), 401, "the read key is set");
    let r = c.get(&search).bearer_auth("rd").header("origin", "http://localhost:3000");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some("http://localhost:3000"));
    let doc = json!({ "documents": [{ "id": "f/1", "text": "via the binary" }] });
    let post = |key: &'static str| c.post(format!("{base}/documents")).bearer_auth(key).json(&doc);
    assert_eq!(post("rd").send().await.unwrap().status(), 403);
    assert_eq!(post("adm").send().await.unwrap().status(), 200);
    child.kill().await.unwrap();
}
