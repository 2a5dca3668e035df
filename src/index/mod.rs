//! Approximate nearest-neighbour indexes over L2-normalised passage vectors, behind one trait.
//!
//! Every backend scores by inner product (= cosine on normalised vectors; higher is better) and
//! addresses vectors by a caller-chosen `u64` label (the store's passage label). Labels are never
//! reused, so a deleted label can be tombstoned (HNSW graphs cannot remove nodes) and filtered at
//! query time without any risk of returning a different passage under an old label.
//!
//! Backends: [`flat`] (exact scan, the reference), [`hnsw`] (`hnsw_rs`), and [`faiss`] (behind
//! the `faiss` cargo feature). Persistence goes through [`persist`], which makes every save atomic.

pub mod bench;
#[cfg(feature = "faiss")]
pub mod faiss;
pub mod flat;
pub mod hnsw;
pub mod persist;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::config::Backend;
use crate::config::IndexConfig;
use crate::error::{Error, Result};

impl Backend {
    /// Backends compiled into this binary.
    pub fn available() -> Vec<Backend> {
        let mut v = vec![Backend::Hnsw];
        if cfg!(feature = "faiss") {
            v.push(Backend::Faiss);
        }
        v.push(Backend::Flat);
        v
    }

    /// This backend, or an error when it is not compiled into this binary (faiss without the
    /// `faiss` cargo feature).
    pub fn compiled_in(self) -> Result<Self> {
        if self == Backend::Faiss && !cfg!(feature = "faiss") {
            return Err(Error::InvalidInput(
                "backend faiss is not compiled in (build with the `faiss` cargo feature)".into(),
            ));
        }
        Ok(self)
    }
}

/// Tunables of the ANN backends (a subset of `[index]`), stored in the database manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnParams {
    pub hnsw_m: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    /// Insert on all cores (faster, but builds of the same vectors then differ).
    pub hnsw_parallel_insert: bool,
    pub faiss_factory: String,
    pub faiss_nprobe: usize,
}

impl AnnParams {
    pub fn from_config(c: &IndexConfig) -> Self {
        AnnParams {
            hnsw_m: c.hnsw_m,
            hnsw_ef_construction: c.hnsw_ef_construction,
            hnsw_ef_search: c.hnsw_ef_search,
            hnsw_parallel_insert: c.hnsw_parallel_insert,
            faiss_factory: c.faiss_factory.clone(),
            faiss_nprobe: c.faiss_nprobe,
        }
    }

    /// Rejects values the libraries would abort on (hnsw_rs exits the process for M > 256).
    pub fn validate(&self) -> Result<()> {
        if self.hnsw_m < 2 || self.hnsw_m > 256 {
            return Err(Error::InvalidInput(format!(
                "index.hnsw_m must be in 2..=256, got {}",
                self.hnsw_m
            )));
        }
        if self.hnsw_ef_construction == 0 || self.hnsw_ef_search == 0 {
            return Err(Error::InvalidInput("index.hnsw_ef_* must be positive".into()));
        }
        if self.faiss_factory.trim().is_empty() {
            return Err(Error::InvalidInput("index.faiss_factory is empty".into()));
        }
        Ok(())
    }
}

/// One ANN result: a label and its inner-product score (higher is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnnHit {
    pub label: u64,
    pub score: f32,
}

/// What every backend offers. Mutations take `&mut self`: the owner (the store's `Database`)
/// keeps the index behind an `RwLock`, so searches run concurrently and writes are exclusive.
pub trait AnnIndex: Send + Sync {
    fn backend(&self) -> Backend;
    fn dim(&self) -> usize;
    /// Number of live (searchable) vectors.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of tombstoned vectors still occupying space (0 for backends that really delete).
    fn tombstones(&self) -> usize;
    /// Adds vectors (each of length `dim`, L2-normalised) under fresh labels. Adding a label
    /// that is already live is an error: labels are never reused.
    fn add(&mut self, items: &[(u64, &[f32])]) -> Result<()>;
    /// Removes labels (unknown labels are ignored so replays are idempotent).
    fn remove(&mut self, labels: &[u64]) -> Result<()>;
    /// The `k` best live labels for `query`, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<AnnHit>>;
    /// [`AnnIndex::search`] with this search's own effort (HNSW ef) instead of the index's.
    /// Backends without a per-search effort ignore it: flat is exact, and FAISS keeps its
    /// efSearch / nprobe on the index shared by concurrent searches.
    fn search_with_effort(
        &self,
        query: &[f32],
        k: usize,
        effort: Option<usize>,
    ) -> Result<Vec<AnnHit>> {
        let _ = effort;
        self.search(query, k)
    }
    /// Sorted live labels (used to reconcile with the store after a crash).
    fn labels(&self) -> Vec<u64>;
    /// Writes the index into the (fresh, empty) folder `dir`. Callers make it atomic through
    /// [`persist::Snapshots`].
    fn save_into(&self, dir: &Path) -> Result<()>;
    /// Changes the query-time effort (HNSW ef / FAISS efSearch or nprobe); used by benchmarks.
    fn set_search_effort(&mut self, effort: usize) -> Result<()>;
    /// Finishes deferred work before a save or a benchmark (FAISS IVF trains on what it has
    /// buffered). Searches are correct without it.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Largest search effort (HNSW ef) one search may ask for.
pub const MAX_SEARCH_EFFORT: usize = 10_000;

/// Checks a search's own effort: 1..=[`MAX_SEARCH_EFFORT`].
pub fn check_search_effort(ef: Option<usize>) -> Result<()> {
    match ef {
        Some(e) if !(1..=MAX_SEARCH_EFFORT).contains(&e) => {
            Err(Error::InvalidInput(format!("ef must be in 1..={MAX_SEARCH_EFFORT}, got {e}")))
        }
        _ => Ok(()),
    }
}

/// An empty index of `backend`.
pub fn new_index(backend: Backend, dim: usize, params: &AnnParams) -> Result<Box<dyn AnnIndex>> {
    if dim == 0 {
        return Err(Error::InvalidInput("vector dimension must be positive".into()));
    }
    params.validate()?;
    Ok(match backend {
        Backend::Flat => Box::new(flat::FlatIndex::new(dim)),
        Backend::Hnsw => Box::new(hnsw::HnswIndex::new(dim, params)),
        #[cfg(feature = "faiss")]
        Backend::Faiss => Box::new(faiss::FaissIndex::new(dim, params)?),
        #[cfg(not(feature = "faiss"))]
        Backend::Faiss => return Err(Error::InvalidInput("faiss backend not compiled in".into())),
    })
}

/// Loads an index that [`AnnIndex::save_into`] wrote into `dir`.
pub fn load_index(backend: Backend, dir: &Path, params: &AnnParams) -> Result<Box<dyn AnnIndex>> {
    Ok(match backend {
        Backend::Flat => Box::new(flat::FlatIndex::load(dir)?),
        Backend::Hnsw => Box::new(hnsw::HnswIndex::load(dir, params)?),
        #[cfg(feature = "faiss")]
        Backend::Faiss => Box::new(faiss::FaissIndex::load(dir, params)?),
        #[cfg(not(feature = "faiss"))]
        Backend::Faiss => return Err(Error::InvalidInput("faiss backend not compiled in".into())),
    })
}

/// Inner product written as 8 independent accumulators so LLVM vectorises it (no `unsafe`, no
/// target-specific intrinsics).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Scales `v` to unit length. Errors on zero or non-finite vectors, which no backend can score.
pub fn normalize(v: &mut [f32]) -> Result<()> {
    let n = dot(v, v).sqrt();
    if !n.is_finite() || n == 0.0 {
        return Err(Error::InvalidInput("vector is zero or not finite".into()));
    }
    for x in v.iter_mut() {
        *x /= n;
    }
    Ok(())
}

/// Checks a vector's length and finiteness before it reaches a backend.
pub(crate) fn check_vector(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::InvalidInput(format!("vector has {} dims, index has {dim}", v.len())));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::InvalidInput("vector contains NaN or infinity".into()));
    }
    Ok(())
}

/// Keeps the `k` best hits (highest score, ties by label for determinism), sorted best first.
pub(crate) fn top_k(mut hits: Vec<AnnHit>, k: usize) -> Vec<AnnHit> {
    let cmp = |a: &AnnHit, b: &AnnHit| b.score.total_cmp(&a.score).then(a.label.cmp(&b.label));
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, cmp);
        hits.truncate(k);
    }
    hits.sort_unstable_by(cmp);
    hits.truncate(k);
    hits
}

/// Fraction of `truth`'s labels found in `got` (recall@k for one query).
pub fn recall(got: &[AnnHit], truth: &[AnnHit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let set: std::collections::HashSet<u64> = got.iter().map(|h| h.label).collect();
    truth.iter().filter(|h| set.contains(&h.label)).count() as f64 / truth.len() as f64
}

/// Mean recall@k of `ann` against `exact` over `queries`.
pub fn mean_recall(
    ann: &dyn AnnIndex,
    exact: &dyn AnnIndex,
    queries: &[Vec<f32>],
    k: usize,
) -> Result<f64> {
    use rayon::prelude::*;
    if queries.is_empty() {
        return Ok(1.0);
    }
    let per: Result<Vec<f64>> =
        queries.par_iter().map(|q| Ok(recall(&ann.search(q, k)?, &exact.search(q, k)?))).collect();
    Ok(per?.iter().sum::<f64>() / queries.len() as f64)
}

/// `n` random unit vectors of `dim` dims (Gaussian then normalised), deterministic per seed.
pub fn random_unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64,
            );
            let mut v: Vec<f32> = (0..dim)
                .map(|_| {
                    // Box-Muller: rand 0.8 has no normal distribution without rand_distr.
                    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.gen::<f32>();
                    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect();
            normalize(&mut v).expect("gaussian vector is non-zero");
            v
        })
        .collect()
}

/// `n` unit vectors drawn around `clusters` random unit centres: centre + `spread` x a random
/// unit vector, normalised (cosine to the centre about 1/sqrt(1 + spread^2)). Real embedding
/// sets have this kind of structure (low intrinsic dimension), unlike [`random_unit_vectors`].
/// Points and queries drawn with different `seed`s share the centres of the same `centre_seed`.
pub fn clustered_unit_vectors(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    centre_seed: u64,
    seed: u64,
) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    let centres = random_unit_vectors(clusters.max(1), dim, centre_seed);
    let noise = random_unit_vectors(n, dim, seed);
    noise
        .into_par_iter()
        .enumerate()
        .map(|(i, mut v)| {
            // A fixed odd multiplier scatters members over the centres deterministically.
            let c = &centres[(i.wrapping_mul(0x9E37_79B1) ^ seed as usize) % centres.len()];
            for (x, m) in v.iter_mut().zip(c) {
                *x = m + spread * *x;
            }
            normalize(&mut v).expect("centre plus bounded noise is non-zero");
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clustered vectors are unit length, and two draws share structure (a point's best match
    /// among other draws is far closer than among uniform random vectors).
    #[test]
    fn clustered_vectors_have_cluster_structure() {
        let pts = clustered_unit_vectors(400, 64, 4, 1.0, 9, 1);
        let others = clustered_unit_vectors(400, 64, 4, 1.0, 9, 2);
        let uniform = random_unit_vectors(400, 64, 3);
        for v in &pts {
            assert!((dot(v, v) - 1.0).abs() < 1e-4);
        }
        let best = |v: &[f32], set: &[Vec<f32>]| {
            set.iter().map(|u| dot(v, u)).fold(f32::NEG_INFINITY, f32::max)
        };
        let mean_best =
            |set: &[Vec<f32>]| pts.iter().map(|v| best(v, set)).sum::<f32>() / pts.len() as f32;
        let (clustered, random) = (mean_best(&others), mean_best(&uniform));
        // Same-cluster pairs have cosine ~1/(1 + spread^2) = 0.5; uniform 64-d pairs ~0.3 at best.
        assert!(clustered > 0.55 && random < 0.45, "clustered {clustered}, random {random}");
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn backend_parse() {
        assert_eq!("hnsw".parse::<Backend>().unwrap(), Backend::Hnsw);
        assert!("annoy".parse::<Backend>().is_err());
    }

    #[test]
    fn normalize_rejects_zero() {
        assert!(normalize(&mut [0.0, 0.0]).is_err());
        let mut v = [3.0, 4.0];
        normalize(&mut v).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6);
    }
}
