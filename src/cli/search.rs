//! `engine search`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Number of hits.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// dense | bm25 | hybrid
    #[arg(long, default_value = "dense")]
    pub mode: String,
    /// The query text.
    pub query: String,
}

pub fn run(_ctx: &Ctx, _args: SearchArgs) -> Result<()> {
    anyhow::bail!("search: not implemented yet")
}
