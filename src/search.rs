//! Query-time retrieval over a database: dense (ANN over passage vectors), BM25 (the tantivy
//! index in `DB/lexical/`) or hybrid (both rankings fused). One implementation serves
//! `engine search`, `engine eval` and the server, so the three always agree. On a PostgreSQL
//! store ([`SearchIndex::postgres`]) dense is pgvector's and "BM25" is PostgreSQL full-text
//! ranking (`ts_rank_cd`, not BM25: see `store::postgres`); fusion and filters are the same.

pub mod filter_bench;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, RwLock};

use crate::encoder::Embed;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fusion::Fusion;
use crate::lexical::{LexicalDoc, LexicalIndex, LexicalOptions};
use crate::pipeline::{index_documents, Document, IndexOptions, IndexReport, Progress};
use crate::store::postgres::PgStore;
use crate::store::{
    lexical_dir, poisoned, Database, DocHit, NewDocument, Store, LEXICAL_PENDING,
    LEXICAL_REBUILD_DIRS,
};

/// How a query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Dense,
    Bm25,
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Dense => "dense",
            SearchMode::Bm25 => "bm25",
            SearchMode::Hybrid => "hybrid",
        }
    }

    /// The scale of this mode's scores, as hits are labelled: cosine similarity (dense),
    /// BM25 (unbounded, corpus-dependent) or a fused score (hybrid: `eval.fusion`'s RRF or
    /// convex combination, comparable only within one result list).
    pub fn score_kind(self) -> &'static str {
        match self {
            SearchMode::Dense => "cosine",
            SearchMode::Bm25 => "bm25",
            SearchMode::Hybrid => "fused",
        }
    }

    /// Whether the query must be embedded.
    pub fn needs_vector(self) -> bool {
        self != SearchMode::Bm25
    }

    /// The mode of a search that names none, where the database has its BM25 index: hybrid
    /// with an encoder fine-tuned for retrieval (the shipped encoder's dense ranking alone is
    /// below BM25 on full SciFact, its fusion with BM25 above it: docs/results.md), BM25 with an
    /// untrained one, whose dense ranking is known to be weak. Without BM25: dense.
    pub fn default_for(encoder_trained: bool, bm25_available: bool) -> SearchMode {
        match (bm25_available, encoder_trained) {
            (false, _) => SearchMode::Dense,
            (true, true) => SearchMode::Hybrid,
            (true, false) => SearchMode::Bm25,
        }
    }
}

impl FromStr for SearchMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(SearchMode::Dense),
            "bm25" => Ok(SearchMode::Bm25),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(Error::InvalidInput(format!(
                "mode must be dense, bm25 or hybrid, got {other:?}"
            ))),
        }
    }
}

/// Everything about one search besides its mode and query.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions<'a> {
    /// Hits wanted.
    pub k: usize,
    /// How hybrid mode fuses its two rankings ([`Fusion::for_request`]).
    pub fusion: Fusion,
    /// Only documents whose metadata passes it.
    pub filter: Option<&'a Filter>,
    /// Hits scoring below it are dropped, in the mode's own scale: cosine for dense, BM25's
    /// for bm25, the fused score for hybrid (in [0, 1] for convex fusion).
    pub score_threshold: Option<f32>,
    /// HNSW ef for this search (1..=[`crate::index::MAX_SEARCH_EFFORT`]); ignored by the flat
    /// and FAISS backends. `None`: the index's.
    pub ef: Option<usize>,
}

impl SearchOptions<'_> {
    /// [`Error::InvalidInput`] naming the setting that is out of range.
    pub fn check(&self) -> Result<()> {
        if let Some(t) = self.score_threshold {
            if !t.is_finite() {
                return Err(Error::InvalidInput(format!(
                    "score_threshold must be a finite number, got {t}"
                )));
            }
        }
        crate::index::check_search_effort(self.ef)
    }
}

/// Candidates taken from each ranking before fusion: fusing two top-k lists would drop
/// documents ranked just below k by both.
const FUSION_DEPTH: usize = 100;

/// Hits of a search, with what explains them.
#[derive(Debug, Clone, Default)]
pub struct Ranked {
    pub hits: Vec<DocHit>,
    /// The best cosine similarity of the dense ranking (dense and hybrid modes), whether or
    /// not its document made the fused list: a low one says the encoder found nothing close.
    pub best_dense: Option<f32>,
}

/// BM25 top `k` of a `--lexical-only` database, whose index stores each document's title and
/// text ([`LexicalIndex::create_with_text`]): hits carry the title and the whole text as their
/// passage, as BM25 hits of a full database do.
pub fn search_lexical_only(lex: &LexicalIndex, query: &str, k: usize) -> Result<Vec<DocHit>> {
    let mut hits = Vec::new();
    for (id, score) in lex.search(query, k)? {
        let (title, passage) = lex.stored_text(&id)?.unwrap_or_default();
        hits.push(DocHit { id, score, title, passage, passage_ordinal: 0 });
    }
    Ok(hits)
}

/// A database and its BM25 index, written together: the embedded store with tantivy beside
/// it, or a PostgreSQL store holding both.
pub struct SearchIndex {
    backing: Backing,
    /// Writes between their store and BM25 halves: the [`LEXICAL_PENDING`] marker they share
    /// may only go when the last of them is done.
    pending: Mutex<PendingWrites>,
    /// Writes hold it shared for their whole store-then-BM25 span; a snapshot holds it
    /// exclusively, so it sees no write half done.
    gate: RwLock<()>,
}

/// Where a [`SearchIndex`] keeps its data.
// One per process, built once and never moved in a hot path: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Backing {
    /// The embedded store, and its BM25 index in `DB/lexical/` when it has one.
    Embedded { db: Database, lexical: Option<LexicalIndex> },
    /// PostgreSQL: documents, vectors and full text in one database, written in one
    /// transaction (no marker, no gate: the server keeps the two in step).
    Postgres(PgStore),
}

/// Writes of one [`SearchIndex`] under way, and whether one of them failed.
#[derive(Default)]
struct PendingWrites {
    in_flight: usize,
    /// A write failed between the store and BM25: the marker stays until the next open
    /// repairs BM25.
    failed: bool,
}

impl SearchIndex {
    /// Wraps `db` and its BM25 index as they are (see [`SearchIndex::open`]).
    fn new(db: Database, lexical: Option<LexicalIndex>) -> Self {
        Self::with_backing(Backing::Embedded { db, lexical })
    }

    fn with_backing(backing: Backing) -> Self {
        Self { backing, pending: Mutex::new(PendingWrites::default()), gate: RwLock::new(()) }
    }

    /// Searches and writes a PostgreSQL store: every mode is available (its full text stands
    /// in for BM25).
    pub fn postgres(store: PgStore) -> Self {
        Self::with_backing(Backing::Postgres(store))
    }

    /// Opens `db` with its BM25 index, first repairing BM25 when it may disagree with the
    /// store: a write interrupted between the two (the [`LEXICAL_PENDING`] marker), a document
    /// count that differs, or an index that cannot be opened. `build_missing` also builds a
    /// missing BM25 index. A repair that fails (say a read-only folder) leaves dense search
    /// working: BM25 is then reported unavailable rather than failing the open.
    pub fn open(db: Database, build_missing: bool) -> Result<Self> {
        let dir = lexical_dir(db.path());
        let documents = db.status()?.documents;
        let pending = db.path().join(LEXICAL_PENDING).exists();
        let problem = if !LexicalIndex::exists(&dir) {
            build_missing.then(|| "missing".to_string())
        } else if pending {
            Some("a write was interrupted before it reached BM25".into())
        } else {
            match LexicalIndex::open(&dir) {
                Ok(lex) if lex.count() == documents => None,
                Ok(lex) => Some(format!("{} documents vs {documents} in the store", lex.count())),
                Err(e) => Some(format!("unreadable ({e})")),
            }
        };
        let Some(problem) = problem else {
            let lexical =
                if LexicalIndex::exists(&dir) { Some(LexicalIndex::open(&dir)?) } else { None };
            return Ok(Self::new(db, lexical));
        };
        tracing::warn!(documents, "BM25 index {problem}; rebuilding it from the store");
        match sync_lexical(&db) {
            Ok(lexical) => Ok(Self::new(db, Some(lexical))),
            Err(e) => {
                tracing::warn!("could not rebuild the BM25 index ({e}); serving dense search only");
                Ok(Self::new(db, None))
            }
        }
    }

    /// The store, whichever backend it is.
    pub fn db(&self) -> &dyn Store {
        match &self.backing {
            Backing::Embedded { db, .. } => db,
            Backing::Postgres(pg) => pg,
        }
    }

    /// The embedded database, or `None` for a PostgreSQL store.
    pub fn embedded(&self) -> Option<&Database> {
        match &self.backing {
            Backing::Embedded { db, .. } => Some(db),
            Backing::Postgres(_) => None,
        }
    }

    /// Runs a write to the store and then BM25 with the [`LEXICAL_PENDING`] marker on disk in
    /// between, so a crash in the middle is repaired by the next [`SearchIndex::open`].
    /// Concurrent writes share the marker: the last one to finish removes it, so a write whose
    /// BM25 half is still to come is never left unmarked by another that finished first.
    /// `lexical` is given what `store` returned.
    fn write_both<T>(
        &self,
        store: impl FnOnce(&Database) -> Result<T>,
        lexical: impl FnOnce(&LexicalIndex, &T) -> Result<()>,
    ) -> Result<T> {
        let Backing::Embedded { db, lexical: lex } = &self.backing else {
            return Err(Error::Store("internal: a BM25 marker write on a PostgreSQL store".into()));
        };
        db.check_writable()?;
        let _gate = self.gate.read().map_err(|_| Error::Store("snapshot gate poisoned".into()))?;
        let Some(lex) = lex else {
            let out = store(db)?;
            db.flush()?;
            return Ok(out);
        };
        let marker = db.path().join(LEXICAL_PENDING);
        {
            let mut p = self.pending.lock().map_err(poisoned)?;
            if p.in_flight == 0 {
                mark_pending(db.path())?;
            }
            p.in_flight += 1;
        }
        let result = (|| {
            let out = store(db)?;
            db.flush()?;
            lexical(lex, &out)?;
            lex.commit()?;
            Ok(out)
        })();
        let mut p = self.pending.lock().map_err(poisoned)?;
        p.in_flight -= 1;
        p.failed |= result.is_err();
        if p.in_flight == 0 && !p.failed {
            remove_if_present(&marker)?;
        }
        result
    }

    /// Writes a consistent copy of the database into the empty folder `dir`: the store and
    /// ANN index ([`Database::export_into`]) and the BM25 index's files in `dir/lexical/`,
    /// between writes (each write is wholly in it or wholly not). Returns the manifest.
    pub fn snapshot_into(&self, dir: &Path) -> Result<crate::store::Manifest> {
        let Backing::Embedded { db, lexical } = &self.backing else {
            return Err(Error::InvalidInput(
                "snapshots are of the embedded store; back a PostgreSQL store up with pg_dump or \
                 pg_basebackup"
                    .into(),
            ));
        };
        let _gate = self.gate.write().map_err(|_| Error::Store("snapshot gate poisoned".into()))?;
        let manifest = db.export_into(dir)?;
        if let Some(lex) = lexical {
            lex.copy_files_to(&lexical_dir(dir))?;
        }
        Ok(manifest)
    }

    /// The embedded store's BM25 index (`None` without one, and for PostgreSQL).
    pub fn lexical(&self) -> Option<&LexicalIndex> {
        match &self.backing {
            Backing::Embedded { lexical, .. } => lexical.as_ref(),
            Backing::Postgres(_) => None,
        }
    }

    /// Whether bm25 and hybrid searches can be answered: a BM25 index beside the embedded
    /// store, or PostgreSQL's full text.
    pub fn has_lexical(&self) -> bool {
        matches!(self.backing, Backing::Postgres(_) | Backing::Embedded { lexical: Some(_), .. })
    }

    /// The modes this index can answer.
    pub fn modes(&self) -> Vec<SearchMode> {
        let mut m = vec![SearchMode::Dense];
        if self.has_lexical() {
            m.extend([SearchMode::Bm25, SearchMode::Hybrid]);
        }
        m
    }

    /// Stores documents (vectors and passages in sled, durable on return) and indexes their
    /// words. The store is written first: it is the source of truth `sync_lexical` rebuilds
    /// the lexical index from.
    pub fn put_documents(&self, docs: Vec<NewDocument>) -> Result<()> {
        if let Backing::Postgres(pg) = &self.backing {
            return pg.put_documents(docs);
        }
        let lexical: Vec<(String, String, String)> =
            docs.iter().map(|d| (d.id.clone(), d.title.clone(), d.text.clone())).collect();
        self.write_both(
            |db| db.put_documents(docs),
            |lex, _| {
                lex.add(lexical.iter().map(|(id, title, text)| LexicalDoc { id, title, text }))
                    .map(|_| ())
            },
        )?;
        Ok(())
    }

    /// Deletes documents from both indexes; returns the ids that did not exist.
    pub fn delete_documents(&self, ids: &[String]) -> Result<Vec<String>> {
        if let Backing::Postgres(pg) = &self.backing {
            return pg.delete_documents(ids);
        }
        self.write_both(
            |db| db.delete_documents(ids),
            |lex, _| lex.delete(ids.iter().map(String::as_str)),
        )
    }

    /// Deletes from both indexes the documents whose metadata passes `filter`, among `among`
    /// when given ([`Database::delete_matching`]); returns the ids deleted.
    pub fn delete_matching(
        &self,
        filter: &Filter,
        among: Option<&[String]>,
    ) -> Result<Vec<String>> {
        if let Backing::Postgres(pg) = &self.backing {
            return pg.delete_matching(filter, among);
        }
        self.write_both(
            |db| db.delete_matching(filter, among),
            |lex, deleted| lex.delete(deleted.iter().map(String::as_str)),
        )
    }

    /// Replaces the metadata of stored documents ([`Database::update_metadata`]): nothing is
    /// re-embedded and BM25 (titles and texts) is untouched, but the write goes through
    /// `SearchIndex::write_both` like every other, so it waits for a snapshot in progress and
    /// is refused on a read-only database. Returns the ids that did not exist.
    pub fn update_metadata(&self, updates: &[(String, serde_json::Value)]) -> Result<Vec<String>> {
        if let Backing::Postgres(pg) = &self.backing {
            return pg.update_metadata(updates);
        }
        self.write_both(|db| db.update_metadata(updates), |_, _| Ok(()))
    }

    /// Top `k` documents for a query. `vector` (the query's embedding) is required for dense
    /// and hybrid modes.
    pub fn search(
        &self,
        mode: SearchMode,
        text: &str,
        vector: Option<&[f32]>,
        k: usize,
        fusion: &Fusion,
    ) -> Result<Vec<DocHit>> {
        let opts =
            SearchOptions { k, fusion: *fusion, filter: None, score_threshold: None, ef: None };
        Ok(self.search_with(mode, text, vector, &opts)?.hits)
    }

    /// Top `opts.k` documents with every per-search setting of [`SearchOptions`]. With a
    /// filter, BM25 candidates are fetched with a growing depth until `k` pass or the lexical
    /// index is exhausted; dense goes through [`Database::search_dense_filtered`] (ANN, then an
    /// exact scan of the matching set); hybrid fuses the two filtered lists, so every fused hit
    /// matches. Hits are then cut at the score threshold; the best dense score
    /// ([`Ranked::best_dense`]) is taken before the cut.
    pub fn search_with(
        &self,
        mode: SearchMode,
        text: &str,
        vector: Option<&[f32]>,
        opts: &SearchOptions,
    ) -> Result<Ranked> {
        opts.check()?;
        let SearchOptions { k, fusion, filter, ef, .. } = *opts;
        let filter = filter.filter(|f| !f.is_empty());
        let need_vector = || {
            vector.ok_or_else(|| {
                Error::InvalidInput(format!("{} search needs a query vector", mode.as_str()))
            })
        };
        let best = |hits: &[DocHit]| hits.first().map(|h| h.score);
        let mut ranked = match mode {
            SearchMode::Dense => {
                let hits = self.db().search_dense_with(need_vector()?, k, filter, ef)?;
                Ranked { best_dense: best(&hits), hits }
            }
            SearchMode::Bm25 => {
                let hits = self.bm25_filtered(text, k, filter)?;
                Ranked { hits: self.hydrate(&hits, &[])?, best_dense: None }
            }
            SearchMode::Hybrid => {
                let depth = k.max(FUSION_DEPTH);
                let dense = self.db().search_dense_with(need_vector()?, depth, filter, ef)?;
                let bm25 = self.bm25_filtered(text, depth, filter)?;
                let dense_ranked: Vec<(String, f32)> =
                    dense.iter().map(|h| (h.id.clone(), h.score)).collect();
                let fused = fusion.fuse(&dense_ranked, &bm25, k);
                Ranked { hits: self.hydrate(&fused, &dense)?, best_dense: best(&dense) }
            }
        };
        if let Some(t) = opts.score_threshold {
            // Hits are best first: the cut keeps a prefix.
            ranked.hits.retain(|h| h.score >= t);
        }
        Ok(ranked)
    }

    /// BM25 top `k` among documents passing `filter`: the depth grows fourfold until `k`
    /// pass or fewer than asked come back (the lexical index has no more matches).
    fn bm25_filtered(
        &self,
        text: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<(String, f32)>> {
        let Some(f) = filter else { return self.lexical_search(text, k) };
        let mut depth = (k * 4).max(16);
        loop {
            let hits = self.lexical_search(text, depth)?;
            let exhausted = hits.len() < depth;
            let ids: Vec<String> = hits.iter().map(|(id, _)| id.clone()).collect();
            let docs = self.db().get_documents(&ids)?;
            let mut out = Vec::with_capacity(k);
            for (id, score) in hits {
                if docs.get(&id).is_some_and(|d| f.matches_str(&d.metadata)) {
                    out.push((id, score));
                    if out.len() == k {
                        return Ok(out);
                    }
                }
            }
            // Past the number of documents a deeper search finds nothing new.
            if exhausted || depth as u64 >= self.db().status()?.documents {
                return Ok(out);
            }
            depth = depth.saturating_mul(4);
        }
    }

    /// Lexical top `k`: tantivy's BM25 beside the embedded store, PostgreSQL's full text.
    fn lexical_search(&self, text: &str, k: usize) -> Result<Vec<(String, f32)>> {
        match &self.backing {
            Backing::Embedded { lexical: Some(lex), .. } => lex.search(text, k),
            Backing::Embedded { db, lexical: None } => Err(Error::InvalidInput(format!(
                "database {} has no BM25 index (re-run `engine index` to build it)",
                db.path().display()
            ))),
            Backing::Postgres(pg) => pg.search_lexical(text, k),
        }
    }

    /// Turns `(id, score)` into hits with title and passage, reusing the best passage of a
    /// dense hit where there is one (else the start of the document).
    fn hydrate(&self, ranked: &[(String, f32)], dense: &[DocHit]) -> Result<Vec<DocHit>> {
        let missing: Vec<String> = ranked
            .iter()
            .filter(|(id, _)| !dense.iter().any(|h| &h.id == id))
            .map(|(id, _)| id.clone())
            .collect();
        // One round trip for the lot (a PostgreSQL store would pay one per hit).
        let mut docs = self.db().get_documents(&missing)?;
        let mut out = Vec::with_capacity(ranked.len());
        for (id, score) in ranked {
            if let Some(h) = dense.iter().find(|h| &h.id == id) {
                out.push(DocHit { score: *score, ..h.clone() });
                continue;
            }
            // A document deleted between the two lookups is simply skipped.
            let Some(doc) = docs.remove(id) else { continue };
            out.push(DocHit {
                id: id.clone(),
                score: *score,
                title: doc.title,
                passage: doc.text,
                passage_ordinal: 0,
            });
        }
        Ok(out)
    }
}

/// Puts the [`LEXICAL_PENDING`] marker in the database at `db_dir`: the store is about to
/// change ahead of BM25, and until the marker goes, an open rebuilds BM25 from the store.
fn mark_pending(db_dir: &Path) -> Result<()> {
    crate::index::persist::atomic_write(&db_dir.join(LEXICAL_PENDING), b"")
}

/// Indexes `docs` into `db` (see [`index_documents`]), deletes the documents `prune` names
/// (`engine index --prune`: files gone from a folder corpus), then rebuilds its BM25 index
/// from the store. The [`LEXICAL_PENDING`] marker is on disk from before the first store write until
/// BM25 matches, so a run killed or failing in between (an `--update` that changes documents
/// without changing their count) is repaired by the next [`SearchIndex::open`]. On success
/// returns the report and the rebuilt BM25 index.
pub fn index_with_bm25(
    db: &Database,
    embedder: &dyn Embed,
    docs: Vec<Document>,
    prune: &[String],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<(IndexReport, LexicalIndex)> {
    mark_pending(db.path())?;
    let report = index_documents(db, embedder, docs, opts, progress)?;
    if !prune.is_empty() {
        db.delete_documents(prune)?;
        db.save_index()?;
    }
    db.flush()?;
    Ok((report, sync_lexical(db)?))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Rebuilds `DB/lexical/` from every document in the store, so it matches the store exactly
/// after `engine index` or `engine delete` (tantivy indexes thousands of documents a second,
/// negligible beside embedding them). Built in a temporary folder and swapped in; the
/// [`LEXICAL_PENDING`] marker, if any, goes once it is.
pub fn sync_lexical(db: &Database) -> Result<LexicalIndex> {
    let dir = lexical_dir(db.path());
    let [tmp, old] = LEXICAL_REBUILD_DIRS.map(|name| db.path().join(name));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    {
        let lex = LexicalIndex::create(&tmp, LexicalOptions::default())?;
        let ids = db.document_ids()?;
        for chunk in ids.chunks(1000) {
            let docs: Vec<(String, crate::store::DocRecord)> = chunk
                .iter()
                .filter_map(|id| {
                    db.get_document(id).transpose().map(|d| d.map(|d| (id.clone(), d)))
                })
                .collect::<Result<_>>()?;
            lex.add(docs.iter().map(|(id, d)| LexicalDoc { id, title: &d.title, text: &d.text }))?;
        }
        lex.commit()?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old)?;
    }
    std::fs::rename(&tmp, &dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    let lex = LexicalIndex::open(&dir)?;
    remove_if_present(&db.path().join(LEXICAL_PENDING))?;
    Ok(lex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{AnnParams, Backend};
    use crate::pipeline::testing::HashEmbedder;
    use crate::store::DbOptions;

    /// An empty flat-backend database with its BM25 index, in `dir`.
    fn flat_index(dir: &Path) -> SearchIndex {
        let e = HashEmbedder::new(16);
        let params = AnnParams::from_config(&crate::config::Config::default().index);
        let opts = DbOptions { backend: Backend::Flat, params, chunk_tokens: 64, chunk_overlap: 8 };
        let db = Database::create_or_open(dir, &e.fingerprint(), &opts).unwrap();
        SearchIndex::open(db, true).unwrap()
    }

    /// Overlapping writes (the server runs them concurrently) share the marker: one that
    /// finishes first must not remove it while another's BM25 half is still to come, and a
    /// write that failed half-way leaves it for the next open whatever follows.
    #[test]
    fn the_marker_stays_until_the_last_overlapping_write_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let index = flat_index(dir.path());
        let marker = dir.path().join(LEXICAL_PENDING);
        let store_only = |_: &Database| Ok(());
        index
            .write_both(store_only, |_, _| {
                // Another write, start to end, while this one is between store and BM25.
                index.write_both(store_only, |_, _| Ok(())).unwrap();
                assert!(marker.exists(), "removed while a write had not reached BM25");
                Ok(())
            })
            .unwrap();
        assert!(!marker.exists(), "the last write to finish removes it");
        let failed = index.write_both(store_only, |_, _| Err(Error::Index("disk full".into())));
        assert!(failed.is_err());
        index.write_both(store_only, |_, _| Ok(())).unwrap();
        assert!(marker.exists(), "a later write cleared the mark of a failed one");
    }

    /// A metadata update is a write like the others: it waits while a snapshot holds the gate.
    #[test]
    fn metadata_updates_wait_for_a_snapshot_in_progress() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let index = flat_index(dir.path());
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let snapshot = index.gate.write().unwrap();
            let writer = s.spawn(|| {
                let missing =
                    index.update_metadata(&[("nope".into(), serde_json::json!({}))]).unwrap();
                done.store(true, Ordering::SeqCst);
                missing
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!done.load(Ordering::SeqCst), "the update did not wait for the snapshot");
            drop(snapshot);
            assert_eq!(writer.join().unwrap(), vec!["nope".to_string()]);
        });
        assert!(!dir.path().join(LEXICAL_PENDING).exists());
    }

    #[test]
    fn untrained_encoders_default_to_bm25_only_where_bm25_exists() {
        assert_eq!(SearchMode::default_for(true, true), SearchMode::Hybrid);
        assert_eq!(SearchMode::default_for(true, false), SearchMode::Dense);
        assert_eq!(SearchMode::default_for(false, true), SearchMode::Bm25);
        assert_eq!(SearchMode::default_for(false, false), SearchMode::Dense);
    }
}
