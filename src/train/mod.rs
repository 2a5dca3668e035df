//! Training: Llama2Vec unsupervised adaptation (`engine adapt`, EBAE + EBAR + LM loss) and
//! contrastive fine-tuning (`engine finetune`, InfoNCE with in-batch and hard negatives).
//!
//! Layout: [`data`] reads raw text and retrieval training data, [`loss`] builds the adaptation
//! batch (shared SELF/NEXT positions, NEXT-cannot-see-SELF mask) and the four losses
//! ([`lm_head`] computes the next-token one in chunks on the bf16 kernel where it can),
//! [`params`] decides which tensors train (all, last N layers, LoRA) and merges them back,
//! [`optim`] is AdamW with warm-up/decay and global-norm clipping, [`checkpoint`] saves and
//! restores a run, [`prefix_cache`] keeps the frozen layers' states of recurring texts,
//! [`mine`] finds hard negatives, [`validate`] measures retrieval quality,
//! and [`adapt`]/[`finetune`] are the two training loops. Everything is device-generic:
//! the same code runs a 135M model on CPU and a 7B model on a GPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Config, TrainConfig};
use crate::error::{Error, Result};

pub mod adapt;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod finetune;
pub mod lm_head;
pub mod loss;
pub mod mine;
pub mod optim;
pub mod params;
pub mod prefix_cache;
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
    pub trainable: Option<Trainable>,
    /// Stop (with a checkpoint) after this many steps without changing the schedule, to split
    /// a long run into time-boxed pieces continued with `--resume`.
    pub stop_after: Option<usize>,
}

/// The resolved hyper-parameters of one run (also written into `training.json`): the `[train]`
/// section with the command line's overrides applied ([`TrainConfig::resolve`]).
pub type Hyper = TrainConfig;

impl TrainConfig {
    /// The `[train]` values with `o` applied; a `max_passage_tokens` of 0 becomes
    /// `index.chunk_tokens`, the passage length the index embeds.
    pub fn resolve(config: &Config, o: &TrainOverrides) -> Result<Self> {
        let mut h = config.train.clone();
        h.seed = o.seed.unwrap_or(h.seed);
        h.lr = o.lr.unwrap_or(h.lr);
        h.batch_size = o.batch_size.unwrap_or(h.batch_size);
        h.max_steps = o.max_steps.unwrap_or(h.max_steps);
        h.trainable = o.trainable.unwrap_or(h.trainable);
        if h.max_passage_tokens == 0 {
            h.max_passage_tokens = config.index.chunk_tokens;
        }
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
    pub intended_pooling: crate::config::Pooling,
    pub intended_template: crate::config::Template,
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

    /// A run's hyper-parameters are the `[train]` section with the overrides applied, and a
    /// `training.json` written before the later keys existed still reads, with their defaults.
    #[test]
    fn hyper_is_the_train_section_with_overrides_and_reads_older_reports() {
        let mut config = Config::default();
        config.train.max_passage_tokens = 0;
        let o = TrainOverrides { max_steps: Some(7), lr: Some(0.5), ..Default::default() };
        let h = Hyper::resolve(&config, &o).unwrap();
        assert_eq!((h.max_steps, h.lr), (7, 0.5));
        assert_eq!(h.max_passage_tokens, config.index.chunk_tokens);
        assert_eq!(h.temperature, config.train.temperature);
        let mut old = serde_json::to_value(&h).unwrap();
        for key in ["train_special_rows", "lora_dropout", "hard_negative_skip", "mining_rounds"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let read: Hyper = serde_json::from_value(old).unwrap();
        assert!(read.train_special_rows && read.mining_rounds == 1 && read.lora_dropout == 0.0);
        config.train.group_size = 0;
        assert!(Hyper::resolve(&config, &TrainOverrides::default()).is_err());
    }
}
