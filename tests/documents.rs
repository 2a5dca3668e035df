//! Document management and per-request retrieval settings over HTTP (issue 15, items 3 and 4):
//! scrolling with a cursor under concurrent writes, metadata changes without re-embedding,
//! delete by filter, and `alpha` / `limit` / `score_threshold` / `ef` on `/search`. A real
//! server over the tiny random test model (tests/common/server.rs).

#[path = "common/server.rs"]
mod fixture;

use std::collections::{HashMap, HashSet};

use fixture::*;
use serde_json::{json, Value};

const KEY: &str = "admin-key";

async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s.client.request(m, s.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Texts the encoder has embedded so far (`engine_encode_batch_size_sum`).
async fn encoded_texts(s: &TestServer) -> f64 {
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("engine_encode_batch_size_sum ")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn new_doc(id: &str, text: &str) -> Value {
    json!({ "id": id, "title": "", "text": text, "metadata": { "added": true } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scroll_visits_every_document_present_throughout_exactly_once() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, Some(KEY)).await;
    let docs = corpus();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut deleted: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut page = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/documents?limit=3&cursor={c}"),
            None => "/documents?limit=3".to_string(),
        };
        let (st, body) = s.get(&path).await;
        assert_eq!(st, 200, "{body}");
        let ids: Vec<String> = body["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect();
        assert!(ids.len() <= 3);
        for id in &ids {
            *seen.entry(id.clone()).or_default() += 1;
        }
        // Between pages: documents added before and after the cursor, and one deleted from
        // each side, so the pages shift under the scroll.
        page += 1;
        let added = json!({ "documents": [
            new_doc(&format!("a/new-{page}"), "added before every cursor"),
            new_doc(&format!("zz/new-{page}"), "added after every cursor"),
        ] });
        assert_eq!(send(&s, "POST", "/documents", Some(&added), Some(KEY)).await.0, 200);
        for victim in [format!("a/new-{page}"), docs[(page * 5) % docs.len()].id.clone()] {
            let path = format!("/documents/{}", enc(&victim));
            if send(&s, "DELETE", &path, None, Some(KEY)).await.0 == 200 {
                deleted.insert(victim);
            }
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(page < 100, "the scroll does not end");
    }
    for d in &docs {
        if !deleted.contains(&d.id) {
            assert_eq!(seen.get(&d.id), Some(&1), "{} seen {:?} times", d.id, seen.get(&d.id));
        }
    }
    assert!(seen.values().all(|&n| n == 1), "a document was listed twice: {seen:?}");
    assert!(deleted.iter().any(|id| !id.starts_with("a/new")), "no original was deleted");
    // Bad pages are 422 JSON.
    for bad in ["/documents?limit=0", "/documents?limit=100000", "/documents?cursor=zz"] {
        let (st, body) = s.get(bad).await;
        assert_eq!(error_code(st, &body, 422), "invalid_request", "{bad}");
    }
    // Text only when asked for.
    let (_, body) = s.get("/documents?limit=1&with_text=true").await;
    assert!(body["documents"][0]["text"].is_string(), "{body}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metadata_change_is_not_embedded_and_filters_see_it_at_once() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, Some(KEY)).await;
    let docs = corpus();
    let d = &docs[3];
    let path = format!("/documents/{}", enc(&d.id));
    let topic = |t: &str| json!({ "must": [{ "key": "topic", "match": { "value": t } }] });
    let bm25 = |t: &str| json!({ "query": "search algorithm", "mode": "bm25", "k": 20, "filter": topic(t) });

    let before = encoded_texts(&s).await;
    // PATCH: metadata only.
    let (st, body) =
        send(&s, "PATCH", &path, Some(&json!({ "metadata": { "topic": "ocean" } })), Some(KEY))
            .await;
    assert_eq!((st, body), (200, json!({ "updated": d.id })));
    let (st, body) = s.post("/search", &bm25("ocean")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(hit_ids(&body), std::slice::from_ref(&d.id));
    // POST of the same title and text with other metadata: updated, nothing embedded.
    let same = json!({ "documents": [{
        "id": d.id, "title": d.title, "text": d.text, "metadata": { "topic": "forest" }
    }] });
    let (st, body) = send(&s, "POST", "/documents", Some(&same), Some(KEY)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!((body["updated"].clone(), body["added"].clone()), (json!(1), json!(0)), "{body}");
    assert_eq!(body["passages"], 0, "{body}");
    assert_eq!(encoded_texts(&s).await, before, "a metadata change called the encoder");
    assert!(hit_ids(&s.post("/search", &bm25("ocean")).await.1).is_empty());
    assert_eq!(hit_ids(&s.post("/search", &bm25("forest")).await.1), std::slice::from_ref(&d.id));
    let (_, got) = s.get(&path).await;
    assert_eq!(got["metadata"], json!({ "topic": "forest" }));
    // A text change is embedded again.
    let changed = json!({ "documents": [{ "id": d.id, "text": "another text entirely" }] });
    assert_eq!(send(&s, "POST", "/documents", Some(&changed), Some(KEY)).await.0, 200);
    assert!(encoded_texts(&s).await > before, "a text change was not embedded");
    // Dense search sees the metadata too.
    let dense = json!({ "query": "another text entirely", "mode": "dense", "k": 20, "filter": topic("forest") });
    assert!(hit_ids(&s.post("/search", &dense).await.1).is_empty(), "metadata went with the text");

    // Errors: unknown id, a field other than metadata, no key, the read path untouched.
    let body = json!({ "metadata": {} });
    let (st, b) = send(&s, "PATCH", "/documents/no%2Fsuch", Some(&body), Some(KEY)).await;
    assert_eq!(error_code(st, &b, 404), "not_found");
    let (st, b) = send(&s, "PATCH", &path, Some(&json!({ "text": "x" })), Some(KEY)).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = send(&s, "PATCH", &path, Some(&body), None).await;
    assert_eq!(error_code(st, &b, 401), "unauthorized");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_by_filter_removes_exactly_the_matching_documents_from_every_mode() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, Some(KEY)).await;
    let docs = corpus();
    // The fixture's metadata: {"source": "test", "len": text length}.
    let long = json!({ "must": [{ "key": "len", "range": { "gte": 70 } }] });
    let doomed: HashSet<String> =
        docs.iter().filter(|d| d.text.len() >= 70).map(|d| d.id.clone()).collect();
    assert!(doomed.len() >= 3 && doomed.len() < docs.len() - 3, "{doomed:?}");

    // Refused: no key, nothing named, a filter without a condition.
    let (st, b) =
        send(&s, "POST", "/documents/delete", Some(&json!({ "filter": long })), None).await;
    assert_eq!(error_code(st, &b, 401), "unauthorized");
    for bad in [json!({}), json!({ "filter": {} }), json!({ "filter": { "must": "x" } })] {
        let (st, b) = send(&s, "POST", "/documents/delete", Some(&bad), Some(KEY)).await;
        assert_eq!(error_code(st, &b, 422), "invalid_request", "{bad}");
    }
    assert_eq!(s.get("/status").await.1["documents"], docs.len());

    // Listed ids that match: only those are deleted.
    let first = doomed.iter().next().unwrap().clone();
    let kept_one = docs.iter().find(|d| !doomed.contains(&d.id)).unwrap().id.clone();
    let both = json!({ "ids": [first, kept_one, "no/such"], "filter": long });
    let (st, b) = send(&s, "POST", "/documents/delete", Some(&both), Some(KEY)).await;
    assert_eq!((st, b), (200, json!({ "deleted": 1 })));
    let (st, b) =
        send(&s, "POST", "/documents/delete", Some(&json!({ "filter": long })), Some(KEY)).await;
    assert_eq!((st, b), (200, json!({ "deleted": doomed.len() - 1 })));
    assert_eq!(s.get("/status").await.1["documents"], docs.len() - doomed.len());

    for d in &docs {
        let q = query_for(d);
        for mode in ["dense", "bm25", "hybrid"] {
            let (st, body) = s.post("/search", &json!({ "query": q, "mode": mode, "k": 20 })).await;
            assert_eq!(st, 200, "{body}");
            let ids = hit_ids(&body);
            assert!(ids.iter().all(|id| !doomed.contains(id)), "{mode}: deleted hits {ids:?}");
            if !doomed.contains(&d.id) && mode == "dense" {
                assert_eq!(ids.first(), Some(&d.id), "a kept document was lost");
            }
        }
    }
    // By ids alone: the count of those that existed.
    let kept: Vec<String> =
        docs.iter().filter(|d| !doomed.contains(&d.id)).map(|d| d.id.clone()).collect();
    let ids = json!({ "ids": [kept[0], kept[0], kept[1], "no/such"] });
    let (st, b) = send(&s, "POST", "/documents/delete", Some(&ids), Some(KEY)).await;
    assert_eq!((st, b), (200, json!({ "deleted": 2 })));
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_request_fusion_threshold_and_limit_are_honoured_and_bounded() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, None).await;
    let q = "Rust is a programming language with type safety and concurrency";
    let search = |extra: Value| {
        let mut body = json!({ "query": q, "k": 10 });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let ids_of = |b: &Value| hit_ids(b);
    let dense = ids_of(&s.post("/search", &search(json!({ "mode": "dense" }))).await.1);
    let bm25 = ids_of(&s.post("/search", &search(json!({ "mode": "bm25" }))).await.1);
    let hybrid = |alpha: f64| search(json!({ "mode": "hybrid", "alpha": alpha }));
    let (st, all_dense) = s.post("/search", &hybrid(1.0)).await;
    assert_eq!(st, 200, "{all_dense}");
    let all_bm25 = ids_of(&s.post("/search", &hybrid(0.0)).await.1);
    // alpha 1 is the dense order, alpha 0 BM25's (documents BM25 did not find tie at 0 after).
    assert_eq!(ids_of(&all_dense), dense);
    assert_eq!(all_bm25[..3], bm25[..3]);
    assert_ne!(ids_of(&all_dense), all_bm25, "alpha did not change the order");
    // semantic_ratio is alpha; limit is k.
    let (_, alias) =
        s.post("/search", &search(json!({ "mode": "hybrid", "semantic_ratio": 1.0 }))).await;
    assert_eq!(ids_of(&alias), dense);
    let (_, limited) = s.get(&format!("/search?q={}&mode=dense&limit=3", enc(q))).await;
    assert_eq!(ids_of(&limited), dense[..3]);
    let (st, _) =
        s.get(&format!("/search?q={}&mode=hybrid&alpha=0.5&rrf_k=5&fusion=rrf", enc(q))).await;
    assert_eq!(st, 422);
    let (st, rrf) = s.get(&format!("/search?q={}&mode=hybrid&rrf_k=5", enc(q))).await;
    assert_eq!(st, 200, "{rrf}");

    // score_threshold keeps exactly the hits at or above it, in the mode's scale.
    let (_, full) = s.post("/search", &search(json!({ "mode": "dense" }))).await;
    let third = full["hits"][2]["score"].as_f64().unwrap();
    let (_, cut) =
        s.post("/search", &search(json!({ "mode": "dense", "score_threshold": third }))).await;
    let scores: Vec<f64> =
        cut["hits"].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
    let above =
        full["hits"].as_array().unwrap().iter().filter(|h| h["score"].as_f64().unwrap() >= third);
    assert_eq!(scores.len(), above.count(), "{scores:?}");
    assert!(scores.len() >= 3 && scores.len() < 10, "{scores:?}");
    assert!(scores.iter().all(|&x| x >= third), "{scores:?}");
    // ef is accepted (the flat index is exact and ignores it).
    let (_, with_ef) = s.post("/search", &search(json!({ "mode": "dense", "ef": 5 }))).await;
    assert_eq!(ids_of(&with_ef), dense);

    // Bad values: 422 JSON naming the field.
    for (extra, field) in [
        (json!({ "mode": "hybrid", "alpha": 1.5 }), "alpha"),
        (json!({ "mode": "hybrid", "semantic_ratio": -0.1 }), "alpha"),
        (json!({ "mode": "hybrid", "alpha": 0.5, "semantic_ratio": 0.6 }), "alpha"),
        (json!({ "mode": "hybrid", "rrf_k": 0 }), "rrf_k"),
        (json!({ "mode": "hybrid", "rrf_k": 1001 }), "rrf_k"),
        (json!({ "mode": "hybrid", "fusion": "max" }), "fusion"),
        (json!({ "mode": "hybrid", "fusion": "convex", "rrf_k": 3 }), "rrf_k"),
        (json!({ "mode": "bm25", "alpha": 0.5 }), "alpha"),
        (json!({ "mode": "dense", "ef": 0 }), "ef"),
        (json!({ "mode": "dense", "ef": 1_000_000 }), "ef"),
        (json!({ "mode": "dense", "limit": 4, "k": 5 }), "k"),
    ] {
        let (st, b) = s.post("/search", &search(extra.clone())).await;
        assert_eq!(error_code(st, &b, 422), "invalid_request", "{extra}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{extra}: {message}");
    }
    for bad in ["score_threshold=inf", "score_threshold=NaN", "alpha=abc", "ef=-1"] {
        let (st, b) = s.get(&format!("/search?q=rust&mode=hybrid&{bad}")).await;
        assert_eq!(error_code(st, &b, 422), "invalid_request", "{bad}");
        let field = bad.split('=').next().unwrap();
        assert!(b["error"]["message"].as_str().unwrap().contains(field), "{bad}: {b}");
    }
    // Same k and limit are fine.
    let (st, _) = s.post("/search", &search(json!({ "mode": "dense", "limit": 10 }))).await;
    assert_eq!(st, 200);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_with_wait_false_run_as_tasks_to_poll() {
    let fx = fixture();
    let s = TestServer::start(&fx, |_| {}, Some(KEY)).await;
    let poll = |id: u64| {
        let s = &s;
        async move {
            for _ in 0..2000 {
                let (st, task) = send(s, "GET", &format!("/tasks/{id}"), None, Some(KEY)).await;
                assert_eq!(st, 200, "{task}");
                if task["status"] != "processing" {
                    return task;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("task {id} never finished");
        }
    };
    let docs = json!({ "documents": [new_doc("bg/1", "written in the background"), new_doc("bg/2", "and this one too")] });
    let (st, started) = send(&s, "POST", "/documents?wait=false", Some(&docs), Some(KEY)).await;
    assert_eq!(st, 202, "{started}");
    assert_eq!(started["status"], "processing");
    let id = started["task_id"].as_u64().unwrap();
    let done = poll(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["kind"].clone(), done["result"]["added"].clone()),
        (json!("add_documents"), json!(2))
    );
    assert_eq!(s.get("/documents/bg%2F1").await.0, 200);

    let del = json!({ "ids": ["bg/1", "bg/2"] });
    let (st, started) =
        send(&s, "POST", "/documents/delete?wait=false", Some(&del), Some(KEY)).await;
    assert_eq!(st, 202, "{started}");
    let done = poll(started["task_id"].as_u64().unwrap()).await;
    assert_eq!(done["result"], json!({ "deleted": 2 }), "{done}");
    assert_eq!(s.get("/documents/bg%2F1").await.0, 404);

    // Bad input is refused at once, not as a failed task; unknown tasks are 404, tasks need
    // the admin key.
    let empty = json!({ "documents": [] });
    let (st, b) = send(&s, "POST", "/documents?wait=false", Some(&empty), Some(KEY)).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    let (st, b) = send(&s, "GET", "/tasks/999999", None, Some(KEY)).await;
    assert_eq!(error_code(st, &b, 404), "not_found");
    let (st, b) = send(&s, "GET", &format!("/tasks/{id}"), None, None).await;
    assert_eq!(error_code(st, &b, 401), "unauthorized");
    let (st, b) = send(&s, "POST", "/documents?wait=maybe", Some(&docs), Some(KEY)).await;
    assert_eq!(error_code(st, &b, 422), "invalid_request");
    s.stop().await.unwrap();
}
