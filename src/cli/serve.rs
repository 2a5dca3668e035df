//! `engine serve`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct ServeArgs {
    /// Database folder (made by `engine index`); its encoder is loaded unless --model,
    /// --pooling or --template name the same one. A --lexical-only database is served in BM25
    /// mode without a model.
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// PostgreSQL store instead of a folder (made by `engine index --store`): several servers
    /// may share one; a URL of a streaming replica serves reads and refuses writes
    /// [default: store.url].
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    pub store: Option<String>,
    #[command(flatten)]
    pub encoder: super::resolve::EncoderFlags,
    /// Folder of the named collections served besides --db (which is the collection
    /// "default"): one database folder per collection [default: server.collections_dir, else
    /// DB.collections/ beside --db].
    #[arg(long, value_name = "DIR")]
    pub collections_dir: Option<PathBuf>,
    /// Listen address (default: server.addr).
    #[arg(long)]
    pub addr: Option<String>,
    /// Print one line per request on stderr: method, path, status, milliseconds
    /// (server.log_requests).
    #[arg(long)]
    pub log_requests: bool,
    /// Admin key: required (as `Authorization: Bearer KEY`, `api-key` or `x-api-key`) on
    /// writes and the embedding routes.
    #[arg(long, env = "ENGINE_API_KEY")]
    pub api_key: Option<String>,
    /// Read key: when set (needs --api-key too), searches, document reads and the embedding
    /// routes need this key or the admin key; writes still need the admin key (403 with this).
    #[arg(long, env = "ENGINE_READ_API_KEY")]
    pub read_api_key: Option<String>,
    /// Origin (scheme://host[:port], or *) whose pages may call the API from a browser (CORS);
    /// repeatable; replaces server.cors_origins.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
}

pub fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let addr = args.addr.clone().unwrap_or_else(|| ctx.config.server.addr.clone());
    let location = super::location::resolve(&ctx.config, args.db.as_ref(), args.store.as_ref())?;
    let (db, manifest) = match location {
        super::location::Location::Folder(dir) => (dir, None),
        super::location::Location::Postgres(url) => {
            let manifest =
                engine::store::postgres::PgStore::read_manifest(&url).with_context(|| {
                    format!(
                        "opening the PostgreSQL store {}",
                        engine::store::postgres::redact(&url)
                    )
                })?;
            // The server recognises a store's URL in place of a folder.
            (PathBuf::from(url), Some(manifest))
        }
    };
    let lexical_only = manifest.is_none()
        && !engine::store::Database::exists(&db)
        && engine::lexical::LexicalIndex::exists(&engine::store::lexical_dir(&db));
    let mut config = if lexical_only {
        // BM25 alone: no model is loaded, so encoder flags have nothing to name.
        let flags = &args.encoder;
        if flags.model.is_some() || flags.pooling.is_some() || flags.template.is_some() {
            anyhow::bail!(
                "{} was built with --lexical-only: it has no encoder, so --model, --pooling and \
                 --template do not apply",
                db.display()
            );
        }
        ctx.config.clone()
    } else {
        // The encoder the database records, unless the flags or config name one (which must
        // then be the same: the server's load refuses another fingerprint).
        let manifest = match manifest {
            Some(m) => m,
            None => engine::store::Database::read_manifest(&db)
                .with_context(|| format!("opening database {}", db.display()))?,
        };
        let name = engine::store::postgres::redact(&db.display().to_string());
        super::resolve::config_for_db(ctx, std::path::Path::new(&name), &manifest, &args.encoder)?
    };
    if !args.cors_origins.is_empty() {
        config.server.cors_origins = args.cors_origins;
    }
    if let Some(dir) = args.collections_dir {
        config.server.collections_dir = dir;
    }
    if args.log_requests {
        config.server.log_requests = true;
    }
    let opts = engine::server::ServeOptions {
        config,
        db,
        api_key: args.api_key,
        read_api_key: args.read_api_key,
    };
    engine::server::run_blocking(&addr, opts).context("serve")
}
