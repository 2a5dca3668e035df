//! Hard-negative mining. BM25 is a small in-memory scorer (the tantivy `engine::lexical` index
//! lives on another branch; this keeps training self-contained and costs no encoder time);
//! dense mining scans the current encoder's embeddings exactly.

use std::collections::HashMap;

use super::loss::bow_text;

/// In-memory Okapi BM25 (k1 0.9, b 0.4: Anserini's defaults, used by BEIR's BM25 baselines).
pub struct Bm25 {
    postings: HashMap<String, Vec<(u32, u32)>>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

fn terms(text: &str) -> Vec<String> {
    bow_text(text).split_whitespace().map(str::to_lowercase).collect()
}

impl Bm25 {
    pub fn new(docs: &[String]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (d, text) in docs.iter().enumerate() {
            let mut tf: HashMap<String, u32> = HashMap::new();
            let ts = terms(text);
            doc_len.push(ts.len() as f32);
            for t in ts {
                *tf.entry(t).or_default() += 1;
            }
            for (t, n) in tf {
                postings.entry(t).or_default().push((d as u32, n));
            }
        }
        let avg_len = doc_len.iter().sum::<f32>() / doc_len.len().max(1) as f32;
        Self { postings, doc_len, avg_len: avg_len.max(1.0) }
    }

    /// Top `k` (doc, score) for `query`, best first.
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let (k1, b) = (0.9f32, 0.4f32);
        let n = self.doc_len.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for t in terms(query) {
            let Some(post) = self.postings.get(&t) else { continue };
            let idf = (1.0 + (n - post.len() as f32 + 0.5) / (post.len() as f32 + 0.5)).ln();
            for &(d, tf) in post {
                let tf = tf as f32;
                let norm = k1 * (1.0 - b + b * self.doc_len[d as usize] / self.avg_len);
                *scores.entry(d).or_default() += idf * tf * (k1 + 1.0) / (tf + norm);
            }
        }
        top_k(scores.into_iter().map(|(d, s)| (d as usize, s)), k)
    }
}

/// The `k` best (index, score) pairs, best first (ties by index, for determinism).
pub fn top_k(items: impl Iterator<Item = (usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = items.collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// Exact dot-product top-`k` of `query` over `docs`.
pub fn dense_search(query: &[f32], docs: &[Vec<f32>], k: usize) -> Vec<(usize, f32)> {
    top_k(docs.iter().enumerate().map(|(i, d)| (i, dot(query, d))), k)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_ranks_the_matching_document_first() {
        let docs: Vec<String> = ["cats purr softly", "dogs bark loudly at night", "the cat sat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bm = Bm25::new(&docs);
        let hits = bm.search("dogs barking at night", 3);
        assert_eq!(hits[0].0, 1);
        assert!(bm.search("zebra", 3).is_empty());
    }
}
