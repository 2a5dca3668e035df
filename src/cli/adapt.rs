//! `engine adapt` and `engine finetune`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::train::TrainOverrides;

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
    /// Stop after this many steps (checkpointed; the schedule still spans --max-steps), to be
    /// continued later with --resume.
    #[arg(long)]
    pub stop_after: Option<usize>,
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

impl TrainFlags {
    fn overrides(&self) -> TrainOverrides {
        TrainOverrides {
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            trainable: self.trainable.clone(),
            stop_after: self.stop_after,
        }
    }
}

fn report(r: &engine::train::TrainingReport, out: &std::path::Path) {
    println!(
        "{}: {} steps in {:.1}s ({:.0} tokens/s), final {} -> {}",
        r.method,
        r.steps,
        r.seconds,
        r.tokens_per_second,
        r.final_losses,
        out.display()
    );
}

pub fn run_adapt(ctx: &Ctx, args: AdaptArgs) -> Result<()> {
    let r = engine::train::adapt::run(
        &ctx.config,
        &args.model,
        &args.corpus,
        &args.out,
        &args.train.overrides(),
        args.train.resume,
    )
    .with_context(|| format!("adapting {}", args.model.display()))?;
    report(&r, &args.out);
    Ok(())
}

pub fn run_finetune(ctx: &Ctx, args: FinetuneArgs) -> Result<()> {
    let r = engine::train::finetune::run(
        &ctx.config,
        &args.model,
        &args.train,
        &args.out,
        &args.flags.overrides(),
        args.flags.resume,
    )
    .with_context(|| format!("fine-tuning {}", args.model.display()))?;
    report(&r, &args.out);
    Ok(())
}
