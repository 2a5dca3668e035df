//! FAISS (bundled static build) through the `faiss` crate, any `index_factory` string with the
//! inner-product metric: "Flat", "HNSW32", "IVF256,Flat", ...
//!
//! FAISS assigns sequential ids on `add` (HNSW indexes do not support `add_with_ids` nor
//! `remove_ids`), so we keep our own position → label map and tombstone removals; searches
//! over-fetch by the number of tombstones so `k` live hits come back. Indexes that need training
//! (IVF) buffer vectors, searched exactly, until there are enough to train on.
//! The crate's `search` takes `&mut self`, so the FAISS object sits behind a `Mutex`: concurrent
//! searches are serialised (FAISS itself parallelises inside a search with OpenMP).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use faiss::index::autotune::ParameterSpace;
use faiss::index::IndexImpl;
use faiss::{Index, MetricType};
use serde::{Deserialize, Serialize};

use super::{check_vector, dot, top_k, AnnHit, AnnIndex, AnnParams, Backend};
use crate::error::{Error, Result};

const INDEX_FILE: &str = "faiss.index";
const META: &str = "faiss.meta";
/// Untrained indexes train once this many vectors are buffered (FAISS wants ~39 per centroid).
const MIN_TRAIN: usize = 10_000;

#[derive(Serialize, Deserialize)]
struct Meta {
    dim: usize,
    factory: String,
    labels: Vec<u64>,
    dead: Vec<usize>,
    pending_labels: Vec<u64>,
    pending: Vec<f32>,
}

pub struct FaissIndex {
    dim: usize,
    factory: String,
    nprobe: usize,
    ef_search: usize,
    index: Mutex<IndexImpl>,
    labels: Vec<u64>,
    live: HashMap<u64, usize>,
    dead: HashSet<usize>,
    /// Vectors waiting for training (IVF); searched exactly.
    pending_labels: Vec<u64>,
    pending: Vec<f32>,
}

fn faiss_err(what: &str) -> impl Fn(faiss::error::Error) -> Error + '_ {
    move |e| Error::Index(format!("faiss {what}: {e}"))
}

impl FaissIndex {
    pub fn new(dim: usize, params: &AnnParams) -> Result<Self> {
        let index =
            faiss::index_factory(dim as u32, &params.faiss_factory, MetricType::InnerProduct)
                .map_err(faiss_err(&format!("index_factory({:?})", params.faiss_factory)))?;
        let mut me = FaissIndex {
            dim,
            factory: params.faiss_factory.clone(),
            nprobe: params.faiss_nprobe,
            ef_search: params.hnsw_ef_search,
            index: Mutex::new(index),
            labels: Vec::new(),
            live: HashMap::new(),
            dead: HashSet::new(),
            pending_labels: Vec::new(),
            pending: Vec::new(),
        };
        me.apply_search_params()?;
        Ok(me)
    }

    pub fn load(dir: &Path, params: &AnnParams) -> Result<Self> {
        let meta_path = dir.join(META);
        let meta: Meta = bincode::deserialize(&std::fs::read(&meta_path)?)
            .map_err(|e| Error::Index(format!("{}: {e}", meta_path.display())))?;
        let index_path = dir.join(INDEX_FILE);
        let path_str =
            index_path.to_str().ok_or_else(|| Error::Index("non-UTF-8 index path".into()))?;
        let index = faiss::read_index(path_str).map_err(faiss_err("read_index"))?;
        if index.ntotal() as usize != meta.labels.len() || index.d() as usize != meta.dim {
            return Err(Error::Index(format!(
                "{}: holds {} vectors of {} dims, label map says {} of {}",
                index_path.display(),
                index.ntotal(),
                index.d(),
                meta.labels.len(),
                meta.dim
            )));
        }
        let dead: HashSet<usize> = meta.dead.into_iter().collect();
        let live = meta
            .labels
            .iter()
            .enumerate()
            .filter(|(i, _)| !dead.contains(i))
            .map(|(i, &l)| (l, i))
            .collect();
        let mut me = FaissIndex {
            dim: meta.dim,
            factory: meta.factory,
            nprobe: params.faiss_nprobe,
            ef_search: params.hnsw_ef_search,
            index: Mutex::new(index),
            labels: meta.labels,
            live,
            dead,
            pending_labels: meta.pending_labels,
            pending: meta.pending,
        };
        me.apply_search_params()?;
        Ok(me)
    }

    /// Sets efSearch / nprobe where the index has them (others reject the name; ignored).
    fn apply_search_params(&mut self) -> Result<()> {
        let ps = ParameterSpace::new().map_err(faiss_err("ParameterSpace"))?;
        let index = self.index.get_mut().map_err(|_| Error::Index("faiss lock poisoned".into()))?;
        let _ = ps.set_index_parameter(&*index, "efSearch", self.ef_search as f64);
        let _ = ps.set_index_parameter(&*index, "nprobe", self.nprobe as f64);
        Ok(())
    }

    fn is_pending(&self, label: u64) -> bool {
        self.pending_labels.contains(&label)
    }

    /// Trains on the buffer when it is large enough, then moves it into the index.
    fn train_if_ready(&mut self, force: bool) -> Result<()> {
        if self.pending_labels.is_empty() {
            return Ok(());
        }
        let index = self.index.get_mut().map_err(|_| Error::Index("faiss lock poisoned".into()))?;
        if !index.is_trained() {
            if self.pending_labels.len() < MIN_TRAIN && !force {
                return Ok(());
            }
            if index.train(&self.pending).is_err() {
                // Too few points for this factory (e.g. fewer than nlist); keep buffering.
                return Ok(());
            }
        }
        index.add(&self.pending).map_err(faiss_err("add"))?;
        let first = self.labels.len();
        for (i, l) in std::mem::take(&mut self.pending_labels).into_iter().enumerate() {
            self.labels.push(l);
            self.live.insert(l, first + i);
        }
        self.pending.clear();
        Ok(())
    }
}

impl AnnIndex for FaissIndex {
    fn backend(&self) -> Backend {
        Backend::Faiss
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.live.len() + self.pending_labels.len()
    }
    fn tombstones(&self) -> usize {
        self.dead.len()
    }

    fn add(&mut self, items: &[(u64, &[f32])]) -> Result<()> {
        let mut seen = HashSet::new();
        for (label, v) in items {
            check_vector(v, self.dim)?;
            if self.live.contains_key(label) || self.is_pending(*label) || !seen.insert(*label) {
                return Err(Error::Index(format!("label {label} is already in the index")));
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let flat: Vec<f32> = items.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let trained = self
            .index
            .get_mut()
            .map_err(|_| Error::Index("faiss lock poisoned".into()))?
            .is_trained();
        if trained && self.pending_labels.is_empty() {
            let index =
                self.index.get_mut().map_err(|_| Error::Index("faiss lock poisoned".into()))?;
            index.add(&flat).map_err(faiss_err("add"))?;
            let first = self.labels.len();
            for (i, (l, _)) in items.iter().enumerate() {
                self.labels.push(*l);
                self.live.insert(*l, first + i);
            }
            return Ok(());
        }
        self.pending_labels.extend(items.iter().map(|(l, _)| *l));
        self.pending.extend_from_slice(&flat);
        self.train_if_ready(false)
    }

    fn remove(&mut self, labels: &[u64]) -> Result<()> {
        for l in labels {
            if let Some(pos) = self.live.remove(l) {
                self.dead.insert(pos);
            } else if let Some(i) = self.pending_labels.iter().position(|p| p == l) {
                self.pending_labels.remove(i);
                self.pending.drain(i * self.dim..(i + 1) * self.dim);
            }
        }
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<AnnHit>> {
        check_vector(query, self.dim)?;
        if k == 0 || self.len() == 0 {
            return Ok(Vec::new());
        }
        let mut hits = Vec::new();
        if !self.labels.is_empty() {
            let fetch = (k + self.dead.len()).min(self.labels.len());
            let res = {
                let mut index =
                    self.index.lock().map_err(|_| Error::Index("faiss lock poisoned".into()))?;
                index.search(query, fetch).map_err(faiss_err("search"))?
            };
            for (pos, score) in res.labels.iter().zip(res.distances.iter()) {
                let Some(pos) = pos.get() else { continue };
                let pos = pos as usize;
                if self.dead.contains(&pos) {
                    continue;
                }
                if let Some(&label) = self.labels.get(pos) {
                    hits.push(AnnHit { label, score: *score });
                }
            }
        }
        for (i, &label) in self.pending_labels.iter().enumerate() {
            hits.push(AnnHit {
                label,
                score: dot(&self.pending[i * self.dim..(i + 1) * self.dim], query),
            });
        }
        Ok(top_k(hits, k))
    }

    fn labels(&self) -> Vec<u64> {
        let mut l: Vec<u64> =
            self.live.keys().copied().chain(self.pending_labels.iter().copied()).collect();
        l.sort_unstable();
        l
    }

    fn save_into(&self, dir: &Path) -> Result<()> {
        let index_path = dir.join(INDEX_FILE);
        let path_str =
            index_path.to_str().ok_or_else(|| Error::Index("non-UTF-8 index path".into()))?;
        {
            let index =
                self.index.lock().map_err(|_| Error::Index("faiss lock poisoned".into()))?;
            faiss::write_index(&*index, path_str).map_err(faiss_err("write_index"))?;
        }
        let mut dead: Vec<usize> = self.dead.iter().copied().collect();
        dead.sort_unstable();
        let meta = Meta {
            dim: self.dim,
            factory: self.factory.clone(),
            labels: self.labels.clone(),
            dead,
            pending_labels: self.pending_labels.clone(),
            pending: self.pending.clone(),
        };
        std::fs::write(
            dir.join(META),
            bincode::serialize(&meta).map_err(|e| Error::Index(e.to_string()))?,
        )?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.train_if_ready(true)
    }

    fn set_search_effort(&mut self, effort: usize) -> Result<()> {
        if effort == 0 {
            return Err(Error::InvalidInput("search effort must be positive".into()));
        }
        self.ef_search = effort;
        self.nprobe = effort;
        self.apply_search_params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::random_unit_vectors;

    fn params(factory: &str) -> AnnParams {
        AnnParams {
            hnsw_m: 16,
            hnsw_ef_construction: 100,
            hnsw_ef_search: 64,
            hnsw_parallel_insert: false,
            faiss_factory: factory.into(),
            faiss_nprobe: 8,
        }
    }

    #[test]
    fn flat_hnsw_ivf_factories_search_remove_reload() {
        let vs = random_unit_vectors(1200, 16, 3);
        for factory in ["Flat", "HNSW32", "IVF16,Flat"] {
            let mut idx = FaissIndex::new(16, &params(factory)).unwrap();
            let items: Vec<(u64, &[f32])> =
                vs.iter().enumerate().map(|(i, v)| (7 + i as u64, v.as_slice())).collect();
            idx.add(&items).unwrap();
            idx.flush().unwrap();
            assert!(idx.pending_labels.is_empty(), "{factory} trained at flush");
            assert_eq!(idx.len(), 1200);
            assert_eq!(idx.search(&vs[4], 1).unwrap()[0].label, 11, "{factory}");
            idx.remove(&[11]).unwrap();
            let hits = idx.search(&vs[4], 5).unwrap();
            assert_eq!(hits.len(), 5);
            assert!(hits.iter().all(|h| h.label != 11), "{factory}");
            let dir = tempfile::tempdir().unwrap();
            idx.save_into(dir.path()).unwrap();
            let back = FaissIndex::load(dir.path(), &params(factory)).unwrap();
            assert_eq!(back.labels(), idx.labels(), "{factory}");
            assert_eq!(back.search(&vs[5], 1).unwrap()[0].label, 12, "{factory}");
        }
    }

    #[test]
    fn bad_factory_is_an_error() {
        assert!(FaissIndex::new(16, &params("NoSuchIndex")).is_err());
    }
}
