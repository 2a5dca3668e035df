//! `engine adapt` and `engine finetune`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::Ctx;

/// Flags both training commands share; each overrides the [train] config value.
#[derive(Args)]
pub struct TrainFlags {
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// all | last:N | lora
    #[arg(long)]
    pub trainable: Option<String>,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args)]
pub struct AdaptArgs {
    /// Base model: GGUF file or model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Raw text: folder of .txt, JSONL, BEIR corpus or WikiText file(s). Repeatable.
    #[arg(long, required = true)]
    pub corpus: Vec<PathBuf>,
    /// Output model folder.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainFlags,
}

#[derive(Args)]
pub struct FinetuneArgs {
    /// Encoder to fine-tune: model folder or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// BEIR folder with qrels/train.tsv, or JSONL triples {query, positive, negatives}.
    #[arg(long)]
    pub train: PathBuf,
    /// Output model folder.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub flags: TrainFlags,
}

pub fn run_adapt(_ctx: &Ctx, _args: AdaptArgs) -> Result<()> {
    anyhow::bail!("adapt: not implemented yet")
}

pub fn run_finetune(_ctx: &Ctx, _args: FinetuneArgs) -> Result<()> {
    anyhow::bail!("finetune: not implemented yet")
}
