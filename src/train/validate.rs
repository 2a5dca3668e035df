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
    pub fn mean(per_query: &[QueryScores], corpus: usize) -> Self {
        let n = per_query.len().max(1) as f64;
        let mean = |f: fn(&QueryScores) -> f64| per_query.iter().map(f).sum::<f64>() / n;
        Self {
            ndcg10: mean(|q| q.ndcg10),
            recall10: mean(|q| q.recall10),
            recall100: mean(|q| q.recall100),
            queries: per_query.len(),
            corpus,
        }
    }
}

/// One query's metrics; kept per query so two models can be compared with a paired test.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct QueryScores {
    pub ndcg10: f64,
    pub recall10: f64,
    pub recall100: f64,
}

/// nDCG@10 with gains = relevance grade (BEIR/trec_eval's linear gain), log2 discount.
pub fn ndcg_at(ranked: &[usize], relevant: &HashMap<usize, i64>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| *relevant.get(d).unwrap_or(&0) as f64 / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<i64> = relevant.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 =
        ideal.iter().take(k).enumerate().map(|(i, &g)| g as f64 / (i as f64 + 2.0).log2()).sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

pub fn recall_at(ranked: &[usize], relevant: &HashMap<usize, i64>, k: usize) -> f64 {
    let rel = relevant.values().filter(|&&g| g > 0).count();
    if rel == 0 {
        return 0.0;
    }
    let hit = ranked.iter().take(k).filter(|d| relevant.get(d).is_some_and(|&g| g > 0)).count();
    hit as f64 / rel as f64
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
) -> Result<Vec<QueryScores>> {
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
            let ranked: Vec<usize> =
                dense_search(qv, &doc_vecs, 100).into_iter().map(|(i, _)| kept[i]).collect();
            QueryScores {
                ndcg10: ndcg_at(&ranked, &q.relevant, 10),
                recall10: recall_at(&ranked, &q.relevant, 10),
                recall100: recall_at(&ranked, &q.relevant, 100),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_and_recall_match_hand_values() {
        let rel: HashMap<usize, i64> = [(1, 1), (5, 1)].into_iter().collect();
        assert!((ndcg_at(&[1, 5, 2], &rel, 10) - 1.0).abs() < 1e-12);
        let v = ndcg_at(&[2, 1], &rel, 10);
        let expect = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((v - expect).abs() < 1e-12);
        assert_eq!(recall_at(&[2, 1], &rel, 10), 0.5);
    }

    #[test]
    fn mean_averages_each_metric_and_counts_queries() {
        let q = |n, r| QueryScores { ndcg10: n, recall10: r, recall100: 1.0 };
        let s = Scores::mean(&[q(1.0, 0.5), q(0.0, 0.0), q(0.5, 1.0)], 7);
        assert!((s.ndcg10 - 0.5).abs() < 1e-12);
        assert!((s.recall10 - 0.5).abs() < 1e-12);
        assert_eq!((s.recall100, s.queries, s.corpus), (1.0, 3, 7));
        assert_eq!(Scores::mean(&[], 0).ndcg10, 0.0);
    }
}
