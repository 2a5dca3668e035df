//! `engine adapt` and `engine finetune`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::train::TrainOverrides;

use super::Ctx;

/// Flags both training commands share; each overrides the [train] config value.
#[derive(Args)]
pub struct TrainFlags {
    /// Optimizer steps (train.max_steps).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Examples per micro-batch (train.batch_size; queries for finetune).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate after warm-up (train.lr).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of sampling and initialisation (train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Which weights train: all | last:N (the last N blocks) | lora [default: train.trainable].
    #[arg(long)]
    pub trainable: Option<engine::train::Trainable>,
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
    /// Repeatable: several sources train together (e.g. SciFact and NFCorpus).
    #[arg(long, value_name = "DATA")]
    pub train: Vec<PathBuf>,
    /// A corpus without labels (BEIR folder, JSONL or folder of .txt/.md): label-free pairs,
    /// title -> body, or one sentence -> the rest of its document. Repeatable; combines with
    /// --train.
    #[arg(long, value_name = "CORPUS")]
    pub unlabeled: Vec<PathBuf>,
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
            trainable: self.trainable,
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
    let sources =
        engine::train::finetune::TrainSources { labeled: &args.train, unlabeled: &args.unlabeled };
    let r = engine::train::finetune::run(
        &ctx.config,
        &args.model,
        &sources,
        &args.out,
        &args.flags.overrides(),
        args.flags.resume,
    )
    .with_context(|| format!("fine-tuning {}", args.model.display()))?;
    report(&r, &args.out);
    Ok(())
}

#[derive(Args)]
pub struct ExportDeltaArgs {
    /// Trained encoder folder (from `engine finetune` / `engine adapt`).
    #[arg(long)]
    pub model: PathBuf,
    /// The base model it was trained from (GGUF file or model folder).
    #[arg(long)]
    pub base: PathBuf,
    /// Output folder: delta.safetensors (changed tensors, bf16), delta.json, training.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the tensors training changed as a small folder that loads over the base.
pub fn run_export_delta(args: ExportDeltaArgs) -> Result<()> {
    use candle_core::{DType, Device};
    use engine::encoder::{delta, hf, load_weights};
    let cpu = Device::Cpu;
    let (_, base, base_tok) = load_weights(&args.base, DType::F32, &cpu)
        .with_context(|| format!("loading the base {}", args.base.display()))?;
    let (_, trained, _) = hf::load(&args.model, DType::F32, &cpu)
        .with_context(|| format!("loading the trained encoder {}", args.model.display()))?;
    let r = delta::export(
        (&trained, base_tok.added_special()),
        (&args.base, &base),
        &args.model,
        &args.out,
    )
    .with_context(|| format!("writing the delta to {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
