//! The PostgreSQL store: documents, passages, their vectors (pgvector, HNSW) and metadata in
//! PostgreSQL, so several `engine serve` processes share one database and read-only servers
//! can point at a streaming replica (`--store postgres://...`, config `[store] url`).
//!
//! Tables (names: the constants below), created on first use:
//! ```text
//! engine_manifest     name → jsonb           the Manifest, as the embedded store keeps it
//! engine_documents    id (COLLATE "C", so ORDER BY id is byte order), title, body, metadata
//!                     jsonb, hash, tsv (generated tsvector of title (weight A) + body, GIN)
//! engine_passages     id (identity: the passage label), doc_id → documents ON DELETE
//!                     CASCADE, ordinal, byte range, embedding vector(dim) (HNSW, vector_ip_ops)
//! engine_embed_cache  sha256(text) → vector  vectors embedded but not yet committed (resume)
//! ```
//! Every write is one transaction, so a process killed mid-write leaves nothing of it, and a
//! write acknowledged by one server is seen by every other at its next query. Deletes are real
//! `DELETE`s (passages go by cascade; HNSW entries are vacuumed by PostgreSQL).
//!
//! Search:
//! * dense: pgvector's HNSW (`<#>`, negative inner product; vectors are stored unit length)
//!   with `SET LOCAL hnsw.ef_search` per search, over-fetching passages until `k` documents;
//!   exact (a scan, best passage per document) when the database's backend is `flat`, for a
//!   filter the ANN rounds could not satisfy, and for [`Store::verify_recall`]'s reference.
//! * lexical: PostgreSQL full text, **not BM25**: `ts_rank_cd` (cover density) of an OR of the
//!   query's words over the GIN-indexed tsvector. It has no IDF and no length normalisation
//!   by default, so its rankings differ from tantivy's BM25 (docs/scale-out.md measures how).
//! * metadata filters are evaluated in the engine on candidate rows (Qdrant-style JSON, the same
//!   code as the embedded store), not pushed down into SQL.
//!
//! Needs pgvector 0.8 or later (iterative index scans).
//!
//! The synchronous `postgres` client is used (it drives tokio-postgres on a runtime of its
//! own), so the sync pipeline and CLI call it directly and the server from `spawn_blocking`,
//! as it does the embedded store. Connections are pooled per store handle.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::{Client, NoTls};
use pgvector::Vector;

use super::{
    check_encoder, check_format, check_new_documents, check_options, check_reopen, dense_query,
    poisoned, DbOptions, DocHit, DocRecord, Manifest, NewDocument, RecallReport, Status, Store,
};
use crate::encoder::EncoderFingerprint;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{self, Backend};

/// The manifest table: `name text` → `value jsonb`.
pub const MANIFEST_TABLE: &str = "engine_manifest";
/// The documents table.
pub const DOCUMENTS_TABLE: &str = "engine_documents";
/// The passages table (one row per passage, with its vector).
pub const PASSAGES_TABLE: &str = "engine_passages";
/// Vectors embedded but not yet committed, by sha256 of the passage text.
pub const CACHE_TABLE: &str = "engine_embed_cache";
/// The HNSW index on the passages' vectors.
pub const HNSW_INDEX: &str = "engine_passages_hnsw";
/// The full-text configuration of the documents' tsvector and of queries.
pub const TEXT_SEARCH_CONFIG: &str = "english";
/// The manifest's row in [`MANIFEST_TABLE`].
const MANIFEST_ROW: &str = "manifest";
/// pgvector's largest `hnsw.ef_search`.
const PG_MAX_EF_SEARCH: usize = 1000;
/// Idle connections a store handle keeps for later queries.
const MAX_IDLE_CONNECTIONS: usize = 32;
/// Serialises schema creation between processes (any constant shared by every engine).
const SCHEMA_LOCK: i64 = 0x656e_6769_6e65;

/// Whether `location` names a PostgreSQL store rather than a database folder.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `url` without its password, for messages and status.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let host_start = rest.find('@');
    let userinfo_end = host_start.filter(|&at| !rest[..at].contains('/'));
    match userinfo_end.and_then(|at| rest[..at].find(':').map(|c| (c, at))) {
        Some((colon, at)) => format!("{}{}{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// Connections to one PostgreSQL database, pooled (each thread takes its own).
struct Pool {
    config: ::postgres::Config,
    /// The URL without its password.
    origin: PathBuf,
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    fn new(url: &str) -> Result<Self> {
        let config = url
            .parse()
            .map_err(|e| Error::InvalidInput(format!("bad PostgreSQL URL {}: {e}", redact(url))))?;
        Ok(Pool { config, origin: PathBuf::from(redact(url)), idle: Mutex::new(Vec::new()) })
    }

    fn name(&self) -> String {
        self.origin.display().to_string()
    }

    /// Runs `f` on a pooled connection (a new one when none is idle).
    fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().map_err(poisoned)?.pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.config.connect(NoTls).map_err(|e| {
                Error::Store(format!("connecting to PostgreSQL at {}: {e}", self.name()))
            })?,
        };
        let out = f(&mut client);
        if !client.is_closed() {
            let mut idle = self.idle.lock().map_err(poisoned)?;
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(client);
            }
        }
        out
    }

    /// [`Pool::with_client`] for a write: a server's "read-only transaction" answer (a
    /// replica) becomes [`Error::StoreReadOnly`].
    fn write<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.with_client(f).map_err(|e| match e {
            Error::Postgres(pe) if pe.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                Error::StoreReadOnly {
                    store: self.name(),
                    reason: pe.as_db_error().map_or_else(|| pe.to_string(), |d| d.message().into()),
                }
            }
            other => other,
        })
    }

    /// Whether the server refuses writes: a replica in recovery, or read-only transactions.
    fn read_only(&self) -> Result<bool> {
        self.with_client(|c| {
            let row = c.query_one(
                "SELECT current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery()",
                &[],
            )?;
            Ok(row.get::<_, bool>(0))
        })
    }

    fn load_manifest(&self) -> Result<Option<Manifest>> {
        self.with_client(|c| {
            let exists: bool =
                c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&MANIFEST_TABLE])?.get(0);
            if !exists {
                return Ok(None);
            }
            let row = c.query_opt(
                &format!("SELECT value::text FROM {MANIFEST_TABLE} WHERE name = $1"),
                &[&MANIFEST_ROW],
            )?;
            row.map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?)).transpose()
        })
    }

    /// Creates the extension, tables and indexes, and stores `manifest`, in one transaction
    /// under an advisory lock (two engines creating one store at once make it once).
    fn create_schema(&self, manifest: &Manifest) -> Result<()> {
        let dim = manifest.encoder.dim;
        let (m, efc) = (manifest.params.hnsw_m, manifest.params.hnsw_ef_construction);
        let ddl = format!(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} (name text PRIMARY KEY, value jsonb NOT NULL);
             CREATE TABLE IF NOT EXISTS {DOCUMENTS_TABLE} (
                 id text COLLATE \"C\" PRIMARY KEY,
                 title text NOT NULL,
                 body text NOT NULL,
                 metadata jsonb NOT NULL,
                 hash text NOT NULL,
                 tsv tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', title), 'A')
                     || to_tsvector('{TEXT_SEARCH_CONFIG}', body)) STORED);
             CREATE INDEX IF NOT EXISTS {DOCUMENTS_TABLE}_tsv ON {DOCUMENTS_TABLE} USING gin (tsv);
             CREATE TABLE IF NOT EXISTS {PASSAGES_TABLE} (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 doc_id text COLLATE \"C\" NOT NULL
                     REFERENCES {DOCUMENTS_TABLE} (id) ON DELETE CASCADE,
                 ordinal integer NOT NULL,
                 start_byte bigint NOT NULL,
                 end_byte bigint NOT NULL,
                 embedding vector({dim}) NOT NULL);
             CREATE INDEX IF NOT EXISTS {PASSAGES_TABLE}_doc ON {PASSAGES_TABLE} (doc_id);
             CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON {PASSAGES_TABLE}
                 USING hnsw (embedding vector_ip_ops) WITH (m = {m}, ef_construction = {efc});
             CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
                 key bytea PRIMARY KEY, embedding vector({dim}) NOT NULL);"
        );
        let json = serde_json::to_string(manifest)?;
        self.write(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(&ddl)?;
            tx.execute(
                &format!(
                    "INSERT INTO {MANIFEST_TABLE} (name, value) VALUES ($1, $2::text::jsonb) \
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[&MANIFEST_ROW, &json],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

/// A PostgreSQL store (see the module doc).
pub struct PgStore {
    pool: Pool,
    manifest: Manifest,
    /// A replica or a read-only connection: writes are refused up front.
    read_only: bool,
    /// Dense search by exact scan instead of HNSW (the database's backend is `flat`).
    exact: bool,
}

/// A passage candidate of a dense search.
struct Candidate {
    doc_id: String,
    ordinal: i32,
    start: i64,
    end: i64,
    score: f32,
}

impl PgStore {
    /// Connects to `url`, creating the tables (and the `vector` extension) when they are
    /// missing. An existing store must have been built by the same encoder and chunking, as
    /// [`super::Database::create_or_open`] requires. `opts.backend` chooses this handle's dense
    /// search: `hnsw` (pgvector's index) or `flat` (exact scan); `faiss` is refused.
    pub fn create_or_open(
        url: &str,
        encoder: &EncoderFingerprint,
        opts: &DbOptions,
    ) -> Result<Self> {
        check_options(encoder, opts)?;
        if opts.backend == Backend::Faiss {
            return Err(Error::InvalidInput(
                "a PostgreSQL store searches with pgvector's HNSW (backend hnsw) or an exact scan \
                 (backend flat), not FAISS"
                    .into(),
            ));
        }
        let pool = Pool::new(url)?;
        let read_only = pool.read_only()?;
        match pool.load_manifest()? {
            Some(m) => check_reopen(&m, encoder, opts)?,
            None if read_only => {
                return Err(Error::StoreReadOnly {
                    store: pool.name(),
                    reason: "it holds no engine database yet, and creating one is a write".into(),
                })
            }
            None => pool.create_schema(&Manifest::new(encoder, opts))?,
        }
        let manifest =
            pool.load_manifest()?.ok_or_else(|| Error::Store("the manifest vanished".into()))?;
        Ok(PgStore { pool, manifest, read_only, exact: opts.backend == Backend::Flat })
    }

    /// Connects to an existing store. With `encoder`, refuses ([`Error::EncoderMismatch`]) a
    /// store built by another encoder.
    pub fn open(url: &str, encoder: Option<&EncoderFingerprint>) -> Result<Self> {
        let pool = Pool::new(url)?;
        let manifest = pool.load_manifest()?.ok_or_else(|| {
            Error::NotFound(format!(
                "no engine database at {} (run `engine index --store URL` first)",
                pool.name()
            ))
        })?;
        check_format(&manifest)?;
        if let Some(fp) = encoder {
            check_encoder(&manifest, fp)?;
        }
        let read_only = pool.read_only()?;
        let exact = manifest.backend == Backend::Flat;
        Ok(PgStore { pool, manifest, read_only, exact })
    }

    /// The manifest of the store at `url` (what `engine serve` reads to pick the encoder).
    pub fn read_manifest(url: &str) -> Result<Manifest> {
        Ok(Self::open(url, None)?.manifest())
    }

    /// Dense search by exact scan (`true`) or pgvector's HNSW, for this handle only.
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    fn name(&self) -> String {
        self.pool.name()
    }

    fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.pool.with_client(f)
    }

    /// A write: refused up front on a read-only store (see [`Pool::write`]).
    fn write<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        self.pool.write(f)
    }

    /// Document and passage counts.
    fn counts(&self) -> Result<(u64, u64)> {
        self.with_client(|c| {
            let row = c.query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {DOCUMENTS_TABLE}), \
                            (SELECT count(*) FROM {PASSAGES_TABLE})"
                ),
                &[],
            )?;
            Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
        })
    }

    /// The documents (title, text, metadata, hash and passage labels) of the rows `sql`
    /// selects, which must be `SELECT id, title, body, metadata::text, hash, labels`.
    fn documents(
        &self,
        sql: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> Result<Vec<(String, DocRecord)>> {
        self.with_client(|c| {
            let rows = c.query(sql, params)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let labels: Vec<i64> = r.get(5);
                    let rec = DocRecord {
                        title: r.get(1),
                        text: r.get(2),
                        metadata: r.get(3),
                        hash: r.get(4),
                        passages: labels.into_iter().map(|l| l as u64).collect(),
                    };
                    (r.get::<_, String>(0), rec)
                })
                .collect())
        })
    }

    /// Lexical top `k`: PostgreSQL full-text ranking (`ts_rank_cd` over title and text, any
    /// query word matching), **not BM25**; best first, ties by id.
    pub fn search_lexical(&self, text: &str, k: usize) -> Result<Vec<(String, f32)>> {
        let query = or_query(text);
        if query.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        self.with_client(|c| {
            let rows = c.query(
                &format!(
                    "SELECT id, ts_rank_cd(tsv, q)::real AS score \
                     FROM {DOCUMENTS_TABLE}, to_tsquery('{TEXT_SEARCH_CONFIG}', $1) q \
                     WHERE tsv @@ q ORDER BY score DESC, id LIMIT $2"
                ),
                &[&query, &(k as i64)],
            )?;
            Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, f32>(1))).collect())
        })
    }

    /// HNSW candidates: the `fetch` passages nearest `q` with ef `ef`.
    fn ann_candidates(&self, q: &Vector, fetch: usize, ef: usize) -> Result<Vec<Candidate>> {
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            // Iterative scans (pgvector 0.8) return more than ef_search rows when asked;
            // strict order keeps the LIMIT a true top.
            tx.batch_execute(&format!(
                "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = strict_order",
                ef.clamp(1, PG_MAX_EF_SEARCH)
            ))?;
            let rows = tx.query(
                &format!(
                    "SELECT doc_id, id, ordinal, start_byte, end_byte, \
                            (-(embedding <#> $1))::real \
                     FROM {PASSAGES_TABLE} ORDER BY embedding <#> $1 LIMIT $2"
                ),
                &[q, &(fetch as i64)],
            )?;
            tx.commit()?;
            Ok(rows.iter().map(candidate).collect())
        })
    }

    /// Exact top `k` documents by their best passage, among `among` when given.
    fn exact_top(&self, q: &Vector, k: usize, among: Option<&[String]>) -> Result<Vec<Candidate>> {
        let among: Option<Vec<String>> = among.map(<[String]>::to_vec);
        self.with_client(|c| {
            let rows = c.query(
                &format!(
                    "SELECT doc_id, id, ordinal, start_byte, end_byte, score FROM (
                         SELECT DISTINCT ON (doc_id) doc_id, id, ordinal, start_byte, end_byte,
                                (-(embedding <#> $1))::real AS score
                         FROM {PASSAGES_TABLE}
                         WHERE $3::text[] IS NULL OR doc_id = ANY($3)
                         ORDER BY doc_id, embedding <#> $1, id) best
                     ORDER BY score DESC, doc_id LIMIT $2"
                ),
                &[q, &(k as i64), &among],
            )?;
            Ok(rows.iter().map(candidate).collect())
        })
    }

    /// The metadata (JSON text) of the documents `ids`.
    fn metadata_of(&self, ids: &[String]) -> Result<HashMap<String, String>> {
        self.with_client(|c| {
            let rows = c.query(
                &format!("SELECT id, metadata::text FROM {DOCUMENTS_TABLE} WHERE id = ANY($1)"),
                &[&ids],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Ids of every document whose metadata passes `filter`.
    fn matching_ids(&self, filter: &Filter) -> Result<Vec<String>> {
        self.with_client(|c| {
            let rows =
                c.query(&format!("SELECT id, metadata::text FROM {DOCUMENTS_TABLE}"), &[])?;
            Ok(rows
                .iter()
                .filter(|r| filter.matches_str(r.get(1)))
                .map(|r| r.get::<_, String>(0))
                .collect())
        })
    }

    /// Hits for ranked candidates (one per document, best first): title and passage text.
    fn hydrate(&self, ranked: Vec<Candidate>) -> Result<Vec<DocHit>> {
        let ids: Vec<String> = ranked.iter().map(|c| c.doc_id.clone()).collect();
        let docs: HashMap<String, (String, String)> = self.with_client(|c| {
            let rows = c.query(
                &format!("SELECT id, title, body FROM {DOCUMENTS_TABLE} WHERE id = ANY($1)"),
                &[&ids],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect())
        })?;
        Ok(ranked
            .into_iter()
            .filter_map(|c| {
                // A document deleted since its passage was ranked is skipped.
                let (title, body) = docs.get(&c.doc_id)?;
                let passage = body.get(c.start as usize..c.end as usize).unwrap_or("").to_string();
                Some(DocHit {
                    id: c.doc_id,
                    score: c.score,
                    title: title.clone(),
                    passage,
                    passage_ordinal: c.ordinal as u32,
                })
            })
            .collect())
    }
}

/// [`Error::InvalidInput`] for a NUL character, which PostgreSQL's `text` and `jsonb` cannot
/// hold (the embedded store can, so this is checked here rather than by every store).
fn check_no_nul(docs: &[NewDocument]) -> Result<()> {
    for d in docs {
        if has_nul(&d.metadata) || [&d.id, &d.title, &d.text].iter().any(|t| t.contains('\0')) {
            return Err(Error::InvalidInput(format!(
                "document {:?} holds a NUL character, which a PostgreSQL store cannot keep",
                d.id
            )));
        }
    }
    Ok(())
}

/// Whether a string or key anywhere in `v` holds a NUL character.
fn has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn candidate(r: &::postgres::Row) -> Candidate {
    Candidate {
        doc_id: r.get(0),
        ordinal: r.get(2),
        start: r.get(3),
        end: r.get(4),
        score: r.get(5),
    }
}

/// A tsquery matching any word of `text` (`a | b | c`): full text's own parsers AND the words,
/// which finds almost nothing for a natural-language query. Words are split on anything not
/// alphanumeric, so no tsquery operator gets through.
fn or_query(text: &str) -> String {
    let mut seen = HashSet::new();
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .collect();
    words.join(" | ")
}

/// The SELECT list [`PgStore::documents`] reads.
fn document_columns() -> String {
    format!(
        "d.id, d.title, d.body, d.metadata::text, d.hash, \
         ARRAY(SELECT p.id FROM {PASSAGES_TABLE} p WHERE p.doc_id = d.id ORDER BY p.ordinal)"
    )
}

impl Store for PgStore {
    /// The manifest as read at open, without a query (the server reads it on async threads,
    /// where the blocking client must not run). Its counts are not kept in PostgreSQL (a row
    /// every writer would update): [`Store::status`] counts.
    fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }

    fn status(&self) -> Result<Status> {
        let (documents, passages) = self.counts()?;
        Ok(Status {
            path: self.pool.origin.clone(),
            documents,
            passages,
            indexed: passages as usize,
            tombstones: 0,
            backend: if self.exact { Backend::Flat } else { Backend::Hnsw },
            dim: self.manifest.encoder.dim,
        })
    }

    fn origin(&self) -> &Path {
        &self.pool.origin
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::StoreReadOnly {
                store: self.name(),
                reason: "the server is a replica in recovery or its transactions are read-only"
                    .into(),
            });
        }
        Ok(())
    }

    fn get_document(&self, id: &str) -> Result<Option<DocRecord>> {
        let sql = format!("SELECT {} FROM {DOCUMENTS_TABLE} d WHERE d.id = $1", document_columns());
        Ok(self.documents(&sql, &[&id])?.pop().map(|(_, d)| d))
    }

    fn get_documents(&self, ids: &[String]) -> Result<HashMap<String, DocRecord>> {
        let sql =
            format!("SELECT {} FROM {DOCUMENTS_TABLE} d WHERE d.id = ANY($1)", document_columns());
        Ok(self.documents(&sql, &[&ids])?.into_iter().collect())
    }

    fn document_ids(&self) -> Result<Vec<String>> {
        self.with_client(|c| {
            let rows = c.query(&format!("SELECT id FROM {DOCUMENTS_TABLE} ORDER BY id"), &[])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn scroll_documents(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, DocRecord)>, bool)> {
        let sql = format!(
            "SELECT {} FROM {DOCUMENTS_TABLE} d WHERE $1::text IS NULL OR d.id > $1 \
             ORDER BY d.id LIMIT $2",
            document_columns()
        );
        let mut docs = self.documents(&sql, &[&after, &(limit as i64 + 1)])?;
        let more = docs.len() > limit;
        docs.truncate(limit);
        Ok((docs, more))
    }

    fn put_documents(&self, mut docs: Vec<NewDocument>) -> Result<()> {
        self.check_writable()?;
        if docs.is_empty() {
            return Ok(());
        }
        check_new_documents(&docs, self.manifest.encoder.dim)?;
        check_no_nul(&docs)?;
        // One lock order for every writer: two servers writing overlapping batches then wait
        // for each other instead of deadlocking.
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        let mut prepared = Vec::with_capacity(docs.len());
        for d in docs {
            let metadata = serde_json::to_string(&d.metadata)?;
            let mut passages = Vec::with_capacity(d.passages.len());
            for p in d.passages {
                let mut v = p.vector;
                index::normalize(&mut v)?;
                passages.push((p.start as i64, p.end as i64, Vector::from(v), p.cache_key));
            }
            prepared.push((d.id, d.title, d.text, metadata, d.hash, passages));
        }
        self.write(|c| {
            let mut tx = c.transaction()?;
            let upsert = tx.prepare(&format!(
                "INSERT INTO {DOCUMENTS_TABLE} (id, title, body, metadata, hash) \
                 VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (id) DO UPDATE SET \
                 title = EXCLUDED.title, body = EXCLUDED.body, metadata = EXCLUDED.metadata, \
                 hash = EXCLUDED.hash"
            ))?;
            let drop_passages =
                tx.prepare(&format!("DELETE FROM {PASSAGES_TABLE} WHERE doc_id = $1"))?;
            let insert = tx.prepare(&format!(
                "INSERT INTO {PASSAGES_TABLE} (doc_id, ordinal, start_byte, end_byte, embedding) \
                 VALUES ($1, $2, $3, $4, $5)"
            ))?;
            let uncache = tx.prepare(&format!("DELETE FROM {CACHE_TABLE} WHERE key = $1"))?;
            for (id, title, text, metadata, hash, passages) in &prepared {
                tx.execute(&upsert, &[id, title, text, metadata, hash])?;
                tx.execute(&drop_passages, &[id])?;
                for (ordinal, (start, end, v, cache_key)) in passages.iter().enumerate() {
                    tx.execute(&insert, &[id, &(ordinal as i32), start, end, v])?;
                    if let Some(k) = cache_key {
                        tx.execute(&uncache, &[&&k[..]])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn delete_documents(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut unique: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for id in ids {
            if seen.insert(id) {
                unique.push(id.clone());
            }
        }
        let deleted: HashSet<String> = self.write(|c| {
            let rows = c.query(
                &format!("DELETE FROM {DOCUMENTS_TABLE} WHERE id = ANY($1) RETURNING id"),
                &[&unique],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        Ok(unique.into_iter().filter(|id| !deleted.contains(id)).collect())
    }

    fn delete_matching(&self, filter: &Filter, among: Option<&[String]>) -> Result<Vec<String>> {
        let among: Option<Vec<String>> = among.map(<[String]>::to_vec);
        self.write(|c| {
            let mut tx = c.transaction()?;
            // Locked, so a document changed meanwhile is judged by its metadata at the delete.
            let rows = tx.query(
                &format!(
                    "SELECT id, metadata::text FROM {DOCUMENTS_TABLE} \
                     WHERE $1::text[] IS NULL OR id = ANY($1) ORDER BY id FOR UPDATE"
                ),
                &[&among],
            )?;
            let hit: HashSet<String> = rows
                .iter()
                .filter(|r| filter.matches_str(r.get(1)))
                .map(|r| r.get::<_, String>(0))
                .collect();
            // In the order asked for when a list was given, else id order.
            let mut ids: Vec<String> = match &among {
                Some(list) => {
                    let mut seen = HashSet::new();
                    list.iter()
                        .filter(|id| hit.contains(*id) && seen.insert(*id))
                        .cloned()
                        .collect()
                }
                None => rows
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .filter(|id| hit.contains(id))
                    .collect(),
            };
            ids.dedup();
            tx.execute(&format!("DELETE FROM {DOCUMENTS_TABLE} WHERE id = ANY($1)"), &[&ids])?;
            tx.commit()?;
            Ok(ids)
        })
    }

    fn update_metadata(&self, updates: &[(String, serde_json::Value)]) -> Result<Vec<String>> {
        let updates: Vec<(String, String)> = updates
            .iter()
            .map(|(id, m)| Ok((id.clone(), serde_json::to_string(m)?)))
            .collect::<Result<_>>()?;
        self.write(|c| {
            let mut tx = c.transaction()?;
            let update = tx.prepare(&format!(
                "UPDATE {DOCUMENTS_TABLE} SET metadata = $2::text::jsonb WHERE id = $1"
            ))?;
            let mut missing = Vec::new();
            for (id, metadata) in &updates {
                if tx.execute(&update, &[id, metadata])? == 0 {
                    missing.push(id.clone());
                }
            }
            tx.commit()?;
            Ok(missing)
        })
    }

    fn search_dense_with(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
        effort: Option<usize>,
    ) -> Result<Vec<DocHit>> {
        let filter = filter.filter(|f| !f.is_empty());
        let dim = self.manifest.encoder.dim;
        let Some(q) = dense_query(query, dim, k, effort)? else { return Ok(Vec::new()) };
        let q = Vector::from(q);
        if self.exact {
            let among = filter.map(|f| self.matching_ids(f)).transpose()?;
            return self.hydrate(self.exact_top(&q, k, among.as_deref())?);
        }
        let ef = effort.unwrap_or(self.manifest.params.hnsw_ef_search);
        // Several passages may belong to one document: over-fetch until k documents pass.
        let mut fetch = (k * 4).max(16);
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut rounds = 0;
        let best = loop {
            rounds += 1;
            let rows = self.ann_candidates(&q, fetch, ef)?;
            if let Some(f) = filter {
                let unknown: Vec<String> = rows
                    .iter()
                    .filter(|c| !verdicts.contains_key(&c.doc_id))
                    .map(|c| c.doc_id.clone())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                let metadata = self.metadata_of(&unknown)?;
                for id in unknown {
                    let ok = metadata.get(&id).is_some_and(|m| f.matches_str(m));
                    verdicts.insert(id, ok);
                }
            }
            let exhausted = rows.len() < fetch;
            let mut best: HashMap<String, Candidate> = HashMap::new();
            for c in rows {
                if filter.is_some() && !verdicts.get(&c.doc_id).copied().unwrap_or(false) {
                    continue;
                }
                match best.get(&c.doc_id) {
                    Some(b) if b.score >= c.score => {}
                    _ => {
                        best.insert(c.doc_id.clone(), c);
                    }
                }
            }
            if best.len() >= k || exhausted {
                break Some(best);
            }
            if filter.is_some() && rounds >= super::FILTER_ANN_ROUNDS {
                break None;
            }
            fetch *= 4;
        };
        let mut ranked: Vec<Candidate> = match (best, filter) {
            (Some(best), _) => best.into_values().collect(),
            // A selective filter: the exact scan over the matching set is the answer.
            (None, Some(f)) => {
                let among = self.matching_ids(f)?;
                self.exact_top(&q, k, Some(&among))?
            }
            (None, None) => Vec::new(),
        };
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.doc_id.cmp(&b.doc_id)));
        ranked.truncate(k);
        self.hydrate(ranked)
    }

    fn verify_recall(&self, queries: usize, k: usize, seed: u64) -> Result<RecallReport> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let labels: Vec<i64> = self.with_client(|c| {
            let rows = c.query(&format!("SELECT id FROM {PASSAGES_TABLE} ORDER BY id"), &[])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let sample: Vec<i64> =
            labels.choose_multiple(&mut rng, queries.min(labels.len())).copied().collect();
        let ef = self.manifest.params.hnsw_ef_search;
        let mut total = 0.0;
        for label in &sample {
            let (ann, exact) = self.with_client(|c| {
                let mut tx = c.transaction()?;
                let q: Vector = tx
                    .query_one(
                        &format!("SELECT embedding FROM {PASSAGES_TABLE} WHERE id = $1"),
                        &[label],
                    )?
                    .get(0);
                let top =
                    format!("SELECT id FROM {PASSAGES_TABLE} ORDER BY embedding <#> $1 LIMIT $2");
                tx.batch_execute(&format!(
                    "SET LOCAL hnsw.ef_search = {}",
                    ef.clamp(1, PG_MAX_EF_SEARCH)
                ))?;
                let ann: HashSet<i64> =
                    tx.query(&top, &[&q, &(k as i64)])?.iter().map(|r| r.get(0)).collect();
                // Without index scans the same ORDER BY is an exact scan.
                tx.batch_execute("SET LOCAL enable_indexscan = off")?;
                let exact: Vec<i64> =
                    tx.query(&top, &[&q, &(k as i64)])?.iter().map(|r| r.get(0)).collect();
                tx.commit()?;
                Ok((ann, exact))
            })?;
            if !exact.is_empty() {
                total +=
                    exact.iter().filter(|l| ann.contains(l)).count() as f64 / exact.len() as f64;
            }
        }
        let recall = if sample.is_empty() { 1.0 } else { total / sample.len() as f64 };
        Ok(RecallReport { backend: Backend::Hnsw, queries: sample.len(), k, recall })
    }

    fn cache_get(&self, key_hash: &[u8; 32]) -> Result<Option<Vec<f32>>> {
        self.with_client(|c| {
            let row = c.query_opt(
                &format!("SELECT embedding FROM {CACHE_TABLE} WHERE key = $1"),
                &[&&key_hash[..]],
            )?;
            Ok(row.map(|r| r.get::<_, Vector>(0).to_vec()))
        })
    }

    fn cache_put(&self, entries: &[([u8; 32], Vec<f32>)]) -> Result<()> {
        self.write(|c| {
            let mut tx = c.transaction()?;
            let put = tx.prepare(&format!(
                "INSERT INTO {CACHE_TABLE} (key, embedding) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET embedding = EXCLUDED.embedding"
            ))?;
            for (k, v) in entries {
                tx.execute(&put, &[&&k[..], &Vector::from(v.clone())])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn clear_cache(&self) -> Result<usize> {
        self.write(|c| Ok(c.execute(&format!("DELETE FROM {CACHE_TABLE}"), &[])? as usize))
    }

    /// PostgreSQL indexes as it writes: nothing to save.
    fn save_index(&self) -> Result<()> {
        Ok(())
    }

    fn save_index_if_older(&self, _interval: Duration) -> Result<bool> {
        Ok(false)
    }

    /// Every write is durable once its transaction commits.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgresql://h/db?x=a@b"), "postgresql://h/db?x=a@b");
        assert!(is_postgres_url("postgresql://h/db") && !is_postgres_url("data/x.db"));
    }

    #[test]
    fn nul_characters_are_refused_before_any_write() {
        let doc = |text: &str, metadata: serde_json::Value| NewDocument {
            id: "d".into(),
            title: String::new(),
            text: text.into(),
            metadata,
            hash: String::new(),
            passages: Vec::new(),
        };
        assert!(check_no_nul(&[doc("fine", serde_json::json!({"a": "b\\u0000"}))]).is_ok());
        for bad in [doc("a\0b", serde_json::Value::Null), doc("ok", serde_json::json!({"a": "\0"}))]
        {
            let e = check_no_nul(&[bad]).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)) && e.to_string().contains("NUL"), "{e}");
        }
    }

    #[test]
    fn queries_become_an_or_of_their_words_without_operators() {
        assert_eq!(
            or_query("What makes dough rise? rise & (shine)!"),
            "what | makes | dough | rise | shine"
        );
        assert_eq!(or_query("  !!  "), "");
    }
}
