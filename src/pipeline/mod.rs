//! Indexing pipeline: corpus → passages → embeddings → a [`Store`] (the embedded database or
//! PostgreSQL).
//!
//! Resumability: all validation (duplicates, changed documents without `update`) happens before
//! the first write. Documents are then processed in windows; inside a window, passages are
//! sorted by token count (little padding per batch) and every embedded batch is written to the
//! store's embedding cache at once. When a window is fully embedded, its documents are committed
//! in corpus order in one atomic batch, which also assigns passage labels in that order. A run
//! killed at any point therefore resumes where it stopped (committed documents are "unchanged",
//! cached vectors are not re-embedded) and ends in the same state as an uninterrupted run.

pub mod beir;
pub mod chunk;
pub mod corpus;
#[doc(hidden)]
pub mod testing;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use corpus::{read_corpus, Corpus, CorpusFormat, CorpusOptions, Document};

use crate::encoder::{Embed, ForwardStats, TextKind};
use crate::error::{Error, Result};
use crate::store::{DocRecord, NewDocument, NewPassage, Store};

/// How to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Replace stored documents (and earlier duplicates in the corpus) whose content differs.
    pub update: bool,
    pub batch_size: usize,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    /// Save the ANN index at least this often during a long run.
    pub save_every: Duration,
    /// Batches per commit window (`index.window_batches`): passages are sorted by length
    /// within a window, so a wider one pads less.
    pub window_batches: usize,
    /// Test hook: sleep after each batch so a test can kill the process mid-run.
    pub batch_delay: Option<Duration>,
}

impl IndexOptions {
    pub fn from_config(c: &crate::config::Config) -> Self {
        IndexOptions {
            update: false,
            batch_size: c.encoder.batch_size.max(1),
            chunk_tokens: c.index.chunk_tokens,
            chunk_overlap: c.index.chunk_overlap,
            save_every: Duration::from_secs(120),
            window_batches: c.index.window_batches.max(1),
            batch_delay: None,
        }
    }
}

/// What an indexing run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub documents_read: usize,
    pub added: usize,
    pub updated: usize,
    /// Of `updated`, documents whose metadata alone changed: stored without re-embedding.
    pub metadata_only: usize,
    pub unchanged: usize,
    pub empty_skipped: usize,
    /// Same id and same content repeated in the corpus.
    pub duplicates_skipped: usize,
    pub passages_embedded: usize,
    /// Passages whose vectors came from an interrupted earlier run.
    pub passages_resumed: usize,
    pub seconds: f64,
    /// The encoder's work in this run: tokens (template included), padding, forward time.
    pub forward: ForwardStats,
    /// Tokens embedded per second of the whole run (reading, chunking and storing included):
    /// the figure to set beside `engine bench encode`.
    pub tokens_per_s: f64,
    pub passages_per_s: f64,
}

/// Progress callbacks (the CLI drives an indicatif bar with them).
pub trait Progress {
    fn start(&self, _total_passages: u64) {}
    fn advance(&self, _passages: u64) {}
    fn finish(&self) {}
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {}

impl Progress for indicatif::ProgressBar {
    fn start(&self, total: u64) {
        self.set_length(total);
        self.set_position(0);
        self.reset_eta();
    }
    fn advance(&self, n: u64) {
        self.inc(n);
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}

/// Content hash of a document: hex sha256 over its title and text, length-prefixed, which is
/// what its vectors are made from. Metadata is left out, so a change to it alone is stored
/// without re-embedding (see [`Change`]). Databases written before kept a hash that covered
/// metadata too; [`change`] compares titles and texts, so it reads both alike.
pub fn content_hash(doc: &Document) -> String {
    let mut h = Sha256::new();
    for part in [doc.title.as_str(), doc.text.as_str()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What storing a document changes, next to the one stored under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No document has this id.
    New,
    /// Same title, text and metadata.
    Unchanged,
    /// Same title and text: only the metadata is written, nothing is re-embedded.
    Metadata,
    /// Another title or text: passages are embedded again.
    Content,
}

/// How `doc` differs from `stored`, the document its id holds.
pub fn change(stored: Option<&DocRecord>, doc: &Document) -> Change {
    let Some(s) = stored else { return Change::New };
    if s.title != doc.title || s.text != doc.text {
        return Change::Content;
    }
    match serde_json::from_str::<serde_json::Value>(&s.metadata) {
        Ok(m) if m == doc.metadata => Change::Unchanged,
        _ => Change::Metadata,
    }
}

/// Splits a document's text into passages of at most `chunk_tokens` tokens overlapping by
/// `overlap`, shortened where needed so that each passage with its title ([`passage_text`])
/// fits the embedder's passage limit: otherwise every full passage would lose its last tokens
/// to truncation (as it did when `encoder.max_passage_tokens` equalled `index.chunk_tokens`),
/// and the first passage would differ from the truncated "title, text" a model is fine-tuned
/// on. A window never shrinks below half of `chunk_tokens`, so a very long title costs
/// truncation rather than thousands of tiny passages.
pub fn split_passages(
    embedder: &dyn Embed,
    title: &str,
    text: &str,
    chunk_tokens: usize,
    overlap: usize,
) -> Result<Vec<chunk::Chunk>> {
    let spans = embedder.token_spans(text)?;
    let limit = embedder.max_passage_tokens();
    let mut window = chunk_tokens;
    if limit < usize::MAX && !title.trim().is_empty() {
        // The title's tokens plus one for the line break between title and text.
        let title_tokens = embedder.token_spans(title)?.len() + 1;
        window = window.min(limit.saturating_sub(title_tokens)).max(chunk_tokens / 2);
    }
    Ok(chunk::split(text, &spans, window, overlap))
}

/// The text embedded for a passage: the title gives context to every passage of a document.
pub fn passage_text(title: &str, passage: &str) -> String {
    match (title.trim().is_empty(), passage.trim().is_empty()) {
        (true, _) => passage.to_string(),
        (false, true) => title.to_string(),
        (false, false) => format!("{title}\n{passage}"),
    }
}

/// A document ready to embed, planned the same way by `engine index` and `POST /documents`:
/// its content hash and its passages (spans, token counts and the texts embedded for them).
pub struct DocumentPlan {
    pub doc: Document,
    /// [`content_hash`] of the document.
    pub hash: String,
    pub passages: Vec<PassagePlan>,
}

/// One passage of a [`DocumentPlan`].
pub struct PassagePlan {
    /// Byte span in the document's text.
    pub start: usize,
    pub end: usize,
    /// Tokens embedded: the span's, plus the title's and its line break when there is a
    /// title (the template comes on top). Batches are formed by it, so titles of different
    /// lengths do not pad.
    pub tokens: usize,
    /// What is embedded: [`passage_text`] of the title and the span.
    pub text: String,
}

impl DocumentPlan {
    /// Splits `doc` into passages for `embedder` ([`split_passages`]).
    pub fn new(
        embedder: &dyn Embed,
        doc: Document,
        chunk_tokens: usize,
        overlap: usize,
    ) -> Result<Self> {
        let chunks = split_passages(embedder, &doc.title, &doc.text, chunk_tokens, overlap)?;
        let title_tokens = match doc.title.trim().is_empty() {
            true => 0,
            false => embedder.token_spans(&doc.title)?.len() + 1,
        };
        let passages = chunks
            .into_iter()
            .map(|c| PassagePlan {
                start: c.start,
                end: c.end,
                tokens: c.tokens + title_tokens,
                text: passage_text(&doc.title, &doc.text[c.start..c.end]),
            })
            .collect();
        Ok(DocumentPlan { hash: content_hash(&doc), doc, passages })
    }

    /// The stored form, given one vector per passage in order, and the embedding-cache key of
    /// each passage where the vectors went through the cache.
    pub fn to_new_document(
        &self,
        vectors: Vec<Vec<f32>>,
        cache_keys: Option<&[[u8; 32]]>,
    ) -> Result<NewDocument> {
        if vectors.len() != self.passages.len() {
            return Err(Error::Store(format!(
                "internal: {} vectors for the {} passages of {:?}",
                vectors.len(),
                self.passages.len(),
                self.doc.id
            )));
        }
        let passages = self
            .passages
            .iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (p, vector))| NewPassage {
                start: p.start,
                end: p.end,
                vector,
                cache_key: cache_keys.map(|k| k[i]),
            })
            .collect();
        Ok(NewDocument {
            id: self.doc.id.clone(),
            title: self.doc.title.clone(),
            text: self.doc.text.clone(),
            metadata: self.doc.metadata.clone(),
            hash: self.hash.clone(),
            passages,
        })
    }
}

/// Indexes `docs` into `db` with `embedder`. Nothing is written if validation fails.
pub fn index_documents(
    db: &dyn Store,
    embedder: &dyn Embed,
    docs: Vec<Document>,
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport> {
    let started = Instant::now();
    let forward_before = embedder.forward_stats();
    if embedder.fingerprint() != db.manifest().encoder {
        return Err(Error::EncoderMismatch(
            "embedder differs from the one that built the database".into(),
        ));
    }
    let mut report = IndexReport { documents_read: docs.len(), ..Default::default() };
    let (plan, metadata) = plan(db, docs, opts, &mut report)?;
    if !metadata.is_empty() {
        db.update_metadata(&metadata)?;
    }

    // Chunk everything up front: tokenizing is cheap next to embedding and gives the progress
    // bar its total.
    let plan = plan
        .into_iter()
        .map(|doc| DocumentPlan::new(embedder, doc, opts.chunk_tokens, opts.chunk_overlap))
        .collect::<Result<Vec<_>>>()?;
    progress.start(plan.iter().map(|p| p.passages.len() as u64).sum());

    let window = opts.batch_size.max(1) * opts.window_batches.max(1);
    let mut begin = 0;
    while begin < plan.len() {
        let mut end = begin;
        let mut count = 0;
        while end < plan.len() && (count == 0 || count + plan[end].passages.len() <= window) {
            count += plan[end].passages.len();
            end += 1;
        }
        process_window(db, embedder, &plan[begin..end], opts, progress, &mut report)?;
        db.save_index_if_older(opts.save_every)?;
        begin = end;
    }
    let stale = db.clear_cache()?;
    if stale > 0 {
        tracing::info!("dropped {stale} cached vectors no longer needed");
    }
    db.save_index()?;
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    report.forward = embedder.forward_stats().since(&forward_before);
    report.tokens_per_s = report.forward.tokens as f64 / report.seconds;
    report.passages_per_s = report.passages_embedded as f64 / report.seconds;
    Ok(report)
}

/// Decides what to do with every document, failing before any write on a conflict: the
/// documents to embed, and the (id, metadata) of those whose metadata alone changed.
#[allow(clippy::type_complexity)]
fn plan(
    db: &dyn Store,
    docs: Vec<Document>,
    opts: &IndexOptions,
    report: &mut IndexReport,
) -> Result<(Vec<Document>, Vec<(String, serde_json::Value)>)> {
    let mut plan: Vec<Option<Document>> = Vec::new();
    let mut seen: HashMap<String, (usize, String, serde_json::Value)> = HashMap::new();
    for doc in docs {
        if doc.text.trim().is_empty() && doc.title.trim().is_empty() {
            report.empty_skipped += 1;
            continue;
        }
        let hash = content_hash(&doc);
        if let Some((pos, prev, meta)) = seen.get(&doc.id) {
            if *prev == hash && *meta == doc.metadata {
                report.duplicates_skipped += 1;
                continue;
            }
            if !opts.update {
                return Err(Error::InvalidInput(format!(
                    "document id {:?} appears more than once in the corpus with different content \
                     (use --update to keep the last one)",
                    doc.id
                )));
            }
            plan[*pos] = None;
        }
        seen.insert(doc.id.clone(), (plan.len(), hash, doc.metadata.clone()));
        plan.push(Some(doc));
    }
    let mut out = Vec::new();
    let mut metadata = Vec::new();
    for doc in plan.into_iter().flatten() {
        match change(db.get_document(&doc.id)?.as_ref(), &doc) {
            Change::Unchanged => report.unchanged += 1,
            Change::Metadata | Change::Content if !opts.update => {
                return Err(Error::InvalidInput(format!(
                    "document {:?} is already stored with different content (use --update to replace it)",
                    doc.id
                )))
            }
            Change::Metadata => {
                report.updated += 1;
                report.metadata_only += 1;
                metadata.push((doc.id, doc.metadata));
            }
            Change::Content => {
                report.updated += 1;
                out.push(doc);
            }
            Change::New => {
                report.added += 1;
                out.push(doc);
            }
        }
    }
    Ok((out, metadata))
}

fn process_window(
    db: &dyn Store,
    embedder: &dyn Embed,
    plan: &[DocumentPlan],
    opts: &IndexOptions,
    progress: &dyn Progress,
    report: &mut IndexReport,
) -> Result<()> {
    // Every passage of the window as (document, passage), with its embedding-cache key.
    let passages: Vec<&PassagePlan> = plan.iter().flat_map(|d| &d.passages).collect();
    let keys: Vec<[u8; 32]> =
        passages.iter().map(|p| Sha256::digest(p.text.as_bytes()).into()).collect();
    let mut vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(passages.len());
    for k in &keys {
        vectors.push(db.cache_get(k)?);
    }
    let resumed = vectors.iter().filter(|v| v.is_some()).count();
    report.passages_resumed += resumed;
    progress.advance(resumed as u64);

    // Longest first: similar lengths share a batch, so padding is small.
    let mut todo: Vec<usize> = (0..passages.len()).filter(|&i| vectors[i].is_none()).collect();
    todo.sort_by_key(|&i| std::cmp::Reverse(passages[i].tokens));
    for batch in todo.chunks(opts.batch_size.max(1)) {
        let texts: Vec<&str> = batch.iter().map(|&i| passages[i].text.as_str()).collect();
        let embedded = embedder.embed(&texts, TextKind::Passage)?;
        if embedded.len() != texts.len() {
            return Err(Error::InvalidInput(format!(
                "encoder returned {} vectors for {} texts",
                embedded.len(),
                texts.len()
            )));
        }
        let entries: Vec<([u8; 32], Vec<f32>)> =
            batch.iter().zip(&embedded).map(|(&i, v)| (keys[i], v.clone())).collect();
        db.cache_put(&entries)?;
        for (&i, v) in batch.iter().zip(embedded) {
            vectors[i] = Some(v);
        }
        report.passages_embedded += batch.len();
        progress.advance(batch.len() as u64);
        if let Some(d) = opts.batch_delay {
            std::thread::sleep(d);
        }
    }

    let mut vectors = vectors.into_iter();
    let mut first = 0;
    let mut new_docs = Vec::with_capacity(plan.len());
    for d in plan {
        let n = d.passages.len();
        let v = vectors
            .by_ref()
            .take(n)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Store("internal: passage left without a vector".into()))?;
        new_docs.push(d.to_new_document(v, Some(&keys[first..first + n]))?);
        first += n;
    }
    db.put_documents(new_docs)
}

#[cfg(test)]
mod split_tests {
    use super::testing::HashEmbedder;
    use super::*;

    /// A plan's passages are the split spans with their titled texts; storing it needs one
    /// vector per passage.
    #[test]
    fn a_document_plan_holds_titled_passages_and_needs_a_vector_each() {
        let text: String = (0..50).map(|i| format!("w{i} ")).collect();
        let doc = Document {
            id: "d".into(),
            title: "T".into(),
            text: text.clone(),
            metadata: serde_json::json!({"k": 1}),
        };
        let e = HashEmbedder::new(8);
        let plan = DocumentPlan::new(&e, doc.clone(), 20, 4).unwrap();
        let spans = split_passages(&e, "T", &text, 20, 4).unwrap();
        assert_eq!(plan.passages.len(), spans.len());
        for (p, c) in plan.passages.iter().zip(&spans) {
            // The title "T" is one token, and a line break joins it to the span.
            assert_eq!((p.start, p.end, p.tokens), (c.start, c.end, c.tokens + 2));
            assert_eq!(p.text, passage_text("T", &text[c.start..c.end]));
        }
        assert_eq!(plan.hash, content_hash(&doc));
        let vectors = vec![vec![0.5f32; 8]; spans.len()];
        let stored = plan.to_new_document(vectors.clone(), None).unwrap();
        assert_eq!(stored.metadata, doc.metadata);
        assert_eq!(stored.passages.len(), spans.len());
        assert!(plan.to_new_document(vectors[1..].to_vec(), None).is_err());
    }

    /// Every passage, with its title, fits the embedder's limit, and no word of the text is lost.
    #[test]
    fn passages_leave_room_for_their_title_under_the_encoder_limit() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let limited = HashEmbedder::new(8).with_passage_limit(20);
        for title in ["", "Alpha beta", &"long ".repeat(30)] {
            let chunks = split_passages(&limited, title, &text, 20, 4).unwrap();
            let title_tokens = limited.token_spans(title).unwrap().len();
            for c in &chunks {
                let tokens = limited.token_spans(&passage_text(title, &text[c.start..c.end]));
                let tokens = tokens.unwrap().len() + usize::from(title_tokens > 0);
                // A title too long to leave half a window is the one case truncation remains.
                let bound = if title_tokens > 10 { title_tokens + 1 + 10 } else { 20 };
                assert!(tokens <= bound, "{title:?}: {tokens} tokens > {bound}");
            }
            assert_eq!(chunks.first().unwrap().start, 0);
            assert_eq!(chunks.last().unwrap().end, text.len());
            for w in text.split_whitespace() {
                assert!(chunks.iter().any(|c| text[c.start..c.end].contains(w)), "{w} lost");
            }
        }
        // Without a limit, the window is index.chunk_tokens as before.
        let free = split_passages(&HashEmbedder::new(8), "Alpha beta", &text, 20, 4).unwrap();
        assert!(free.iter().all(|c| c.tokens <= 20) && free[0].tokens == 20);
        let fitted = split_passages(&limited, "Alpha beta", &text, 20, 4).unwrap();
        assert_eq!(fitted[0].tokens, 17);
    }
}
