//! BEIR-layout test collections as evaluation inputs. The files are read by
//! [`crate::pipeline::beir`] (shared with training); this module joins them into a
//! [`BeirDataset`]. Queries or judgements that refer to things that are not there are counted
//! rather than silently dropped, so a report can say how many queries were actually evaluated.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use crate::pipeline::beir::{
    corpus_docs, qrels_rows, read_qrels, read_queries, CorpusDoc, CorpusIter, Qrels,
};

/// A BEIR dataset split ready for evaluation: the queries that have both text and judgements,
/// their judgements, and counts of everything that was left out.
#[derive(Debug, Clone)]
pub struct BeirDataset {
    /// The dataset folder.
    pub dir: PathBuf,
    /// The qrels split evaluated (`test`, `dev`...).
    pub split: String,
    /// Queries to evaluate, sorted by id so runs and reports are deterministic.
    pub queries: Vec<(String, String)>,
    /// Judgements of exactly the queries in `queries`.
    pub qrels: Qrels,
    /// Queries named in the qrels but absent from `queries.jsonl` (not evaluated).
    pub skipped_qrels_without_query: usize,
    /// Queries in `queries.jsonl` that have no judgement in this split (not evaluated; this is
    /// normal: BEIR ships all splits' queries in one file).
    pub skipped_queries_without_qrels: usize,
}

impl BeirDataset {
    /// Loads `dir/queries.jsonl` and `dir/qrels/{split}.tsv`. The corpus is not read here (it
    /// can be large); stream it with [`corpus_docs`]. A split in which no judged query has
    /// text is an error: averaging over nothing would report zeros as if retrieval failed.
    pub fn load(dir: &Path, split: &str) -> Result<Self> {
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        if !qrels_path.is_file() {
            return Err(Error::Eval(format!(
                "dataset {} has no qrels for split {split:?}: {} does not exist",
                dir.display(),
                qrels_path.display()
            )));
        }
        let queries_path = dir.join("queries.jsonl");
        if !queries_path.is_file() {
            return Err(Error::Eval(format!(
                "dataset {} has no queries file: {} does not exist",
                dir.display(),
                queries_path.display()
            )));
        }
        let all_qrels = read_qrels(&qrels_path)?;
        let all_queries = read_queries(&queries_path)?;
        let (judged, with_text) = (all_qrels.len(), all_queries.len());
        let dataset = Self::from_parts(dir, split, all_queries, all_qrels);
        if dataset.queries.is_empty() {
            return Err(Error::Eval(format!(
                "nothing to evaluate: {} judges {judged} queries and {} has {with_text}, but no \
                 query id is in both (wrong --split, or ids that differ between the files?)",
                qrels_path.display(),
                queries_path.display()
            )));
        }
        Ok(dataset)
    }

    /// Joins queries and judgements (used by [`BeirDataset::load`]; public for tests and for
    /// callers that build datasets in memory).
    pub fn from_parts(
        dir: &Path,
        split: &str,
        all_queries: HashMap<String, String>,
        all_qrels: Qrels,
    ) -> Self {
        let mut qrels = Qrels::new();
        let mut queries = Vec::new();
        let mut skipped_qrels_without_query = 0;
        for (qid, judged) in all_qrels {
            match all_queries.get(&qid) {
                Some(text) => {
                    queries.push((qid.clone(), text.clone()));
                    qrels.insert(qid, judged);
                }
                None => skipped_qrels_without_query += 1,
            }
        }
        let skipped_queries_without_qrels =
            all_queries.keys().filter(|q| !qrels.contains_key(*q)).count();
        if skipped_qrels_without_query > 0 {
            tracing::warn!(
                "{skipped_qrels_without_query} queries in qrels/{split}.tsv are missing from queries.jsonl; skipped"
            );
        }
        BeirDataset {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            queries,
            qrels,
            skipped_qrels_without_query,
            skipped_queries_without_qrels,
        }
    }

    /// The dataset's `corpus.jsonl`.
    pub fn corpus_path(&self) -> PathBuf {
        self.dir.join("corpus.jsonl")
    }

    /// Number of judgement rows (of evaluated queries) whose document is not in `doc_ids`.
    /// Such judgements can never be retrieved, so they cap recall; a non-zero count usually
    /// means the index was built from another corpus than the qrels describe.
    pub fn unknown_judged_docs(&self, doc_ids: &HashSet<String>) -> usize {
        count_unknown_docs(&self.qrels, doc_ids)
    }
}

/// Judgement rows in `qrels` naming documents absent from `doc_ids`.
pub fn count_unknown_docs(qrels: &Qrels, doc_ids: &HashSet<String>) -> usize {
    qrels.values().flat_map(|d| d.keys()).filter(|d| !doc_ids.contains(*d)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tiny(dir: &Path) {
        write(
            dir,
            "corpus.jsonl",
            "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"one\"}\n\
             {\"_id\": 2, \"text\": \"two\"}\n\
             {\"_id\": \"d3\", \"title\": null, \"text\": null}\n",
        );
        write(
            dir,
            "queries.jsonl",
            "{\"_id\": \"q1\", \"text\": \"first\"}\n{\"_id\": \"q2\", \"text\": \"second\"}\n\
             {\"_id\": \"q9\", \"text\": \"unjudged\"}\n",
        );
        // CRLF, header, a query missing from queries.jsonl (q3), a doc missing from the corpus.
        write(
            dir,
            "qrels/test.tsv",
            "query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq1\t2\t0\r\nq2\tnope\t1\r\nq3\td1\t1\r\n",
        );
    }

    #[test]
    fn loads_and_counts_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        let ds = BeirDataset::load(dir.path(), "test").unwrap();
        assert_eq!(ds.queries, vec![("q1".into(), "first".into()), ("q2".into(), "second".into())]);
        assert_eq!(ds.qrels["q1"]["d1"], 2);
        assert_eq!(ds.qrels["q1"]["2"], 0);
        assert_eq!(ds.skipped_qrels_without_query, 1); // q3
        assert_eq!(ds.skipped_queries_without_qrels, 1); // q9
        let docs: Vec<CorpusDoc> =
            corpus_docs(&ds.corpus_path()).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].id, "2"); // numeric id kept as text
        assert_eq!(docs[2].title, "");
        let ids: HashSet<String> = docs.into_iter().map(|d| d.id).collect();
        assert_eq!(ds.unknown_judged_docs(&ids), 1); // q2 -> nope
    }

    #[test]
    fn missing_split_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        let err = BeirDataset::load(dir.path(), "dev").unwrap_err();
        assert!(matches!(err, Error::Eval(_)));
        assert!(err.to_string().contains("dev.tsv"), "{err}");
    }

    #[test]
    fn a_split_without_evaluable_queries_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        // Judgements only for queries that queries.jsonl lacks.
        write(dir.path(), "qrels/dev.tsv", "query-id\tcorpus-id\tscore\nq7\td1\t1\n");
        let err = BeirDataset::load(dir.path(), "dev").unwrap_err();
        assert!(matches!(err, Error::Eval(_)), "{err}");
        assert!(err.to_string().contains("nothing to evaluate"), "{err}");
        write(dir.path(), "qrels/empty.tsv", "query-id\tcorpus-id\tscore\n");
        assert!(matches!(BeirDataset::load(dir.path(), "empty"), Err(Error::Eval(_))));
    }
}
