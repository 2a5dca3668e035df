//! `engine copy`: a database folder's documents, passages and vectors written into a PostgreSQL
//! store without embedding anything again, so an index built on one machine moves to the
//! shared database (docs/scale-out.md). Re-running it resumes: documents already stored with the
//! same content are skipped.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::index::Backend;
use engine::store::postgres::{redact, PgStore};
use engine::store::{Database, DbOptions, Store};

use super::location::{self, Location};
use super::Ctx;

#[derive(Args)]
pub struct CopyArgs {
    /// The database folder to copy (made by `engine index`; it is only read).
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
    /// The PostgreSQL store to copy into [default: store.url]: created with the folder's
    /// encoder and chunking, or an existing store built by the same.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Dense search of the store: hnsw (pgvector's index) or flat (exact scan) [default: the
    /// folder's backend; faiss becomes hnsw].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Documents written per transaction.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
}

pub fn run(ctx: &Ctx, args: CopyArgs) -> Result<()> {
    // Without a store, `location::resolve` would ask for `--db` or `--store`, and `--db` here
    // names the source.
    if args.store.is_none() && ctx.config.store.url.is_empty() {
        bail!("engine copy writes into a PostgreSQL store: give --store URL (or set [store] url)");
    }
    // With no folder given, a location is a PostgreSQL URL or an error.
    let Location::Postgres(url) = location::resolve(&ctx.config, None, args.store.as_ref())? else {
        bail!("engine copy writes into a PostgreSQL store: give --store URL");
    };
    let source = Database::open_to_read(&args.db, None)
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let m = source.manifest();
    let backend = match args.backend.unwrap_or(m.backend) {
        Backend::Faiss => Backend::Hnsw,
        b => b,
    };
    let opts = DbOptions {
        backend,
        params: m.params.clone(),
        chunk_tokens: m.chunk_tokens,
        chunk_overlap: m.chunk_overlap,
    };
    let target = PgStore::create_or_open(&url, &m.encoder, &opts)
        .with_context(|| format!("opening the PostgreSQL store {}", redact(&url)))?;
    let started = Instant::now();
    let ids = source.document_ids()?;
    let (mut copied, mut unchanged, mut passages) = (0usize, 0usize, 0usize);
    for chunk in ids.chunks(args.batch as usize) {
        let stored = target.get_documents(chunk)?;
        let mut batch = Vec::with_capacity(chunk.len());
        for id in chunk {
            let Some(doc) = source.export_document(id)? else { continue };
            if stored.get(id).is_some_and(|d| d.hash == doc.hash) {
                unchanged += 1;
                continue;
            }
            passages += doc.passages.len();
            batch.push(doc);
        }
        copied += batch.len();
        if !batch.is_empty() {
            target.put_documents(batch)?;
        }
        tracing::info!("copied {copied} documents, {unchanged} already stored, of {}", ids.len());
    }
    target.flush()?;
    let out = serde_json::json!({
        "from": args.db,
        "to": redact(&url),
        "copied": copied,
        "passages": passages,
        "unchanged": unchanged,
        "seconds": started.elapsed().as_secs_f64(),
        "status": target.status()?,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
