//! `engine serve`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct ServeArgs {
    /// Database folder (made by `engine index`); its encoder is loaded unless --model,
    /// --pooling or --template name the same one.
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
    #[command(flatten)]
    pub encoder: super::resolve::EncoderFlags,
    /// Listen address (default: server.addr).
    #[arg(long)]
    pub addr: Option<String>,
    /// Key required (as `Authorization: Bearer KEY` or `x-api-key`) on write endpoints.
    #[arg(long, env = "ENGINE_API_KEY")]
    pub api_key: Option<String>,
}

pub fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let addr = args.addr.unwrap_or_else(|| ctx.config.server.addr.clone());
    if !engine::store::Database::exists(&args.db)
        && engine::lexical::LexicalIndex::exists(&engine::search::lexical_dir(&args.db))
    {
        anyhow::bail!(
            "{} was built with --lexical-only; the server needs a database with vectors \
             (`engine index` without --lexical-only); `engine search --db {}` answers BM25 \
             queries on it",
            args.db.display(),
            args.db.display()
        );
    }
    // The encoder the database records, unless the flags or config name one (which must then
    // be the same: the server's load refuses another fingerprint).
    let manifest = engine::store::Database::read_manifest(&args.db)
        .with_context(|| format!("opening database {}", args.db.display()))?;
    let config = super::resolve::config_for_db(ctx, &args.db, &manifest, &args.encoder)?;
    let opts = engine::server::ServeOptions {
        config,
        db: args.db,
        api_key: args.api_key,
    };
    engine::server::run_blocking(&addr, opts).context("serve")
}
