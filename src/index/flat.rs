//! Exact inner-product scan: the ground truth for recall checks and a fine backend for small
//! corpora. Rows are scored in parallel with rayon; deletion really removes rows (swap-remove).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rayon::prelude::*;

use super::{check_vector, dot, top_k, AnnHit, AnnIndex, Backend};
use crate::error::{Error, Result};

const FILE: &str = "flat.bin";
const MAGIC: &[u8; 8] = b"ENGFLAT1";

/// All vectors in one row-major buffer, with the label of each row.
pub struct FlatIndex {
    dim: usize,
    labels: Vec<u64>,
    data: Vec<f32>,
    rows: HashMap<u64, usize>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Self {
        FlatIndex { dim, labels: Vec::new(), data: Vec::new(), rows: HashMap::new() }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let mut r = BufReader::new(std::fs::File::open(&path)?);
        let bad = |m: &str| Error::Index(format!("{}: {m}", path.display()));
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
        if &magic != MAGIC {
            return Err(bad("not a flat index file"));
        }
        let mut u = [0u8; 8];
        r.read_exact(&mut u).map_err(|_| bad("truncated"))?;
        let dim = u64::from_le_bytes(u) as usize;
        r.read_exact(&mut u).map_err(|_| bad("truncated"))?;
        let n = u64::from_le_bytes(u) as usize;
        if dim == 0 || n.checked_mul(dim).is_none() {
            return Err(bad("corrupt header"));
        }
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            r.read_exact(&mut u).map_err(|_| bad("truncated"))?;
            labels.push(u64::from_le_bytes(u));
        }
        let mut bytes = vec![0u8; n * dim * 4];
        r.read_exact(&mut bytes).map_err(|_| bad("truncated"))?;
        let data =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let rows = labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();
        Ok(FlatIndex { dim, labels, data, rows })
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

impl AnnIndex for FlatIndex {
    fn backend(&self) -> Backend {
        Backend::Flat
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn tombstones(&self) -> usize {
        0
    }

    fn add(&mut self, items: &[(u64, &[f32])]) -> Result<()> {
        for (label, v) in items {
            check_vector(v, self.dim)?;
            if self.rows.contains_key(label) {
                return Err(Error::Index(format!("label {label} is already in the index")));
            }
        }
        self.data.reserve(items.len() * self.dim);
        for (label, v) in items {
            self.rows.insert(*label, self.labels.len());
            self.labels.push(*label);
            self.data.extend_from_slice(v);
        }
        Ok(())
    }

    fn remove(&mut self, labels: &[u64]) -> Result<()> {
        for label in labels {
            let Some(i) = self.rows.remove(label) else { continue };
            let last = self.labels.len() - 1;
            if i != last {
                let moved = self.labels[last];
                self.labels[i] = moved;
                self.data.copy_within(last * self.dim..(last + 1) * self.dim, i * self.dim);
                self.rows.insert(moved, i);
            }
            self.labels.pop();
            self.data.truncate(last * self.dim);
        }
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<AnnHit>> {
        check_vector(query, self.dim)?;
        if k == 0 || self.labels.is_empty() {
            return Ok(Vec::new());
        }
        // Chunks of rows per rayon task keep per-task overhead small; each chunk keeps its own
        // top-k so memory stays O(k * tasks) instead of O(n).
        const ROWS_PER_TASK: usize = 4096;
        let n = self.labels.len();
        let partial: Vec<Vec<AnnHit>> = (0..n.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .map(|c| {
                let lo = c * ROWS_PER_TASK;
                let hi = (lo + ROWS_PER_TASK).min(n);
                let hits = (lo..hi)
                    .map(|i| AnnHit { label: self.labels[i], score: dot(self.row(i), query) })
                    .collect();
                top_k(hits, k)
            })
            .collect();
        Ok(top_k(partial.into_iter().flatten().collect(), k))
    }

    fn labels(&self) -> Vec<u64> {
        let mut l = self.labels.clone();
        l.sort_unstable();
        l
    }

    fn save_into(&self, dir: &Path) -> Result<()> {
        let mut w = BufWriter::new(std::fs::File::create(dir.join(FILE))?);
        w.write_all(MAGIC)?;
        w.write_all(&(self.dim as u64).to_le_bytes())?;
        w.write_all(&(self.labels.len() as u64).to_le_bytes())?;
        for l in &self.labels {
            w.write_all(&l.to_le_bytes())?;
        }
        for x in &self.data {
            w.write_all(&x.to_le_bytes())?;
        }
        w.flush()?;
        Ok(())
    }

    fn set_search_effort(&mut self, _effort: usize) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::random_unit_vectors;

    #[test]
    fn exact_search_remove_and_reload() {
        let vs = random_unit_vectors(500, 16, 1);
        let mut idx = FlatIndex::new(16);
        let items: Vec<(u64, &[f32])> =
            vs.iter().enumerate().map(|(i, v)| (i as u64 * 3, v.as_slice())).collect();
        idx.add(&items).unwrap();
        let hits = idx.search(&vs[7], 5).unwrap();
        assert_eq!(hits[0].label, 21);
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        idx.remove(&[21, 999_999]).unwrap();
        assert_eq!(idx.len(), 499);
        assert!(idx.search(&vs[7], 5).unwrap().iter().all(|h| h.label != 21));
        assert!(idx.add(&[(0, vs[0].as_slice())]).is_err(), "duplicate label must be refused");
        let dir = tempfile::tempdir().unwrap();
        idx.save_into(dir.path()).unwrap();
        let back = FlatIndex::load(dir.path()).unwrap();
        assert_eq!(back.labels(), idx.labels());
        assert_eq!(back.search(&vs[3], 10).unwrap(), idx.search(&vs[3], 10).unwrap());
    }
}
