//! `engine serve` end to end: a real server on an ephemeral loopback port, with the tiny random
//! test model and a small corpus indexed by the same encoder (the fixture in
//! tests/common/server.rs).

#[path = "common/server.rs"]
mod fixture;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::encoder::{Embed, Encoder};
use engine::server::{self, ServeOptions};
use engine::store::Database;
use fixture::*;
use serde_json::{json, Value};

/// Status, health and the default mode of an untrained encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_and_health_say_what_is_served_and_an_untrained_encoder_defaults_to_bm25() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let docs = corpus();

    assert_eq!(s.get("/healthz").await, (200, json!({ "status": "ok" })));
    let (st, status) = s.get("/status").await;
    assert_eq!(st, 200);
    assert_eq!(status["documents"], json!(docs.len()));
    assert!(status["passages"].as_u64().unwrap() >= docs.len() as u64);
    assert_eq!(status["encoder"], "tiny-llama");
    assert_eq!(status["backend"], "flat");
    assert_eq!(status["dim"], 64);
    assert_eq!(status["modes"], json!(["dense", "bm25", "hybrid"]));
    // The tiny model was never fine-tuned: the server says so and defaults to BM25.
    assert_eq!(status["encoder_trained"], false);
    assert_eq!(status["default_mode"], "bm25");
    let (st, r) = s.post("/search", &json!({ "query": query_for(&docs[0]), "k": 3 })).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["mode"], "bm25", "{r}");

    s.stop().await.unwrap();
}

/// Search in each mode, the GET form, paging and with_text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_each_document_in_every_mode_and_pages_by_offset() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let docs = corpus();

    // Every document is found first by its own text, under its own title.
    for d in &docs {
        let (st, r) =
            s.post("/search", &json!({ "query": query_for(d), "k": 3, "mode": "dense" })).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["hits"][0]["id"], json!(d.id), "{r}");
        assert_eq!(r["hits"][0]["title"], json!(d.title));
        assert!(r["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains(d.text.split(' ').next().unwrap()));
        assert!(r["hits"][0].get("text").is_none());
        assert!(r["took_ms"].is_f64(), "{r}");
        assert_eq!(r["mode"], "dense");
        assert_eq!(r["offset"], 0);
        assert_eq!(r["encoder"], "tiny-llama");
        assert_eq!(r["hits"].as_array().unwrap().len(), 3);
    }

    // BM25 and hybrid: words of one document find it first (the tiny model is not semantic,
    // BM25 is); hybrid keeps a document that is first in both lists first.
    let (st, r) = s
        .post("/search", &json!({ "query": "bag-of-words ranking function", "mode": "bm25" }))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["mode"], "bm25");
    assert_eq!(r["hits"][0]["id"], "wiki/Okapi_BM25", "{r}");
    assert_eq!(r["hits"][0]["title"], "Okapi BM25");
    assert!(r["hits"][0]["snippet"].as_str().unwrap().starts_with("BM25 is"));
    let (st, page2) = s.get("/search?q=language&mode=bm25&k=1&offset=1").await;
    assert_eq!(st, 200, "{page2}");
    let (_, both) = s.get("/search?q=language&mode=bm25&k=2").await;
    assert_eq!(page2["hits"][0]["id"], both["hits"][1]["id"]);
    let d = &docs[3];
    let (st, r) =
        s.post("/search", &json!({ "query": query_for(d), "mode": "hybrid", "k": 5 })).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["mode"], "hybrid");
    assert_eq!(r["hits"][0]["id"], json!(d.id), "{r}");

    // GET form, paging by offset, with_text.
    let q = query_for(&docs[0]);
    let (st, all) = s.post("/search", &json!({ "query": q, "k": 10, "mode": "dense" })).await;
    assert_eq!(st, 200);
    let all_ids = hit_ids(&all);
    assert_eq!(all_ids.len(), 10);
    let qs = format!("/search?q={}&k=4&offset=3&mode=dense", enc(&q));
    let (st, page) = s.get(&qs).await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(hit_ids(&page), all_ids[3..7].to_vec());
    assert_eq!(page["offset"], 3);
    let (_, full) =
        s.post("/search", &json!({ "query": q, "k": 1, "with_text": true, "mode": "dense" })).await;
    assert_eq!(full["hits"][0]["text"], json!(docs[0].text));
    let (st, r) = s.get(&format!("/search?q={}&mode=dense", enc(&q))).await;
    assert_eq!(st, 200);
    assert_eq!(r["hits"].as_array().unwrap().len(), 10, "default k");

    s.stop().await.unwrap();
}

/// `vector` searches with a given query embedding: the one /embed returns for a query finds what
/// the query text finds, at any scale; misuse is a 422 naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_by_a_given_vector_matches_search_by_its_text() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let docs = corpus();

    for d in &docs[..4] {
        let q = query_for(d);
        let (st, by_text) =
            s.post("/search", &json!({ "query": q, "k": 5, "mode": "dense" })).await;
        assert_eq!(st, 200, "{by_text}");
        let (st, e) = s.post("/embed", &json!({ "texts": [q], "kind": "query" })).await;
        assert_eq!(st, 200, "{e}");
        let v: Vec<f64> = serde_json::from_value(e["embeddings"][0].clone()).unwrap();
        let scaled: Vec<f64> = v.iter().map(|x| x * 3.0).collect();
        for vector in [&v, &scaled] {
            let (st, by_vec) =
                s.post("/search", &json!({ "vector": vector, "k": 5, "mode": "dense" })).await;
            assert_eq!(st, 200, "{by_vec}");
            assert_eq!(hit_ids(&by_vec), hit_ids(&by_text), "{d:?}");
            let (a, b) = (&by_vec["hits"][0]["score"], &by_text["hits"][0]["score"]);
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4, "{a} vs {b}");
        }
        // Hybrid takes the vector for its dense list and the text for BM25.
        let (st, h) =
            s.post("/search", &json!({ "query": q, "vector": v, "k": 5, "mode": "hybrid" })).await;
        let (_, h_text) = s.post("/search", &json!({ "query": q, "k": 5, "mode": "hybrid" })).await;
        assert_eq!(st, 200, "{h}");
        assert_eq!(hit_ids(&h), hit_ids(&h_text));
    }

    let zeros = vec![0.0; 64];
    for (body, needle) in [
        (json!({ "vector": vec![0.1; 63], "mode": "dense" }), "63"),
        (json!({ "vector": zeros, "mode": "dense" }), "zero"),
        (json!({ "query": "rust", "vector": vec![0.1; 64], "mode": "bm25" }), "dense and hybrid"),
        (json!({ "vector": vec![0.1; 64], "mode": "hybrid" }), "query text"),
        (json!({ "mode": "dense" }), "empty"),
    ] {
        let (st, r) = s.post("/search", &body).await;
        assert_eq!(error_code(st, &r, 422), "invalid_request", "{body}");
        assert!(r["error"]["message"].as_str().unwrap().contains(needle), "{body}: {r}");
    }

    s.stop().await.unwrap();
}

/// The document routes: open, add, replace, filter, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_open_by_id_and_are_added_replaced_filtered_and_deleted() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let docs = corpus();

    // Every hit id opens with /documents/{id}, percent-encoded.
    for d in &docs {
        let (st, got) = s.get(&format!("/documents/{}", enc(&d.id))).await;
        assert_eq!(st, 200, "{} {got}", d.id);
        assert_eq!(got["id"], json!(d.id));
        assert_eq!(got["title"], json!(d.title));
        assert_eq!(got["text"], json!(d.text));
        assert_eq!(got["metadata"]["source"], "test");
    }
    // An unencoded '/' works too.
    assert_eq!(s.get("/documents/wiki/Mozilla").await.0, 200);

    // Add, find, replace, delete.
    let new = json!({ "documents": [
        { "id": "new/one", "title": "Fresh", "text": "A freshly added document about sled.", "metadata": { "k": [1, 2] } },
        { "id": "new/two", "text": "Another one without a title." }
    ]});
    let (st, r) = s.post("/documents", &new).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["added"].as_u64(), r["updated"].as_u64(), r["unchanged"].as_u64()),
        (Some(2), Some(0), Some(0))
    );
    let (st, r) = s.post("/documents", &new).await;
    assert_eq!((st, r["unchanged"].as_u64()), (200, Some(2)), "{r}");
    let (_, r) =
        s.post("/search", &json!({ "query": "Fresh\nA freshly added document about sled." })).await;
    assert_eq!(r["hits"][0]["id"], "new/one", "{r}");
    assert_eq!(r["hits"][0]["title"], "Fresh");
    let (_, got) = s.get("/documents/new%2Fone").await;
    assert_eq!(got["metadata"], json!({ "k": [1, 2] }));
    // A filter keeps only matching documents, in every mode, and hits carry their metadata.
    let only_new = json!({ "must": [{ "key": "k", "match": { "any": [2] } }] });
    for mode in ["dense", "bm25", "hybrid"] {
        let body = json!({ "query": "a document about sled", "k": 5, "mode": mode,
                           "filter": only_new, "with_metadata": true });
        let (st, r) = s.post("/search", &body).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["hits"].as_array().map(Vec::len), Some(1), "{mode}: {r}");
        assert_eq!(r["hits"][0]["id"], "new/one", "{mode}: {r}");
        assert_eq!(r["hits"][0]["metadata"], json!({ "k": [1, 2] }), "{mode}: {r}");
    }
    let (st, r) = s
        .get("/search?q=sled&mode=bm25&filter=%7B%22must_not%22%3A%5B%7B%22key%22%3A%22source%22%2C%22match%22%3A%7B%22value%22%3A%22test%22%7D%7D%5D%7D")
        .await;
    assert_eq!(st, 200, "{r}");
    assert!(
        r["hits"].as_array().unwrap().iter().all(|h| h["id"].as_str().unwrap().starts_with("new/")),
        "{r}"
    );
    let bad = json!({ "query": "sled", "filter": { "must": [{ "key": "k", "range": { "gt": "soon" } }] } });
    let (st, r) = s.post("/search", &bad).await;
    assert_eq!(st, 422, "{r}");
    let changed = json!({ "documents": [{ "id": "new/one", "title": "Fresh", "text": "Changed text now." }] });
    let (st, r) = s.post("/documents", &changed).await;
    assert_eq!((st, r["updated"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(s.get("/status").await.1["documents"], json!(docs.len() + 2));
    let r = s.client.delete(s.url("/documents/new%2Fone")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "deleted": "new/one" }));
    let (st, body) = s.get("/documents/new%2Fone").await;
    assert_eq!(error_code(st, &body, 404), "not_found");
    let (_, r) = s.post("/search", &json!({ "query": "Fresh\nChanged text now.", "k": 20 })).await;
    assert!(!hit_ids(&r).contains(&"new/one".to_string()), "deleted document still found");
    let (_, r) =
        s.post("/search", &json!({ "query": "changed text", "mode": "bm25", "k": 20 })).await;
    assert!(!hit_ids(&r).contains(&"new/one".to_string()), "deleted document still in BM25");
    assert_eq!(s.get("/status").await.1["documents"], json!(docs.len() + 1));

    s.stop().await.unwrap();
}

/// /embed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embed_gives_identical_vectors_for_identical_texts() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;

    // /embed: identical inputs give identical vectors; dims and kinds.
    let (st, r) = s
        .post(
            "/embed",
            &json!({ "texts": ["hello world", "hello world", "other"], "kind": "passage" }),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["dim"], 64);
    assert_eq!(r["encoder"], "tiny-llama");
    let e = r["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].as_array().unwrap().len(), 64);
    assert_eq!(e[0], e[1]);
    assert_ne!(e[0], e[2]);
    let (st, r) = s.post("/embed", &json!({ "texts": ["hello world"] })).await;
    assert_eq!((st, r["kind"].as_str()), (200, Some("query")));

    s.stop().await.unwrap();
}

/// The web UI files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ui_files_are_served_with_their_mime_types() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;

    // Web UI files with their MIME types.
    for (path, mime) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/highlight.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(mime), "{path}: {ct}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }

    s.stop().await.unwrap();
}

/// /openapi.json against the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_describes_every_route_and_every_described_route_exists() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;

    // OpenAPI describes every route with its method.
    let (st, spec) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    for (method, path) in server::routes() {
        assert!(spec["paths"][&path][method].is_object(), "openapi lacks {method} {path}");
    }
    let described: usize =
        spec["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(described, server::routes().len(), "openapi describes routes the server lacks");
    // ... and every listed route exists (not the JSON 404 of the fallback).
    for (method, path) in server::routes() {
        // Probed on the default collection: PUT and DELETE of it are refused (409).
        let path = path.replace("{id}", "no%2Fsuch").replace("{name}", "default");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = s.client.request(m, s.url(&path)).send().await.unwrap();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
    }

    s.stop().await.unwrap();
}

/// /metrics after a search and a missing document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_per_route_with_latency_batching_and_index_size() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let docs = corpus();

    let q = query_for(&docs[0]);
    assert_eq!(s.post("/search", &json!({ "query": q, "mode": "dense" })).await.0, 200);
    assert_eq!(s.get("/documents/no%2Fsuch").await.0, 404);
    // Metrics: Prometheus text with per-route counters, latency histograms, batching, index size.
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for needle in [
        "engine_http_requests_total{method=\"POST\",route=\"/search\",status=\"200\"}",
        "engine_http_requests_total{method=\"GET\",route=\"/documents/{id}\",status=\"404\"}",
        "engine_http_request_duration_seconds_bucket{method=\"POST\",route=\"/search\",status=\"200\",le=\"+Inf\"}",
        "engine_encode_batch_size_bucket{le=\"1\"}",
        "engine_queue_depth 0",
        &format!("engine_index_documents {}", docs.len()),
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    s.stop().await.unwrap();
}

/// The server of the error tests: small body and query limits, writes behind a key.
async fn strict_server(fx: &Fixture) -> TestServer {
    TestServer::start(
        fx,
        |c| {
            c.server.max_body_bytes = 8192;
            c.server.max_query_tokens = 64;
        },
        Some("sekret"),
    )
    .await
}

/// Malformed and invalid requests to /search and /embed: JSON errors with one status each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_or_invalid_requests_are_json_errors_400_413_or_422() {
    let fx = fixture();
    let s = strict_server(&fx).await;
    let q = query_for(&corpus()[0]);

    // One validation status: 400 only for JSON that does not parse, 413 only for a body over
    // server.max_body_bytes, 422 for anything well-formed but invalid.
    // Malformed JSON, wrong content type, wrong shape.
    let r = s
        .client
        .post(s.url("/search"))
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 400), "invalid_json");
    let r = s
        .client
        .post(s.url("/search"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 415), "unsupported_media_type");
    let r = s.client.post(s.url("/search")).body("{\"query\": \"x\"}").send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 415), "unsupported_media_type");
    let (st, b) = s.post("/search", &json!({ "query": 5 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post("/search", &json!({ "query": "x", "bogus": 1 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.get("/search?k=3").await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.get("/search?q=x&k=many").await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");

    // k, offset, mode, empty and over-long queries.
    let (st, b) = s.post("/search", &json!({ "query": q, "k": 101 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    assert!(b["error"]["message"].as_str().unwrap().contains("max_k"));
    let (st, b) = s.post("/search", &json!({ "query": q, "k": 0 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post("/search", &json!({ "query": q, "k": -1 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post("/search", &json!({ "query": q, "offset": 1_000_000 })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post("/search", &json!({ "query": q, "mode": "telepathy" })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post("/search", &json!({ "query": "   " })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    // The tiny tokenizer is byte-level: 65 bytes are 65 tokens, one over the limit of 64.
    let (st, b) = s.post("/search", &json!({ "query": "a".repeat(65) })).await;
    assert_eq!(error_code(st, &b, 422), "query_too_long");
    assert_eq!(s.post("/search", &json!({ "query": "a".repeat(64) })).await.0, 200);
    let (st, b) = s.get(&format!("/search?q={}", "b".repeat(100))).await;
    assert_eq!(error_code(st, &b, 422), "query_too_long");

    // Body over server.max_body_bytes, with and without a Content-Length.
    let big = json!({ "query": "x".repeat(10_000) });
    let (st, b) = s.post("/search", &big).await;
    assert_eq!(error_code(st, &b, 413), "payload_too_large");
    let (st, b) =
        raw_chunked(&s.base, "/search", &format!("{{\"query\": \"{}\"}}", "y".repeat(10_000)))
            .await;
    assert_eq!(error_code(st, &b, 413), "payload_too_large");

    // /embed spends encoder time on the caller's texts: under --api-key it needs the key.
    let (st, b) = s.post("/embed", &json!({ "texts": ["x"] })).await;
    assert_eq!(error_code(st, &b, 401), "unauthorized");
    assert_eq!(s.post_with_key("/embed", &json!({ "texts": ["x"] }), "sekret").await.0, 200);
    // /embed limits.
    let (st, b) = s.post_with_key("/embed", &json!({ "texts": vec!["t"; 65] }), "sekret").await;
    assert_eq!(error_code(st, &b, 422), "too_many_texts");
    let (st, b) = s.post_with_key("/embed", &json!({ "texts": [] }), "sekret").await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = s.post_with_key("/embed", &json!({ "texts": ["ok", ""] }), "sekret").await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) =
        s.post_with_key("/embed", &json!({ "texts": ["x"], "kind": "poem" }), "sekret").await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");

    s.stop().await.unwrap();
}

/// Unknown documents, routes and methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_documents_routes_and_methods_are_json_404_and_405() {
    let fx = fixture();
    let s = strict_server(&fx).await;

    // Missing documents, unknown routes, wrong methods.
    let (st, b) = s.get("/documents/no%2Fsuch%20doc").await;
    assert_eq!(error_code(st, &b, 404), "not_found");
    let (st, b) = s.get("/nope").await;
    assert_eq!(error_code(st, &b, 404), "not_found");
    let r = s.client.put(s.url("/search")).send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 405), "method_not_allowed");

    s.stop().await.unwrap();
}

/// The write endpoints under --api-key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_need_the_key_and_reads_do_not() {
    let fx = fixture();
    let s = strict_server(&fx).await;

    // Write endpoints need the key; reads do not.
    let doc = json!({ "documents": [{ "id": "k/1", "text": "keyed" }] });
    let (st, b) = s.post("/documents", &doc).await;
    assert_eq!(error_code(st, &b, 401), "unauthorized");
    for auth in
        [("authorization", "Bearer wrong"), ("x-api-key", "wrong"), ("authorization", "sekret")]
    {
        let r = s
            .client
            .post(s.url("/documents"))
            .header(auth.0, auth.1)
            .json(&doc)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert_eq!(error_code(st, &r.json().await.unwrap(), 401), "unauthorized", "{auth:?}");
    }
    let r = s.client.delete(s.url("/documents/wiki%2FMozilla")).send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 401), "unauthorized");
    let r =
        s.client.post(s.url("/documents")).bearer_auth("sekret").json(&doc).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .delete(s.url("/documents/k%2F1"))
        .header("x-api-key", "sekret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .delete(s.url("/documents/k%2F1"))
        .header("x-api-key", "sekret")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 404), "not_found");

    s.stop().await.unwrap();
}

/// POST /documents validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn document_batches_are_validated_before_anything_is_written() {
    let fx = fixture();
    let s = strict_server(&fx).await;

    // Document batch limits and validation.
    let post_docs = |body: Value| {
        let c = s.client.post(s.url("/documents")).bearer_auth("sekret").json(&body).send();
        async move {
            let r = c.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, b) = post_docs(json!({ "documents": [] })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = post_docs(json!({ "documents": [{ "id": "", "text": "x" }] })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) =
        post_docs(json!({ "documents": [{ "id": "a", "text": "x" }, { "id": "a", "text": "y" }] }))
            .await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = post_docs(json!({ "documents": [{ "id": "a" }] })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = post_docs(json!({ "docs": [] })).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");

    s.stop().await.unwrap();
}

/// Per-request limits on documents, tokens and query length.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_request_document_token_and_query_limits_are_422() {
    let fx = fixture();
    let s = TestServer::start(
        &fx,
        |c| {
            c.server.max_documents_per_request = 2;
            c.server.max_request_tokens = 100;
            c.server.max_query_tokens = 64;
            c.server.max_body_bytes = 4 << 20;
        },
        None,
    )
    .await;
    let three: Vec<Value> =
        (0..3).map(|i| json!({ "id": format!("m/{i}"), "text": "t" })).collect();
    let (st, b) = s.post("/documents", &json!({ "documents": three })).await;
    assert_eq!(error_code(st, &b, 422), "too_many_documents");
    // /embed is bounded by tokens, not only by texts: two 60-byte passages are over 100 tokens.
    let text = "p".repeat(60);
    let (st, b) = s.post("/embed", &json!({ "texts": [text, text], "kind": "passage" })).await;
    assert_eq!(error_code(st, &b, 422), "too_many_tokens");
    assert!(b["error"]["message"].as_str().unwrap().contains("max_request_tokens"), "{b}");
    assert_eq!(s.post("/embed", &json!({ "texts": [text], "kind": "passage" })).await.0, 200);
    // A query of a megabyte is refused from its length, before it is tokenized.
    let (st, b) = s.post("/search", &json!({ "query": "word ".repeat(200_000) })).await;
    assert_eq!(error_code(st, &b, 422), "query_too_long");
    assert!(b["error"]["message"].as_str().unwrap().contains("far more than"), "{b}");
    s.stop().await.unwrap();
}

/// POSTs `body` with chunked transfer encoding (no Content-Length), over a raw socket.
async fn raw_chunked(base: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(1000) {
        req.push_str(&format!("{:x}\r\n{}\r\n", piece.len(), std::str::from_utf8(piece).unwrap()));
    }
    req.push_str("0\r\n\r\n");
    // The server may answer and close before reading everything: ignore write errors.
    let _ = sock.write_all(req.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = sock.read_to_end(&mut resp).await;
    let resp = String::from_utf8_lossy(&resp);
    let status: u16 = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let head_end = resp.find("\r\n\r\n").unwrap();
    let mut body = resp[head_end + 4..].to_string();
    if resp[..head_end].to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // One-chunk bodies are all the server sends for errors.
        let start = body.find("\r\n").unwrap() + 2;
        let end = body[start..].find("\r\n").unwrap() + start;
        body = body[start..end].to_string();
    }
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_answers_429_at_once() {
    let fx = fixture();
    // One waiting request at most, and the encoder thread waits 1.5 s for company: a second
    // request while the first one waits finds the queue full.
    let s = TestServer::start(
        &fx,
        |c| {
            c.server.queue_capacity = 1;
            c.server.max_wait_ms = 1500;
            c.server.max_batch = 8;
        },
        None,
    )
    .await;
    let q = query_for(&corpus()[1]);
    let first = {
        let c = s.client.clone();
        let url = s.url("/search");
        let q = q.clone();
        tokio::spawn(async move {
            c.post(url).json(&json!({ "query": q, "mode": "dense" })).send().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let (st, b) = s.post("/search", &json!({ "query": q, "mode": "dense" })).await;
    assert_eq!(error_code(st, &b, 429), "overloaded");
    assert!(t.elapsed() < Duration::from_millis(500), "429 must be immediate");
    let r = s.client.post(s.url("/embed")).json(&json!({ "texts": ["x"] })).send().await.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let st = r.status().as_u16();
    assert_eq!(error_code(st, &r.json().await.unwrap(), 429), "overloaded");
    assert!(retry.is_some_and(|v| v.parse::<u64>().unwrap() >= 1), "429 carries Retry-After");
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    // Once drained, requests are accepted again.
    assert_eq!(s.post("/search", &json!({ "query": q, "mode": "dense" })).await.0, 200);
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("route=\"/search\",status=\"429\"} 1"), "{text}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_queued_beyond_the_time_budget_answers_429_with_retry_after() {
    let fx = fixture();
    // Room for many requests, but a time budget no queued work fits: while the first request
    // waits for company, a second finds more queued work than the budget allows.
    let s = TestServer::start(
        &fx,
        |c| {
            c.server.queue_capacity = 100;
            c.server.max_wait_ms = 1500;
            c.server.max_queue_seconds = 1e-6;
        },
        None,
    )
    .await;
    let q = query_for(&corpus()[1]);
    let first = {
        let c = s.client.clone();
        let url = s.url("/search");
        let q = q.clone();
        tokio::spawn(async move {
            c.post(url).json(&json!({ "query": q, "mode": "dense" })).send().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s
        .client
        .post(s.url("/search"))
        .json(&json!({ "query": q, "mode": "dense" }))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let st = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_eq!(error_code(st, &b, 429), "overloaded");
    assert!(b["error"]["message"].as_str().unwrap().contains("max_queue_seconds"), "{b}");
    assert_eq!(first.await.unwrap().status(), 200);
    // An idle queue admits any request, whatever its cost.
    assert_eq!(s.post("/search", &json!({ "query": q, "mode": "dense" })).await.0, 200);
    s.stop().await.unwrap();
}

/// A queued search whose client hangs up is dropped before it is encoded: the server notices
/// the closed connection while the request waits, and the encoder skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_client_hung_up_is_never_encoded() {
    use tokio::io::AsyncWriteExt;
    let fx = fixture();
    // The encoder thread holds a first request 1.5 s waiting for company: time for its client
    // to leave while it is queued.
    let s = TestServer::start(&fx, |c| c.server.max_wait_ms = 1500, None).await;
    let value = |metrics: &str, name: &str| -> f64 {
        let line =
            metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let metrics =
        || async { s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let passes_before = value(&metrics().await, "engine_encode_batch_size_count");
    let body = json!({ "query": query_for(&corpus()[2]), "mode": "dense" }).to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    // Queued (the depth gauge counts it), then abandoned.
    let t = Instant::now();
    while !metrics().await.contains("engine_queue_depth 1") {
        assert!(t.elapsed() < Duration::from_secs(10), "the request never reached the queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(sock);
    let t = Instant::now();
    loop {
        let text = metrics().await;
        if value(&text, "engine_encode_abandoned_total") == 1.0 {
            assert_eq!(value(&text, "engine_encode_batch_size_count"), passes_before, "{text}");
            assert!(text.contains("engine_queue_depth 0"), "{text}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never dropped:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The queue serves the next request as usual.
    assert_eq!(s.post("/search", &json!({ "query": "rust", "mode": "dense" })).await.0, 200);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_slow_connections_are_bounded_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = fixture();
    let s = TestServer::start(
        &fx,
        |c| {
            c.server.header_timeout_secs = 1;
            c.server.request_timeout_secs = 1;
            c.server.max_connections = 3;
        },
        None,
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // Idle sockets up to the limit: a further connection is closed at once...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "over the limit must be closed: {buf:?}");
    // ...and the idle ones are closed after header_timeout_secs, freeing their slots.
    for mut sock in idle {
        let mut b = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "idle socket not closed");
    }
    assert_eq!(s.get("/healthz").await.0, 200);
    // A body that never finishes arriving answers 504 after request_timeout_secs.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\": ",
    )
    .await
    .unwrap();
    let mut resp = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(5), slow.read(&mut resp)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&resp[..n]);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
    s.stop().await.unwrap();
}

/// The OpenAPI document states what the server enforces: each status a probe gets is listed
/// for its operation, a body that is not JSON is 415 wherever a body is taken, and every empty
/// text or list the server refuses is below a minimum length in the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_states_the_statuses_and_minimum_lengths_the_server_enforces() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let (_, spec) = s.get("/openapi.json").await;
    let listed = |method: &str, path: &str, status: u16| {
        spec["paths"][path][method]["responses"][status.to_string()].is_object()
    };
    for (method, path) in server::routes() {
        if !spec["paths"][&path][method]["requestBody"].is_object() {
            continue;
        }
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = s
            .client
            .request(m, s.url(&path.replace("{name}", "default")))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{method} {path}");
        assert!(listed(method, &path, 415), "{method} {path} does not list 415");
    }
    let probes = [
        ("/search", json!({ "query": " " }), "SearchRequest", "/properties/query"),
        ("/documents", json!({ "documents": [] }), "AddDocumentsRequest", "/properties/documents"),
        (
            "/documents",
            json!({ "documents": [{ "id": "", "text": "x" }] }),
            "NewDocument",
            "/properties/id",
        ),
        (
            "/documents",
            json!({ "documents": [{ "id": "a", "text": "" }] }),
            "NewDocument",
            "/properties/text",
        ),
        ("/embed", json!({ "texts": [] }), "EmbedRequest", "/properties/texts"),
        ("/embed", json!({ "texts": [""] }), "EmbedRequest", "/properties/texts/items"),
        ("/embed", json!({ "inputs": "" }), "TeiEmbedRequest", "/properties/inputs/oneOf/0"),
        ("/embed", json!({ "inputs": [] }), "TeiEmbedRequest", "/properties/inputs/oneOf/1"),
        (
            "/embed",
            json!({ "inputs": [""] }),
            "TeiEmbedRequest",
            "/properties/inputs/oneOf/1/items",
        ),
        (
            "/v1/embeddings",
            json!({ "input": "" }),
            "OpenAiEmbeddingsRequest",
            "/properties/input/oneOf/0",
        ),
        (
            "/v1/embeddings",
            json!({ "input": [] }),
            "OpenAiEmbeddingsRequest",
            "/properties/input/oneOf/1",
        ),
        (
            "/v1/embeddings",
            json!({ "input": ["x", " "] }),
            "OpenAiEmbeddingsRequest",
            "/properties/input/oneOf/1/items",
        ),
    ];
    for (path, body, schema, pointer) in probes {
        let (st, b) = s.post(path, &body).await;
        assert_eq!(st, 422, "{path} {body}: {b}");
        assert!(listed("post", path, st), "{path} does not list {st}");
        let field = spec["components"]["schemas"][schema].pointer(pointer).cloned();
        let field = field.unwrap_or_else(|| panic!("no {schema}{pointer}"));
        let min = field["minLength"].as_u64().or(field["minItems"].as_u64());
        assert!(min >= Some(1), "{schema}{pointer} has no minimum the server enforces: {field}");
        if field["type"] == "string" {
            assert_eq!(field["pattern"], "\\S", "{schema}{pointer}: blank texts are refused too");
        }
    }
    assert_eq!(s.get("/search?q=%20").await.0, 422);
    // Collections: each status a probe gets is listed for its operation.
    let send = |method: &str, path: String, body: Option<Value>| {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut r = s.client.request(m, s.url(&path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let collection_probes = [
        ("get", "/collections", "/collections", None, 200),
        ("get", "/fields", "/fields", None, 200),
        ("get", "/collections/{name}", "/collections/nope", None, 404),
        ("put", "/collections/{name}", "/collections/bad.name", None, 422),
        ("put", "/collections/{name}", "/collections/x", Some(json!({ "model": "../x" })), 422),
        ("put", "/collections/{name}", "/collections/default", None, 409),
        ("put", "/collections/{name}", "/collections/x", Some(json!({})), 201),
        ("get", "/collections/{name}/fields", "/collections/x/fields", None, 200),
        ("put", "/collections/{name}", "/collections/x", None, 409),
        ("delete", "/collections/{name}", "/collections/default", None, 409),
        ("delete", "/collections/{name}", "/collections/bad.name", None, 422),
        ("delete", "/collections/{name}", "/collections/x", None, 200),
        ("delete", "/collections/{name}", "/collections/x", None, 404),
    ];
    for (method, route, path, body, want) in collection_probes {
        let st = send(method, path.to_string(), body).await;
        assert_eq!(st, want, "{method} {path}");
        assert!(listed(method, route, st), "{method} {route} does not list {st}");
    }
    for (method, route) in
        server::routes().into_iter().filter(|(_, p)| p.starts_with("/collections/{name}/"))
    {
        let path = route.replace("{name}", "nope").replace("{id}", "x");
        let body = (method != "get").then(|| json!({}));
        assert_eq!(send(method, path, body).await, 404, "{method} {route}");
        assert!(listed(method, &route, 404), "{method} {route} does not list 404");
    }
    let params = spec["paths"]["/search"]["get"]["parameters"].as_array().unwrap();
    let q = params.iter().find(|p| p["name"] == "q").unwrap();
    assert_eq!(q["schema"]["minLength"], 1, "{q}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_http_methods_do_not_grow_the_metrics() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    for i in 0..50 {
        let m = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = s.client.request(m, s.url("/search")).send().await.unwrap();
        assert_eq!(r.status(), 405);
    }
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("BREW"), "raw methods leaked into labels");
    assert!(text.contains("method=\"OTHER\",route=\"/search\",status=\"405\"} 50"), "{text}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_are_batched_and_match_sequential_results() {
    let fx = fixture();
    let s = Arc::new(TestServer::start(&fx, |c| c.server.max_wait_ms = 20, None).await);
    let docs = corpus();
    let queries: Vec<String> = (0..64)
        .map(|i| {
            let d = &docs[i % docs.len()];
            // Varied lengths, so batches need padding.
            if i % 3 == 0 {
                query_for(d)
            } else {
                format!("{} {}", d.text, i)
            }
        })
        .collect();
    let mut sequential = Vec::new();
    for q in &queries {
        let (st, r) = s.post("/search", &json!({ "query": q, "k": 5, "mode": "dense" })).await;
        assert_eq!(st, 200, "{r}");
        sequential.push(r["hits"].clone());
    }
    let before = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(before.contains("engine_encode_batch_size_max 1\n"), "sequential queries batch alone");
    let tasks: Vec<_> = queries
        .iter()
        .map(|q| {
            let s = s.clone();
            let q = q.clone();
            tokio::spawn(async move {
                s.post("/search", &json!({ "query": q, "k": 5, "mode": "dense" })).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (st, r) = t.await.unwrap();
        assert_eq!(st, 200, "{r}");
        let (a, b) = (r["hits"].as_array().unwrap(), sequential[i].as_array().unwrap());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x["id"], y["id"], "query {i}: concurrent and sequential rankings differ");
            let (sx, sy) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
            assert!((sx - sy).abs() < 1e-4, "query {i}: score {sx} vs {sy}");
        }
    }
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let max: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("engine_encode_batch_size_max "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max > 1, "no batching happened:\n{text}");
    let s = Arc::into_inner(s).unwrap();
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_in_flight_requests() {
    let fx = fixture();
    let s = TestServer::start(&fx, |c| c.server.max_wait_ms = 800, None).await;
    let inflight = {
        let c = s.client.clone();
        let url = s.url("/search");
        let q = query_for(&corpus()[2]);
        tokio::spawn(async move {
            let r = c.post(url).json(&json!({ "query": q, "mode": "dense" })).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = s.base.clone();
    s.stop().await.unwrap();
    let (st, r) = inflight.await.unwrap();
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["hits"][0]["id"], json!(corpus()[2].id));
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "still listening");
    // The index snapshot written at shutdown reopens cleanly.
    let config = base_config(&fx.model);
    let encoder = Encoder::from_config(&config).unwrap();
    let db = Database::open(&fx.db, Some(&encoder.fingerprint())).unwrap();
    assert_eq!(db.status().unwrap().documents, corpus().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_failures_stop_the_server_with_the_error() {
    let fx = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ServeOptions {
        config: base_config(&fx.model),
        db: fx.dir.path().join("missing-db"),
        api_key: None,
        read_api_key: None,
    };
    let err = server::serve(listener, opts, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, engine::Error::NotFound(_)), "{err}");
    // Another pooling than the database was built with: a clear encoder mismatch.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = base_config(&fx.model);
    config.encoder.pooling = engine::encoder::Pooling::Last;
    let opts = ServeOptions { config, db: fx.db.clone(), api_key: None, read_api_key: None };
    let err = server::serve(listener, opts, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, engine::Error::EncoderMismatch(_)), "{err}");
}

/// Every score names its scale, `more` says whether a next page exists, and a dense match
/// below `server.weak_dense_score` carries a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_are_labelled_pages_say_whether_more_exist_and_weak_dense_matches_warn() {
    let fx = fixture();
    let n = corpus().len();
    for (threshold, warns) in [(2.0, true), (-2.0, false)] {
        let s = TestServer::start(&fx, |c| c.server.weak_dense_score = threshold, None).await;
        for (mode, kind) in [("dense", "cosine"), ("bm25", "bm25"), ("hybrid", "fused")] {
            let (st, r) = s.get(&format!("/search?q=language&mode={mode}&k=2")).await;
            assert_eq!(st, 200, "{r}");
            assert_eq!(r["score_kind"], kind, "{r}");
            let warned = r.get("warning").is_some();
            assert_eq!(warned, warns && mode != "bm25", "{mode} at {threshold}: {r}");
            if warned {
                assert!(r["warning"].as_str().unwrap().contains("weak dense match"), "{r}");
            }
        }
        // Dense ranks every document: a page is followed by more until the last one.
        let (_, r) = s.get(&format!("/search?q=language&mode=dense&k={}", n - 1)).await;
        assert_eq!(r["more"], true, "{r}");
        let (_, r) = s.get(&format!("/search?q=language&mode=dense&k={n}")).await;
        assert_eq!((r["more"].as_bool(), hit_ids(&r).len()), (Some(false), n), "{r}");
        let (_, r) = s.get("/search?q=language&mode=dense&k=2&offset=1").await;
        assert_eq!(r["more"], true, "{r}");
        // Snippets say which words to highlight: stemmed, never stop words.
        let (_, r) = s.get("/search?q=the+ranking+functions&mode=bm25&k=1").await;
        assert_eq!(r["hits"][0]["id"], "wiki/Okapi_BM25", "{r}");
        assert_eq!(r["hits"][0]["highlights"], json!(["ranking", "function"]), "{r}");
        // A per-request score_threshold cuts the ranked list before the page: the hits keep
        // their snippets, highlights and score kind, and `more` counts only hits above it.
        let (_, two) = s.get("/search?q=the+ranking+functions&mode=bm25&k=2").await;
        let (s0, s1) =
            (two["hits"][0]["score"].as_f64().unwrap(), two["hits"][1]["score"].as_f64().unwrap());
        assert!(s0 > s1, "{two}");
        let (st, r) = s
            .get(&format!("/search?q=the+ranking+functions&mode=bm25&k=1&score_threshold={s0}"))
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(
            (hit_ids(&r), r["more"].as_bool()),
            (vec!["wiki/Okapi_BM25".to_string()], Some(false)),
            "{r}"
        );
        assert_eq!(
            (r["score_kind"].as_str(), r["hits"][0]["highlights"].clone()),
            (Some("bm25"), json!(["ranking", "function"])),
            "{r}"
        );
        assert!(r["hits"][0]["snippet"].is_string(), "{r}");
        let (_, r) = s.get("/search?q=the+ranking+functions&mode=bm25&k=1").await;
        assert_eq!(r["more"], true, "{r}");
        // Per-request hybrid settings keep the fused label and the weak-match warning.
        let (st, r) = s.get("/search?q=language&mode=hybrid&k=2&alpha=0.5").await;
        assert_eq!((st, r["score_kind"].as_str()), (200, Some("fused")), "{r}");
        assert_eq!(r.get("warning").is_some(), warns, "{r}");
        s.stop().await.unwrap();
    }
}

/// The web UI in headless Chromium against this server (tests/browser/ui.test.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser_ui_against_the_real_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !node_ok {
        Some("node is not installed".to_string())
    } else if !Path::new(&chromium).exists() {
        Some(format!("no Chromium at {chromium} (apt-get install chromium, or set CHROMIUM)"))
    } else if !browser_dir.join("node_modules").is_dir() {
        Some("tests/browser/node_modules is missing (run `npm ci` in tests/browser)".to_string())
    } else {
        None
    };
    if let Some(why) = missing {
        eprintln!("SKIPPED browser_ui_against_the_real_server: {why}");
        return;
    }
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    // The untitled document's text is exactly its embedded passage text, and a search box
    // cannot hold the "title\ntext" of the others.
    let target = corpus().into_iter().find(|d| d.title.is_empty()).unwrap();
    // A long document whose only match for the snippet query is at its end.
    let filler = "Flour, water and salt are weighed and mixed by hand. ".repeat(30);
    let long = format!("{filler}At last the dough Rises in the warm kitchen.");
    let doc =
        json!({ "documents": [{ "id": "notes/long", "title": "Baking notes", "text": long }] });
    let (st, r) = s.post("/documents", &doc).await;
    assert_eq!(st, 200, "{r}");
    // A collection for the picker, with a metadata field to filter on.
    let r = s.client.put(s.url("/collections/shelves")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let shelves = json!({ "documents": [
        { "id": "shelves/a", "title": "Otters", "text": "Otters on shelf a.", "metadata": { "shelf": "a" } },
        { "id": "shelves/b", "title": "More otters", "text": "Otters on shelf b.", "metadata": { "shelf": "b" } }
    ] });
    let (st, r) = s.post("/collections/shelves/documents", &shelves).await;
    assert_eq!(st, 200, "{r}");
    let out = tokio::process::Command::new("node")
        .args(["--test", "tests/browser/ui.test.mjs"])
        .current_dir(root)
        .env("ENGINE_URL", &s.base)
        .env("EXPECT_QUERY", &target.text)
        .env("EXPECT_ID", &target.id)
        .env("SNIPPET_QUERY", "why does the dough rise")
        .env("SNIPPET_ID", "notes/long")
        .env("SNIPPET_WORD", "Rises")
        .env("COLLECTION", "shelves")
        .env("REQUIRE_BROWSER", "1")
        .env("CHROMIUM", &chromium)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("browser test timed out")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser test failed:\n{text}");
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("# ") || l.starts_with("ok "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(text.contains("# fail 0"), "{text}");
    assert!(!text.contains("# pass 0"), "no browser test ran:\n{text}");
    s.stop().await.unwrap();
}
