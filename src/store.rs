//! The database: documents, passages and their vectors in sled, plus the ANN index beside it.
//!
//! This is the embedded store, the default. [`Store`] is what the pipeline, search and server
//! need of any store; [`postgres::PgStore`] implements it over PostgreSQL + pgvector
//! (`--store postgres://...`), for several servers on one database.
//!
//! Layout of a database folder:
//! ```text
//! DB/sled/          sled (source of truth): documents, passages, vectors, manifest, embed cache
//! DB/ann/CURRENT    name of the last complete ANN snapshot (see index::persist)
//! DB/ann/snap-N/    the ANN index files of that snapshot
//! ```
//! sled keys live in one tree with a one-byte prefix, so that a whole change (a document, its
//! passages, its vectors, the label counter and the counts) is one atomic `apply_batch`:
//! `d`+id → [`DocRecord`], `p`+label → [`PassageRecord`], `v`+label → vector (f32 LE),
//! `c`+sha256(text) → cached vector of a not-yet-committed passage (lets an interrupted indexing
//! run resume without re-embedding), `m`+name → manifest and label counter.
//!
//! The ANN index is derived data. Each passage gets a fresh `u64` label that is never reused, the
//! index is saved at intervals, and on open it is reconciled with sled: labels stored but missing
//! from the snapshot are inserted from their stored vectors, labels in the snapshot but no longer
//! stored are tombstoned. A crash therefore never loses or corrupts anything, it only costs the
//! inserts since the last save.
//!
//! Concurrency: [`Database`] is `Send + Sync` and every method takes `&self`, so a server can
//! share it behind an `Arc`. Searches take a read lock on the ANN index and run concurrently;
//! writes are serialised by an internal writer mutex and take the index write lock only while
//! applying their change to it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::encoder::EncoderFingerprint;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{self, persist::Snapshots, AnnIndex, AnnParams, Backend};

pub mod postgres;

const FORMAT_VERSION: u32 = 1;

// The database folder's layout: every name the engine writes inside `DB/` is one of these.
/// sled's folder: documents, passages, vectors and the manifest (the source of truth).
pub const SLED_DIR: &str = "sled";
/// ANN snapshots, derived from the vectors in sled (rebuilt when damaged).
pub const ANN_DIR: &str = "ann";
/// The BM25 index, derived from the documents in sled; the whole database of a
/// `--lexical-only` one.
pub const LEXICAL_DIR: &str = "lexical";
/// Present while a write has reached sled but maybe not yet BM25: an open that finds it
/// rebuilds BM25 from sled.
pub const LEXICAL_PENDING: &str = "lexical.pending";
/// Where a BM25 rebuild is written before it is swapped in, and where the old one waits.
pub const LEXICAL_REBUILD_DIRS: [&str; 2] = ["lexical.tmp", "lexical.old"];

/// The store's records in a snapshot (see [`Database::export_into`]): length-prefixed
/// (u64 little-endian) key and value, one after the other.
pub const STORE_DUMP: &str = "store.bin";

/// The BM25 index folder of the database at `db_dir`.
pub fn lexical_dir(db_dir: &Path) -> PathBuf {
    db_dir.join(LEXICAL_DIR)
}
const K_MANIFEST: &[u8] = b"mmanifest";
const K_NEXT_LABEL: &[u8] = b"mnext_label";
/// Below this many tombstones compaction is never worth a rebuild.
const COMPACT_MIN_TOMBSTONES: usize = 64;

/// Everything needed to interpret a database: how its vectors were made and indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub encoder: EncoderFingerprint,
    /// Always "inner_product" (vectors are L2-normalised, so this is cosine).
    pub distance: String,
    pub backend: Backend,
    pub params: AnnParams,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub documents: u64,
    pub passages: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
}

impl Manifest {
    /// The manifest of a new, empty database.
    pub fn new(encoder: &EncoderFingerprint, opts: &DbOptions) -> Self {
        let now = now_secs();
        Manifest {
            format_version: FORMAT_VERSION,
            encoder: encoder.clone(),
            distance: "inner_product".into(),
            backend: opts.backend,
            params: opts.params.clone(),
            chunk_tokens: opts.chunk_tokens,
            chunk_overlap: opts.chunk_overlap,
            documents: 0,
            passages: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Settings for a new database (and the backend wanted for an existing one).
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub backend: Backend,
    pub params: AnnParams,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    pub title: String,
    pub text: String,
    /// Free-form metadata as a JSON string (bincode cannot carry `serde_json::Value`).
    pub metadata: String,
    /// Hex sha256 of title and text (`pipeline::content_hash`; databases written before it
    /// hashed metadata too).
    pub hash: String,
    /// Labels of this document's passages, in text order.
    pub passages: Vec<u64>,
}

/// A stored passage: a byte range of its document's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageRecord {
    pub doc_id: String,
    pub ordinal: u32,
    pub start: u64,
    pub end: u64,
}

/// A document to store with its embedded passages.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: String,
    pub title: String,
    pub text: String,
    pub metadata: serde_json::Value,
    pub hash: String,
    pub passages: Vec<NewPassage>,
}

#[derive(Debug, Clone)]
pub struct NewPassage {
    /// Byte range in `text` (must lie on char boundaries).
    pub start: usize,
    pub end: usize,
    pub vector: Vec<f32>,
    /// Embedding-cache key to drop once this passage is committed.
    pub cache_key: Option<[u8; 32]>,
}

/// A dense search result, aggregated per document (score = best passage's score).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocHit {
    pub id: String,
    pub score: f32,
    pub title: String,
    /// Text of the best-scoring passage.
    pub passage: String,
    pub passage_ordinal: u32,
}

/// Counts for `status` endpoints and CLI reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub path: PathBuf,
    pub documents: u64,
    pub passages: u64,
    pub indexed: usize,
    pub tombstones: usize,
    pub backend: Backend,
    pub dim: usize,
}

/// Result of comparing the ANN index with an exact scan.
#[derive(Debug, Clone, Serialize)]
pub struct RecallReport {
    pub backend: Backend,
    pub queries: usize,
    pub k: usize,
    pub recall: f64,
}

pub struct Database {
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    manifest: RwLock<Manifest>,
    ann: RwLock<Box<dyn AnnIndex>>,
    writer: Mutex<()>,
    last_save: Mutex<Instant>,
    /// Set when this is a private copy of a database the process cannot write (see
    /// [`Database::open_to_read`]); declared last so the store closes before the copy goes.
    scratch: Option<ScratchCopy>,
}

/// A temporary copy of a database folder, removed when dropped.
struct ScratchCopy {
    dir: PathBuf,
    /// The database it copies.
    origin: PathBuf,
}

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("could not remove the temporary copy {}: {e}", self.dir.display());
        }
    }
}

/// Names of temporary database copies: this prefix, the pid of the process that made it, `-N`.
const SCRATCH_PREFIX: &str = "engine-read-copy-";

/// Removes the temporary copies in `base` left by processes that no longer run (killed
/// before they could remove theirs), so crashes do not fill the disk with copies. Linux only
/// (a process runs while `/proc/PID` exists); elsewhere nothing is removed.
fn sweep_dead_copies(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        let gone = cfg!(target_os = "linux") && !Path::new("/proc").join(pid.to_string()).exists();
        if gone && pid != std::process::id() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::debug!("could not remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// Copies the database folder `from` (only its subfolder `only`, when given) into a fresh
/// temporary folder; returns it and the bytes copied.
fn scratch_copy(from: &Path, only: Option<&str>) -> Result<(ScratchCopy, u64)> {
    let base = std::env::temp_dir();
    sweep_dead_copies(&base);
    let dir = (0u32..1000)
        .map(|n| base.join(format!("{SCRATCH_PREFIX}{}-{n}", std::process::id())))
        .find(|d| std::fs::create_dir(d).is_ok())
        .ok_or_else(|| Error::Store(format!("no free temporary folder in {}", base.display())))?;
    let copy = ScratchCopy { dir, origin: from.to_path_buf() };
    let mut bytes = 0;
    let root = only.map_or_else(|| from.to_path_buf(), |sub| from.join(sub));
    for entry in walkdir::WalkDir::new(&root).follow_links(true) {
        let entry = entry.map_err(|e| Error::Store(format!("copying {}: {e}", from.display())))?;
        let rel = entry.path().strip_prefix(from).map_err(|e| Error::Store(e.to_string()))?;
        let to = copy.dir.join(rel);
        if rel.as_os_str().is_empty() {
            continue;
        }
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to)?;
        } else {
            bytes += std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok((copy, bytes))
}

/// [`Error::InvalidInput`] for a write no store may take: an empty or repeated id, a vector of
/// another dimension than `dim`, a passage range outside its text or off a char boundary.
pub(crate) fn check_new_documents(docs: &[NewDocument], dim: usize) -> Result<()> {
    let mut seen = HashSet::new();
    for d in docs {
        if d.id.is_empty() {
            return Err(Error::InvalidInput("document id is empty".into()));
        }
        if !seen.insert(d.id.as_str()) {
            return Err(Error::InvalidInput(format!(
                "document {:?} appears twice in one write",
                d.id
            )));
        }
        for p in &d.passages {
            index::check_vector(&p.vector, dim)?;
            if p.start > p.end
                || p.end > d.text.len()
                || !d.text.is_char_boundary(p.start)
                || !d.text.is_char_boundary(p.end)
            {
                return Err(Error::InvalidInput(format!(
                    "passage range {}..{} invalid in {:?}",
                    p.start, p.end, d.id
                )));
            }
        }
    }
    Ok(())
}

/// The checks every dense search makes (effort in range, the store's dimension) and its query
/// normalised to unit length; `None` when `k` is 0 (nothing to search).
pub(crate) fn dense_query(
    query: &[f32],
    dim: usize,
    k: usize,
    effort: Option<usize>,
) -> Result<Option<Vec<f32>>> {
    index::check_search_effort(effort)?;
    index::check_vector(query, dim)?;
    if k == 0 {
        return Ok(None);
    }
    let mut q = query.to_vec();
    index::normalize(&mut q)?;
    Ok(Some(q))
}

/// What the indexing pipeline, search and the server need of a store, whichever backend holds
/// the data: the embedded [`Database`] (sled + ANN files + tantivy beside it, the default) or
/// [`postgres::PgStore`] (PostgreSQL + pgvector). Every method takes `&self` and the store is
/// shared between threads; each write is atomic (one sled batch, one SQL transaction).
pub trait Store: Send + Sync {
    /// How the vectors were made and indexed, with the current counts.
    fn manifest(&self) -> Manifest;
    /// Counts and index state for `status` endpoints and CLI reports.
    fn status(&self) -> Result<Status>;
    /// Where the store is, for messages: the database folder, or the PostgreSQL URL without
    /// its password.
    fn origin(&self) -> &Path;
    /// Whether writes are refused (a read-only folder's copy, a PostgreSQL replica).
    fn read_only(&self) -> bool;
    /// The error a write gets on a read-only store; every write checks it first.
    fn check_writable(&self) -> Result<()>;
    /// A stored document.
    fn get_document(&self, id: &str) -> Result<Option<DocRecord>>;
    /// The stored documents among `ids` (absent ones are left out), in one round trip where
    /// the store has round trips.
    fn get_documents(&self, ids: &[String]) -> Result<HashMap<String, DocRecord>> {
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = self.get_document(id)? {
                out.insert(id.clone(), d);
            }
        }
        Ok(out)
    }
    /// All stored document ids, in byte order.
    fn document_ids(&self) -> Result<Vec<String>>;
    /// Up to `limit` documents after `after` in id byte order, and whether more follow.
    fn scroll_documents(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DocRecord)>, bool)>;
    /// Stores documents with their passages and vectors in one atomic write, replacing stored
    /// documents of the same ids.
    fn put_documents(&self, docs: Vec<NewDocument>) -> Result<()>;
    /// Deletes documents and their passages; returns the ids that did not exist.
    fn delete_documents(&self, ids: &[String]) -> Result<Vec<String>>;
    /// Deletes the documents whose metadata passes `filter` (among `among` when given) in one
    /// atomic write; returns the ids deleted.
    fn delete_matching(&self, filter: &Filter, among: Option<&[String]>) -> Result<Vec<String>>;
    /// Replaces the metadata of stored documents; returns the ids that did not exist.
    fn update_metadata(&self, updates: &[(String, serde_json::Value)]) -> Result<Vec<String>>;
    /// Top `k` documents by their best passage's inner product with `query`, among those
    /// passing `filter`, with this search's ANN effort (`None`: the store's).
    fn search_dense_with(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        effort: Option<usize>,
    ) -> Result<Vec<DocHit>>;
    /// Recall@k of the store's ANN search against an exact scan, with `queries` stored vectors
    /// sampled with `seed` as queries.
    fn verify_recall(&self, queries: usize, k: usize, seed: u64) -> Result<RecallReport>;
    /// A vector embedded earlier but not yet committed (lets an interrupted run resume).
    fn cache_get(&self, key_hash: &[u8; 32]) -> Result<Option<Vec<f32>>>;
    /// Remembers freshly embedded vectors until their passages are committed.
    fn cache_put(&self, entries: &[([u8; 32], Vec<f32>)]) -> Result<()>;
    /// Drops every cached vector; returns how many.
    fn clear_cache(&self) -> Result<usize>;
    /// Persists derived index files (a no-op where the store indexes as it writes).
    fn save_index(&self) -> Result<()>;
    /// [`Store::save_index`] when the last save is older than `interval`; whether it saved.
    fn save_index_if_older(&self, interval: Duration) -> Result<bool>;
    /// Makes every acknowledged write durable.
    fn flush(&self) -> Result<()>;
}

impl Store for Database {
    fn manifest(&self) -> Manifest {
        Database::manifest(self)
    }
    fn status(&self) -> Result<Status> {
        Database::status(self)
    }
    fn origin(&self) -> &Path {
        Database::origin(self)
    }
    fn read_only(&self) -> bool {
        Database::read_only(self)
    }
    fn check_writable(&self) -> Result<()> {
        Database::check_writable(self)
    }
    fn get_document(&self, id: &str) -> Result<Option<DocRecord>> {
        Database::get_document(self, id)
    }
    fn document_ids(&self) -> Result<Vec<String>> {
        Database::document_ids(self)
    }
    fn scroll_documents(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DocRecord)>, bool)> {
        Database::scroll_documents(self, after, limit)
    }
    fn put_documents(&self, docs: Vec<NewDocument>) -> Result<()> {
        Database::put_documents(self, docs)
    }
    fn delete_documents(&self, ids: &[String]) -> Result<Vec<String>> {
        Database::delete_documents(self, ids)
    }
    fn delete_matching(&self, filter: &Filter, among: Option<&[String]>) -> Result<Vec<String>> {
        Database::delete_matching(self, filter, among)
    }
    fn update_metadata(&self, updates: &[(String, serde_json::Value)]) -> Result<Vec<String>> {
        Database::update_metadata(self, updates)
    }
    fn search_dense_with(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        effort: Option<usize>,
    ) -> Result<Vec<DocHit>> {
        Database::search_dense_with(self, query, k, filter, effort)
    }
    fn verify_recall(&self, queries: usize, k: usize, seed: u64) -> Result<RecallReport> {
        Database::verify_recall(self, queries, k, seed)
    }
    fn cache_get(&self, key_hash: &[u8; 32]) -> Result<Option<Vec<f32>>> {
        Database::cache_get(self, key_hash)
    }
    fn cache_put(&self, entries: &[([u8; 32], Vec<f32>)]) -> Result<()> {
        Database::cache_put(self, entries)
    }
    fn clear_cache(&self) -> Result<usize> {
        Database::clear_cache(self)
    }
    fn save_index(&self) -> Result<()> {
        Database::save_index(self)
    }
    fn save_index_if_older(&self, interval: Duration) -> Result<bool> {
        Database::save_index_if_older(self, interval)
    }
    fn flush(&self) -> Result<()> {
        Database::flush(self)
    }
}

/// ANN over-fetch rounds a filtered dense search tries before scanning the matching set exactly.
pub const FILTER_ANN_ROUNDS: usize = 3;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn label_key(prefix: u8, label: u64) -> Vec<u8> {
    key(prefix, &label.to_be_bytes())
}

fn vec_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_to_vec(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Store("stored vector has a truncated length".into()));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| Error::Store(e.to_string()))
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8], what: &str) -> Result<T> {
    bincode::deserialize(b).map_err(|e| Error::Store(format!("corrupt {what}: {e}")))
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::Store("internal lock poisoned by an earlier panic".into())
}

impl Database {
    /// Opens the database in `dir`, creating it (and the folder) if it has no manifest yet.
    /// An existing database must have been built by an encoder with the same fingerprint
    /// ([`Error::EncoderMismatch`] otherwise) and the same chunking. When `opts.backend` differs
    /// from the stored one, the ANN index is rebuilt from the stored vectors.
    pub fn create_or_open(
        dir: &Path,
        encoder: &EncoderFingerprint,
        opts: &DbOptions,
    ) -> Result<Self> {
        check_options(encoder, opts)?;
        std::fs::create_dir_all(dir)?;
        let db = open_sled(dir)?;
        let tree = db.open_tree("engine")?;
        let manifest = match tree.get(K_MANIFEST)? {
            Some(bytes) => {
                let m: Manifest = serde_json::from_slice(&bytes)?;
                check_reopen(&m, encoder, opts)?;
                m
            }
            None => {
                let m = Manifest::new(encoder, opts);
                tree.insert(K_MANIFEST, serde_json::to_vec(&m)?)?;
                db.flush()?;
                m
            }
        };
        let me = Self::finish_open(dir, db, tree, manifest)?;
        if me.manifest().backend != opts.backend {
            tracing::info!(
                "switching ANN backend to {}: rebuilding from stored vectors",
                opts.backend
            );
            me.rebuild_index(Some((opts.backend, opts.params.clone())))?;
        }
        Ok(me)
    }

    /// Whether `dir` holds a dense database (without opening it).
    pub fn exists(dir: &Path) -> bool {
        dir.join(SLED_DIR).is_dir()
    }

    /// Opens an existing database. With `encoder`, refuses ([`Error::EncoderMismatch`]) a
    /// database built by another encoder; without it (delete, check, status) no check is made.
    pub fn open(dir: &Path, encoder: Option<&EncoderFingerprint>) -> Result<Self> {
        if !Self::exists(dir) {
            return Err(Error::NotFound(format!("no database at {}", dir.display())));
        }
        let db = open_sled(dir)?;
        let tree = db.open_tree("engine")?;
        let manifest = read_manifest_from(dir, &tree)?;
        if let Some(fp) = encoder {
            check_encoder(&manifest, fp)?;
        }
        Self::finish_open(dir, db, tree, manifest)
    }

    /// Opens an existing database to search it (search, eval, check, serve): as
    /// [`Database::open`], except that a database whose folder this process cannot write (a
    /// read-only mount, another user's files) is read through a private temporary copy, since
    /// sled opens its store read-write even to read. The copy is removed when the database is
    /// dropped, and refuses writes ([`Database::check_writable`]), so nothing written is lost
    /// with it; `engine index` and `delete` use [`Database::open`].
    pub fn open_to_read(dir: &Path, encoder: Option<&EncoderFingerprint>) -> Result<Self> {
        match Self::open(dir, encoder) {
            Err(Error::DatabaseReadOnly { path, reason }) => Self::open_copy(&path, encoder)
                .map_err(|e| Error::DatabaseReadOnly {
                    path,
                    reason: format!(
                        "{reason}; reading it through a temporary copy failed too: {e}"
                    ),
                }),
            other => other,
        }
    }

    /// Opens a private temporary copy of the database in `dir` (see [`Database::open_to_read`]).
    fn open_copy(dir: &Path, encoder: Option<&EncoderFingerprint>) -> Result<Self> {
        let (copy, bytes) = scratch_copy(dir, None)?;
        tracing::warn!(
            "database {} cannot be written: reading it through a temporary copy in {} ({:.1} MB)",
            dir.display(),
            copy.dir.display(),
            bytes as f64 / 1e6
        );
        let mut db = Self::open(&copy.dir, encoder)?;
        db.scratch = Some(copy);
        Ok(db)
    }

    /// The folder the database was opened from: [`Database::path`], or for a database read
    /// through a temporary copy, the folder it copies.
    pub fn origin(&self) -> &Path {
        self.scratch.as_ref().map_or(&self.dir, |c| &c.origin)
    }

    /// Whether this is a temporary copy of a database that cannot be written (see
    /// [`Database::open_to_read`]).
    pub fn read_only(&self) -> bool {
        self.scratch.is_some()
    }

    /// [`Error::DatabaseReadOnly`] for a database read through a temporary copy: what it
    /// stored would be lost with the copy. Every write checks it first.
    pub fn check_writable(&self) -> Result<()> {
        match &self.scratch {
            None => Ok(()),
            Some(c) => Err(Error::DatabaseReadOnly {
                path: c.origin.clone(),
                reason: "its folder cannot be written, so this process reads a temporary copy"
                    .into(),
            }),
        }
    }

    /// Reads the manifest of the database in `dir` without loading its ANN index (what
    /// `engine info --db` shows, and where commands find the encoder a database was built with).
    /// A folder that cannot be written is read through a temporary copy of its store.
    pub fn read_manifest(dir: &Path) -> Result<Manifest> {
        if !Self::exists(dir) {
            return Err(Error::NotFound(format!("no database at {}", dir.display())));
        }
        match open_sled(dir) {
            Ok(db) => read_manifest_from(dir, &db.open_tree("engine")?),
            Err(Error::DatabaseReadOnly { path, reason }) => {
                let read_copy = || {
                    let (copy, _) = scratch_copy(dir, Some(SLED_DIR))?;
                    let db = open_sled(&copy.dir)?;
                    let manifest = read_manifest_from(dir, &db.open_tree("engine")?);
                    // The store closes before its copy is removed.
                    drop(db);
                    drop(copy);
                    manifest
                };
                read_copy().map_err(|e| Error::DatabaseReadOnly {
                    path,
                    reason: format!(
                        "{reason}; reading it through a temporary copy failed too: {e}"
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn finish_open(dir: &Path, db: sled::Db, tree: sled::Tree, manifest: Manifest) -> Result<Self> {
        check_format(&manifest)?;
        let dim = manifest.encoder.dim;
        let snaps = Snapshots::new(dir.join(ANN_DIR));
        let loaded = match snaps.current() {
            Ok(Some(snap)) => match index::load_index(manifest.backend, &snap, &manifest.params) {
                Ok(idx) if idx.dim() == dim && idx.backend() == manifest.backend => Some(idx),
                Ok(_) => {
                    tracing::warn!("ANN snapshot does not match the manifest; rebuilding it");
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        "could not load ANN snapshot ({e}); rebuilding it from stored vectors"
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("{e}; rebuilding the ANN index from stored vectors");
                None
            }
        };
        let ann = match loaded {
            Some(a) => a,
            None => index::new_index(manifest.backend, dim, &manifest.params)?,
        };
        let me = Database {
            dir: dir.to_path_buf(),
            db,
            tree,
            manifest: RwLock::new(manifest),
            ann: RwLock::new(ann),
            writer: Mutex::new(()),
            last_save: Mutex::new(Instant::now()),
            scratch: None,
        };
        let changed = me.reconcile()?;
        if changed > 0 {
            tracing::info!("ANN index caught up with the store ({changed} labels)");
        }
        Ok(me)
    }

    /// Brings the ANN index in line with the stored passages; returns how many labels changed.
    fn reconcile(&self) -> Result<usize> {
        let _w = self.writer.lock().map_err(poisoned)?;
        let mut ann = self.ann.write().map_err(poisoned)?;
        let in_index: Vec<u64> = ann.labels();
        let mut stored = Vec::new();
        for kv in self.tree.scan_prefix([b'p']) {
            let (k, _) = kv?;
            stored.push(u64::from_be_bytes(
                k[1..9].try_into().map_err(|_| Error::Store("bad passage key".into()))?,
            ));
        }
        let stored_set: HashSet<u64> = stored.iter().copied().collect();
        let index_set: HashSet<u64> = in_index.iter().copied().collect();
        let extra: Vec<u64> = in_index.into_iter().filter(|l| !stored_set.contains(l)).collect();
        let missing: Vec<u64> = stored.into_iter().filter(|l| !index_set.contains(l)).collect();
        ann.remove(&extra)?;
        for chunk in missing.chunks(4096) {
            let vecs: Vec<Vec<f32>> =
                chunk.iter().map(|&l| self.vector(l)).collect::<Result<_>>()?;
            let items: Vec<(u64, &[f32])> =
                chunk.iter().copied().zip(vecs.iter().map(|v| v.as_slice())).collect();
            ann.add(&items)?;
        }
        Ok(extra.len() + missing.len())
    }

    /// The folder the database works in (for one read through a temporary copy, the copy:
    /// see [`Database::origin`]).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> Manifest {
        self.manifest.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn dim(&self) -> usize {
        self.manifest().encoder.dim
    }

    pub fn status(&self) -> Result<Status> {
        let m = self.manifest();
        let ann = self.ann.read().map_err(poisoned)?;
        Ok(Status {
            path: self.origin().to_path_buf(),
            documents: m.documents,
            passages: m.passages,
            indexed: ann.len(),
            tombstones: ann.tombstones(),
            backend: m.backend,
            dim: m.encoder.dim,
        })
    }

    pub fn get_document(&self, id: &str) -> Result<Option<DocRecord>> {
        match self.tree.get(key(b'd', id.as_bytes()))? {
            Some(b) => Ok(Some(dec(&b, "document")?)),
            None => Ok(None),
        }
    }

    pub fn get_passage(&self, label: u64) -> Result<Option<PassageRecord>> {
        match self.tree.get(label_key(b'p', label))? {
            Some(b) => Ok(Some(dec(&b, "passage")?)),
            None => Ok(None),
        }
    }

    /// The stored vector of a passage.
    pub fn vector(&self, label: u64) -> Result<Vec<f32>> {
        let b = self
            .tree
            .get(label_key(b'v', label))?
            .ok_or_else(|| Error::Store(format!("passage {label} has no stored vector")))?;
        bytes_to_vec(&b)
    }

    /// A stored document as it was written: its passages with their vectors, ready for another
    /// store's [`Store::put_documents`] (copying a database without embedding it again).
    pub fn export_document(&self, id: &str) -> Result<Option<NewDocument>> {
        let Some(d) = self.get_document(id)? else { return Ok(None) };
        let passages = d
            .passages
            .iter()
            .map(|&label| {
                let p = self.get_passage(label)?.ok_or_else(|| {
                    Error::Store(format!("document {id:?} names passage {label}, which is missing"))
                })?;
                Ok(NewPassage {
                    start: p.start as usize,
                    end: p.end as usize,
                    vector: self.vector(label)?,
                    cache_key: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = match d.metadata.as_str() {
            "" => serde_json::Value::Null,
            m => serde_json::from_str(m).map_err(|e| {
                Error::Store(format!("document {id:?} has unreadable metadata: {e}"))
            })?,
        };
        Ok(Some(NewDocument {
            id: id.to_string(),
            title: d.title,
            text: d.text,
            metadata,
            hash: d.hash,
            passages,
        }))
    }

    /// All stored document ids, in byte order.
    pub fn document_ids(&self) -> Result<Vec<String>> {
        self.tree
            .scan_prefix([b'd'])
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[1..]).into_owned()))
            .collect()
    }

    /// A vector embedded earlier but not yet committed (resume support).
    pub fn cache_get(&self, key_hash: &[u8; 32]) -> Result<Option<Vec<f32>>> {
        match self.tree.get(key(b'c', key_hash))? {
            Some(b) => Ok(Some(bytes_to_vec(&b)?)),
            None => Ok(None),
        }
    }

    /// Remembers freshly embedded vectors so an interrupted run need not embed them again.
    pub fn cache_put(&self, entries: &[([u8; 32], Vec<f32>)]) -> Result<()> {
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(key(b'c', k), vec_to_bytes(v));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Drops every cached vector (after a completed run, leftovers belong to passages of an
    /// interrupted run whose corpus has since changed). Returns how many were dropped.
    pub fn clear_cache(&self) -> Result<usize> {
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.tree.scan_prefix([b'c']).keys() {
            batch.remove(k?);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// Stores documents with their passages and vectors in one atomic step, replacing any
    /// stored document with the same id (its old passages are removed). Vectors are checked
    /// against the database dimension and L2-normalised.
    pub fn put_documents(&self, docs: Vec<NewDocument>) -> Result<()> {
        self.check_writable()?;
        if docs.is_empty() {
            return Ok(());
        }
        check_new_documents(&docs, self.dim())?;
        let _w = self.writer.lock().map_err(poisoned)?;
        let mut next = self.next_label()?;
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        let mut added: Vec<(u64, Vec<f32>)> = Vec::new();
        let (mut ddocs, mut dpass) = (0i64, 0i64);
        for d in docs {
            if let Some(old) = self.get_document(&d.id)? {
                for &l in &old.passages {
                    batch.remove(label_key(b'p', l));
                    batch.remove(label_key(b'v', l));
                    removed.push(l);
                }
                dpass -= old.passages.len() as i64;
            } else {
                ddocs += 1;
            }
            let mut labels = Vec::with_capacity(d.passages.len());
            for (i, p) in d.passages.into_iter().enumerate() {
                let label = next;
                next += 1;
                let mut v = p.vector;
                index::normalize(&mut v)?;
                let rec = PassageRecord {
                    doc_id: d.id.clone(),
                    ordinal: i as u32,
                    start: p.start as u64,
                    end: p.end as u64,
                };
                batch.insert(label_key(b'p', label), enc(&rec)?);
                batch.insert(label_key(b'v', label), vec_to_bytes(&v));
                if let Some(ck) = p.cache_key {
                    batch.remove(key(b'c', &ck));
                }
                labels.push(label);
                added.push((label, v));
            }
            dpass += labels.len() as i64;
            let rec = DocRecord {
                title: d.title,
                text: d.text,
                metadata: serde_json::to_string(&d.metadata)?,
                hash: d.hash,
                passages: labels,
            };
            batch.insert(key(b'd', d.id.as_bytes()), enc(&rec)?);
        }
        batch.insert(K_NEXT_LABEL, &next.to_be_bytes()[..]);
        let manifest = self.bump_counts(ddocs, dpass)?;
        batch.insert(K_MANIFEST, serde_json::to_vec(&manifest)?);
        self.tree.apply_batch(batch)?;
        *self.manifest.write().map_err(poisoned)? = manifest;
        let mut ann = self.ann.write().map_err(poisoned)?;
        ann.remove(&removed)?;
        let items: Vec<(u64, &[f32])> = added.iter().map(|(l, v)| (*l, v.as_slice())).collect();
        ann.add(&items)?;
        Ok(())
    }

    /// Deletes documents and their passages; returns the ids that did not exist.
    pub fn delete_documents(&self, ids: &[String]) -> Result<Vec<String>> {
        self.check_writable()?;
        let _w = self.writer.lock().map_err(poisoned)?;
        self.delete_locked(ids)
    }

    /// Deletes the documents whose metadata passes `filter`, among `among` when given (else
    /// among all), in one atomic step under the writer lock, so a document changed meanwhile
    /// is judged by its metadata at the time of the delete. Returns the ids deleted.
    pub fn delete_matching(
        &self,
        filter: &Filter,
        among: Option<&[String]>,
    ) -> Result<Vec<String>> {
        self.check_writable()?;
        let _w = self.writer.lock().map_err(poisoned)?;
        let mut ids = Vec::new();
        match among {
            Some(list) => {
                let mut seen = HashSet::new();
                for id in list {
                    let hit =
                        self.get_document(id)?.is_some_and(|d| filter.matches_str(&d.metadata));
                    if hit && seen.insert(id) {
                        ids.push(id.clone());
                    }
                }
            }
            None => {
                for item in self.tree.scan_prefix([b'd']) {
                    let (k, v) = item?;
                    let doc: DocRecord = dec(&v, "document")?;
                    if filter.matches_str(&doc.metadata) {
                        ids.push(String::from_utf8_lossy(&k[1..]).into_owned());
                    }
                }
            }
        }
        self.delete_locked(&ids)?;
        Ok(ids)
    }

    /// Up to `limit` documents whose ids come after `after` (from the first when `None`), in id
    /// byte order, and whether more follow. Paging with the last id returned visits every
    /// document present throughout exactly once, whatever is written between pages.
    pub fn scroll_documents(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DocRecord)>, bool)> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(key(b'd', id.as_bytes())),
            None => Bound::Included(vec![b'd']),
        };
        let mut out = Vec::new();
        for item in self.tree.range::<Vec<u8>, _>((start, Bound::Excluded(vec![b'd' + 1]))) {
            let (k, v) = item?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((String::from_utf8_lossy(&k[1..]).into_owned(), dec(&v, "document")?));
        }
        Ok((out, false))
    }

    /// Replaces the metadata of stored documents, leaving their passages, vectors and BM25
    /// entries alone (nothing is re-embedded), durable on return. Returns the ids that did
    /// not exist (nothing of theirs is written).
    pub fn update_metadata(&self, updates: &[(String, serde_json::Value)]) -> Result<Vec<String>> {
        self.check_writable()?;
        let _w = self.writer.lock().map_err(poisoned)?;
        let mut batch = sled::Batch::default();
        let mut missing = Vec::new();
        for (id, metadata) in updates {
            match self.get_document(id)? {
                Some(mut doc) => {
                    doc.metadata = serde_json::to_string(metadata)?;
                    batch.insert(key(b'd', id.as_bytes()), enc(&doc)?);
                }
                None => missing.push(id.clone()),
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(missing)
    }

    /// [`Database::delete_documents`] with the writer lock held.
    fn delete_locked(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        let mut missing = Vec::new();
        let (mut ddocs, mut dpass) = (0i64, 0i64);
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            match self.get_document(id)? {
                Some(old) => {
                    for &l in &old.passages {
                        batch.remove(label_key(b'p', l));
                        batch.remove(label_key(b'v', l));
                        removed.push(l);
                    }
                    batch.remove(key(b'd', id.as_bytes()));
                    ddocs -= 1;
                    dpass -= old.passages.len() as i64;
                }
                None => missing.push(id.clone()),
            }
        }
        if ddocs != 0 {
            let manifest = self.bump_counts(ddocs, dpass)?;
            batch.insert(K_MANIFEST, serde_json::to_vec(&manifest)?);
            self.tree.apply_batch(batch)?;
            *self.manifest.write().map_err(poisoned)? = manifest;
            self.ann.write().map_err(poisoned)?.remove(&removed)?;
        }
        Ok(missing)
    }

    fn next_label(&self) -> Result<u64> {
        Ok(match self.tree.get(K_NEXT_LABEL)? {
            Some(b) => u64::from_be_bytes(
                b.as_ref().try_into().map_err(|_| Error::Store("bad label counter".into()))?,
            ),
            None => 0,
        })
    }

    fn bump_counts(&self, ddocs: i64, dpass: i64) -> Result<Manifest> {
        let mut m = self.manifest();
        m.documents = (m.documents as i64 + ddocs).max(0) as u64;
        m.passages = (m.passages as i64 + dpass).max(0) as u64;
        m.updated_at = now_secs();
        Ok(m)
    }

    /// Dense search: the `k` documents whose best passage is closest to `query` (inner product
    /// after normalisation), best first.
    pub fn search_dense(&self, query: &[f32], k: usize) -> Result<Vec<DocHit>> {
        self.search_dense_filtered(query, k, None)
    }

    /// Top `k` documents whose metadata passes `filter` (all documents when `None`).
    ///
    /// Adaptive: the ANN index is searched with a growing over-fetch, dropping non-matching
    /// documents, for at most [`FILTER_ANN_ROUNDS`] rounds; a selective filter that still has
    /// fewer than `k` matches then falls back to an exact scan over the matching documents,
    /// so k filtered hits come back whenever k documents match.
    pub fn search_dense_filtered(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<DocHit>> {
        self.search_dense_with(query, k, filter, None)
    }

    /// [`Database::search_dense_filtered`] with this search's own ANN effort (`effort`: HNSW
    /// ef; see [`AnnIndex::search_with_effort`]), `None` for the index's.
    pub fn search_dense_with(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        effort: Option<usize>,
    ) -> Result<Vec<DocHit>> {
        let filter = filter.filter(|f| !f.is_empty());
        let Some(q) = dense_query(query, self.dim(), k, effort)? else { return Ok(Vec::new()) };
        let ann = self.ann.read().map_err(poisoned)?;
        let total = ann.len();
        // Several passages may belong to one document: over-fetch until k documents are found
        // or the index is exhausted.
        let mut fetch = (k * 4).max(16);
        // Verdicts of the filter per document, so each document's metadata is read once.
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut rounds = 0;
        let mut best: HashMap<String, (f32, u64)> = loop {
            rounds += 1;
            let hits = ann.search_with_effort(&q, fetch, effort)?;
            let mut best: HashMap<String, (f32, u64)> = HashMap::new();
            for h in &hits {
                let Some(p) = self.get_passage(h.label)? else { continue };
                if let Some(f) = filter {
                    let ok = match verdicts.get(&p.doc_id) {
                        Some(ok) => *ok,
                        None => {
                            let ok = self
                                .get_document(&p.doc_id)?
                                .is_some_and(|d| f.matches_str(&d.metadata));
                            verdicts.insert(p.doc_id.clone(), ok);
                            ok
                        }
                    };
                    if !ok {
                        continue;
                    }
                }
                let e = best.entry(p.doc_id).or_insert((h.score, h.label));
                if h.score > e.0 {
                    *e = (h.score, h.label);
                }
            }
            if best.len() >= k || hits.len() < fetch || fetch >= total {
                break best;
            }
            if filter.is_some() && rounds >= FILTER_ANN_ROUNDS {
                break HashMap::new();
            }
            fetch = (fetch * 4).min(total.max(1));
        };
        drop(ann);
        if let Some(f) = filter {
            // An approximate index searched to exhaustion can still miss matches; short of k,
            // the exact scan over the matching set is the answer.
            if best.len() < k {
                best = self.exact_filtered(&q, f)?;
            }
        }
        let mut ranked: Vec<(String, f32, u64)> =
            best.into_iter().map(|(id, (s, l))| (id, s, l)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(k);
        let mut out = Vec::with_capacity(ranked.len());
        for (id, score, label) in ranked {
            let Some(doc) = self.get_document(&id)? else { continue };
            let p = self.get_passage(label)?;
            let (ordinal, passage) = match p {
                Some(p) => (
                    p.ordinal,
                    doc.text.get(p.start as usize..p.end as usize).unwrap_or("").to_string(),
                ),
                None => (0, String::new()),
            };
            out.push(DocHit { id, score, title: doc.title, passage, passage_ordinal: ordinal });
        }
        Ok(out)
    }

    /// Best passage (score, label) of every document passing `filter`, by exact dot product
    /// with the stored vectors (which are unit length, as the index's are).
    fn exact_filtered(&self, q: &[f32], filter: &Filter) -> Result<HashMap<String, (f32, u64)>> {
        let mut best = HashMap::new();
        for item in self.tree.scan_prefix([b'd']) {
            let (k, v) = item?;
            let doc: DocRecord = dec(&v, "document")?;
            if !filter.matches_str(&doc.metadata) {
                continue;
            }
            let mut top: Option<(f32, u64)> = None;
            for &label in &doc.passages {
                let v = self.vector(label)?;
                let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                if top.is_none_or(|(t, _)| s > t) {
                    top = Some((s, label));
                }
            }
            if let Some(t) = top {
                best.insert(String::from_utf8_lossy(&k[1..]).into_owned(), t);
            }
        }
        Ok(best)
    }

    /// Writes the ANN index atomically (after making sled durable, so the snapshot never
    /// refers to a write sled could still lose).
    /// Tombstoned graph nodes slow searches down (FAISS over-fetches by their number), so once
    /// they outnumber the live vectors the index is rebuilt from the stored vectors first.
    pub fn save_index(&self) -> Result<()> {
        let (dead, live) = {
            let ann = self.ann.read().map_err(poisoned)?;
            (ann.tombstones(), ann.len())
        };
        if dead >= COMPACT_MIN_TOMBSTONES && dead > live {
            tracing::info!("compacting the ANN index ({dead} tombstones, {live} live)");
            self.rebuild_in_memory(None)?;
        }
        let _w = self.writer.lock().map_err(poisoned)?;
        self.db.flush()?;
        {
            let mut ann = self.ann.write().map_err(poisoned)?;
            ann.flush()?;
        }
        let ann = self.ann.read().map_err(poisoned)?;
        Snapshots::new(self.dir.join(ANN_DIR)).save(|dir| ann.save_into(dir))?;
        *self.last_save.lock().map_err(poisoned)? = Instant::now();
        Ok(())
    }

    /// Saves the index if the last save is older than `interval`; returns whether it saved.
    pub fn save_index_if_older(&self, interval: Duration) -> Result<bool> {
        let due = self.last_save.lock().map_err(poisoned)?.elapsed() >= interval;
        if due {
            self.save_index()?;
        }
        Ok(due)
    }

    /// Changes the query-time effort of the ANN index (HNSW ef, FAISS efSearch / nprobe) for
    /// this process only; the manifest keeps the build-time parameters.
    pub fn set_search_effort(&self, effort: usize) -> Result<()> {
        self.ann.write().map_err(poisoned)?.set_search_effort(effort)
    }

    /// Makes all sled writes durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Rebuilds the ANN index from the stored vectors (optionally with another backend and
    /// parameters, recorded in the manifest) and saves it.
    pub fn rebuild_index(&self, backend: Option<(Backend, AnnParams)>) -> Result<()> {
        self.rebuild_in_memory(backend)?;
        self.save_index()
    }

    fn rebuild_in_memory(&self, backend: Option<(Backend, AnnParams)>) -> Result<()> {
        let m = self.manifest();
        let (backend, params) = backend.unwrap_or((m.backend, m.params.clone()));
        let mut fresh = index::new_index(backend, m.encoder.dim, &params)?;
        let mut chunk: Vec<(u64, Vec<f32>)> = Vec::with_capacity(4096);
        let flush_chunk = |fresh: &mut Box<dyn AnnIndex>,
                           chunk: &mut Vec<(u64, Vec<f32>)>|
         -> Result<()> {
            let items: Vec<(u64, &[f32])> = chunk.iter().map(|(l, v)| (*l, v.as_slice())).collect();
            fresh.add(&items)?;
            chunk.clear();
            Ok(())
        };
        {
            let _w = self.writer.lock().map_err(poisoned)?;
            for kv in self.tree.scan_prefix([b'v']) {
                let (k, v) = kv?;
                let label = u64::from_be_bytes(
                    k[1..9].try_into().map_err(|_| Error::Store("bad vector key".into()))?,
                );
                chunk.push((label, bytes_to_vec(&v)?));
                if chunk.len() == 4096 {
                    flush_chunk(&mut fresh, &mut chunk)?;
                }
            }
            flush_chunk(&mut fresh, &mut chunk)?;
            let mut man = m.clone();
            man.backend = backend;
            man.params = params;
            man.updated_at = now_secs();
            self.tree.insert(K_MANIFEST, serde_json::to_vec(&man)?)?;
            *self.manifest.write().map_err(poisoned)? = man;
            *self.ann.write().map_err(poisoned)? = fresh;
        }
        Ok(())
    }

    /// Writes a consistent copy of this database into the empty folder `dir`: every stored
    /// record (documents, passages, vectors, manifest; not the embedding cache) to
    /// [`STORE_DUMP`], and the ANN index's files into `dir/ann/`. Writes wait meanwhile (the
    /// writer lock is held throughout), so the two agree and hold every write acknowledged
    /// before the call. Returns the manifest they hold.
    pub fn export_into(&self, dir: &Path) -> Result<Manifest> {
        use std::io::Write;
        let _w = self.writer.lock().map_err(poisoned)?;
        self.db.flush()?;
        self.ann.write().map_err(poisoned)?.flush()?;
        let manifest = self.manifest();
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(STORE_DUMP))?);
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if k.first() == Some(&b'c') {
                continue;
            }
            for part in [&k[..], &v[..]] {
                out.write_all(&(part.len() as u64).to_le_bytes())?;
                out.write_all(part)?;
            }
        }
        out.into_inner().map_err(|e| Error::Io(e.into_error()))?.sync_all()?;
        let ann_dir = dir.join(ANN_DIR);
        std::fs::create_dir(&ann_dir)?;
        self.ann.read().map_err(poisoned)?.save_into(&ann_dir)?;
        Ok(manifest)
    }

    /// Creates the database `dir` (which must not hold one) from a folder [`Database::export_into`]
    /// wrote, and opens it.
    pub fn import_from(export: &Path, dir: &Path) -> Result<Self> {
        if Self::exists(dir) {
            return Err(Error::InvalidInput(format!("{} already holds a database", dir.display())));
        }
        std::fs::create_dir_all(dir)?;
        {
            let db = open_sled(dir)?;
            let tree = db.open_tree("engine")?;
            let mut input = std::io::BufReader::new(std::fs::File::open(export.join(STORE_DUMP))?);
            let mut batch = sled::Batch::default();
            let mut n = 0;
            while let Some(k) = read_dump_part(&mut input)? {
                let v = read_dump_part(&mut input)?
                    .ok_or_else(|| Error::Store(format!("{STORE_DUMP} is truncated")))?;
                batch.insert(k, v);
                n += 1;
                if n % 10_000 == 0 {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            tree.apply_batch(batch)?;
            read_manifest_from(dir, &tree)?;
            db.flush()?;
        }
        let ann = export.join(ANN_DIR);
        if ann.is_dir() {
            Snapshots::new(dir.join(ANN_DIR)).save(|snap| {
                for entry in std::fs::read_dir(&ann)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        std::fs::copy(entry.path(), snap.join(entry.file_name()))?;
                    }
                }
                Ok(())
            })?;
        }
        Self::open(dir, None)
    }

    /// Recall@k of the ANN index against an exact scan, using `queries` stored vectors sampled
    /// with `seed` as queries.
    pub fn verify_recall(&self, queries: usize, k: usize, seed: u64) -> Result<RecallReport> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let m = self.manifest();
        let mut exact = index::flat::FlatIndex::new(m.encoder.dim);
        let mut labels = Vec::new();
        for kv in self.tree.scan_prefix([b'v']) {
            let (k, v) = kv?;
            let label = u64::from_be_bytes(
                k[1..9].try_into().map_err(|_| Error::Store("bad vector key".into()))?,
            );
            exact.add(&[(label, bytes_to_vec(&v)?.as_slice())])?;
            labels.push(label);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let sample: Vec<u64> =
            labels.choose_multiple(&mut rng, queries.min(labels.len())).copied().collect();
        let qs: Vec<Vec<f32>> = sample.iter().map(|&l| self.vector(l)).collect::<Result<_>>()?;
        let ann = self.ann.read().map_err(poisoned)?;
        let recall = index::mean_recall(ann.as_ref(), &exact, &qs, k)?;
        Ok(RecallReport { backend: m.backend, queries: qs.len(), k, recall })
    }
}

/// The next length-prefixed part of a [`STORE_DUMP`]; `None` at its end.
fn read_dump_part(input: &mut impl std::io::Read) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u64::from_le_bytes(len) as usize;
    let mut buf = Vec::new();
    (&mut *input).take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(Error::Store(format!("{STORE_DUMP} is truncated")));
    }
    Ok(Some(buf))
}

/// Opens the sled store of a database. sled holds an exclusive lock on it while open, so a
/// second process gets [`Error::DatabaseInUse`] instead of sled's raw lock error. When this
/// process itself holds the lock, a handle just dropped is still closing (sled's flusher
/// thread lets go of the file at its next tick, late on a loaded machine): that is waited for,
/// up to [`OWN_LOCK_WAIT`].
fn open_sled(dir: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::open(dir.join(SLED_DIR)).map_err(|e| open_error(dir, e)) {
            Err(Error::DatabaseInUse { pid: Some(pid), .. })
                if pid == std::process::id() && started.elapsed() < OWN_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// How long opening waits for this process's own just-closed handle to release the store.
const OWN_LOCK_WAIT: Duration = Duration::from_secs(3);

/// An error opening the store, naming the database: in use, not writable, or sled's own.
fn open_error(dir: &Path, e: sled::Error) -> Error {
    /// `EROFS`: the folder is on a read-only file system.
    const READ_ONLY_FILE_SYSTEM: i32 = 30;
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            Error::DatabaseInUse { path: dir.to_path_buf(), pid: lock_holder(dir) }
        }
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::PermissionDenied
                || io.raw_os_error() == Some(READ_ONLY_FILE_SYSTEM) =>
        {
            Error::DatabaseReadOnly { path: dir.to_path_buf(), reason: io.to_string() }
        }
        _ => Error::Store(format!("opening {}: {e}", dir.display())),
    }
}

/// The file in the sled folder that sled locks (`flock`) while a process has it open.
const SLED_LOCKED_FILE: &str = "db";

/// The process holding the lock on the store of `dir`, read from `/proc/locks` (Linux; `None`
/// elsewhere or when it cannot be told).
fn lock_holder(dir: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(dir.join(SLED_DIR).join(SLED_LOCKED_FILE)).ok()?.ino();
        parse_lock_holder(&std::fs::read_to_string("/proc/locks").ok()?, inode)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// The pid of the `FLOCK` in `/proc/locks` text on file `inode`. Lines read
/// `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF`; waiters (`1: -> FLOCK ...`) hold
/// nothing and are skipped.
fn parse_lock_holder(locks: &str, inode: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid = fields.get(4)?.parse().ok()?;
        let file_inode: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
        (file_inode == inode).then_some(pid)
    })
}

fn read_manifest_from(dir: &Path, tree: &sled::Tree) -> Result<Manifest> {
    let bytes = tree
        .get(K_MANIFEST)?
        .ok_or_else(|| Error::Store(format!("{} has no manifest", dir.display())))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// [`Error::Store`] for a manifest of a format this build cannot read.
pub(crate) fn check_format(manifest: &Manifest) -> Result<()> {
    if manifest.format_version != FORMAT_VERSION {
        return Err(Error::Store(format!(
            "unsupported database format {}",
            manifest.format_version
        )));
    }
    Ok(())
}

/// [`Error::InvalidInput`] for settings no new database may have: a zero dimension, bad ANN
/// parameters, an overlap not below the chunk size.
pub(crate) fn check_options(encoder: &EncoderFingerprint, opts: &DbOptions) -> Result<()> {
    if encoder.dim == 0 {
        return Err(Error::InvalidInput("encoder reports dimension 0".into()));
    }
    opts.params.validate()?;
    if opts.chunk_tokens == 0 || opts.chunk_overlap >= opts.chunk_tokens {
        return Err(Error::InvalidInput(format!(
            "chunk_overlap ({}) must be smaller than chunk_tokens ({})",
            opts.chunk_overlap, opts.chunk_tokens
        )));
    }
    Ok(())
}

/// Whether an existing database may be written with `encoder` and `opts`: the same encoder
/// ([`Error::EncoderMismatch`]) and the same chunking.
pub(crate) fn check_reopen(
    m: &Manifest,
    encoder: &EncoderFingerprint,
    opts: &DbOptions,
) -> Result<()> {
    check_encoder(m, encoder)?;
    if m.chunk_tokens != opts.chunk_tokens || m.chunk_overlap != opts.chunk_overlap {
        return Err(Error::InvalidInput(format!(
            "database was built with chunk_tokens={} chunk_overlap={}, config asks for {} and {}; \
             use the same chunking or a new database",
            m.chunk_tokens, m.chunk_overlap, opts.chunk_tokens, opts.chunk_overlap
        )));
    }
    Ok(())
}

pub(crate) fn check_encoder(m: &Manifest, fp: &EncoderFingerprint) -> Result<()> {
    if &m.encoder != fp {
        return Err(Error::EncoderMismatch(format!(
            "database was built with encoder {} (pooling {}, template {}, dim {}), but the loaded encoder is {} \
             (pooling {}, template {}, dim {}); use the same model and settings, or index into a new database",
            m.encoder.model_hash,
            m.encoder.pooling,
            m.encoder.template,
            m.encoder.dim,
            fp.model_hash,
            fp.pooling,
            fp.template,
            fp.dim
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store the process may not write (read-only mount, foreign permissions) is an error
    /// naming the database and the way out, not sled's bare io error.
    #[test]
    fn unwritable_and_failed_opens_name_the_database() {
        let dir = Path::new("/data/corpus.db");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = open_error(dir, sled::Error::Io(denied));
        assert!(matches!(&e, Error::DatabaseReadOnly { path, .. } if path == dir), "{e}");
        assert!(
            e.to_string().contains("/data/corpus.db") && e.to_string().contains("write access")
        );
        let rofs = std::io::Error::from_raw_os_error(30);
        assert!(matches!(open_error(dir, sled::Error::Io(rofs)), Error::DatabaseReadOnly { .. }));
        let other = open_error(dir, sled::Error::Unsupported("x".into()));
        assert!(other.to_string().contains("/data/corpus.db"), "{other}");
    }

    /// Every file under `dir`: relative path, length and modification time.
    fn listing(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut files: Vec<_> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let m = e.metadata().unwrap();
                (e.path().strip_prefix(dir).unwrap().to_path_buf(), m.len(), m.modified().unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// A database this process cannot write is read through a temporary copy: everything is
    /// there, the original folder stays exactly as it was, and the copy goes with the database.
    #[test]
    fn a_database_read_through_a_temporary_copy_leaves_the_original_untouched() {
        use crate::encoder::{Embed, TextKind};
        use crate::pipeline::{index_documents, testing::HashEmbedder, Document, IndexOptions};
        let dir = tempfile::tempdir().unwrap();
        let e = HashEmbedder::new(16);
        let config = crate::config::Config::default();
        let params = AnnParams::from_config(&config.index);
        let opts = DbOptions { backend: Backend::Flat, params, chunk_tokens: 64, chunk_overlap: 8 };
        let doc = |id: &str, text: &str| Document {
            id: id.into(),
            title: String::new(),
            text: text.into(),
            metadata: serde_json::Value::Null,
        };
        {
            let db = Database::create_or_open(dir.path(), &e.fingerprint(), &opts).unwrap();
            let docs = vec![doc("a", "violin cello symphony"), doc("b", "ocean tide coral")];
            let index_opts = IndexOptions::from_config(&config);
            index_documents(&db, &e, docs, &index_opts, &crate::pipeline::Silent).unwrap();
            db.save_index().unwrap();
        }
        let before = listing(dir.path());
        let db = Database::open_copy(dir.path(), Some(&e.fingerprint())).unwrap();
        let copy = db.path().to_path_buf();
        assert!(copy.starts_with(std::env::temp_dir()) && copy != dir.path(), "{copy:?}");
        assert_eq!((db.origin(), db.status().unwrap().path.as_path()), (dir.path(), dir.path()));
        assert_eq!(db.get_document("b").unwrap().unwrap().text, "ocean tide coral");
        let q = e.embed(&["cello symphony"], TextKind::Query).unwrap().remove(0);
        assert_eq!(db.search_dense(&q, 1).unwrap()[0].id, "a");
        // Writes are refused, naming the original folder: they would vanish with the copy.
        assert!(db.read_only());
        for err in [
            db.delete_documents(&["a".into()]).unwrap_err(),
            db.put_documents(Vec::new()).unwrap_err(),
            db.cache_put(&[]).unwrap_err(),
        ] {
            assert!(matches!(&err, Error::DatabaseReadOnly { path, .. } if path == dir.path()));
        }
        assert!(db.get_document("a").unwrap().is_some());
        db.save_index().unwrap();
        drop(db);
        assert!(!copy.exists(), "the copy outlived its database");
        assert_eq!(listing(dir.path()), before, "reading through a copy changed the original");
        // A database the process can write is opened in place.
        assert_eq!(Database::open_to_read(dir.path(), None).unwrap().path(), dir.path());
    }

    /// Copies left by processes that are gone are removed; a running process's are kept.
    #[cfg(target_os = "linux")]
    #[test]
    fn copies_of_processes_that_are_gone_are_swept() {
        let base = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22 on Linux: no process has this pid.
        let dead = base.path().join(format!("{SCRATCH_PREFIX}{}-0", 1u32 << 30));
        let live = base.path().join(format!("{SCRATCH_PREFIX}{}-3", std::process::id()));
        let other = base.path().join("engine-read-copy-notes");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("sled")).unwrap();
        }
        sweep_dead_copies(base.path());
        assert!(!dead.exists(), "a dead process's copy stayed");
        assert!(live.exists() && other.exists());
    }

    /// The lock holder is read from `/proc/locks`: flocks only, on the store's inode.
    #[test]
    fn lock_holder_is_parsed_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 11 fd:01:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 fd:01:1234567 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, 1234567), Some(4242));
        assert_eq!(parse_lock_holder(locks, 77), None);
        assert_eq!(parse_lock_holder(locks, 9), None);
    }

    /// A database already open (here by this very process) names the holder's pid.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_database_in_use_names_the_process_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open_sled(dir.path()).unwrap();
        let e = open_sled(dir.path()).unwrap_err();
        match &e {
            Error::DatabaseInUse { path, pid } => {
                assert_eq!(path, dir.path());
                assert_eq!(*pid, Some(std::process::id()), "{e}");
            }
            other => panic!("expected DatabaseInUse, got {other}"),
        }
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
    }
}
