//! Filtered search against an exact filtered scan, on a synthetic corpus with known metadata, in
//! every mode and backend, at 1 %, 10 % and 50 % selectivity (issue 15 item 1).

use std::collections::HashSet;
use std::time::Duration;

use engine::encoder::{Embed, TextKind};
use engine::filter::Filter;
use engine::fusion::Fusion;
use engine::index::Backend;
use engine::pipeline::testing::HashEmbedder;
use engine::pipeline::{index_documents, Document, IndexOptions, Silent};
use engine::search::{sync_lexical, SearchIndex, SearchMode, SearchOptions};
use engine::store::{Database, DbOptions};
use serde_json::json;

mod common;
use common::test_ann_params;

const DIM: usize = 32;
const N: usize = 200;
const TOPICS: &[&str] = &["ocean tide reef", "rust borrow compiler", "star galaxy orbit"];

fn opts() -> IndexOptions {
    IndexOptions {
        update: false,
        batch_size: 16,
        chunk_tokens: 16,
        chunk_overlap: 2,
        save_every: Duration::from_secs(3600),
        window_batches: 2,
        batch_delay: None,
    }
}

/// `bucket` is `i % 100`, so `bucket < p` selects p % of the corpus.
fn corpus() -> Vec<Document> {
    (0..N)
        .map(|i| {
            let extra = (i as u64).wrapping_mul(2_654_435_761) % 997;
            Document {
                id: format!("d{i:03}"),
                title: format!("T{i}"),
                text: format!("{} note{i} x{extra}", TOPICS[i % TOPICS.len()]),
                metadata: json!({"bucket": i % 100, "topic": TOPICS[i % 3].split(' ').next(),
                                 "date": format!("2020-01-{:02}", 1 + i % 28)}),
            }
        })
        .collect()
}

/// Exact filtered dense ranking: the best stored passage of every matching document.
fn exact_dense(db: &Database, q: &[f32], f: &Filter, k: usize) -> Vec<String> {
    let mut scored: Vec<(String, f32)> = db
        .document_ids()
        .unwrap()
        .into_iter()
        .filter_map(|id| {
            let d = db.get_document(&id).unwrap().unwrap();
            if !f.matches_str(&d.metadata) {
                return None;
            }
            let best = d
                .passages
                .iter()
                .map(|&l| db.vector(l).unwrap().iter().zip(q).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::MIN, f32::max);
            Some((id, best))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|(id, _)| id).collect()
}

fn check(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(DIM);
    let params = test_ann_params();
    let db = Database::create_or_open(
        dir.path(),
        &e.fingerprint(),
        &DbOptions { backend, params, chunk_tokens: 16, chunk_overlap: 2 },
    )
    .unwrap();
    index_documents(&db, &e, corpus(), &opts(), &Silent).unwrap();
    sync_lexical(&db).unwrap();
    let s = SearchIndex::open(db, false).unwrap();
    let fusion = Fusion::Rrf { k: 60 };
    let k = 10;
    for pct in [1, 10, 50] {
        let f = Filter::parse(&json!({"must": [{"key": "bucket", "range": {"lt": pct}}]})).unwrap();
        let matching: HashSet<String> =
            corpus().into_iter().filter(|d| f.matches(&d.metadata)).map(|d| d.id).collect();
        assert_eq!(matching.len(), N * pct / 100);
        let text = "ocean tide reef";
        let q = e.embed(&[text], TextKind::Query).unwrap().remove(0);
        for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
            let opts =
                SearchOptions { k, fusion, filter: Some(&f), score_threshold: None, ef: None };
            let hits = s.search_with(mode, text, Some(&q), &opts).unwrap().hits;
            assert!(hits.iter().all(|h| matching.contains(&h.id)), "{backend:?} {mode:?} {pct}%");
            if mode != SearchMode::Bm25 {
                // Every matching document has a vector, so dense finds min(k, matching).
                assert_eq!(hits.len(), k.min(matching.len()), "{backend:?} {mode:?} {pct}%");
            }
            let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
            match mode {
                SearchMode::Dense => {
                    let exact = exact_dense(s.embedded().unwrap(), &q, &f, k);
                    if backend == Backend::Flat {
                        assert_eq!(ids, exact, "{backend:?} {pct}%");
                    } else {
                        // Approximate backends: recall@k against the exact filtered scan.
                        let found = ids.iter().filter(|id| exact.contains(id)).count();
                        assert!(
                            found * 10 >= exact.len() * 8,
                            "{backend:?} {pct}%: {ids:?} vs {exact:?}"
                        );
                    }
                }
                SearchMode::Bm25 => {
                    // Many documents tie on BM25, so compare the scores of the top k.
                    let exact: Vec<f32> = s
                        .lexical()
                        .unwrap()
                        .search(text, N)
                        .unwrap()
                        .into_iter()
                        .filter(|(id, _)| matching.contains(id))
                        .take(k)
                        .map(|(_, sc)| sc)
                        .collect();
                    let got: Vec<f32> = hits.iter().map(|h| h.score).collect();
                    assert_eq!(got, exact, "{backend:?} bm25 {pct}%");
                }
                SearchMode::Hybrid => {}
            }
        }
    }
    // A filter nothing matches gives no hits rather than unfiltered ones.
    let none =
        Filter::parse(&json!({"must": [{"key": "topic", "match": {"value": "nope"}}]})).unwrap();
    let q = e.embed(&["ocean"], TextKind::Query).unwrap().remove(0);
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        let opts =
            SearchOptions { k, fusion, filter: Some(&none), score_threshold: None, ef: None };
        assert!(s.search_with(mode, "ocean", Some(&q), &opts).unwrap().hits.is_empty());
    }
}

#[test]
fn filtered_search_matches_exact_scan_flat() {
    check(Backend::Flat);
}

#[test]
fn filtered_search_matches_exact_scan_hnsw() {
    check(Backend::Hnsw);
}

#[test]
fn filtered_search_matches_exact_scan_faiss() {
    check(Backend::Faiss);
}
