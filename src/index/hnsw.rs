//! HNSW through `hnsw_rs` (DistDot, SIMD via the `simdeez_f` feature).
//!
//! hnsw_rs cannot delete nodes, so removal is a tombstone set consulted during search (its
//! `search_filter` skips tombstoned nodes while still walking through them). hnsw_rs's `DistDot`
//! asserts `dot <= 1 + 2e-6`, so every vector is re-normalised here before it reaches the graph:
//! a slightly-off input can never abort the process.
//!
//! Reloading: `HnswIo::load_hnsw` returns an `Hnsw<'b>` that borrows the loader. We load without
//! mmap (all data is copied into the graph) and leak the small boxed loader, which gives the
//! graph a `'static` lifetime so it can live in long-lived server state. The leak is a few
//! hundred bytes per `load`, and loads happen once per database open.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::*;
use serde::{Deserialize, Serialize};

use super::{check_vector, normalize, top_k, AnnHit, AnnIndex, AnnParams, Backend};
use crate::error::{Error, Result};

const META: &str = "hnsw.meta";
const BASENAME: &str = "graph";
/// hnsw_rs caps layers at 16.
const MAX_LAYER: usize = 16;

type Graph = Hnsw<'static, f32, DistDot>;

#[derive(Serialize, Deserialize)]
struct Meta {
    dim: usize,
    m: usize,
    ef_construction: usize,
    /// Label of each hnsw data id (data ids are dense, in insertion order).
    labels: Vec<u64>,
    /// Tombstoned data ids.
    dead: Vec<usize>,
    /// Basename hnsw_rs actually used (it may uniquify names).
    basename: Option<String>,
}

pub struct HnswIndex {
    dim: usize,
    m: usize,
    ef_construction: usize,
    ef_search: usize,
    parallel_insert: bool,
    graph: Graph,
    labels: Vec<u64>,
    live: HashMap<u64, usize>,
    dead: HashSet<usize>,
}

fn new_graph(m: usize, ef_construction: usize, capacity: usize) -> Graph {
    Hnsw::new(m, capacity.max(1024), MAX_LAYER, ef_construction, DistDot {})
}

impl HnswIndex {
    pub fn new(dim: usize, params: &AnnParams) -> Self {
        HnswIndex {
            dim,
            m: params.hnsw_m,
            ef_construction: params.hnsw_ef_construction,
            ef_search: params.hnsw_ef_search,
            parallel_insert: params.hnsw_parallel_insert,
            graph: new_graph(params.hnsw_m, params.hnsw_ef_construction, 0),
            labels: Vec::new(),
            live: HashMap::new(),
            dead: HashSet::new(),
        }
    }

    pub fn load(dir: &Path, params: &AnnParams) -> Result<Self> {
        let meta_path = dir.join(META);
        let meta: Meta = bincode::deserialize(&std::fs::read(&meta_path)?)
            .map_err(|e| Error::Index(format!("{}: {e}", meta_path.display())))?;
        let graph = match &meta.basename {
            None => new_graph(meta.m, meta.ef_construction, 0),
            Some(base) => {
                let dir = dir.to_path_buf();
                let base = base.clone();
                // hnsw_rs asserts on corrupt files; turn such panics into errors.
                let loaded = std::panic::catch_unwind(move || {
                    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, &base)));
                    io.load_hnsw::<f32, DistDot>()
                });
                match loaded {
                    Ok(Ok(g)) => g,
                    Ok(Err(e)) => return Err(Error::Index(format!("reloading hnsw graph: {e}"))),
                    Err(_) => {
                        return Err(Error::Index(
                            "reloading hnsw graph: corrupt graph files".into(),
                        ))
                    }
                }
            }
        };
        if graph.get_nb_point() != meta.labels.len() {
            return Err(Error::Index(format!(
                "hnsw graph has {} points but its label map {}",
                graph.get_nb_point(),
                meta.labels.len()
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
        Ok(HnswIndex {
            dim: meta.dim,
            m: meta.m,
            ef_construction: meta.ef_construction,
            ef_search: params.hnsw_ef_search,
            parallel_insert: params.hnsw_parallel_insert,
            graph,
            labels: meta.labels,
            live,
            dead,
        })
    }
}

impl AnnIndex for HnswIndex {
    fn backend(&self) -> Backend {
        Backend::Hnsw
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.live.len()
    }
    fn tombstones(&self) -> usize {
        self.dead.len()
    }

    fn add(&mut self, items: &[(u64, &[f32])]) -> Result<()> {
        let mut seen = HashSet::new();
        for (label, v) in items {
            check_vector(v, self.dim)?;
            if self.live.contains_key(label) || !seen.insert(*label) {
                return Err(Error::Index(format!("label {label} is already in the index")));
            }
        }
        let mut owned = Vec::with_capacity(items.len());
        for (_, v) in items {
            let mut v = v.to_vec();
            normalize(&mut v)?;
            owned.push(v);
        }
        let first = self.labels.len();
        let batch: Vec<(&[f32], usize)> =
            owned.iter().enumerate().map(|(i, v)| (v.as_slice(), first + i)).collect();
        if self.parallel_insert {
            self.graph.parallel_insert_slice(&batch);
        } else {
            // hnsw_rs draws each node's layer from one seeded generator: inserted in order, the
            // same vectors give the same graph on every build.
            for item in &batch {
                self.graph.insert_slice(*item);
            }
        }
        for (i, (label, _)) in items.iter().enumerate() {
            self.labels.push(*label);
            self.live.insert(*label, first + i);
        }
        Ok(())
    }

    fn remove(&mut self, labels: &[u64]) -> Result<()> {
        for l in labels {
            if let Some(id) = self.live.remove(l) {
                self.dead.insert(id);
            }
        }
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<AnnHit>> {
        self.search_with_effort(query, k, None)
    }

    fn search_with_effort(
        &self,
        query: &[f32],
        k: usize,
        effort: Option<usize>,
    ) -> Result<Vec<AnnHit>> {
        check_vector(query, self.dim)?;
        if k == 0 || self.live.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = query.to_vec();
        normalize(&mut q)?;
        let ef = effort.unwrap_or(self.ef_search).max(k);
        let found = if self.dead.is_empty() {
            self.graph.search(&q, k, ef)
        } else {
            let alive = |id: &usize| !self.dead.contains(id);
            self.graph.search_filter(&q, k, ef, Some(&alive))
        };
        let hits = found
            .into_iter()
            .filter(|n| !self.dead.contains(&n.d_id))
            .filter_map(|n| {
                self.labels.get(n.d_id).map(|&label| AnnHit { label, score: 1.0 - n.distance })
            })
            .collect();
        Ok(top_k(hits, k))
    }

    fn labels(&self) -> Vec<u64> {
        let mut l: Vec<u64> = self.live.keys().copied().collect();
        l.sort_unstable();
        l
    }

    fn save_into(&self, dir: &Path) -> Result<()> {
        let basename = if self.labels.is_empty() {
            None
        } else {
            let name = self
                .graph
                .file_dump(dir, BASENAME)
                .map_err(|e| Error::Index(format!("writing hnsw graph: {e}")))?;
            Some(name)
        };
        let mut dead: Vec<usize> = self.dead.iter().copied().collect();
        dead.sort_unstable();
        let meta = Meta {
            dim: self.dim,
            m: self.m,
            ef_construction: self.ef_construction,
            labels: self.labels.clone(),
            dead,
            basename,
        };
        let bytes = bincode::serialize(&meta).map_err(|e| Error::Index(e.to_string()))?;
        std::fs::write(dir.join(META), bytes)?;
        Ok(())
    }

    fn set_search_effort(&mut self, effort: usize) -> Result<()> {
        if effort == 0 {
            return Err(Error::InvalidInput("ef_search must be positive".into()));
        }
        self.ef_search = effort;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{flat::FlatIndex, mean_recall, random_unit_vectors};

    fn params() -> AnnParams {
        AnnParams {
            hnsw_m: 16,
            hnsw_ef_construction: 100,
            hnsw_ef_search: 64,
            hnsw_parallel_insert: false,
            faiss_factory: "HNSW32".into(),
            faiss_nprobe: 16,
        }
    }

    #[test]
    fn tombstones_filter_and_survive_reload() {
        let vs = random_unit_vectors(2000, 32, 5);
        let mut idx = HnswIndex::new(32, &params());
        let items: Vec<(u64, &[f32])> =
            vs.iter().enumerate().map(|(i, v)| (1000 + i as u64, v.as_slice())).collect();
        idx.add(&items).unwrap();
        assert_eq!(idx.search(&vs[10], 1).unwrap()[0].label, 1010);
        idx.remove(&[1010]).unwrap();
        let hits = idx.search(&vs[10], 10).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.label != 1010));
        assert!(idx.add(&[(1011, vs[0].as_slice())]).is_err());

        let dir = tempfile::tempdir().unwrap();
        idx.save_into(dir.path()).unwrap();
        let back = HnswIndex::load(dir.path(), &params()).unwrap();
        assert_eq!(back.len(), 1999);
        assert_eq!(back.tombstones(), 1);
        assert_eq!(back.labels(), idx.labels());
        let hits = back.search(&vs[10], 10).unwrap();
        assert!(hits.iter().all(|h| h.label != 1010));
        assert_eq!(back.search(&vs[11], 1).unwrap()[0].label, 1011);

        // The reloaded graph still accepts inserts and finds them.
        let mut back = back;
        let extra = random_unit_vectors(1, 32, 99);
        back.add(&[(5, extra[0].as_slice())]).unwrap();
        assert_eq!(back.search(&extra[0], 1).unwrap()[0].label, 5);

        let mut exact = FlatIndex::new(32);
        exact.add(&items).unwrap();
        exact.remove(&[1010]).unwrap();
        exact.add(&[(5, extra[0].as_slice())]).unwrap();
        let r = mean_recall(&back, &exact, &random_unit_vectors(50, 32, 7), 10).unwrap();
        assert!(r > 0.9, "recall {r}");
    }

    /// Rebuilding the same vectors gives the same graph, so evaluations do not drift between
    /// builds (parallel inserts race and give a different graph each time).
    #[test]
    fn sequential_builds_are_identical() {
        let vs = crate::index::clustered_unit_vectors(6000, 32, 20, 0.3, 1, 11);
        let items: Vec<(u64, &[f32])> =
            vs.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
        let build = || {
            let mut idx = HnswIndex::new(32, &params());
            for chunk in items.chunks(500) {
                idx.add(chunk).unwrap();
            }
            idx
        };
        let (a, b) = (build(), build());
        for q in random_unit_vectors(100, 32, 12) {
            let (ha, hb) = (a.search(&q, 10).unwrap(), b.search(&q, 10).unwrap());
            let key =
                |h: &[AnnHit]| h.iter().map(|h| (h.label, h.score.to_bits())).collect::<Vec<_>>();
            assert_eq!(key(&ha), key(&hb));
        }
    }

    #[test]
    fn empty_index_round_trips() {
        let idx = HnswIndex::new(8, &params());
        let dir = tempfile::tempdir().unwrap();
        idx.save_into(dir.path()).unwrap();
        let back = HnswIndex::load(dir.path(), &params()).unwrap();
        assert!(back.is_empty());
        assert!(back.search(&[0.5; 8], 3).unwrap().is_empty());
    }

    #[test]
    fn corrupt_graph_is_an_error_not_a_panic() {
        let vs = random_unit_vectors(100, 8, 2);
        let mut idx = HnswIndex::new(8, &params());
        let items: Vec<(u64, &[f32])> =
            vs.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
        idx.add(&items).unwrap();
        let dir = tempfile::tempdir().unwrap();
        idx.save_into(dir.path()).unwrap();
        std::fs::write(dir.path().join("graph.hnsw.data"), b"garbage").unwrap();
        assert!(HnswIndex::load(dir.path(), &params()).is_err());
    }
}
