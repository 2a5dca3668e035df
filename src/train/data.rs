//! Training data: raw documents for adaptation (folders of .txt/.md, JSONL, BEIR corpora,
//! WikiText files), their segmentation into runs of whole sentences, and retrieval training
//! data for fine-tuning (BEIR folder with `qrels/train.tsv`, or JSONL triples).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::loss::{bow_targets, AdaptExample};
use crate::encoder::tokenizer::LlmTokenizer;
use crate::error::{Error, Result};
use crate::pipeline::beir::{corpus_docs, qrels_rows, read_queries};

/// Reads raw documents from every path (see the module docs for formats). Empty documents
/// are dropped; no document at all is an error.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(Error::InvalidInput(format!("corpus {} does not exist", p.display())));
        }
        if p.is_dir() {
            let mut files: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .into_iter()
                .filter_map(|e| e.ok())
                .map(|e| e.into_path())
                .filter(|f| f.is_file())
                .filter(|f| {
                    let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
                    matches!(ext, "txt" | "md" | "jsonl" | "tokens" | "raw")
                })
                .collect();
            files.sort();
            for f in files {
                read_file(&f, &mut docs)?;
            }
        } else {
            read_file(p, &mut docs)?;
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    if docs.is_empty() {
        return Err(Error::InvalidInput("the corpus holds no text".into()));
    }
    Ok(docs)
}

fn read_file(path: &Path, docs: &mut Vec<String>) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".jsonl") {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        for (i, line) in file.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| Error::corpus(path, i + 1, format!("bad JSON: {e}")))?;
            docs.push(json_text(&v).ok_or_else(|| {
                Error::corpus(path, i + 1, "no \"text\" (or \"contents\") string field")
            })?);
        }
    } else if name.starts_with("wiki.") || name.ends_with(".tokens") {
        docs.extend(split_wikitext(&std::fs::read_to_string(path)?));
    } else {
        docs.push(std::fs::read_to_string(path)?);
    }
    Ok(())
}

/// Title + text of a JSON document (BEIR `{title, text}`, or `contents`), joined by
/// [`crate::pipeline::passage_text`]: the model trains on passages built as the index builds them.
pub fn json_text(v: &Value) -> Option<String> {
    let text = v.get("text").or_else(|| v.get("contents"))?.as_str()?;
    let title = v.get("title").and_then(Value::as_str).unwrap_or("").trim();
    Some(crate::pipeline::passage_text(title, text))
}

/// WikiText: articles begin at ` = Title = ` lines (one `=`); section headings (` = = … = = `)
/// are dropped; the tokenized form is lightly detokenized.
pub fn split_wikitext(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("= ") && t.ends_with(" =") && !t.starts_with("= =") {
            if !cur.trim().is_empty() {
                docs.push(std::mem::take(&mut cur));
            }
            cur.clear();
            continue;
        }
        if t.starts_with('=') || t.is_empty() {
            continue;
        }
        cur.push_str(&detokenize(t));
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        docs.push(cur);
    }
    docs
}

/// Undoes WikiText's tokenization ("@-@", spaces before punctuation, "`<unk>`").
pub fn detokenize(s: &str) -> String {
    let mut out = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".");
    out = out.replace("<unk>", "");
    for p in [" ,", " .", " ;", " :", " !", " ?", " 's", " n't", " )", " '"] {
        out = out.replace(p, &p[1..]);
    }
    out.replace("( ", "(").replace("  ", " ")
}

/// Splits text into sentences at `.`, `!`, `?` followed by whitespace (and at newlines).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end_here = match c {
            '\n' => true,
            '.' | '!' | '?' => bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()),
            _ => false,
        };
        if end_here {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// A run of whole sentences and its ids.
#[derive(Debug, Clone)]
pub struct Segment {
    pub text: String,
    pub ids: Vec<u32>,
}

/// Greedily groups whole sentences into segments of at most `max_tokens` tokens (a single
/// longer sentence is cut at the limit).
pub fn segment(tok: &LlmTokenizer, doc: &str, max_tokens: usize) -> Result<Vec<Segment>> {
    let mut segs = Vec::new();
    let mut cur = Segment { text: String::new(), ids: Vec::new() };
    for s in sentences(doc) {
        let piece = if cur.text.is_empty() { s.to_string() } else { format!(" {s}") };
        let ids = tok.encode(&piece)?;
        if !cur.ids.is_empty() && cur.ids.len() + ids.len() > max_tokens {
            segs.push(std::mem::replace(&mut cur, Segment { text: String::new(), ids: vec![] }));
            let ids = tok.encode(s)?;
            cur = Segment { text: s.to_string(), ids };
        } else {
            cur.text.push_str(&piece);
            cur.ids.extend(ids);
        }
        cur.ids.truncate(max_tokens);
    }
    if !cur.ids.is_empty() {
        segs.push(cur);
    }
    Ok(segs)
}

/// Adaptation examples: each segment paired with the next segment of the same document.
/// Documents are shuffled by `seed` and consumed until `want` examples exist, so huge
/// corpora are not tokenized beyond what a run uses.
pub fn adapt_examples(
    tok: &LlmTokenizer,
    docs: &[String],
    max_tokens: usize,
    want: usize,
    seed: u64,
) -> Result<Vec<(usize, AdaptExample)>> {
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out = Vec::new();
    for d in order {
        let segs = segment(tok, &docs[d], max_tokens)?;
        for w in segs.windows(2) {
            out.push((
                d,
                AdaptExample {
                    passage: w[0].ids.clone(),
                    self_targets: bow_targets(tok, &w[0].text)?,
                    next_targets: bow_targets(tok, &w[1].text)?,
                },
            ));
        }
        if out.len() >= want {
            break;
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidInput(
            "no adaptation example: every document fits in one segment (need a following \
             segment; use longer documents or a smaller max_seq_tokens)"
                .into(),
        ));
    }
    Ok(out)
}

/// A training query with its relevant and (optionally given) negative passages.
#[derive(Debug, Clone)]
pub struct TrainQuery {
    pub text: String,
    pub positives: Vec<usize>,
    pub negatives: Vec<usize>,
}

/// Fine-tuning data: a passage collection and queries pointing into it.
#[derive(Debug, Clone, Default)]
pub struct RetrievalData {
    pub ids: Vec<String>,
    pub passages: Vec<String>,
    pub queries: Vec<TrainQuery>,
}

/// Loads a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/train.tsv`) or a JSONL file of
/// `{query, positive, negatives?}` triples.
pub fn read_retrieval(path: &Path) -> Result<RetrievalData> {
    if path.is_dir() {
        read_beir(path, "train")
    } else if path.is_file() {
        read_triples(path)
    } else {
        Err(Error::InvalidInput(format!("training data {} does not exist", path.display())))
    }
}

fn read_jsonl(path: &Path, mut f: impl FnMut(usize, Value) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::InvalidInput(format!("cannot open {}: {e}", path.display())))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Error::corpus(path, i + 1, format!("bad JSON: {e}")))?;
        f(i + 1, v)?;
    }
    Ok(())
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| match x {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Ids and passage texts (title and text joined as [`json_text`] does) of a BEIR
/// `corpus.jsonl`, in file order. Read by evaluation's reader ([`crate::pipeline::beir`]), so
/// training accepts the same files: byte order marks, exact ids only.
pub fn beir_passages(corpus: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let (mut ids, mut passages) = (Vec::new(), Vec::new());
    for doc in corpus_docs(corpus)? {
        let doc = doc?;
        passages.push(crate::pipeline::passage_text(doc.title.trim(), &doc.text));
        ids.push(doc.id);
    }
    Ok((ids, passages))
}

/// A BEIR folder's `split` as training data (relevant = score > 0).
pub fn read_beir(dir: &Path, split: &str) -> Result<RetrievalData> {
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    if !qrels_path.exists() {
        return Err(Error::InvalidInput(format!(
            "{} missing: fine-tuning needs the {split} qrels",
            qrels_path.display()
        )));
    }
    let (ids, passages) = beir_passages(&dir.join("corpus.jsonl"))?;
    let queries = read_queries(&dir.join("queries.jsonl"))?;
    let index: HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let mut by_query: Vec<(String, Vec<usize>)> = Vec::new();
    let mut slot: HashMap<String, usize> = HashMap::new();
    // Rows in file order, as before, so a seeded run sees its queries in the same order.
    for (q, d, score) in qrels_rows(&qrels_path)? {
        if score <= 0 {
            continue;
        }
        let Some(&di) = index.get(d.as_str()) else { continue };
        if !queries.contains_key(&q) {
            continue;
        }
        let s = *slot.entry(q.clone()).or_insert_with(|| {
            by_query.push((q.clone(), vec![]));
            by_query.len() - 1
        });
        if !by_query[s].1.contains(&di) {
            by_query[s].1.push(di);
        }
    }
    let queries: Vec<TrainQuery> = by_query
        .into_iter()
        .map(|(q, pos)| TrainQuery { text: queries[&q].clone(), positives: pos, negatives: vec![] })
        .collect();
    if queries.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no query with a relevant document in the corpus",
            qrels_path.display()
        )));
    }
    Ok(RetrievalData { ids, passages, queries })
}

/// JSONL triples `{query, positive, negatives?}`; passages are de-duplicated by text.
pub fn read_triples(path: &Path) -> Result<RetrievalData> {
    let mut data = RetrievalData::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut intern = |data: &mut RetrievalData, text: String| -> usize {
        *seen.entry(text.clone()).or_insert_with(|| {
            data.ids.push(format!("p{}", data.passages.len()));
            data.passages.push(text);
            data.passages.len() - 1
        })
    };
    let mut rows = Vec::new();
    read_jsonl(path, |line, v| {
        let q = str_field(&v, "query").ok_or_else(|| Error::corpus(path, line, "no \"query\""))?;
        let p = str_field(&v, "positive")
            .ok_or_else(|| Error::corpus(path, line, "no \"positive\""))?;
        let negs: Vec<String> = match v.get("negatives") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::corpus(path, line, "\"negatives\" must be strings"))?,
            Some(_) => return Err(Error::corpus(path, line, "\"negatives\" must be an array")),
        };
        if q.trim().is_empty() || p.trim().is_empty() {
            return Err(Error::corpus(path, line, "empty query or positive"));
        }
        rows.push((q, p, negs));
        Ok(())
    })?;
    for (q, p, negs) in rows {
        let pi = intern(&mut data, p);
        let negatives = negs.into_iter().map(|n| intern(&mut data, n)).collect();
        data.queries.push(TrainQuery { text: q, positives: vec![pi], negatives });
    }
    if data.queries.is_empty() {
        return Err(Error::InvalidInput(format!("{}: no training triple", path.display())));
    }
    Ok(data)
}

/// Several training sources as one: passages are concatenated (ids prefixed by the source's
/// position when more than one is given, so equal ids of two corpora stay apart) and each
/// query's passage indices are offset accordingly.
pub fn merge_retrieval(parts: Vec<RetrievalData>) -> RetrievalData {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut out = RetrievalData::default();
    for (source, part) in parts.into_iter().enumerate() {
        let offset = out.passages.len();
        let shift = |v: Vec<usize>| v.into_iter().map(|d| d + offset).collect();
        out.ids.extend(part.ids.into_iter().map(|id| format!("{source}:{id}")));
        out.passages.extend(part.passages);
        out.queries.extend(part.queries.into_iter().map(|q| TrainQuery {
            text: q.text,
            positives: shift(q.positives),
            negatives: shift(q.negatives),
        }));
    }
    out
}

/// Label-free contrastive pairs from a corpus without qrels (E5 / Contriever style): a
/// document with a title gives the pair title → body; one without gives a sentence (chosen by
/// `seed`) → the rest of the document. Documents too short for a pair are skipped.
pub fn unlabeled_pairs(docs: &[crate::pipeline::Document], seed: u64) -> Result<RetrievalData> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9a1f);
    let mut data = RetrievalData::default();
    for doc in docs {
        let body = doc.text.trim();
        let title = doc.title.trim();
        let (query, positive) = if !title.is_empty() && !body.is_empty() {
            (title.to_string(), body.to_string())
        } else {
            let sents = sentences(body);
            if sents.len() < 2 {
                continue;
            }
            let pick = rng.gen_range(0..sents.len());
            let rest: Vec<&str> =
                sents.iter().enumerate().filter(|&(i, _)| i != pick).map(|(_, s)| *s).collect();
            (sents[pick].to_string(), rest.join(" "))
        };
        data.ids.push(doc.id.clone());
        data.passages.push(positive);
        data.queries.push(TrainQuery {
            text: query,
            positives: vec![data.passages.len() - 1],
            negatives: vec![],
        });
    }
    if data.queries.is_empty() {
        return Err(Error::InvalidInput(
            "no label-free training pair: every document lacks a title and has fewer than two \
             sentences"
                .into(),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikitext_articles_split_and_detokenize() {
        let t = " = Alpha = \n\n Alpha is a 2 @-@ part thing , really .\n = = History = = \n It \
                 was old .\n = Beta = \n Beta ( b ) is here .\n";
        let docs = split_wikitext(t);
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("2-part thing, really."), "{docs:?}");
        assert!(docs[0].contains("It was old."));
        assert!(docs[1].contains("Beta (b) is here."), "{docs:?}");
    }

    #[test]
    fn sentences_split_at_terminal_punctuation() {
        assert_eq!(sentences("A b. C d? E 3.5 f! G"), vec!["A b.", "C d?", "E 3.5 f!", "G"]);
    }

    #[test]
    fn beir_training_data_reads_trec_qrels_like_eval() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("qrels")).unwrap();
        std::fs::write(
            d.join("corpus.jsonl"),
            "\u{feff}{\"_id\": \"d1\", \"title\": \" T \", \"text\": \"one\"}\n\
             {\"_id\": 2, \"text\": \"two\"}\n",
        )
        .unwrap();
        std::fs::write(d.join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"first\"}\n")
            .unwrap();
        // TREC layout (qid iter docid rel), which the old training reader refused.
        std::fs::write(d.join("qrels/train.tsv"), "q1 0 2 1\nq1 0 d1 2\nq1 0 d9 1\n").unwrap();
        let data = read_beir(d, "train").unwrap();
        assert_eq!(data.ids, ["d1", "2"]);
        assert_eq!(data.passages[0], "T\none");
        assert_eq!(data.queries.len(), 1);
        assert_eq!(data.queries[0].text, "first");
        assert_eq!(data.queries[0].positives, [1, 0]); // file order; d9 is not in the corpus
                                                       // An id eval would refuse is refused here too.
        std::fs::write(d.join("corpus.jsonl"), "{\"_id\": 1.5, \"text\": \"x\"}\n").unwrap();
        assert!(matches!(read_beir(d, "train"), Err(Error::Corpus { line: 1, .. })));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, "{\"query\": \"q\"}\n").unwrap();
        assert!(read_triples(&p).unwrap_err().to_string().contains("positive"));
        std::fs::write(&p, "not json\n").unwrap();
        assert!(read_triples(&p).unwrap_err().to_string().contains("bad JSON"));
        std::fs::write(&p, "").unwrap();
        assert!(read_documents(std::slice::from_ref(&p)).is_err());
        assert!(read_beir(dir.path(), "train").unwrap_err().to_string().contains("qrels"));
    }
}
