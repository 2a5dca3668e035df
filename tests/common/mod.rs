//! Helpers shared by the integration tests (each test file includes this module).
#![allow(dead_code)]

pub mod pg;

use engine::encoder::{EncoderOptions, Padding, Pooling, Template};
use engine::index::AnnParams;
use engine::store::{Database, DocRecord, PassageRecord};

/// The method's encoder settings with short limits, for the tiny test model.
pub fn llama2vec_options() -> EncoderOptions {
    EncoderOptions {
        pooling: Pooling::Llama2Vec,
        template: Template::Llama2Vec,
        padding: Padding::Left,
        max_query_tokens: 32,
        max_passage_tokens: 48,
        batch_size: 8,
    }
}

/// Small-graph ANN settings for test corpora of a few hundred vectors.
pub fn test_ann_params() -> AnnParams {
    AnnParams {
        hnsw_m: 16,
        hnsw_ef_construction: 100,
        hnsw_ef_search: 64,
        hnsw_parallel_insert: false,
        faiss_factory: "HNSW32".into(),
        faiss_nprobe: 8,
    }
}

/// Everything a database stores: each document with its passages and their vectors.
pub type StoredState = Vec<(String, DocRecord, Vec<(PassageRecord, Vec<f32>)>)>;

/// Everything stored, through the public API, in id order (to compare two databases).
pub fn stored_state(db: &Database) -> StoredState {
    db.document_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let d = db.get_document(&id).unwrap().unwrap();
            let ps = d
                .passages
                .iter()
                .map(|&l| (db.get_passage(l).unwrap().unwrap(), db.vector(l).unwrap()))
                .collect();
            (id, d, ps)
        })
        .collect()
}
