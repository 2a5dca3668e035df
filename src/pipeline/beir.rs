//! Reading the files of a BEIR-layout collection: `corpus.jsonl`, `queries.jsonl` and
//! `qrels/SPLIT.tsv`. Evaluation ([`crate::eval`]) and fine-tuning ([`crate::train`]) both read
//! through here, so they accept the same files.
//!
//! The files in the wild are messier than the format description: qrels come with or without
//! a header line, in BEIR (3 columns) or TREC (4 columns) layout and with CRLF line endings,
//! files may start with a UTF-8 byte order mark, and ids look numeric but must stay strings
//! (`"01"` and `"1"` are different documents; a JSON number is accepted only when it is an
//! integer that can be written back exactly, see [`json_id`]). A line that does not fit is an
//! error naming file and line.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::corpus::json_id;
use crate::error::{Error, Result};

/// Relevance judgements: query id -> (doc id -> graded relevance). Grades are integers like
/// trec_eval's; zero and negative grades mean "judged, not relevant".
pub type Qrels = BTreeMap<String, HashMap<String, i32>>;

/// One corpus document as BEIR stores it (`metadata` is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusDoc {
    /// Document id.
    pub id: String,
    /// Title (empty when missing or null).
    pub title: String,
    /// Body text (empty when missing or null).
    pub text: String,
}

/// Reads a qrels file: BEIR TSV (`query-id<TAB>corpus-id<TAB>score`, optional header) or TREC
/// (`qid iter docid rel`, whitespace separated). CRLF and a leading byte order mark are
/// accepted. A header is recognised by its grade column's name (`score` or a similar word),
/// so a header-less file keeps its first judgement and a bad first grade is an error like any
/// other. A doc judged twice for the same query keeps the last grade, as trec_eval does not
/// allow duplicates either way.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (qid, docid, grade) in qrels_rows(path)? {
        qrels.entry(qid).or_default().insert(docid, grade);
    }
    Ok(qrels)
}

/// The judgement rows of a qrels file in file order, as (query id, doc id, grade); the format
/// rules are [`read_qrels`]'s. Training reads these to keep the file's order.
pub fn qrels_rows(path: &Path) -> Result<Vec<(String, String, i32)>> {
    let file = File::open(path).map_err(|e| Error::corpus(path, 0, format!("cannot open: {e}")))?;
    let mut rows = Vec::new();
    let mut first = true;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|e| Error::corpus(path, lineno, e.to_string()))?;
        let line = strip_bom(&line, lineno).trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        let (qid, docid, grade) = match cols.as_slice() {
            [q, d, g] => (*q, *d, *g),
            [q, _iter, d, g] => (*q, *d, *g),
            _ => {
                return Err(Error::corpus(
                    path,
                    lineno,
                    format!("expected 3 (BEIR) or 4 (TREC) columns, got {}", cols.len()),
                ))
            }
        };
        if std::mem::take(&mut first) && is_qrels_header(grade) {
            continue;
        }
        let grade: i32 = grade.parse().map_err(|_| {
            Error::corpus(
                path,
                lineno,
                format!(
                    "relevance {grade:?} is not an integer (a header must read \
                     query-id<TAB>corpus-id<TAB>score)"
                ),
            )
        })?;
        if qid.is_empty() || docid.is_empty() {
            return Err(Error::corpus(path, lineno, "empty query or document id"));
        }
        rows.push((qid.to_string(), docid.to_string(), grade));
    }
    Ok(rows)
}

/// Whether the grade column of a first line is a column name (BEIR writes `score`) rather than
/// a misspelt grade, which must not be dropped silently.
fn is_qrels_header(grade: &str) -> bool {
    ["score", "relevance", "rel", "grade", "label"].iter().any(|h| grade.eq_ignore_ascii_case(h))
}

/// `line` without the UTF-8 byte order mark some editors put at the start of a file.
fn strip_bom(line: &str, lineno: usize) -> &str {
    if lineno == 1 {
        line.strip_prefix('\u{feff}').unwrap_or(line)
    } else {
        line
    }
}

#[derive(Deserialize)]
struct RawQuery {
    #[serde(rename = "_id", deserialize_with = "exact_id")]
    id: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "_id", deserialize_with = "exact_id")]
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// Ids are strings in BEIR, but hand-made files often write them as JSON numbers; the rules of
/// the index's corpus reader apply ([`json_id`]), so eval and index agree on every id.
fn exact_id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    json_id(&serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Reads `queries.jsonl` into id -> text.
pub fn read_queries(path: &Path) -> Result<HashMap<String, String>> {
    let file = File::open(path).map_err(|e| Error::corpus(path, 0, format!("cannot open: {e}")))?;
    let mut out = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::corpus(path, i + 1, e.to_string()))?;
        let line = strip_bom(&line, i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let q: RawQuery =
            serde_json::from_str(line).map_err(|e| Error::corpus(path, i + 1, e.to_string()))?;
        out.insert(q.id, q.text);
    }
    Ok(out)
}

/// Streams the documents of a BEIR `corpus.jsonl` without holding the corpus in memory.
/// Missing or null `title`/`text` read as empty (Cranfield has such documents).
pub fn corpus_docs(path: &Path) -> Result<CorpusIter> {
    let file = File::open(path).map_err(|e| Error::corpus(path, 0, format!("cannot open: {e}")))?;
    Ok(CorpusIter { path: path.to_path_buf(), lines: BufReader::new(file).lines(), lineno: 0 })
}

/// Iterator returned by [`corpus_docs`]; yields an error (with file and line) for each
/// malformed line and goes on after it.
pub struct CorpusIter {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    lineno: usize,
}

impl Iterator for CorpusIter {
    type Item = Result<CorpusDoc>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.lineno += 1;
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(Error::corpus(&self.path, self.lineno, e.to_string()))),
            };
            let line = strip_bom(&line, self.lineno);
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str::<RawDoc>(line)
                    .map(|d| CorpusDoc {
                        id: d.id,
                        title: d.title.unwrap_or_default(),
                        text: d.text.unwrap_or_default(),
                    })
                    .map_err(|e| Error::corpus(&self.path, self.lineno, e.to_string())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn bad_lines_are_errors_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tx\n");
        let err = read_qrels(&dir.path().join("q.tsv")).unwrap_err();
        assert!(matches!(err, Error::Corpus { line: 2, .. }), "{err}");
        write(dir.path(), "c.jsonl", "{\"_id\": \"a\"}\nnot json\n{\"_id\": \"b\"}\n");
        let items: Vec<_> = corpus_docs(&dir.path().join("c.jsonl")).unwrap().collect();
        assert!(items[0].is_ok() && items[2].is_ok());
        assert!(matches!(items[1], Err(Error::Corpus { line: 2, .. })));
    }

    #[test]
    fn trec_format_qrels_are_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "q.txt", "1 0 d1 1\n1 0 d2 -1\n");
        let q = read_qrels(&dir.path().join("q.txt")).unwrap();
        assert_eq!(q["1"]["d2"], -1);
    }

    #[test]
    fn headerless_qrels_keep_their_first_line_and_bad_first_grades_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.tsv");
        write(dir.path(), "q.tsv", "q1\td1\t1\nq1\td2\t0\n");
        let q = read_qrels(&p).unwrap();
        assert_eq!(q["q1"].len(), 2);
        // A misspelt grade on line 1 was dropped as if it were the header.
        write(dir.path(), "q.tsv", "q1\td1\t1.0\nq2\td2\t1\n");
        let err = read_qrels(&p).unwrap_err();
        assert!(matches!(err, Error::Corpus { line: 1, .. }), "{err}");
        // The header is recognised by its names, after a byte order mark and blank lines too.
        write(dir.path(), "q.tsv", "\u{feff}\n\nquery-id\tcorpus-id\tscore\nq1\td1\t1\n");
        assert_eq!(read_qrels(&p).unwrap()["q1"]["d1"], 1);
        write(dir.path(), "q.tsv", "\u{feff}q1\td1\t2\n");
        assert_eq!(read_qrels(&p).unwrap()["q1"]["d1"], 2);
    }

    #[test]
    fn byte_order_marks_are_stripped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "queries.jsonl", "\u{feff}{\"_id\": \"q1\", \"text\": \"first\"}\n");
        assert_eq!(read_queries(&dir.path().join("queries.jsonl")).unwrap()["q1"], "first");
        write(dir.path(), "corpus.jsonl", "\u{feff}{\"_id\": \"d1\", \"text\": \"one\"}\n");
        let docs: Vec<CorpusDoc> =
            corpus_docs(&dir.path().join("corpus.jsonl")).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(docs[0].id, "d1");
    }

    #[test]
    fn inexact_numeric_and_blank_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("corpus.jsonl");
        write(
            dir.path(),
            "corpus.jsonl",
            "{\"_id\": 18446744073709551615, \"text\": \"a\"}\n\
             {\"_id\": 123456789012345678901234567890, \"text\": \"b\"}\n\
             {\"_id\": 1.50, \"text\": \"c\"}\n{\"_id\": \" \", \"text\": \"d\"}\n",
        );
        let items: Vec<_> = corpus_docs(&c).unwrap().collect();
        assert_eq!(items[0].as_ref().unwrap().id, "18446744073709551615");
        for (i, item) in items.iter().enumerate().skip(1) {
            let line = i + 1;
            assert!(matches!(item, Err(Error::Corpus { line: l, .. }) if *l == line), "{item:?}");
        }
        let msg = items[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("JSON string"), "{msg}");
        write(dir.path(), "queries.jsonl", "{\"_id\": 2.0, \"text\": \"q\"}\n");
        let err = read_queries(&dir.path().join("queries.jsonl")).unwrap_err();
        assert!(matches!(err, Error::Corpus { line: 1, .. }), "{err}");
    }
}
