//! Recall of the graph backends against the exact scan on random unit vectors (the hardest case:
//! no structure). Dimension 64 keeps the test fast; the benchmark uses 576.

use engine::index::{
    flat::FlatIndex, mean_recall, new_index, random_unit_vectors, AnnIndex, AnnParams, Backend,
};

const N: usize = 20_000;
const DIM: usize = 64;

fn check(backend: Backend, params: &AnnParams) {
    let base = random_unit_vectors(N, DIM, 11);
    let queries = random_unit_vectors(200, DIM, 12);
    let items: Vec<(u64, &[f32])> =
        base.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
    let mut exact = FlatIndex::new(DIM);
    exact.add(&items).unwrap();
    let mut idx = new_index(backend, DIM, params).unwrap();
    for chunk in items.chunks(5000) {
        idx.add(chunk).unwrap();
    }
    idx.flush().unwrap();
    let r = mean_recall(idx.as_ref(), &exact, &queries, 10).unwrap();
    assert!(r >= 0.95, "{backend} recall@10 = {r}");
    // And after a save/reload round trip.
    let dir = tempfile::tempdir().unwrap();
    idx.save_into(dir.path()).unwrap();
    let back = engine::index::load_index(backend, dir.path(), params).unwrap();
    let r2 = mean_recall(back.as_ref(), &exact, &queries, 10).unwrap();
    assert!(r2 >= 0.95, "{backend} recall@10 after reload = {r2}");
}

fn params() -> AnnParams {
    AnnParams {
        hnsw_m: 16,
        hnsw_ef_construction: 200,
        hnsw_ef_search: 256,
        hnsw_parallel_insert: false,
        faiss_factory: "HNSW32".into(),
        faiss_nprobe: 16,
    }
}

#[test]
fn hnsw_rs_recall_at_10() {
    check(Backend::Hnsw, &params());
}

#[cfg(feature = "faiss")]
#[test]
fn faiss_hnsw_recall_at_10() {
    check(Backend::Faiss, &params());
}
