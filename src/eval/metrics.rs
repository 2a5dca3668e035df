//! Retrieval metrics with trec_eval's exact definitions, so the engine's numbers can be compared
//! with published BEIR figures (computed with pytrec_eval, i.e. trec_eval's code).
//!
//! Definitions (per query; the report averages them):
//! * Ranking: documents are re-sorted by score descending, ties by doc id descending (byte-wise
//!   `strcmp`), exactly like trec_eval's `comp_sim_docno`; the order the retriever returned
//!   is ignored, as it is by trec_eval. This matters only for tied scores.
//! * nDCG@10 (`ndcg_cut_10`): gain = the graded relevance (≤ 0 counts 0), discount
//!   `log2(rank + 1)` with rank from 1; the ideal DCG sorts *all* judged documents of the query
//!   by grade and cuts at 10. A query with no relevant judgement scores 0.
//! * MRR@10: 1 / rank of the first document with grade ≥ 1 in the top 10 (trec_eval
//!   `recip_rank` on the run cut at 10), else 0.
//! * Recall@k (`recall_k`): relevant (grade ≥ 1) documents in the top k / all relevant
//!   documents of the query (0 if it has none).
//! * MAP@100 (`map_cut_100`): sum over relevant documents in the top 100 of precision at their
//!   rank, divided by the number of *all* relevant documents of the query.
//!
//! Averaging: over every evaluated query (those with judgements and text). A query for which
//! the retriever returned nothing scores 0 on every metric. This is what BEIR reports: its
//! retrievers hand pytrec_eval an empty result dict for such a query, and pytrec_eval scores an
//! empty dict as 0 (verified with pytrec_eval-terrier 0.5.11). A TREC run *file* cannot express
//! "asked, got nothing", so `scripts/compare_trec_eval.py` adds an empty entry for every judged
//! query missing from the file, and [`crate::eval::evaluate_run`] averages over all judged
//! queries likewise. (Command-line trec_eval without `-c` would drop such queries instead.)
//!
//! Ties: verified against pytrec_eval: three docs tied at 1.0, only `a` relevant, gives
//! recip_rank 1/3; ids `"9"` and `"10"` tied puts `"9"` first.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Relevance grade at or above which a document counts as relevant in binary metrics
/// (trec_eval's default `relevance_level` of 1).
pub const RELEVANT: i32 = 1;

/// Metrics of one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryMetrics {
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_10: f64,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "recall@100")]
    pub recall_100: f64,
    #[serde(rename = "map@100")]
    pub map_100: f64,
}

impl QueryMetrics {
    /// Mean of the per-query metrics (all zeros for no queries).
    pub fn mean<'a>(items: impl IntoIterator<Item = &'a QueryMetrics>) -> QueryMetrics {
        let mut sum = QueryMetrics::default();
        let mut n = 0usize;
        for m in items {
            sum.ndcg_10 += m.ndcg_10;
            sum.mrr_10 += m.mrr_10;
            sum.recall_10 += m.recall_10;
            sum.recall_100 += m.recall_100;
            sum.map_100 += m.map_100;
            n += 1;
        }
        if n == 0 {
            return sum;
        }
        let n = n as f64;
        QueryMetrics {
            ndcg_10: sum.ndcg_10 / n,
            mrr_10: sum.mrr_10 / n,
            recall_10: sum.recall_10 / n,
            recall_100: sum.recall_100 / n,
            map_100: sum.map_100 / n,
        }
    }
}

/// trec_eval's order: score descending, then doc id descending. NaN scores (which a sane
/// retriever never produces) are ordered by `total_cmp` so sorting stays total.
pub fn trec_order(a: &(impl AsRef<str>, f32), b: &(impl AsRef<str>, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then_with(|| b.0.as_ref().as_bytes().cmp(a.0.as_ref().as_bytes()))
}

/// Metrics of one query: `hits` are the retrieved (doc id, score) pairs in any order (re-sorted
/// with [`trec_order`]; duplicates must have been removed by the caller), `judged` the query's
/// judgements.
pub fn query_metrics(hits: &[(String, f32)], judged: &HashMap<String, i32>) -> QueryMetrics {
    let mut ranked: Vec<&(String, f32)> = hits.iter().collect();
    ranked.sort_by(|a, b| trec_order(a, b));
    let grade = |id: &str| judged.get(id).copied().unwrap_or(0);
    let num_rel = judged.values().filter(|&&g| g >= RELEVANT).count();

    // nDCG@10.
    let discount = |i: usize| ((i + 2) as f64).log2(); // rank i+1 -> log2(rank+1)
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, (id, _))| grade(id).max(0) as f64 / discount(i))
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(10).enumerate().map(|(i, &g)| g as f64 / discount(i)).sum();
    let ndcg_10 = if idcg > 0.0 { dcg / idcg } else { 0.0 };

    let mrr_10 = ranked
        .iter()
        .take(10)
        .position(|(id, _)| grade(id) >= RELEVANT)
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);

    let recall_at = |k: usize| {
        if num_rel == 0 {
            return 0.0;
        }
        ranked.iter().take(k).filter(|(id, _)| grade(id) >= RELEVANT).count() as f64
            / num_rel as f64
    };

    let mut found = 0usize;
    let mut sum_prec = 0.0;
    for (i, (id, _)) in ranked.iter().take(100).enumerate() {
        if grade(id) >= RELEVANT {
            found += 1;
            sum_prec += found as f64 / (i + 1) as f64;
        }
    }
    let map_100 = if num_rel == 0 { 0.0 } else { sum_prec / num_rel as f64 };

    QueryMetrics { ndcg_10, mrr_10, recall_10: recall_at(10), recall_100: recall_at(100), map_100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(ids: &[(&str, f32)]) -> Vec<(String, f32)> {
        ids.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }
    fn qrels(j: &[(&str, i32)]) -> HashMap<String, i32> {
        j.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }
    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn graded_relevance() {
        // Ranking a(0) b(2) c(1) x(unjudged); judged: b=2, c=1, d=3 (never retrieved), z=0.
        let h = hits(&[("a", 4.0), ("b", 3.0), ("c", 2.0), ("x", 1.0)]);
        let j = qrels(&[("a", 0), ("b", 2), ("c", 1), ("d", 3), ("z", 0)]);
        let m = query_metrics(&h, &j);
        // DCG = 0/log2(2) + 2/log2(3) + 1/log2(4) = 1.261859507 + 0.5 = 1.761859507
        // IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.261859507 + 0.5 = 4.761859507
        close(m.ndcg_10, 1.761859507142915 / 4.761859507142915); // 0.369995...
        close(m.mrr_10, 0.5); // first relevant (b) at rank 2
        close(m.recall_10, 2.0 / 3.0); // b, c of {b, c, d}
        close(m.recall_100, 2.0 / 3.0);
        // AP: b at rank 2 -> 1/2, c at rank 3 -> 2/3; (0.5 + 0.6667) / 3 relevant = 0.388889
        close(m.map_100, (0.5 + 2.0 / 3.0) / 3.0);
    }

    #[test]
    fn no_hits_and_no_relevant() {
        let j = qrels(&[("a", 1)]);
        assert_eq!(query_metrics(&[], &j), QueryMetrics::default());
        // Only non-relevant judgements: everything is 0, not NaN.
        let j0 = qrels(&[("a", 0), ("b", -1)]);
        assert_eq!(query_metrics(&hits(&[("a", 1.0)]), &j0), QueryMetrics::default());
    }

    #[test]
    fn negative_grades_are_zero_gain() {
        // a has grade -1: gain 0, not -1. DCG = 0 + 1/log2(3); IDCG = 1.
        let m = query_metrics(&hits(&[("a", 2.0), ("b", 1.0)]), &qrels(&[("a", -1), ("b", 1)]));
        close(m.ndcg_10, 1.0 / 3f64.log2()); // 0.630930
    }

    #[test]
    fn ties_are_broken_by_docid_descending() {
        // All scores tie, so trec_eval ranks by doc id descending: c, b, a — whatever the
        // input order. Only a is relevant -> rank 3.
        let h = hits(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let m = query_metrics(&h, &qrels(&[("a", 1)]));
        close(m.mrr_10, 1.0 / 3.0);
        close(m.ndcg_10, 0.5); // DCG = 1/log2(3+1) = 0.5, IDCG = 1/log2(2) = 1
        close(m.map_100, 1.0 / 3.0);
        // Ids compare as strings: "10" < "9", so with a tie "9" ranks first.
        let m = query_metrics(&hits(&[("10", 1.0), ("9", 1.0)]), &qrels(&[("10", 1)]));
        close(m.mrr_10, 0.5);
    }

    #[test]
    fn more_relevant_than_cutoff() {
        // 12 relevant docs r00..r11 (grade 1); the run returns r00..r09 (ranks 1-10), x (11), r10 (12)
        let mut h: Vec<(String, f32)> =
            (0..10).map(|i| (format!("r{i:02}"), 100.0 - i as f32)).collect();
        h.push(("x".into(), 50.0));
        h.push(("r10".into(), 40.0));
        let j: HashMap<String, i32> = (0..12).map(|i| (format!("r{i:02}"), 1)).collect();
        let m = query_metrics(&h, &j);
        // Top 10 all relevant: DCG@10 = IDCG@10 -> nDCG 1 even though 2 relevant are missing.
        close(m.ndcg_10, 1.0);
        close(m.recall_10, 10.0 / 12.0);
        // Top 100: r00..r09, r10 (rank 12) found = 11 of 12.
        close(m.recall_100, 11.0 / 12.0);
        // AP = (10 * 1 + 11/12) / 12 = 10.916667 / 12 = 0.909722
        close(m.map_100, (10.0 + 11.0 / 12.0) / 12.0);
        close(m.mrr_10, 1.0);
    }

    #[test]
    fn mean_over_queries() {
        let a = QueryMetrics {
            ndcg_10: 1.0,
            mrr_10: 1.0,
            recall_10: 1.0,
            recall_100: 1.0,
            map_100: 1.0,
        };
        let b = QueryMetrics::default();
        let m = QueryMetrics::mean([&a, &b]);
        close(m.ndcg_10, 0.5);
        close(m.map_100, 0.5);
        assert_eq!(QueryMetrics::mean([]), QueryMetrics::default());
    }
}
