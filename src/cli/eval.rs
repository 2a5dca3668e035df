//! `engine eval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// dense | bm25 | hybrid
    #[arg(long, default_value = "dense")]
    pub mode: String,
    /// Depth of the retrieved run.
    #[arg(short, default_value_t = 100)]
    pub k: usize,
    /// Write the run in TREC format (qid Q0 docid rank score tag).
    #[arg(long)]
    pub run_out: Option<PathBuf>,
}

pub fn run(_ctx: &Ctx, _args: EvalArgs) -> Result<()> {
    anyhow::bail!("eval: not implemented yet")
}
