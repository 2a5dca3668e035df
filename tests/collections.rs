//! Collections end to end: one server, the default database plus named ones, two different
//! tiny random encoders (tests/common/server.rs).

#[path = "common/server.rs"]
mod fixture;

use engine::encoder::testing::write_tiny_model;
use engine::store::Database;
use fixture::*;
use serde_json::{json, Value};

fn docs(prefix: &str, words: &[&str]) -> Value {
    let documents: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "id": format!("{prefix}/{i}"),
                "title": format!("{prefix} {w}"),
                "text": format!("A note about {w} kept in collection {prefix}."),
                "metadata": { "collection": prefix, "rank": i, "tags": [w] },
            })
        })
        .collect();
    json!({ "documents": documents })
}

async fn put(s: &TestServer, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut r = s.client.put(s.url(path));
    if let Some(b) = body {
        r = r.json(b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client.delete(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_keep_their_encoders_documents_and_folders_apart() {
    let fx = fixture();
    // A second random model beside the server's: another encoder, in the same models folder.
    write_tiny_model(&fx.dir.path().join("tiny-llama-b"), 11).unwrap();
    let root = fx.dir.path().join("db.collections");
    let s = TestServer::start(&fx, |_| {}, None).await;

    let (st, r) = s.get("/collections").await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["collections"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["collections"][0]["name"], "default");
    assert_eq!(r["collections"][0]["default"], true);
    assert_eq!(r["collections"][0]["documents"], json!(corpus().len()));
    assert_eq!(r["encoders_loaded"], 1);

    // Names are folder names: nothing but [A-Za-z0-9_-]{1,64}, so no way out of the root.
    let long = "x".repeat(65);
    // ("%2E%2E" alone is a dot segment the client resolves away; within a segment it is not.)
    for bad in ["a.b", "...", "%2E%2E%2Fx", "a%2Fb", "..%2F..%2Fetc", "sp%20ace", long.as_str()] {
        let (st, r) = put(&s, &format!("/collections/{bad}"), None).await;
        assert_eq!(error_code(st, &r, 422), "invalid_collection_name", "{bad}");
        let (st, r) = delete(&s, &format!("/collections/{bad}")).await;
        assert_eq!(error_code(st, &r, 422), "invalid_collection_name", "{bad}");
    }
    let (st, r) = put(&s, "/collections/d", Some(&json!({ "model": "../tiny-llama" }))).await;
    assert_eq!(error_code(st, &r, 422), "unknown_model");
    let (st, r) = put(&s, "/collections/d", Some(&json!({ "backend": "annoy" }))).await;
    assert_eq!(error_code(st, &r, 422), "invalid_request");
    assert!(!root.join("d").exists());

    // a and c use the server's encoder (shared), b another model (loaded once more).
    let (st, a) = put(&s, "/collections/a", None).await;
    assert_eq!(st, 201, "{a}");
    assert_eq!((a["name"].as_str(), a["documents"].as_u64()), (Some("a"), Some(0)), "{a}");
    assert_eq!(a["encoder"], "tiny-llama");
    assert_eq!(s.get("/status").await.1["encoders_loaded"], 1, "a shares the default's model");
    let (st, b) = put(&s, "/collections/b", Some(&json!({ "model": "tiny-llama-b" }))).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["encoder"], "tiny-llama-b");
    assert_eq!(s.get("/status").await.1["encoders_loaded"], 2);
    let (st, c) = put(&s, "/collections/c", Some(&json!({}))).await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(s.get("/status").await.1["encoders_loaded"], 2, "c shares the default's model");
    for name in ["a", "default"] {
        let (st, r) = put(&s, &format!("/collections/{name}"), None).await;
        assert_eq!(error_code(st, &r, 409), "collection_exists", "{name}");
    }

    let (st, r) = s.post("/collections/a/documents", &docs("a", &["otters", "granite"])).await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = s.post("/collections/b/documents", &docs("b", &["otters", "basalt"])).await;
    assert_eq!(st, 200, "{r}");

    // A search in one collection never returns another's documents, in any mode, even for a
    // query that is word for word one of the other's documents.
    for (name, other) in [("a", "b"), ("b", "a")] {
        let query = format!("{other} otters\nA note about otters kept in collection {other}.");
        for mode in ["dense", "bm25", "hybrid"] {
            let body = json!({ "query": query, "mode": mode, "k": 10 });
            let (st, r) = s.post(&format!("/collections/{name}/search"), &body).await;
            assert_eq!(st, 200, "{name} {mode}: {r}");
            let found = hit_ids(&r);
            assert!(!found.is_empty(), "{name} {mode}: {r}");
            assert!(found.iter().all(|id| id.starts_with(&format!("{name}/"))), "{mode}: {r}");
            assert_eq!(r["encoder"], if name == "a" { "tiny-llama" } else { "tiny-llama-b" });
        }
        // Its own document's text finds it first, with its own encoder (cosine 1).
        let own = format!("{name} otters\nA note about otters kept in collection {name}.");
        let q = format!("/collections/{name}/search?mode=dense&k=1&q={}", enc(&own));
        let (_, r) = s.get(&q).await;
        assert_eq!(hit_ids(&r), vec![format!("{name}/0")], "{r}");
        assert!(r["hits"][0]["score"].as_f64().unwrap() > 0.999, "{r}");
        // Nor do the default routes see it.
        let (_, r) = s.post("/search", &json!({ "query": own, "mode": "bm25", "k": 50 })).await;
        assert!(hit_ids(&r).iter().all(|id| id.starts_with("wiki/") || id.starts_with("notes/")));
    }

    // The document routes under a collection: read, scroll, fields, filter, patch, delete.
    let (st, d) = s.get("/collections/a/documents/a%2F1").await;
    assert_eq!((st, d["title"].as_str()), (200, Some("a granite")), "{d}");
    assert_eq!(s.get("/collections/b/documents/a%2F1").await.0, 404);
    assert_eq!(s.get("/documents/a%2F1").await.0, 404);
    let (st, page) = s.get("/collections/b/documents?limit=10").await;
    assert_eq!(st, 200, "{page}");
    let listed: Vec<&str> =
        page["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["b/0", "b/1"]);
    let (st, f) = s.get("/collections/b/fields").await;
    assert_eq!(st, 200, "{f}");
    let keys: Vec<&str> =
        f["fields"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["collection", "rank", "tags"], "{f}");
    assert_eq!(f["fields"][2]["values"], json!(["otters", "basalt"]), "{f}");
    assert_eq!((f["scanned"].as_u64(), f["complete"].as_bool()), (Some(2), Some(true)));
    let filter = json!({ "must": [{ "key": "tags", "match": { "value": "basalt" } }] });
    let body = json!({ "query": "a note", "mode": "bm25", "filter": filter });
    let (_, r) = s.post("/collections/b/search", &body).await;
    assert_eq!(hit_ids(&r), vec!["b/1".to_string()], "{r}");
    let r = s
        .client
        .patch(s.url("/collections/b/documents/b%2F1"))
        .json(&json!({ "metadata": { "tags": ["lava"] } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, r) = s.post("/collections/b/search", &body).await;
    assert!(hit_ids(&r).is_empty(), "{r}");
    let (st, r) = s.post("/collections/a/documents/delete", &json!({ "ids": ["a/1"] })).await;
    assert_eq!((st, r["deleted"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(delete(&s, "/collections/a/documents/a%2F0").await.0, 200);
    assert_eq!(s.get("/collections/a").await.1["documents"], 0);

    // The default collection answers at both its paths, unchanged.
    let (_, st1) = s.get("/status").await;
    let (_, st2) = s.get("/collections/default/status").await;
    assert_eq!(st1, st2);
    assert_eq!(st1["documents"], json!(corpus().len()));
    let q = query_for(&corpus()[2]);
    let (_, plain) = s.post("/search", &json!({ "query": q, "mode": "dense", "k": 3 })).await;
    let (_, named) = s
        .post("/collections/default/search", &json!({ "query": q, "mode": "dense", "k": 3 }))
        .await;
    assert_eq!(hit_ids(&plain), hit_ids(&named));
    assert_eq!(hit_ids(&plain)[0], corpus()[2].id);

    // Unknown collections are JSON 404s on every route.
    for path in ["/collections/zz", "/collections/zz/status", "/collections/zz/documents"] {
        let (st, r) = s.get(path).await;
        assert_eq!(error_code(st, &r, 404), "not_found", "{path}");
    }
    let (st, r) = s.post("/collections/zz/search", &json!({ "query": "x" })).await;
    assert_eq!(error_code(st, &r, 404), "not_found");

    // Deleting: the default cannot go; b's folder goes, then b is 404 and its model unloaded.
    let (st, r) = delete(&s, "/collections/default").await;
    assert_eq!(error_code(st, &r, 409), "default_collection");
    assert!(root.join("b").is_dir());
    let (st, r) = delete(&s, "/collections/b").await;
    assert_eq!((st, r), (200, json!({ "deleted": "b" })));
    assert!(!root.join("b").exists(), "the folder is gone");
    assert_eq!(s.get("/collections/b").await.0, 404);
    assert_eq!(s.post("/collections/b/search", &json!({ "query": "otters" })).await.0, 404);
    let (st, r) = delete(&s, "/collections/b").await;
    assert_eq!(error_code(st, &r, 404), "not_found");
    assert_eq!(s.get("/status").await.1["encoders_loaded"], 1, "b's model is unloaded");
    let (st, r) = put(&s, "/collections/b", None).await;
    assert_eq!((st, r["documents"].as_u64()), (201, Some(0)), "a name is free again: {r}");
    assert_eq!(delete(&s, "/collections/b").await.0, 200);
    s.stop().await.unwrap();

    // Each is an ordinary database folder recording its own encoder.
    let fp = |dir: &std::path::Path| Database::read_manifest(dir).unwrap().encoder;
    assert_eq!(fp(&root.join("a")), fp(&root.join("c")));
    assert_eq!(fp(&root.join("a")), fp(&fx.db));

    // A restarted server finds the collections in their folders, with their encoders.
    write_and_restart(&fx).await;
}

/// Indexes a collection with the second model straight into its folder (as `engine index --db`
/// would), then checks a new server serves it with that encoder beside the others.
async fn write_and_restart(fx: &Fixture) {
    use engine::encoder::{Embed, Encoder};
    use engine::pipeline::{self, IndexOptions, Silent};
    let root = fx.dir.path().join("db.collections");
    let model = fx.dir.path().join("tiny-llama-b");
    let mut config = base_config(&model);
    config.index.backend = engine::index::Backend::Flat;
    let encoder = Encoder::from_config(&config).unwrap();
    let opts = engine::store::DbOptions {
        backend: engine::index::Backend::Flat,
        params: engine::index::AnnParams::from_config(&config.index),
        chunk_tokens: config.index.chunk_tokens,
        chunk_overlap: config.index.chunk_overlap,
    };
    let e = Database::create_or_open(&root.join("indexed"), &encoder.fingerprint(), &opts).unwrap();
    let iopts = IndexOptions::from_config(&config);
    pipeline::index_documents(&e, &encoder, corpus()[..3].to_vec(), &iopts, &Silent).unwrap();
    drop(e);
    assert_ne!(Database::read_manifest(&root.join("indexed")).unwrap().encoder, {
        Database::read_manifest(&fx.db).unwrap().encoder
    });
    // Not a collection: skipped.
    std::fs::create_dir_all(root.join("notes.snapshots")).unwrap();

    let s = TestServer::start(fx, |_| {}, None).await;
    let (st, r) = s.get("/collections").await;
    assert_eq!(st, 200, "{r}");
    let names: Vec<&str> =
        r["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "a", "c", "indexed"], "{r}");
    assert_eq!(r["encoders_loaded"], 2, "{r}");
    let (_, info) = s.get("/collections/indexed").await;
    assert_eq!(
        (info["encoder"].as_str(), info["documents"].as_u64()),
        (Some("tiny-llama-b"), Some(3))
    );
    let q = query_for(&corpus()[1]);
    let (st, r) = s
        .post("/collections/indexed/search", &json!({ "query": q, "mode": "dense", "k": 1 }))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(hit_ids(&r), vec![corpus()[1].id.clone()], "{r}");
    s.stop().await.unwrap();
}

/// Collection routes are keyed like the routes they mirror: reads need a key once a read key is
/// set, creating and deleting need the admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_routes_need_the_keys_their_kind_needs() {
    let fx = fixture();
    let s = TestServer::start_with_keys(&fx, |_| {}, Some("admin-k"), Some("read-k")).await;
    let send = |m: reqwest::Method, path: &str, key: Option<&str>| {
        let mut r = s.client.request(m, s.url(path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method;
    assert_eq!(send(Method::PUT, "/collections/k", None).await, 401);
    assert_eq!(send(Method::PUT, "/collections/k", Some("read-k")).await, 403);
    assert_eq!(send(Method::PUT, "/collections/k", Some("admin-k")).await, 201);
    for path in
        ["/collections", "/collections/k", "/collections/k/documents", "/collections/k/fields"]
    {
        assert_eq!(send(Method::GET, path, None).await, 401, "{path}");
        assert_eq!(send(Method::GET, path, Some("read-k")).await, 200, "{path}");
    }
    assert_eq!(send(Method::GET, "/collections/k/search?q=x&mode=bm25", None).await, 401);
    assert_eq!(send(Method::GET, "/collections/k/search?q=x&mode=bm25", Some("read-k")).await, 200);
    assert_eq!(send(Method::POST, "/collections/k/snapshots", Some("read-k")).await, 403);
    assert_eq!(send(Method::DELETE, "/collections/k", Some("read-k")).await, 403);
    assert_eq!(send(Method::DELETE, "/collections/k", Some("admin-k")).await, 200);
    s.stop().await.unwrap();
}

/// The web UI has the collection picker, the filters and the hybrid slider, and the routes its
/// script calls for them answer (the browser itself runs in tests/browser when installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ui_offers_collections_filters_and_the_hybrid_slider() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let page = s.client.get(s.url("/")).send().await.unwrap().text().await.unwrap();
    for hook in [
        r#"id="collection""#,
        r#"id="filters""#,
        r#"id="alpha""#,
        r#"type="range""#,
        r#"id="alpha-value""#,
    ] {
        assert!(page.contains(hook), "index.html lacks {hook}");
    }
    let script = s.client.get(s.url("/app.js")).send().await.unwrap().text().await.unwrap();
    for call in
        ["api('collections')", "`${base()}fields`", "`${base()}search?${qs}`", "qs.set('alpha'"]
    {
        assert!(script.contains(call), "app.js lacks {call}");
    }
    assert_eq!(put(&s, "/collections/ui", None).await.0, 201);
    let (st, r) = s.get("/collections").await;
    assert_eq!((st, r["collections"][1]["name"].as_str()), (200, Some("ui")), "{r}");
    // What the script builds: the fields of a collection, then a search with one of their
    // values as the filter and the slider's alpha.
    for prefix in ["", "collections/default/"] {
        let (st, f) = s.get(&format!("/{prefix}fields")).await;
        assert_eq!(st, 200, "{f}");
        let source = f["fields"].as_array().unwrap().iter().find(|f| f["key"] == "source");
        assert_eq!(source.unwrap()["values"], json!(["test"]), "{f}");
        let filter = json!({ "must": [{ "key": "source", "match": { "value": "test" } }] });
        let q = format!(
            "/{prefix}search?q=language&k=10&mode=hybrid&offset=0&alpha=0.7&filter={}",
            enc(&filter.to_string())
        );
        let (st, r) = s.get(&q).await;
        assert_eq!(st, 200, "{r}");
        assert!(!hit_ids(&r).is_empty(), "{r}");
    }
    let (st, r) = s.get("/collections/ui/fields").await;
    assert_eq!((st, r["fields"].clone()), (200, json!([])), "{r}");
    s.stop().await.unwrap();
}
