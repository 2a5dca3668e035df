//! Library-level indexing tests with the deterministic hash embedder (no model needed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engine::encoder::{Embed, EncoderFingerprint, TextKind};
use engine::index::Backend;
use engine::pipeline::testing::HashEmbedder;
use engine::pipeline::{index_documents, Document, IndexOptions, Silent};
use engine::store::{Database, DbOptions};
use engine::Error;

mod common;
use common::{stored_state, test_ann_params};

const DIM: usize = 64;

fn db_opts(backend: Backend) -> DbOptions {
    DbOptions { backend, params: test_ann_params(), chunk_tokens: 8, chunk_overlap: 2 }
}

fn opts() -> IndexOptions {
    IndexOptions {
        update: false,
        batch_size: 4,
        chunk_tokens: 8,
        chunk_overlap: 2,
        save_every: Duration::from_secs(3600),
        window_batches: 2,
        batch_delay: None,
    }
}

fn doc(id: &str, title: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        title: title.into(),
        text: text.into(),
        metadata: serde_json::Value::Null,
    }
}

const TOPICS: &[&str] = &[
    "apple banana cherry fruit orchard harvest",
    "rust compiler borrow checker lifetimes",
    "ocean waves tide coral reef fish",
    "galaxy star nebula telescope orbit",
    "violin cello orchestra symphony concert",
];

/// Documents on distinct topics; some are long enough to be split into several passages.
fn corpus(n: usize) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let topic = TOPICS[i % TOPICS.len()];
            let reps = 1 + i % 4;
            // Pseudo-random extra words make exact score ties between documents unlikely, so
            // approximate and exact backends agree on the order.
            let extra: Vec<String> = (0..4u64)
                .map(|j| {
                    format!(
                        "x{}",
                        (i as u64 * 7919 + j * 104_729).wrapping_mul(2_654_435_761) % 997
                    )
                })
                .collect();
            let extra = extra.join(" ");
            let text = (0..reps)
                .map(|r| format!("{topic} note{i} part{r} {extra}"))
                .collect::<Vec<_>>()
                .join(" ");
            doc(&format!("doc-{i:03}"), &format!("Title {i}"), &text)
        })
        .collect()
}

fn query(e: &HashEmbedder, text: &str) -> Vec<f32> {
    e.embed(&[text], TextKind::Query).unwrap().remove(0)
}

#[test]
fn index_search_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let docs = corpus(40);
    {
        let db = Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Hnsw))
            .unwrap();
        let r = index_documents(&db, &e, docs.clone(), &opts(), &Silent).unwrap();
        assert_eq!(r.added, 40);
        assert!(r.passages_embedded > 40, "long documents are split: {r:?}");
        let st = db.status().unwrap();
        assert_eq!(st.documents, 40);
        assert_eq!(st.passages as usize, r.passages_embedded);
        assert_eq!(st.indexed as u64, st.passages);
        // Every passage of a long document records its document and a real text range.
        let d = db.get_document("doc-003").unwrap().unwrap();
        assert!(d.passages.len() > 1);
        for &l in &d.passages {
            let p = db.get_passage(l).unwrap().unwrap();
            assert_eq!(p.doc_id, "doc-003");
            assert!(p.end as usize <= d.text.len());
        }
    }
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let hits = db
        .search_dense(&query(&e, "Title 3 galaxy star nebula telescope orbit note3 part0"), 5)
        .unwrap();
    assert_eq!(hits[0].id, "doc-003", "{hits:?}");
    assert_eq!(hits[0].title, "Title 3");
    assert!(hits[0].passage.contains("note3 part0"));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let ids: std::collections::HashSet<_> = hits.iter().map(|h| &h.id).collect();
    assert_eq!(ids.len(), hits.len(), "hits are aggregated per document");
    // Re-running on the same corpus embeds nothing.
    let r = index_documents(&db, &e, docs, &opts(), &Silent).unwrap();
    assert_eq!((r.added, r.unchanged, r.passages_embedded), (0, 40, 0));
}

#[test]
fn every_backend_returns_the_same_top_k() {
    let e = HashEmbedder::new(DIM);
    let docs = corpus(60);
    let mut results = Vec::new();
    for backend in Backend::available() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(backend)).unwrap();
        index_documents(&db, &e, docs.clone(), &opts(), &Silent).unwrap();
        drop(db);
        let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
        assert_eq!(db.manifest().backend, backend);
        let mut per_query = Vec::new();
        for q in ["galaxy telescope note7", "rust lifetimes part2", "coral reef fish note12"] {
            let hits = db.search_dense(&query(&e, q), 5).unwrap();
            per_query.push(hits.into_iter().map(|h| h.id).collect::<Vec<_>>());
        }
        results.push((backend, per_query));
    }
    assert!(results.len() >= 2);
    for (b, r) in &results[1..] {
        assert_eq!(r, &results[0].1, "{b} differs from {}", results[0].0);
    }
}

#[test]
fn encoder_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    {
        let db = Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Flat))
            .unwrap();
        index_documents(&db, &e, corpus(3), &opts(), &Silent).unwrap();
    }
    let other = EncoderFingerprint { model_hash: "another-model".into(), ..e.fingerprint() };
    let err = Database::open(dir.path(), Some(&other)).err().expect("must refuse");
    assert!(matches!(err, Error::EncoderMismatch(_)), "{err}");
    let err = Database::create_or_open(
        dir.path(),
        &HashEmbedder::new(16).fingerprint(),
        &db_opts(Backend::Flat),
    )
    .err()
    .expect("must refuse");
    assert!(matches!(err, Error::EncoderMismatch(_)), "{err}");
    // Nothing was damaged by the refused opens.
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    assert_eq!(db.status().unwrap().documents, 3);
}

/// Embeds normally for `ok_calls` batches, then fails: an interrupted run.
struct FailingEmbedder {
    inner: HashEmbedder,
    ok_calls: usize,
    calls: AtomicUsize,
}

impl Embed for FailingEmbedder {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn fingerprint(&self) -> EncoderFingerprint {
        self.inner.fingerprint()
    }
    fn embed(&self, texts: &[&str], kind: TextKind) -> engine::Result<Vec<Vec<f32>>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.ok_calls {
            return Err(Error::InvalidInput("simulated crash".into()));
        }
        self.inner.embed(texts, kind)
    }
    fn token_spans(&self, text: &str) -> engine::Result<Vec<(usize, usize)>> {
        self.inner.token_spans(text)
    }
}

#[test]
fn interrupted_run_resumes_to_identical_state() {
    let e = HashEmbedder::new(DIM);
    let docs = corpus(50);
    let full = tempfile::tempdir().unwrap();
    let db =
        Database::create_or_open(full.path(), &e.fingerprint(), &db_opts(Backend::Hnsw)).unwrap();
    index_documents(&db, &e, docs.clone(), &opts(), &Silent).unwrap();
    let expected = stored_state(&db);
    drop(db);

    let part = tempfile::tempdir().unwrap();
    {
        let db = Database::create_or_open(part.path(), &e.fingerprint(), &db_opts(Backend::Hnsw))
            .unwrap();
        // 5 good batches: two windows committed, one batch cached in the third.
        let failing = FailingEmbedder {
            inner: HashEmbedder::new(DIM),
            ok_calls: 5,
            calls: AtomicUsize::new(0),
        };
        let err = index_documents(&db, &failing, docs.clone(), &opts(), &Silent).unwrap_err();
        assert!(err.to_string().contains("simulated crash"));
        let stored = db.status().unwrap().documents;
        assert!(stored > 0 && (stored as usize) < docs.len(), "interrupted mid-way: {stored}");
    }
    let db = Database::open(part.path(), Some(&e.fingerprint())).unwrap();
    let r = index_documents(&db, &e, docs, &opts(), &Silent).unwrap();
    assert!(r.unchanged > 0 && r.passages_resumed > 0, "{r:?}");
    assert_eq!(db.clear_cache().unwrap(), 0, "a completed run leaves no cached vectors");
    assert_eq!(stored_state(&db), expected);
    let q = query(&e, "ocean tide note22");
    let ref_db = Database::open(full.path(), None).unwrap();
    let a: Vec<String> = db.search_dense(&q, 5).unwrap().into_iter().map(|h| h.id).collect();
    let b: Vec<String> = ref_db.search_dense(&q, 5).unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(a, b);
}

#[test]
fn duplicates_updates_and_empty_documents() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Hnsw)).unwrap();
    let mut docs = corpus(5);
    docs.push(doc("empty", "", "   "));
    docs.push(docs[0].clone()); // exact duplicate: skipped
    let r = index_documents(&db, &e, docs, &opts(), &Silent).unwrap();
    assert_eq!((r.added, r.empty_skipped, r.duplicates_skipped), (5, 1, 1));
    assert!(db.get_document("empty").unwrap().is_none());

    // Same id twice in one corpus with different content: refused, nothing written.
    let before = stored_state(&db);
    let dup = vec![doc("new-1", "", "alpha"), doc("new-1", "", "beta")];
    let err = index_documents(&db, &e, dup.clone(), &opts(), &Silent).unwrap_err();
    assert!(err.to_string().contains("new-1"), "{err}");
    assert_eq!(stored_state(&db), before);
    // Against a stored id with different content: refused without --update.
    let changed = vec![doc("doc-001", "Title 1", "completely different text now")];
    let err = index_documents(&db, &e, changed.clone(), &opts(), &Silent).unwrap_err();
    assert!(err.to_string().contains("doc-001") && err.to_string().contains("--update"), "{err}");
    assert_eq!(stored_state(&db), before);

    let upd = IndexOptions { update: true, ..opts() };
    let r = index_documents(&db, &e, changed, &upd, &Silent).unwrap();
    assert_eq!(r.updated, 1);
    let r = index_documents(&db, &e, dup, &upd, &Silent).unwrap();
    assert_eq!(r.added, 1);
    assert_eq!(db.get_document("new-1").unwrap().unwrap().text, "beta");
    let hits = db.search_dense(&query(&e, "completely different text"), 1).unwrap();
    assert_eq!(hits[0].id, "doc-001");
    let st = db.status().unwrap();
    assert_eq!(st.documents, 6);
    assert_eq!(st.indexed as u64, st.passages, "old passages of the updated doc are gone");

    // A change of metadata alone: refused without --update like any change, stored with it
    // without re-embedding (the passages keep their labels).
    let mut retagged = db.get_document("doc-002").unwrap().unwrap();
    let labels = retagged.passages.clone();
    let mut d = doc("doc-002", &retagged.title, &retagged.text);
    d.metadata = serde_json::json!({ "topic": "ocean" });
    assert!(index_documents(&db, &e, vec![d.clone()], &opts(), &Silent).is_err());
    let r = index_documents(&db, &e, vec![d], &upd, &Silent).unwrap();
    assert_eq!((r.updated, r.metadata_only, r.passages_embedded), (1, 1, 0), "{r:?}");
    retagged = db.get_document("doc-002").unwrap().unwrap();
    assert_eq!(retagged.metadata, r#"{"topic":"ocean"}"#);
    assert_eq!(retagged.passages, labels, "the metadata change re-embedded the document");
}

#[test]
fn deletion_removes_documents_from_results_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    for backend in Backend::available() {
        let path = dir.path().join(backend.to_string());
        let db = Database::create_or_open(&path, &e.fingerprint(), &db_opts(backend)).unwrap();
        index_documents(&db, &e, corpus(30), &opts(), &Silent).unwrap();
        let q = query(&e, "Title 8 galaxy star nebula telescope orbit note8 part0");
        assert_eq!(db.search_dense(&q, 1).unwrap()[0].id, "doc-008");
        let missing = db.delete_documents(&["doc-008".into(), "nope".into()]).unwrap();
        assert_eq!(missing, vec!["nope".to_string()]);
        assert!(db.get_document("doc-008").unwrap().is_none());
        let hits = db.search_dense(&q, 10).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.id != "doc-008"), "{backend}");
        db.save_index().unwrap();
        drop(db);
        let db = Database::open(&path, Some(&e.fingerprint())).unwrap();
        assert!(db.search_dense(&q, 10).unwrap().iter().all(|h| h.id != "doc-008"), "{backend}");
        assert_eq!(db.status().unwrap().documents, 29);
    }
}

#[test]
fn stale_or_corrupt_index_snapshot_is_caught_up_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    {
        let db = Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Hnsw))
            .unwrap();
        index_documents(&db, &e, corpus(10), &opts(), &Silent).unwrap();
        // A write after the last save: the snapshot on disk still holds doc-002's passages
        // (as after a crash before the next save).
        db.delete_documents(&["doc-002".into()]).unwrap();
    }
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let st = db.status().unwrap();
    assert_eq!(st.indexed as u64, st.passages);
    assert!(db
        .search_dense(&query(&e, "ocean tide note2"), 10)
        .unwrap()
        .iter()
        .all(|h| h.id != "doc-002"));
    drop(db);
    // Corrupt every file of the current snapshot: open still works, rebuilding from vectors.
    let cur = std::fs::read_to_string(dir.path().join("ann/CURRENT")).unwrap();
    for f in std::fs::read_dir(dir.path().join(engine::store::ANN_DIR).join(cur.trim())).unwrap() {
        std::fs::write(f.unwrap().path(), b"garbage").unwrap();
    }
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    assert_eq!(db.search_dense(&query(&e, "violin symphony note4"), 1).unwrap()[0].id, "doc-004");
    db.save_index().unwrap();
    drop(db);
    // Damage hnsw_rs handles worst: a truncated data file (it exits the process) and a flipped
    // byte in the graph (it aborts on a huge allocation). Both are caught before loading.
    let snap = || {
        let cur = std::fs::read_to_string(dir.path().join("ann/CURRENT")).unwrap();
        dir.path().join(engine::store::ANN_DIR).join(cur.trim())
    };
    let data = snap().join("graph.hnsw.data");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    assert_eq!(db.search_dense(&query(&e, "violin symphony note4"), 1).unwrap()[0].id, "doc-004");
    db.save_index().unwrap();
    drop(db);
    let graph = snap().join("graph.hnsw.graph");
    let mut bytes = std::fs::read(&graph).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    bytes[at + 1] ^= 0xff;
    std::fs::write(&graph, &bytes).unwrap();
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    assert_eq!(db.search_dense(&query(&e, "violin symphony note4"), 1).unwrap()[0].id, "doc-004");
}

#[test]
fn verify_recall_and_backend_switch() {
    let dir = tempfile::tempdir().unwrap();
    // Random words per document: few exact ties, so recall measures the index, not tie-breaks.
    let e = HashEmbedder::new(64);
    let mut x: u64 = 12345;
    let docs: Vec<Document> = (0..300)
        .map(|i| {
            let words: Vec<String> = (0..6)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    format!("w{}", (x >> 33) % 5000)
                })
                .collect();
            doc(&format!("r{i}"), "", &words.join(" "))
        })
        .collect();
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Hnsw)).unwrap();
    index_documents(&db, &e, docs, &opts(), &Silent).unwrap();
    let r = db.verify_recall(50, 10, 1).unwrap();
    assert_eq!(r.queries, 50);
    assert!(r.recall >= 0.9, "{r:?}");
    drop(db);
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Flat)).unwrap();
    assert_eq!(db.manifest().backend, Backend::Flat);
    assert_eq!(db.verify_recall(50, 10, 1).unwrap().recall, 1.0);
    drop(db);
    let err = Database::create_or_open(
        dir.path(),
        &e.fingerprint(),
        &DbOptions { chunk_tokens: 99, ..db_opts(Backend::Flat) },
    );
    assert!(err.err().unwrap().to_string().contains("chunk_tokens"));
}

#[test]
fn mostly_deleted_graph_is_compacted_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Hnsw)).unwrap();
    index_documents(&db, &e, corpus(100), &opts(), &Silent).unwrap();
    let ids: Vec<String> = (0..90).map(|i| format!("doc-{i:03}")).collect();
    db.delete_documents(&ids).unwrap();
    assert!(db.status().unwrap().tombstones > 64);
    db.save_index().unwrap();
    let st = db.status().unwrap();
    assert_eq!(st.tombstones, 0);
    assert_eq!(st.indexed as u64, st.passages);
    assert_eq!(st.documents, 10);
    let hits = db.search_dense(&query(&e, "violin cello note94"), 3).unwrap();
    assert_eq!(hits[0].id, "doc-094");
}

/// A crash between the store write and the BM25 write of an update (same document count, so
/// counting cannot see it) is repaired on the next open, through the write-ahead marker.
#[test]
fn bm25_is_repaired_after_a_write_interrupted_before_it_reached_bm25() {
    use engine::search::SearchIndex;
    use engine::store::LEXICAL_PENDING;
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Flat)).unwrap();
    index_documents(&db, &e, corpus(5), &opts(), &Silent).unwrap();
    let index = SearchIndex::open(db, true).unwrap();
    let bm25 = |index: &SearchIndex, q: &str| -> Vec<String> {
        index.lexical().unwrap().search(q, 5).unwrap().into_iter().map(|(id, _)| id).collect()
    };
    assert!(bm25(&index, "zeppelin").is_empty());
    // A successful write through the index leaves no marker.
    index.delete_documents(&["doc-004".into()]).unwrap();
    assert!(!dir.path().join(LEXICAL_PENDING).exists());
    assert!(!bm25(&index, "note4").contains(&"doc-004".to_string()));
    drop(index);
    // The state a crash leaves mid-update: marker written, store updated, BM25 not.
    std::fs::write(dir.path().join(LEXICAL_PENDING), b"").unwrap();
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let updated = doc("doc-001", "Airships", "a zeppelin over the harbour");
    index_documents(&db, &e, vec![updated], &IndexOptions { update: true, ..opts() }, &Silent)
        .unwrap();
    drop(db);
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let index = SearchIndex::open(db, false).unwrap();
    assert_eq!(bm25(&index, "zeppelin"), vec!["doc-001".to_string()]);
    assert!(!dir.path().join(LEXICAL_PENDING).exists());
    drop(index);
    // A BM25 folder that cannot be opened is rebuilt too; dense search never depends on it.
    for f in std::fs::read_dir(engine::store::lexical_dir(dir.path())).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let index = SearchIndex::open(db, false).unwrap();
    assert_eq!(bm25(&index, "zeppelin"), vec!["doc-001".to_string()]);
}

/// An indexing run that stops after some of its store writes (killed, or an encoder error)
/// and before BM25 is rebuilt: an update keeps the document count, so only the marker
/// `index_with_bm25` puts down first tells the next open to repair BM25.
#[test]
fn bm25_is_repaired_after_an_indexing_run_stopped_before_it_reached_bm25() {
    use engine::search::{index_with_bm25, SearchIndex};
    use engine::store::LEXICAL_PENDING;
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let db =
        Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Flat)).unwrap();
    let (report, lexical) = index_with_bm25(&db, &e, corpus(12), &[], &opts(), &Silent).unwrap();
    assert_eq!((report.added, lexical.count()), (12, 12));
    assert!(!dir.path().join(LEXICAL_PENDING).exists());
    drop(lexical);
    // Every document rewritten with a new word; the encoder fails after two batches.
    let updated: Vec<Document> = corpus(12)
        .into_iter()
        .map(|d| Document { text: format!("{} zeppelin", d.text), ..d })
        .collect();
    let failing =
        FailingEmbedder { inner: HashEmbedder::new(DIM), ok_calls: 2, calls: AtomicUsize::new(0) };
    let update = IndexOptions { update: true, window_batches: 1, ..opts() };
    let Err(err) = index_with_bm25(&db, &failing, updated, &[], &update, &Silent) else {
        panic!("the failing encoder must stop the run");
    };
    assert!(err.to_string().contains("simulated crash"), "{err}");
    drop(db);
    let db = Database::open(dir.path(), Some(&e.fingerprint())).unwrap();
    let in_store = db
        .document_ids()
        .unwrap()
        .into_iter()
        .filter(|id| db.get_document(id).unwrap().unwrap().text.contains("zeppelin"))
        .count();
    assert!(in_store > 0 && in_store < 12, "the run stopped part-way: {in_store} updated");
    assert_eq!(db.status().unwrap().documents, 12);
    let index = SearchIndex::open(db, false).unwrap();
    let hits = index.lexical().unwrap().search("zeppelin", 20).unwrap();
    assert_eq!(hits.len(), in_store, "BM25 must hold every update the store holds");
    assert!(!dir.path().join(LEXICAL_PENDING).exists());
}

/// Passages of very different lengths are batched with little padding under the default
/// options (length sorting over wide windows), and the report counts the encoder's real work.
#[test]
fn default_batching_pads_under_two_percent_and_reports_its_work() {
    let config = engine::config::Config::default();
    // Lengths from 5 to 404 words (seeded), a spread like real abstracts'.
    let mut x = 12345u64;
    let docs: Vec<Document> = (0..1500)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let words = 5 + (x >> 33) as usize % 400;
            let text: Vec<String> = (0..words).map(|w| format!("w{}", (w * 7 + i) % 997)).collect();
            // Titles of 0 to 29 words: embedded with every passage, so part of its length.
            let title: Vec<String> =
                (0..(x >> 20) as usize % 30).map(|w| format!("t{w}")).collect();
            doc(&format!("d{i}"), &title.join(" "), &text.join(" "))
        })
        .collect();
    let run = |window_batches: usize| {
        let dir = tempfile::tempdir().unwrap();
        let e = HashEmbedder::new(DIM);
        let db = Database::create_or_open(dir.path(), &e.fingerprint(), &db_opts(Backend::Flat))
            .unwrap();
        let opts = IndexOptions { window_batches, ..IndexOptions::from_config(&config) };
        index_documents(&db, &e, docs.clone(), &opts, &Silent).unwrap()
    };
    let wide = run(IndexOptions::from_config(&config).window_batches);
    let f = wide.forward;
    assert_eq!(f.sequences as usize, wide.passages_embedded);
    // Every passage's words are counted once (overlapping chunks count their overlap twice).
    let words: u64 = docs
        .iter()
        .map(|d| (d.text.split_whitespace().count() + d.title.split_whitespace().count()) as u64)
        .sum();
    assert!(f.tokens >= words, "{f:?}");
    assert!(f.padding_share() < 0.02, "padding {:.3} of positions", f.padding_share());
    assert!(wide.tokens_per_s > 0.0 && wide.passages_per_s > 0.0);
    // One batch per window sorts nothing across batches: the padding the wide window saves.
    let narrow = run(1);
    assert_eq!(narrow.forward.tokens, f.tokens);
    assert!(
        narrow.forward.padding_share() > 4.0 * f.padding_share(),
        "{:?} vs {f:?}",
        narrow.forward
    );
}
