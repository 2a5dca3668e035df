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

struct Planned {
    doc: Document,
    hash: String,
}

struct PendingPassage {
    doc: usize,
    start: usize,
    end: usize,
    tokens: usize,
    text: String,
    cache_key: [u8; 32],
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
    let mut chunks = Vec::with_capacity(plan.len());
    let mut total = 0u64;
    for p in &plan {
        let c = split_passages(
            embedder,
            &p.doc.title,
            &p.doc.text,
            opts.chunk_tokens,
            opts.chunk_overlap,
        )?;
        total += c.len() as u64;
        chunks.push(c);
    }
    progress.start(total);

    let window = opts.batch_size.max(1) * opts.window_batches.max(1);
    let mut begin = 0;
    while begin < plan.len() {
        let mut end = begin;
        let mut count = 0;
        while end < plan.len() && (count == 0 || count + chunks[end].len() <= window) {
            count += chunks[end].len();
            end += 1;
        }
        process_window(
            db,
            embedder,
            &plan[begin..end],
            &chunks[begin..end],
            opts,
            progress,
            &mut report,
        )?;
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
) -> Result<(Vec<Planned>, Vec<(String, serde_json::Value)>)> {
    let mut plan: Vec<Option<Planned>> = Vec::new();
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
        seen.insert(doc.id.clone(), (plan.len(), hash.clone(), doc.metadata.clone()));
        plan.push(Some(Planned { doc, hash }));
    }
    let mut out = Vec::new();
    let mut metadata = Vec::new();
    for p in plan.into_iter().flatten() {
        match change(db.get_document(&p.doc.id)?.as_ref(), &p.doc) {
            Change::Unchanged => report.unchanged += 1,
            Change::Metadata | Change::Content if !opts.update => {
                return Err(Error::InvalidInput(format!(
                    "document {:?} is already stored with different content (use --update to replace it)",
                    p.doc.id
                )))
            }
            Change::Metadata => {
                report.updated += 1;
                report.metadata_only += 1;
                metadata.push((p.doc.id, p.doc.metadata));
            }
            Change::Content => {
                report.updated += 1;
                out.push(p);
            }
            Change::New => {
                report.added += 1;
                out.push(p);
            }
        }
    }
    Ok((out, metadata))
}

fn process_window(
    db: &dyn Store,
    embedder: &dyn Embed,
    plan: &[Planned],
    chunks: &[Vec<chunk::Chunk>],
    opts: &IndexOptions,
    progress: &dyn Progress,
    report: &mut IndexReport,
) -> Result<()> {
    let mut pending = Vec::new();
    for (d, (p, cs)) in plan.iter().zip(chunks).enumerate() {
        for c in cs {
            let text = passage_text(&p.doc.title, &p.doc.text[c.start..c.end]);
            let cache_key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            pending.push(PendingPassage {
                doc: d,
                start: c.start,
                end: c.end,
                tokens: c.tokens,
                text,
                cache_key,
            });
        }
    }
    let mut vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(pending.len());
    for p in &pending {
        vectors.push(db.cache_get(&p.cache_key)?);
    }
    let resumed = vectors.iter().filter(|v| v.is_some()).count();
    report.passages_resumed += resumed;
    progress.advance(resumed as u64);

    // Longest first: similar lengths share a batch, so padding is small.
    let mut todo: Vec<usize> = (0..pending.len()).filter(|&i| vectors[i].is_none()).collect();
    todo.sort_by_key(|&i| std::cmp::Reverse(pending[i].tokens));
    for batch in todo.chunks(opts.batch_size.max(1)) {
        let texts: Vec<&str> = batch.iter().map(|&i| pending[i].text.as_str()).collect();
        let embedded = embedder.embed(&texts, TextKind::Passage)?;
        if embedded.len() != texts.len() {
            return Err(Error::InvalidInput(format!(
                "encoder returned {} vectors for {} texts",
                embedded.len(),
                texts.len()
            )));
        }
        let entries: Vec<([u8; 32], Vec<f32>)> =
            batch.iter().zip(&embedded).map(|(&i, v)| (pending[i].cache_key, v.clone())).collect();
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

    let mut new_docs: Vec<NewDocument> = plan
        .iter()
        .map(|p| NewDocument {
            id: p.doc.id.clone(),
            title: p.doc.title.clone(),
            text: p.doc.text.clone(),
            metadata: p.doc.metadata.clone(),
            hash: p.hash.clone(),
            passages: Vec::new(),
        })
        .collect();
    for (p, v) in pending.into_iter().zip(vectors) {
        let vector =
            v.ok_or_else(|| Error::Store("internal: passage left without a vector".into()))?;
        new_docs[p.doc].passages.push(NewPassage {
            start: p.start,
            end: p.end,
            vector,
            cache_key: Some(p.cache_key),
        });
    }
    db.put_documents(new_docs)
}

#[cfg(test)]
mod split_tests {
    use super::testing::HashEmbedder;
    use super::*;

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
