//! `engine bench ...`: performance measurements (never timed tests).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Encoder tokens/s (32 x 128 passages) and 16-token query latency.
    Encode,
    /// ANN build time and QPS at recall@10 >= 0.95.
    Ann,
    /// Training step (forward + backward) tokens/s.
    Train,
}

pub fn run(_ctx: &Ctx, _args: BenchArgs) -> Result<()> {
    anyhow::bail!("bench: not implemented yet")
}
