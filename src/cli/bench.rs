//! `engine bench ...`: performance measurements (never timed tests).

use anyhow::Result;
use clap::{Args, Subcommand};

use engine::index::{bench, AnnParams};

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
    Ann(AnnArgs),
    /// Training step (forward + backward) tokens/s.
    Train,
}

#[derive(Args)]
pub struct AnnArgs {
    /// Number of random unit vectors indexed.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 576)]
    pub dim: usize,
    /// Number of queries (random unit vectors, not in the index).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Quick run: 10k vectors, 100 queries.
    #[arg(long)]
    pub quick: bool,
    /// Recall@10 the graph indexes must reach.
    #[arg(long, default_value_t = 0.95)]
    pub target: f64,
    /// FAISS factory strings to compare (repeatable).
    #[arg(long = "faiss-factory", default_values_t = ["HNSW32".to_string(), "Flat".to_string()])]
    pub faiss_factories: Vec<String>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(ctx: &Ctx, args: BenchArgs) -> Result<()> {
    match args.what {
        BenchWhat::Ann(a) => run_ann(ctx, a),
        BenchWhat::Encode => anyhow::bail!("bench encode: not implemented yet"),
        BenchWhat::Train => anyhow::bail!("bench train: not implemented yet"),
    }
}

fn run_ann(ctx: &Ctx, a: AnnArgs) -> Result<()> {
    let (n, queries) = if a.quick { (10_000, 100) } else { (a.n, a.queries) };
    let opts = bench::AnnBenchOptions {
        n,
        dim: a.dim,
        queries,
        k: 10,
        target_recall: a.target,
        seed: a.seed,
        params: AnnParams::from_config(&ctx.config.index),
        faiss_factories: a.faiss_factories,
    };
    let report = bench::run(&opts, |line| eprintln!("{line}"))?;
    println!("{}", bench::format_table(&report));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
