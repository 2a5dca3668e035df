//! `engine serve`.

use std::path::PathBuf;

use anyhow::Result;
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

pub fn run(_ctx: &Ctx, _args: ServeArgs) -> Result<()> {
    anyhow::bail!("serve: not implemented yet")
}
