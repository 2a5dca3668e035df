//! Retrieval evaluation on BEIR-layout datasets: nDCG@10, MRR@10, Recall@10/100, MAP@100
//! with trec_eval's definitions (see [`metrics`]), TREC run files ([`run`]) and a driver that
//! runs any retriever over a dataset's queries ([`evaluate`]).
//!
//! The driver takes the retriever as a closure `(query text, k) -> hits` so the same code
//! scores dense, BM25 and hybrid retrieval without knowing about encoders or indexes.

pub mod beir;
pub mod metrics;
pub mod run;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use beir::{corpus_docs, BeirDataset, CorpusDoc, Qrels};
pub use metrics::{query_metrics, QueryMetrics};
pub use run::Run;

use crate::error::{Error, Result};
use crate::lexical::{LexicalDoc, LexicalIndex, LexicalOptions};

/// Summary of an evaluation, serialised as the JSON the CLI prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Mean metrics over `queries` queries.
    #[serde(flatten)]
    pub mean: QueryMetrics,
    /// Queries averaged (judged queries that have text).
    pub queries: usize,
    /// Evaluated queries for which the retriever returned nothing (each scores 0).
    pub queries_without_hits: usize,
    /// Judged queries missing from queries.jsonl (not evaluated).
    pub skipped_qrels_without_query: usize,
    /// Queries without judgements in this split (not evaluated).
    pub skipped_queries_without_qrels: usize,
    /// Judgement rows naming documents the index does not have, when known. Non-zero means
    /// the index and the qrels describe different corpora, and recall is capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_judged_docs: Option<usize>,
    /// Run depth asked of the retriever. With k < 100, Recall@100 and MAP@100 only see k hits.
    pub k: usize,
    /// Seconds spent retrieving (all queries).
    pub retrieval_seconds: f64,
    /// Per-query metrics (not in the JSON summary; write them out separately if needed).
    #[serde(skip)]
    pub per_query: BTreeMap<String, QueryMetrics>,
}

/// Scores a finished run against judgements, averaging over every judged query (queries of the
/// run without judgements are ignored; judged queries absent from the run score 0, as BEIR's
/// pytrec_eval use does — see [`metrics`]).
pub fn evaluate_run(qrels: &Qrels, run: &Run) -> Report {
    let empty = Vec::new();
    let mut per_query = BTreeMap::new();
    let mut without_hits = 0;
    for (qid, judged) in qrels {
        let hits = run.queries.get(qid).unwrap_or(&empty);
        if hits.is_empty() {
            without_hits += 1;
        }
        per_query.insert(qid.clone(), query_metrics(hits, judged));
    }
    Report {
        mean: QueryMetrics::mean(per_query.values()),
        queries: per_query.len(),
        queries_without_hits: without_hits,
        skipped_qrels_without_query: 0,
        skipped_queries_without_qrels: 0,
        unknown_judged_docs: None,
        k: run.queries.values().map(Vec::len).max().unwrap_or(0),
        retrieval_seconds: 0.0,
        per_query,
    }
}

/// Runs `retriever(query text, k)` for every evaluated query of `dataset`, in parallel on
/// rayon's pool, and scores the run. The first retriever error aborts the evaluation.
/// Hits beyond `k` are dropped and repeated doc ids keep only their first (best) occurrence,
/// since trec_eval forbids duplicates and a passage-level retriever may return several
/// passages of one document.
pub fn evaluate<F>(dataset: &BeirDataset, retriever: F, k: usize) -> Result<(Report, Run)>
where
    F: Fn(&str, usize) -> Result<Vec<(String, f32)>> + Sync,
{
    check_inputs(dataset, k)?;
    let start = Instant::now();
    let results: Vec<(String, Vec<(String, f32)>)> = dataset
        .queries
        .par_iter()
        .map(|(qid, text)| Ok((qid.clone(), clean_hits(retriever(text, k)?, k))))
        .collect::<Result<_>>()?;
    Ok(finish(dataset, results, k, start))
}

/// [`evaluate`] for retrievers that cannot be shared across threads: one query at a time.
pub fn evaluate_sequential<F>(
    dataset: &BeirDataset,
    mut retriever: F,
    k: usize,
) -> Result<(Report, Run)>
where
    F: FnMut(&str, usize) -> Result<Vec<(String, f32)>>,
{
    check_inputs(dataset, k)?;
    let start = Instant::now();
    let mut results = Vec::with_capacity(dataset.queries.len());
    for (qid, text) in &dataset.queries {
        results.push((qid.clone(), clean_hits(retriever(text, k)?, k)));
    }
    Ok(finish(dataset, results, k, start))
}

/// Refuses a depth of 0 and a dataset without queries: the mean over no query would be
/// reported as all-zero metrics, which reads like a failed retriever instead of bad inputs.
fn check_inputs(dataset: &BeirDataset, k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::InvalidInput("evaluation depth k must be at least 1".into()));
    }
    if dataset.queries.is_empty() {
        return Err(Error::Eval(format!(
            "no query to evaluate in {} split {:?} ({} judged queries lack text, {} queries \
             lack judgements)",
            dataset.dir.display(),
            dataset.split,
            dataset.skipped_qrels_without_query,
            dataset.skipped_queries_without_qrels
        )));
    }
    Ok(())
}

fn clean_hits(hits: Vec<(String, f32)>, k: usize) -> Vec<(String, f32)> {
    let mut seen = HashSet::new();
    hits.into_iter().filter(|(id, _)| seen.insert(id.clone())).take(k).collect()
}

fn finish(
    dataset: &BeirDataset,
    results: Vec<(String, Vec<(String, f32)>)>,
    k: usize,
    start: Instant,
) -> (Report, Run) {
    let retrieval_seconds = start.elapsed().as_secs_f64();
    let run = Run { queries: results.into_iter().collect() };
    let mut report = evaluate_run(&dataset.qrels, &run);
    report.k = k;
    report.retrieval_seconds = retrieval_seconds;
    report.skipped_qrels_without_query = dataset.skipped_qrels_without_query;
    report.skipped_queries_without_qrels = dataset.skipped_queries_without_qrels;
    (report, run)
}

/// Statistics of a lexical index build.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BuildStats {
    pub documents: usize,
    pub seconds: f64,
}

/// Indexes a BEIR `corpus.jsonl` into a new lexical index at `dir` (batches of 10,000
/// documents, one commit at the end). A malformed corpus line aborts with its line number.
pub fn build_lexical_index(
    corpus: &Path,
    dir: &Path,
    options: LexicalOptions,
) -> Result<(LexicalIndex, BuildStats)> {
    let start = Instant::now();
    let index = LexicalIndex::create(dir, options)?;
    let mut docs = corpus_docs(corpus)?;
    let mut total = 0;
    loop {
        let batch: Vec<CorpusDoc> = docs.by_ref().take(10_000).collect::<Result<_>>()?;
        if batch.is_empty() {
            break;
        }
        total += index.add(batch.iter().map(|d| LexicalDoc {
            id: &d.id,
            title: &d.title,
            text: &d.text,
        }))?;
    }
    index.commit()?;
    Ok((index, BuildStats { documents: total, seconds: start.elapsed().as_secs_f64() }))
}

/// Judgement rows of evaluated queries whose document the lexical index lacks.
pub fn unknown_judged_docs_in(dataset: &BeirDataset, index: &LexicalIndex) -> Result<usize> {
    let mut n = 0;
    for judged in dataset.qrels.values() {
        for doc in judged.keys() {
            if !index.contains(doc)? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// BM25 evaluation of a dataset split against the lexical index at `lexical_dir`
/// (`DB/lexical/` in a database). The report includes the count of judged documents missing
/// from the index.
pub fn run_bm25_eval(lexical_dir: &Path, dataset: &BeirDataset, k: usize) -> Result<(Report, Run)> {
    let index = LexicalIndex::open(lexical_dir)?;
    let (mut report, run) = evaluate(dataset, |q, k| index.search(q, k), k)?;
    report.unknown_judged_docs = Some(unknown_judged_docs_in(dataset, &index)?);
    Ok((report, run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dataset() -> BeirDataset {
        let queries: HashMap<String, String> =
            [("q1", "cat"), ("q2", "dog"), ("q3", "nothing"), ("q4", "unjudged")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), [("d1".to_string(), 1)].into());
        qrels.insert("q2".into(), [("d2".to_string(), 2), ("d9".to_string(), 1)].into());
        qrels.insert("q3".into(), [("d1".to_string(), 1)].into());
        qrels.insert("q5".into(), [("d1".to_string(), 1)].into()); // no text
        BeirDataset::from_parts(Path::new("mem"), "test", queries, qrels)
    }

    fn retriever(q: &str, _k: usize) -> Result<Vec<(String, f32)>> {
        Ok(match q {
            "cat" => vec![("d1".into(), 2.0), ("d1".into(), 1.0), ("d2".into(), 0.5)],
            "dog" => vec![("d3".into(), 3.0), ("d2".into(), 1.0)],
            _ => vec![],
        })
    }

    #[test]
    fn driver_counts_and_averages() {
        let ds = dataset();
        let (report, run) = evaluate(&ds, retriever, 10).unwrap();
        assert_eq!(report.queries, 3);
        assert_eq!(report.queries_without_hits, 1); // q3
        assert_eq!(report.skipped_qrels_without_query, 1); // q5
        assert_eq!(report.skipped_queries_without_qrels, 1); // q4
                                                             // Duplicate d1 removed.
        assert_eq!(run.queries["q1"], vec![("d1".to_string(), 2.0), ("d2".to_string(), 0.5)]);
        // q1: MRR 1; q2: first relevant (d2) at rank 2 -> 0.5; q3: 0. Mean = 1.5 / 3 = 0.5.
        assert!((report.mean.mrr_10 - 0.5).abs() < 1e-12);
        // Recall@10: q1 1, q2 1/2 (d9 missing), q3 0 -> 0.5.
        assert!((report.mean.recall_10 - 0.5).abs() < 1e-12);
        // nDCG: q1 1; q2 DCG = 2/log2(3) = 1.261860, IDCG = 2 + 1/log2(3) = 2.630930 ->
        // 0.479625; q3 0. Mean = 1.479625 / 3 = 0.493208.
        let q2 = (2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((report.mean.ndcg_10 - (1.0 + q2) / 3.0).abs() < 1e-12);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("ndcg@10").is_some() && json.get("queries").is_some());
        // Same numbers sequentially; k is enforced.
        let (seq, _) = evaluate_sequential(&ds, retriever, 10).unwrap();
        assert_eq!(seq.mean, report.mean);
        let (_, run1) = evaluate(&ds, retriever, 1).unwrap();
        assert_eq!(run1.queries["q2"].len(), 1);
        assert!(matches!(evaluate(&ds, retriever, 0), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn an_empty_dataset_is_an_error_not_zero_metrics() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), [("d1".to_string(), 1)].into());
        let queries: HashMap<String, String> = [("q2".to_string(), "cat".to_string())].into();
        let ds = BeirDataset::from_parts(Path::new("mem"), "test", queries, qrels);
        assert!(matches!(evaluate(&ds, retriever, 10), Err(Error::Eval(_))));
        assert!(matches!(evaluate_sequential(&ds, retriever, 10), Err(Error::Eval(_))));
    }

    #[test]
    fn retriever_errors_propagate() {
        let ds = dataset();
        let r = evaluate(&ds, |_, _| Err(Error::Index("boom".into())), 10);
        assert!(matches!(r, Err(Error::Index(_))));
    }

    #[test]
    fn bm25_end_to_end_on_a_tiny_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"title\": \"Cats\", \"text\": \"cats purr\"}\n\
             {\"_id\": \"d2\", \"title\": \"Dogs\", \"text\": \"dogs bark and run\"}\n",
        )
        .unwrap();
        std::fs::write(d.join("queries.jsonl"), "{\"_id\": \"1\", \"text\": \"running dog\"}\n")
            .unwrap();
        std::fs::create_dir(d.join("qrels")).unwrap();
        std::fs::write(
            d.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\r\n1\td2\t1\r\n1\tgone\t1\r\n",
        )
        .unwrap();
        let ds = BeirDataset::load(d, "test").unwrap();
        let lex = d.join("db/lexical");
        let (_, stats) =
            build_lexical_index(&ds.corpus_path(), &lex, LexicalOptions::default()).unwrap();
        assert_eq!(stats.documents, 2);
        let (report, run) = run_bm25_eval(&lex, &ds, 10).unwrap();
        assert_eq!(run.queries["1"][0].0, "d2");
        assert_eq!(report.unknown_judged_docs, Some(1)); // "gone"
        assert!((report.mean.mrr_10 - 1.0).abs() < 1e-12);
        assert!((report.mean.recall_10 - 0.5).abs() < 1e-12);
    }
}
