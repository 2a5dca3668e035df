//! Runs (ranked results per query) and their TREC text format, `qid Q0 docid rank score tag`,
//! the lingua franca of IR tools: a run written here can be scored by trec_eval/pytrec_eval and
//! compared with or fused with runs from other systems.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Query id -> hits `(doc id, score)` in rank order (best first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub queries: BTreeMap<String, Vec<(String, f32)>>,
}

impl Run {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the run in TREC format. Scores use Rust's shortest round-trip form of the `f32`,
    /// so reading the file back (here or as doubles in trec_eval) yields exactly the same order
    /// and the same ties as the in-memory run; rounding to a few decimals would create ties
    /// that trec_eval then breaks by doc id and change the metrics.
    pub fn write_trec(&self, mut w: impl Write, tag: &str) -> Result<()> {
        check_token("run tag", tag)?;
        for (qid, hits) in &self.queries {
            check_token("query id", qid)?;
            for (rank, (docid, score)) in hits.iter().enumerate() {
                check_token("document id", docid)?;
                writeln!(w, "{qid} Q0 {docid} {} {score} {tag}", rank + 1)?;
            }
        }
        Ok(())
    }

    pub fn write_trec_file(&self, path: &Path, tag: &str) -> Result<()> {
        let file = std::fs::File::create(path)
            .map_err(|e| Error::Eval(format!("{}: {e}", path.display())))?;
        let mut w = std::io::BufWriter::new(file);
        self.write_trec(&mut w, tag)?;
        w.flush()?;
        Ok(())
    }

    /// Reads a TREC run. Hits keep the file's order (the rank column is not trusted; metrics
    /// re-sort by score anyway, as trec_eval does). A document listed twice for one query is
    /// an error, as in trec_eval.
    pub fn read_trec(r: impl BufRead, origin: &Path) -> Result<Self> {
        let mut run = Run::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (i, line) in r.lines().enumerate() {
            let lineno = i + 1;
            let err = |message: String| Error::Corpus {
                path: origin.to_path_buf(),
                line: lineno,
                message,
            };
            let line = line.map_err(|e| err(e.to_string()))?;
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.is_empty() {
                continue;
            }
            let [qid, _q0, docid, _rank, score, ..] = cols.as_slice() else {
                return Err(err(format!(
                    "expected `qid Q0 docid rank score tag`, got {} columns",
                    cols.len()
                )));
            };
            let score: f32 =
                score.parse().map_err(|_| err(format!("score {score:?} is not a number")))?;
            if !seen.insert((qid.to_string(), docid.to_string())) {
                return Err(err(format!("document {docid} listed twice for query {qid}")));
            }
            run.queries.entry(qid.to_string()).or_default().push((docid.to_string(), score));
        }
        Ok(run)
    }

    pub fn read_trec_file(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Eval(format!("{}: {e}", path.display())))?;
        Self::read_trec(BufReader::new(file), path)
    }
}

/// Ids with whitespace would shift the columns of the TREC line and corrupt the file.
fn check_token(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(Error::InvalidInput(format!(
            "{what} {s:?} cannot be written to a TREC run (empty or contains whitespace)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_scores_exactly() {
        let mut run = Run::new();
        run.queries.insert("q1".into(), vec![("d2".into(), 0.1 + 0.2), ("d1".into(), 1e-7)]);
        run.queries.insert("q0".into(), vec![("MED-1".into(), 12.345_679)]);
        let mut buf = Vec::new();
        run.write_trec(&mut buf, "bm25").unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with("q0 Q0 MED-1 1 12.345679 bm25\n"), "{text}");
        let back = Run::read_trec(&buf[..], Path::new("mem")).unwrap();
        assert_eq!(back, run);
    }

    #[test]
    fn bad_runs_are_errors() {
        let p = Path::new("mem");
        assert!(matches!(
            Run::read_trec(&b"q1 Q0 d1 1\n"[..], p),
            Err(Error::Corpus { line: 1, .. })
        ));
        assert!(Run::read_trec(&b"q1 Q0 d1 1 x t\n"[..], p).is_err());
        assert!(Run::read_trec(&b"q1 Q0 d1 1 2 t\nq1 Q0 d1 2 1 t\n"[..], p).is_err());
        let mut run = Run::new();
        run.queries.insert("q 1".into(), vec![("d".into(), 1.0)]);
        assert!(matches!(run.write_trec(Vec::new(), "t"), Err(Error::InvalidInput(_))));
        assert!(Run::new().write_trec(Vec::new(), "two words").is_err());
    }
}
