//! `engine serve`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Listen address (default: server.addr).
    #[arg(long)]
    pub addr: Option<String>,
    /// Key required (as `Authorization: Bearer KEY` or `x-api-key`) on write endpoints.
    #[arg(long, env = "ENGINE_API_KEY")]
    pub api_key: Option<String>,
}

pub fn run(ctx: &Ctx, args: ServeArgs) -> Result<()> {
    let addr = args.addr.unwrap_or_else(|| ctx.config.server.addr.clone());
    let opts = engine::server::ServeOptions {
        config: ctx.config.clone(),
        db: args.db,
        api_key: args.api_key,
    };
    engine::server::run_blocking(&addr, opts).context("serve")
}
