//! `engine index`, `engine delete`, `engine check`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Ctx;

#[derive(Args)]
pub struct IndexArgs {
    /// BEIR folder (corpus.jsonl), a .jsonl file, or a folder of .txt/.md files.
    pub corpus: PathBuf,
    /// Database folder (created if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// hnsw | faiss | flat (default: index.backend).
    #[arg(long)]
    pub backend: Option<String>,
    /// GGUF file or model folder (default: model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// llama2vec | last | mean (default: encoder.pooling).
    #[arg(long)]
    pub pooling: Option<String>,
    /// Skip malformed JSONL lines (reported with file and line) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Treat an id that already exists with different content as an update (else an error).
    #[arg(long)]
    pub update: bool,
    /// Build only the BM25 index (no encoder run).
    #[arg(long)]
    pub lexical_only: bool,
    /// After indexing, report recall@10 of the ANN index against an exact scan.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Document ids to delete.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Number of sampled stored vectors used as queries.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
}

pub fn run_index(_ctx: &Ctx, _args: IndexArgs) -> Result<()> {
    anyhow::bail!("index: not implemented yet")
}

pub fn run_delete(_ctx: &Ctx, _args: DeleteArgs) -> Result<()> {
    anyhow::bail!("delete: not implemented yet")
}

pub fn run_check(_ctx: &Ctx, _args: CheckArgs) -> Result<()> {
    anyhow::bail!("check: not implemented yet")
}
