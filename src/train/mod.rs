//! Training: Llama2Vec unsupervised adaptation (`engine adapt`, EBAE + EBAR + LM loss) and
//! contrastive fine-tuning (`engine finetune`, InfoNCE with in-batch and hard negatives).
//!
//! Layout: [`data`] reads raw text and retrieval training data, [`loss`] builds the adaptation
//! batch (shared SELF/NEXT positions, NEXT-cannot-see-SELF mask) and the four losses,
//! [`params`] decides which tensors train (all, last N layers, LoRA) and merges them back,
//! [`optim`] is AdamW with warm-up/decay and global-norm clipping, [`checkpoint`] saves and
//! restores a run, [`mine`] finds hard negatives, [`validate`] measures retrieval quality,
//! and [`adapt`]/[`finetune`] are the two training loops. Everything is device-generic:
//! the same code runs a 135M model on CPU and a 7B model on a GPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};

pub mod adapt;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod finetune;
pub mod loss;
pub mod mine;
pub mod optim;
pub mod params;
pub mod runner;
pub mod validate;

pub use params::Trainable;

/// Overrides from the command line; `None` keeps the `[train]` config value.
#[derive(Debug, Clone, Default)]
pub struct TrainOverrides {
    pub max_steps: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    pub trainable: Option<String>,
    /// Stop (with a checkpoint) after this many steps without changing the schedule, to split
    /// a long run into time-boxed pieces continued with `--resume`.
    pub stop_after: Option<usize>,
}

/// The resolved hyper-parameters of one run (also written into `training.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hyper {
    pub seed: u64,
    pub lr: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_steps: usize,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub trainable: String,
    /// Whether the 16 `<sN>` embedding rows train (the reference). Without them, `last:N`
    /// back-propagates through N layers only instead of all of them.
    #[serde(default = "default_true")]
    pub train_special_rows: bool,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    /// Dropout on the LoRA branch's input (the reference: 0.1).
    #[serde(default)]
    pub lora_dropout: f64,
    pub max_seq_tokens: usize,
    pub checkpoint_every: usize,
    pub log_every: usize,
    pub validation_every: usize,
    pub temperature: f64,
    pub group_size: usize,
    pub max_query_tokens: usize,
    pub max_passage_tokens: usize,
    pub hard_negatives: String,
    pub hard_negative_depth: usize,
    /// Mined ranks skipped before sampling negatives (unjudged positives sit at the top).
    #[serde(default)]
    pub hard_negative_skip: usize,
    /// 1 = negatives mined once before training; 2 = mined again with the current encoder
    /// after half the steps (ANCE-style).
    #[serde(default = "default_one")]
    pub mining_rounds: usize,
    /// Leave passages relevant to a query out of its in-batch negatives (off in the reference).
    #[serde(default)]
    pub mask_false_negatives: bool,
    pub validation_queries: usize,
    pub validation_corpus: usize,
    pub validation_examples: usize,
}

fn default_true() -> bool {
    true
}

fn default_one() -> usize {
    1
}

impl Hyper {
    /// The `[train]` values with `o` applied; a `max_passage_tokens` of 0 becomes
    /// `index.chunk_tokens`, the passage length the index embeds.
    pub fn resolve(config: &Config, o: &TrainOverrides) -> Result<Self> {
        let cfg = &config.train;
        let h = Self {
            seed: o.seed.unwrap_or(cfg.seed),
            lr: o.lr.unwrap_or(cfg.lr),
            batch_size: o.batch_size.unwrap_or(cfg.batch_size),
            grad_accum: cfg.grad_accum,
            max_steps: o.max_steps.unwrap_or(cfg.max_steps),
            warmup_ratio: cfg.warmup_ratio,
            weight_decay: cfg.weight_decay,
            max_grad_norm: cfg.max_grad_norm,
            trainable: o.trainable.clone().unwrap_or_else(|| cfg.trainable.clone()),
            train_special_rows: cfg.train_special_rows,
            lora_rank: cfg.lora_rank,
            lora_alpha: cfg.lora_alpha,
            lora_dropout: cfg.lora_dropout,
            max_seq_tokens: cfg.max_seq_tokens,
            checkpoint_every: cfg.checkpoint_every,
            log_every: cfg.log_every,
            validation_every: cfg.validation_every,
            temperature: cfg.temperature,
            group_size: cfg.group_size,
            max_query_tokens: cfg.max_query_tokens,
            max_passage_tokens: match cfg.max_passage_tokens {
                0 => config.index.chunk_tokens,
                n => n,
            },
            hard_negatives: cfg.hard_negatives.clone(),
            hard_negative_depth: cfg.hard_negative_depth,
            hard_negative_skip: cfg.hard_negative_skip,
            mining_rounds: cfg.mining_rounds,
            mask_false_negatives: cfg.mask_false_negatives,
            validation_queries: cfg.validation_queries,
            validation_corpus: cfg.validation_corpus,
            validation_examples: cfg.validation_examples,
        };
        h.check()?;
        Ok(h)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidInput(format!("train: {m}")));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be > 0");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio must be in [0, 1)");
        }
        if self.max_seq_tokens < 4 || self.max_passage_tokens == 0 || self.max_query_tokens == 0 {
            return bad("max_seq_tokens must be >= 4 and max_*_tokens > 0");
        }
        if self.group_size == 0 {
            return bad("group_size must be >= 1 (the positive)");
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return bad("temperature must be > 0");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout must be in [0, 1)");
        }
        if !(1..=2).contains(&self.mining_rounds) {
            return bad("mining_rounds must be 1 or 2");
        }
        if !["bm25", "dense", "none"].contains(&self.hard_negatives.as_str()) {
            return bad("hard_negatives must be bm25|dense|none");
        }
        self.trainable.parse::<Trainable>()?;
        Ok(())
    }
}

/// Final report of a run, saved as `training.json` next to the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingReport {
    /// "adapt" or "finetune".
    pub method: String,
    pub base_model: PathBuf,
    pub data: Vec<PathBuf>,
    pub steps: usize,
    pub hyper: Hyper,
    pub final_losses: serde_json::Value,
    pub validation: serde_json::Value,
    pub examples: usize,
    pub tokens_seen: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub device: String,
    /// The pooling and template the saved encoder is meant to be used with.
    pub intended_pooling: String,
    pub intended_template: String,
    pub note: String,
}

impl TrainingReport {
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(
            dir.join(crate::encoder::delta::TRAINING_REPORT),
            serde_json::to_string_pretty(self)?,
        )?;
        Ok(())
    }
}

/// Linear warm-up over `warmup_ratio` of the steps, then linear decay to zero.
pub fn lr_at(step: usize, max_steps: usize, peak: f64, warmup_ratio: f64) -> f64 {
    let warm = ((max_steps as f64) * warmup_ratio).ceil().max(1.0);
    let s = step as f64 + 1.0;
    if s <= warm {
        peak * s / warm
    } else {
        let rest = (max_steps as f64 - warm).max(1.0);
        peak * ((max_steps as f64 - s + 1.0) / rest).clamp(0.0, 1.0)
    }
}

/// Progress bar with loss and tokens/s; hidden when stderr is not a terminal.
pub fn progress(max_steps: usize, start: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(max_steps as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_string());
    pb.set_position(start as u64);
    pb
}

/// Wall-clock and token counting for tokens/s reports.
pub struct Throughput {
    start: Instant,
    pub tokens: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Self { start: Instant::now(), tokens: 0 }
    }
}

impl Throughput {
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    pub fn rate(&self) -> f64 {
        self.tokens as f64 / self.seconds().max(1e-9)
    }
}

/// Describes a candle device for reports.
pub fn device_name(d: &candle_core::Device) -> String {
    match d {
        candle_core::Device::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}

/// A loss value that is not finite stops training with a clear error instead of writing NaNs.
pub fn check_finite(name: &str, v: f32, step: usize) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::Train(format!("{name} loss is {v} at step {step}: diverged (lower --lr?)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lrs: Vec<f64> = (0..10).map(|s| lr_at(s, 10, 1.0, 0.2)).collect();
        assert!((lrs[0] - 0.5).abs() < 1e-9 && (lrs[1] - 1.0).abs() < 1e-9);
        assert!(lrs.windows(2).skip(1).all(|w| w[1] <= w[0]));
        assert!(lrs[9] > 0.0 && lrs[9] < 0.2);
    }
}
