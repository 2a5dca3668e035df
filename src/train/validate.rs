//! Retrieval quality by exact scan: nDCG@10 and recall@k of an encoder on a (reduced) corpus.
//! Used for the validation log during fine-tuning and by the small-scale experiment
//! (`examples/llama2vec_eval.rs`); `engine::eval` is the full evaluator over an index.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::mine::dense_search;
use crate::encoder::{Embed, TextKind};
use crate::error::{Error, Result};
use crate::eval::metrics::{query_metrics, QueryMetrics};

/// A query with graded relevance over corpus indices.
#[derive(Debug, Clone)]
pub struct EvalQuery {
    pub text: String,
    pub relevant: HashMap<usize, i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Scores {
    pub ndcg10: f64,
    pub recall10: f64,
    pub recall100: f64,
    pub queries: usize,
    pub corpus: usize,
}

impl Scores {
    /// Averages per-query metrics over a corpus of `corpus` documents.
    pub fn mean(per_query: &[QueryMetrics], corpus: usize) -> Self {
        let m = QueryMetrics::mean(per_query);
        Self {
            ndcg10: m.ndcg_10,
            recall10: m.recall_10,
            recall100: m.recall_100,
            queries: per_query.len(),
            corpus,
        }
    }
}

/// One query's metrics from hits over corpus indices, by `engine eval`'s trec_eval definitions
/// (one implementation of the metrics for the validation log, the experiment and `eval`).
pub fn ranked_metrics(hits: &[(usize, f32)], relevant: &HashMap<usize, i64>) -> QueryMetrics {
    let hits: Vec<(String, f32)> = hits.iter().map(|&(d, s)| (d.to_string(), s)).collect();
    let judged: HashMap<String, i32> = relevant
        .iter()
        .map(|(d, &g)| (d.to_string(), g.clamp(i32::MIN as i64, i32::MAX as i64) as i32))
        .collect();
    query_metrics(&hits, &judged)
}

/// The reduced corpus: every document judged for `queries` plus `extra` others sampled with
/// `seed`. Returns the kept corpus indices (sorted).
pub fn reduced_corpus(n_docs: usize, queries: &[EvalQuery], extra: usize, seed: u64) -> Vec<usize> {
    let mut keep: Vec<bool> = vec![false; n_docs];
    for q in queries {
        for &d in q.relevant.keys() {
            keep[d] = true;
        }
    }
    let mut others: Vec<usize> = (0..n_docs).filter(|&d| !keep[d]).collect();
    others.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    for &d in others.iter().take(extra) {
        keep[d] = true;
    }
    (0..n_docs).filter(|&d| keep[d]).collect()
}

/// Embeds `docs[kept]` and the queries, ranks by exact dot product, averages the metrics.
pub fn evaluate(
    enc: &dyn Embed,
    docs: &[String],
    kept: &[usize],
    queries: &[EvalQuery],
) -> Result<Scores> {
    Ok(Scores::mean(&evaluate_per_query(enc, docs, kept, queries)?, kept.len()))
}

/// [`evaluate`] without the averaging: one entry per query, in the order given.
pub fn evaluate_per_query(
    enc: &dyn Embed,
    docs: &[String],
    kept: &[usize],
    queries: &[EvalQuery],
) -> Result<Vec<QueryMetrics>> {
    if queries.is_empty() || kept.is_empty() {
        return Err(Error::Eval("validation needs queries and documents".into()));
    }
    let texts: Vec<&str> = kept.iter().map(|&d| docs[d].as_str()).collect();
    let doc_vecs = enc.embed(&texts, TextKind::Passage)?;
    let qtexts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let qvecs = enc.embed(&qtexts, TextKind::Query)?;
    Ok(queries
        .iter()
        .zip(&qvecs)
        .map(|(q, qv)| {
            let hits: Vec<(usize, f32)> =
                dense_search(qv, &doc_vecs, 100).into_iter().map(|(i, s)| (kept[i], s)).collect();
            ranked_metrics(&hits, &q.relevant)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hits in rank order with distinct, falling scores.
    fn ranked(ids: &[usize]) -> Vec<(usize, f32)> {
        ids.iter().enumerate().map(|(r, &d)| (d, 1.0 - r as f32 * 0.01)).collect()
    }

    #[test]
    fn ndcg_and_recall_match_hand_values() {
        let rel: HashMap<usize, i64> = [(1, 1), (5, 1)].into_iter().collect();
        assert!((ranked_metrics(&ranked(&[1, 5, 2]), &rel).ndcg_10 - 1.0).abs() < 1e-12);
        let m = ranked_metrics(&ranked(&[2, 1]), &rel);
        let expect = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((m.ndcg_10 - expect).abs() < 1e-12);
        assert_eq!(m.recall_10, 0.5);
    }

    #[test]
    fn mean_averages_each_metric_and_counts_queries() {
        let q =
            |n, r| QueryMetrics { ndcg_10: n, recall_10: r, recall_100: 1.0, ..Default::default() };
        let s = Scores::mean(&[q(1.0, 0.5), q(0.0, 0.0), q(0.5, 1.0)], 7);
        assert!((s.ndcg10 - 0.5).abs() < 1e-12);
        assert!((s.recall10 - 0.5).abs() < 1e-12);
        assert_eq!((s.recall100, s.queries, s.corpus), (1.0, 3, 7));
        assert_eq!(Scores::mean(&[], 0).ndcg10, 0.0);
    }
}
