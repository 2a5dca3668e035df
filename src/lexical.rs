//! BM25 keyword search beside the dense index, on tantivy.
//!
//! Layout: the index lives in its own folder; in a database that is `DB/lexical/`. Only the
//! document id is stored (the sled store keeps the documents); title and text are indexed
//! with an English analyzer (simple tokenizer, long-token removal, lower-casing, Lucene's
//! English stop words, Snowball English stemmer) into separate `title` and `text` fields whose
//! BM25 scores add up. See `docs/results.md` ("BM25 (engine, tantivy)") for the measurements
//! behind this choice of analyzer and field layout.
//!
//! Scoring is tantivy's BM25 (k1 = 1.2, b = 0.75, Lucene's idf). Queries are never parsed
//! with tantivy's query language: the query text goes through the same analyzer as the
//! documents and the resulting terms become an OR of term queries, so any user text is valid
//! (quotes, colons, `AND`, unbalanced parentheses...) and text that yields no terms (only
//! punctuation or stop words) simply finds nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Error, Result};

/// Lucene's English stop-word set (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`), the one behind
/// the Lucene/Elasticsearch BM25 baselines BEIR publishes (tantivy's `Language::English` list is
/// the same 33 words; spelling it out keeps the analyzer independent of tantivy's features).
const LUCENE_ENGLISH_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Tokens longer than this (base64 blobs, URLs without separators) are dropped.
const MAX_TOKEN_BYTES: usize = 40;

/// The analyzers an index can use. The name is written into the index schema, so an index
/// is always searched with the analyzer it was built with, even after the default changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyzer {
    /// Stemming, no stop words.
    EnStem,
    /// Stemming + Lucene's 33 English stop words (the default).
    EnStemStop,
}

impl Analyzer {
    const ALL: [Analyzer; 2] = [Analyzer::EnStem, Analyzer::EnStemStop];

    pub fn name(self) -> &'static str {
        match self {
            Analyzer::EnStem => "en_stem",
            Analyzer::EnStemStop => "en_stem_stop",
        }
    }

    fn build(self) -> TextAnalyzer {
        let base = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser);
        match self {
            Analyzer::EnStem => base.filter(Stemmer::new(Language::English)).build(),
            Analyzer::EnStemStop => base
                .filter(StopWordFilter::remove(
                    LUCENE_ENGLISH_STOP_WORDS.iter().map(|w| w.to_string()),
                ))
                .filter(Stemmer::new(Language::English))
                .build(),
        }
    }
}

/// The terms `analyzer` makes of `text` with the byte range of each in `text`: what BM25
/// matches (stemmed, lower-cased, stop words gone), placed in the original text, for snippets
/// and highlighting.
pub fn analyzed_spans(analyzer: Analyzer, text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut a = analyzer.build();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    stream.process(&mut |t| out.push((t.text.clone(), t.offset_from..t.offset_to)));
    out
}

impl std::str::FromStr for Analyzer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Analyzer::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::InvalidInput(format!("unknown analyzer {s:?}")))
    }
}

/// How title and text are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLayout {
    /// Title and text both go into one `body` field: one BM25 score over the whole document,
    /// like Pyserini's "flat" BEIR indexes. Better on scifact (+0.02 nDCG@10), worse on
    /// nfcorpus dev and Cranfield.
    Flat,
    /// Separate `title` and `text` fields, BM25 scores summed over both (the default): the
    /// setup of BEIR's published Elasticsearch baseline, so our figures compare like for like;
    /// it also wins on 3 of the 4 non-test splits we measured.
    MultiField,
}

/// Choices fixed when an index is created (read back from the schema on open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalOptions {
    pub analyzer: Analyzer,
    pub layout: FieldLayout,
}

impl Default for LexicalOptions {
    fn default() -> Self {
        LexicalOptions { analyzer: Analyzer::EnStemStop, layout: FieldLayout::MultiField }
    }
}

/// One document to index.
#[derive(Debug, Clone, Copy)]
pub struct LexicalDoc<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub text: &'a str,
}

/// A BM25 index in a folder. Searching is `&self` and thread-safe; writes go through an
/// `IndexWriter` opened on first use (it holds tantivy's folder lock, so a read-only user such
/// as a search server never blocks an indexing process by merely opening the index).
pub struct LexicalIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    id: Field,
    /// Fields searched: `[body]` or `[title, text]`.
    search_fields: Vec<Field>,
    /// Stored-only title and text, in an index made by [`LexicalIndex::create_with_text`].
    stored: Option<(Field, Field)>,
    options: LexicalOptions,
}

/// Memory for tantivy's indexing arena (split across its threads).
const WRITER_MEMORY_BYTES: usize = 128 * 1024 * 1024;

/// The file tantivy writes first into an index folder: its presence marks an index.
const META_FILE: &str = "meta.json";
/// Most query terms a BM25 search uses: a query of megabytes would otherwise build a boolean
/// query of millions of clauses (minutes of CPU) for no better ranking.
const MAX_QUERY_TERMS: usize = 1024;
/// Stored-only fields of an index made by [`LexicalIndex::create_with_text`].
const STORED_TITLE: &str = "stored_title";
const STORED_TEXT: &str = "stored_text";
/// Hits fetched beyond `k` so that equal scores at the cut are ordered by id.
const TIE_MARGIN: usize = 16;

impl LexicalIndex {
    /// Whether `dir` holds an index (without opening it).
    pub fn exists(dir: &Path) -> bool {
        dir.join(META_FILE).is_file()
    }

    /// Creates a new empty index in `dir` (created if missing). Fails if `dir` already holds
    /// an index, so existing data is never silently replaced.
    pub fn create(dir: &Path, options: LexicalOptions) -> Result<Self> {
        Self::create_inner(dir, options, false)
    }

    /// [`LexicalIndex::create`] for an index that is the whole database (`engine index
    /// --lexical-only`): it also stores each document's title and text, which
    /// [`LexicalIndex::stored_text`] returns for hits' titles and snippets.
    pub fn create_with_text(dir: &Path, options: LexicalOptions) -> Result<Self> {
        Self::create_inner(dir, options, true)
    }

    fn create_inner(dir: &Path, options: LexicalOptions, store_text: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Lexical(format!("create {}: {e}", dir.display())))?;
        if Self::exists(dir) {
            return Err(Error::Lexical(format!("{} already holds an index", dir.display())));
        }
        let mut schema = Schema::builder();
        schema.add_text_field("id", STRING | STORED);
        let text_opts = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(options.analyzer.name())
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        match options.layout {
            FieldLayout::Flat => {
                schema.add_text_field("body", text_opts);
            }
            FieldLayout::MultiField => {
                schema.add_text_field("title", text_opts.clone());
                schema.add_text_field("text", text_opts);
            }
        }
        if store_text {
            schema.add_text_field(STORED_TITLE, STORED);
            schema.add_text_field(STORED_TEXT, STORED);
        }
        let index = Index::create_in_dir(dir, schema.build()).map_err(lex_err(dir))?;
        Self::from_index(dir, index)
    }

    /// Opens an existing index; [`Error::NotFound`] if `dir` holds none.
    pub fn open(dir: &Path) -> Result<Self> {
        if !Self::exists(dir) {
            return Err(Error::NotFound(format!("no lexical index in {}", dir.display())));
        }
        let index = Index::open_in_dir(dir).map_err(lex_err(dir))?;
        Self::from_index(dir, index)
    }

    /// Opens the index in `dir`, or creates one with `options` if there is none.
    pub fn open_or_create(dir: &Path, options: LexicalOptions) -> Result<Self> {
        if Self::exists(dir) {
            Self::open(dir)
        } else {
            Self::create(dir, options)
        }
    }

    fn from_index(dir: &Path, index: Index) -> Result<Self> {
        for a in Analyzer::ALL {
            index.tokenizers().register(a.name(), a.build());
        }
        let schema = index.schema();
        let field = |name: &str| schema.get_field(name).ok();
        let id = field("id")
            .ok_or_else(|| Error::Lexical(format!("{}: schema has no id field", dir.display())))?;
        let (layout, search_fields) = match (field("body"), field("title"), field("text")) {
            (Some(b), _, _) => (FieldLayout::Flat, vec![b]),
            (None, Some(t), Some(x)) => (FieldLayout::MultiField, vec![t, x]),
            _ => return Err(Error::Lexical(format!("{}: unexpected schema", dir.display()))),
        };
        let tokenizer = match schema.get_field_entry(search_fields[0]).field_type() {
            tantivy::schema::FieldType::Str(o) => {
                o.get_indexing_options().map(|i| i.tokenizer().to_string()).unwrap_or_default()
            }
            _ => String::new(),
        };
        let analyzer: Analyzer = tokenizer.parse().map_err(|_| {
            Error::Lexical(format!("{}: unknown analyzer {tokenizer:?}", dir.display()))
        })?;
        let stored = field(STORED_TITLE).zip(field(STORED_TEXT));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(lex_err(dir))?;
        Ok(LexicalIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            writer: Mutex::new(None),
            id,
            search_fields,
            stored,
            options: LexicalOptions { analyzer, layout },
        })
    }

    pub fn options(&self) -> LexicalOptions {
        self.options
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter, &Self) -> Result<T>) -> Result<T> {
        let mut guard =
            self.writer.lock().map_err(|_| Error::Lexical("writer lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.index.writer(WRITER_MEMORY_BYTES).map_err(lex_err(&self.dir))?);
        }
        let w = guard.as_mut().expect("writer just set");
        f(w, self)
    }

    /// Adds (or replaces: an existing document with the same id is deleted first) documents.
    /// Visible to searches after [`LexicalIndex::commit`].
    pub fn add<'a>(&self, docs: impl IntoIterator<Item = LexicalDoc<'a>>) -> Result<usize> {
        // Validate the whole batch first so a bad document leaves nothing half-added.
        let docs: Vec<LexicalDoc<'a>> = docs.into_iter().collect();
        if docs.iter().any(|d| d.id.is_empty()) {
            return Err(Error::InvalidInput("document id must not be empty".into()));
        }
        self.with_writer(|w, s| {
            let mut n = 0;
            for d in docs {
                w.delete_term(Term::from_field_text(s.id, d.id));
                let mut doc = TantivyDocument::default();
                doc.add_text(s.id, d.id);
                match s.options.layout {
                    FieldLayout::Flat => {
                        doc.add_text(s.search_fields[0], d.title);
                        doc.add_text(s.search_fields[0], d.text);
                    }
                    FieldLayout::MultiField => {
                        doc.add_text(s.search_fields[0], d.title);
                        doc.add_text(s.search_fields[1], d.text);
                    }
                }
                if let Some((title, text)) = s.stored {
                    doc.add_text(title, d.title);
                    doc.add_text(text, d.text);
                }
                w.add_document(doc).map_err(lex_err(&s.dir))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Deletes documents by id (unknown ids are ignored). Visible after commit.
    pub fn delete<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.with_writer(|w, s| {
            for id in ids {
                w.delete_term(Term::from_field_text(s.id, id));
            }
            Ok(())
        })
    }

    /// Makes pending additions and deletions durable and visible to searches.
    pub fn commit(&self) -> Result<()> {
        self.with_writer(|w, s| {
            w.commit().map_err(lex_err(&s.dir))?;
            Ok(())
        })?;
        self.reload()
    }

    /// Copies the index's files into `dest` (created), first letting background merges finish,
    /// so the copy is the whole index as of its last commit. Writes wait meanwhile; changes not
    /// yet committed are dropped (every write of the engine commits before it returns).
    pub fn copy_files_to(&self, dest: &Path) -> Result<()> {
        let mut guard =
            self.writer.lock().map_err(|_| Error::Lexical("writer lock poisoned".into()))?;
        if let Some(w) = guard.take() {
            w.wait_merging_threads().map_err(lex_err(&self.dir))?;
        }
        std::fs::create_dir_all(dest)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            // tantivy's lock files belong to the process holding them.
            if entry.file_type()?.is_file() && !name.to_string_lossy().ends_with(".lock") {
                std::fs::copy(entry.path(), dest.join(&name))?;
            }
        }
        Ok(())
    }

    /// Picks up commits made by another process (this one's commits reload automatically).
    pub fn reload(&self) -> Result<()> {
        self.reader.reload().map_err(lex_err(&self.dir))
    }

    /// Number of live (committed, not deleted) documents.
    pub fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether a document with this id is indexed (committed).
    pub fn contains(&self, id: &str) -> Result<bool> {
        let q = TermQuery::new(Term::from_field_text(self.id, id), IndexRecordOption::Basic);
        let n = self.reader.searcher().search(&q, &Count).map_err(lex_err(&self.dir))?;
        Ok(n > 0)
    }

    /// Every indexed (committed) document id, in byte order.
    pub fn ids(&self) -> Result<Vec<String>> {
        let searcher = self.reader.searcher();
        let addrs = searcher
            .search(&tantivy::query::AllQuery, &tantivy::collector::DocSetCollector)
            .map_err(lex_err(&self.dir))?;
        let mut ids = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let doc: TantivyDocument = searcher.doc(addr).map_err(lex_err(&self.dir))?;
            if let Some(id) = doc.get_first(self.id).and_then(|v| v.as_str()) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Whether this index stores documents' title and text ([`LexicalIndex::create_with_text`]).
    pub fn stores_text(&self) -> bool {
        self.stored.is_some()
    }

    /// The stored `(title, text)` of a document; `None` when the id is not indexed or the index
    /// does not store text.
    pub fn stored_text(&self, id: &str) -> Result<Option<(String, String)>> {
        let Some((title, text)) = self.stored else { return Ok(None) };
        let q = TermQuery::new(Term::from_field_text(self.id, id), IndexRecordOption::Basic);
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(1)).map_err(lex_err(&self.dir))?;
        let Some((_, addr)) = top.into_iter().next() else { return Ok(None) };
        let doc: TantivyDocument = searcher.doc(addr).map_err(lex_err(&self.dir))?;
        let get = |f| doc.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        Ok(Some((get(title), get(text))))
    }

    /// The analyzed terms of `text` (what the query turns into).
    pub fn analyze(&self, text: &str) -> Result<Vec<String>> {
        let mut analyzer =
            self.index.tokenizer_for_field(self.search_fields[0]).map_err(lex_err(&self.dir))?;
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        stream.process(&mut |t| terms.push(t.text.clone()));
        Ok(terms)
    }

    /// Top `k` documents for `query` by BM25: `(doc id, score)`, best first. Repeated query
    /// words count repeatedly (as in Lucene's bag-of-words query). Never fails on user text.
    /// The analyzed terms a search uses: at most [`MAX_QUERY_TERMS`], the first ones.
    fn query_terms(&self, query: &str) -> Result<Vec<String>> {
        let mut terms = self.analyze(query)?;
        if terms.len() > MAX_QUERY_TERMS {
            tracing::warn!(
                terms = terms.len(),
                kept = MAX_QUERY_TERMS,
                "BM25 query cut to its first terms"
            );
            terms.truncate(MAX_QUERY_TERMS);
        }
        Ok(terms)
    }

    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(String, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let terms = self.query_terms(query)?;
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .flat_map(|t| {
                self.search_fields.iter().map(move |&f| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(f, t),
                        IndexRecordOption::WithFreqs,
                    ));
                    (Occur::Should, q)
                })
            })
            .collect();
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // tantivy sizes its top-k buffer from k: cap it so a huge k cannot exhaust memory.
        let k = k.min(searcher.num_docs() as usize);
        if k == 0 {
            return Ok(Vec::new());
        }
        // A few extra hits, so ties at the cut are broken by id below rather than by where
        // tantivy happened to store the documents (which changes between rebuilds).
        let fetch = (k + TIE_MARGIN).min(searcher.num_docs() as usize);
        let top =
            searcher.search(&query, &TopDocs::with_limit(fetch)).map_err(lex_err(&self.dir))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).map_err(lex_err(&self.dir))?;
            let id = doc.get_first(self.id).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::Lexical(format!("{}: document without id", self.dir.display()))
            })?;
            hits.push((id.to_string(), score));
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hits.truncate(k);
        Ok(hits)
    }
}

fn lex_err(dir: &Path) -> impl Fn(tantivy::TantivyError) -> Error + '_ {
    move |e| Error::Lexical(format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc<'a>(id: &'a str, title: &'a str, text: &'a str) -> LexicalDoc<'a> {
        LexicalDoc { id, title, text }
    }

    fn tiny(dir: &Path, options: LexicalOptions) -> LexicalIndex {
        let idx = LexicalIndex::create(dir, options).unwrap();
        idx.add([
            doc("cat", "Cats", "The cat sat on the mat and purred."),
            doc("dog", "Dogs", "A dog runs in the park every morning."),
            doc("rust", "Rust language", "Rust is a systems programming language with ownership."),
            doc("empty", "", ""),
        ])
        .unwrap();
        idx.commit().unwrap();
        idx
    }

    #[test]
    fn equal_scores_are_ordered_by_id_whatever_the_insertion_order() {
        let ids = ["d5", "d1", "d4", "d2", "d3", "d0"];
        for reversed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let idx = LexicalIndex::create(dir.path(), LexicalOptions::default()).unwrap();
            let order: Vec<&str> =
                if reversed { ids.iter().rev().copied().collect() } else { ids.to_vec() };
            for id in order {
                idx.add([doc(id, "", "identical words everywhere")]).unwrap();
                // Separate commits put the documents in separate segments.
                idx.commit().unwrap();
            }
            let hits: Vec<String> =
                idx.search("identical", 3).unwrap().into_iter().map(|(id, _)| id).collect();
            assert_eq!(hits, ["d0", "d1", "d2"], "reversed: {reversed}");
        }
    }

    #[test]
    fn an_enormous_query_is_cut_to_its_first_terms() {
        let dir = tempfile::tempdir().unwrap();
        let idx = tiny(dir.path(), LexicalOptions::default());
        let query = format!("rust {}", "zzfiller ".repeat(200_000));
        assert_eq!(idx.query_terms(&query).unwrap().len(), MAX_QUERY_TERMS);
        assert_eq!(idx.search(&query, 3).unwrap()[0].0, "rust");
    }

    #[test]
    fn obvious_match_first_and_stemming() {
        for layout in [FieldLayout::Flat, FieldLayout::MultiField] {
            let dir = tempfile::tempdir().unwrap();
            let idx = tiny(dir.path(), LexicalOptions { layout, ..Default::default() });
            assert_eq!(idx.count(), 4);
            let hits = idx.search("rust programming ownership", 10).unwrap();
            assert_eq!(hits[0].0, "rust", "{layout:?}");
            assert!(hits[0].1 > 0.0);
            // "running" and "runs" both stem to "run".
            let hits = idx.search("running", 10).unwrap();
            assert_eq!(hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(), ["dog"]);
            assert_eq!(idx.search("rust", 0).unwrap(), vec![]);
            assert_eq!(idx.search("rust", usize::MAX).unwrap().len(), 1);
        }
    }

    #[test]
    fn user_text_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let idx = tiny(dir.path(), LexicalOptions::default());
        for q in
            ["", "   ", "?!.,;:", "\"unbalanced", "title:cat AND (mat", "the of and", "*", "ü∂😀"]
        {
            let hits = idx.search(q, 5).unwrap();
            if q.contains("cat") {
                assert_eq!(hits[0].0, "cat");
            } else {
                assert!(hits.is_empty(), "{q:?} -> {hits:?}");
            }
        }
    }

    #[test]
    fn delete_replace_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = tiny(dir.path(), LexicalOptions::default());
            idx.delete(["cat", "not-there"]).unwrap();
            // Re-adding an id replaces the document instead of duplicating it.
            idx.add([doc("dog", "Dogs", "A dog sleeps all day.")]).unwrap();
            idx.commit().unwrap();
            assert_eq!(idx.count(), 3);
            assert!(idx.search("cat mat", 5).unwrap().is_empty());
            assert!(idx.search("park", 5).unwrap().is_empty());
            assert_eq!(idx.search("sleeps", 5).unwrap()[0].0, "dog");
            assert!(!idx.contains("cat").unwrap());
            assert!(idx.contains("dog").unwrap());
        }
        let idx = LexicalIndex::open(dir.path()).unwrap();
        assert_eq!(idx.options(), LexicalOptions::default());
        assert_eq!(idx.count(), 3);
        assert_eq!(idx.search("ownership", 5).unwrap()[0].0, "rust");
        // Creating over an existing index is refused; opening an empty folder is NotFound.
        assert!(matches!(
            LexicalIndex::create(dir.path(), LexicalOptions::default()),
            Err(Error::Lexical(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(LexicalIndex::open(empty.path()), Err(Error::NotFound(_))));
    }

    #[test]
    fn uncommitted_writes_are_invisible_and_empty_id_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let idx = tiny(dir.path(), LexicalOptions::default());
        idx.add([doc("new", "", "zebra")]).unwrap();
        assert!(idx.search("zebra", 5).unwrap().is_empty());
        idx.commit().unwrap();
        assert_eq!(idx.search("zebra", 5).unwrap()[0].0, "new");
        assert!(matches!(idx.add([doc("", "", "x")]), Err(Error::InvalidInput(_))));
    }
}
