//! Training-step throughput of both stages (`engine bench train`): forward + backward of the
//! adaptation loss (EBAE + EBAR + LM) and of the fine-tuning loss (InfoNCE over a query batch
//! and its passage groups), with the process's peak resident memory during the steps.

use std::time::Instant;

use candle_core::Tensor;

use super::loss::{adapt_losses, embed_with_grad, info_nce, AdaptExample, AdaptLayout};
use super::params::{TrainState, Trainable};
use crate::encoder::bench::synthetic_ids;
use crate::encoder::model::Llama;
use crate::encoder::{Encoder, Prepared};
use crate::error::Result;

/// A stage's loss on the model under training.
type LossFn = dyn Fn(&Llama) -> Result<Tensor>;

/// Which training loss a step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `engine adapt`: one sequence per passage with its SELF and NEXT suffixes.
    Adapt,
    /// `engine finetune`: `batch` queries of `query_tokens`, each with `group` passages.
    Finetune { group: usize, query_tokens: usize },
}

impl Stage {
    /// The stage's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Adapt => "adapt",
            Stage::Finetune { .. } => "finetune",
        }
    }
}

/// One stage and trainable mode's measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMeasurement {
    pub stage: &'static str,
    pub trainable: String,
    pub train_special_rows: bool,
    /// Leading layers run without autograd.
    pub frozen_layers: usize,
    pub trainable_params: usize,
    pub forward_s: f64,
    pub backward_s: f64,
    /// Every token the step's forward reads (queries and passages, templates included).
    pub tokens_per_s: f64,
    /// Peak resident set size of the process during the measured steps (Linux; `None`
    /// elsewhere). Includes the loaded model.
    pub peak_rss_bytes: Option<u64>,
}

/// Median forward and backward times of `steps` training steps (after one warm-up) on a
/// synthetic batch of `batch` sequences of `tokens` passage tokens, for one stage, trainable
/// mode and choice of trainable `<sN>` rows. No optimizer update: this is the part the
/// encoder's speed decides.
pub fn measure_step(
    encoder: &Encoder,
    stage: Stage,
    kind: Trainable,
    train_special_rows: bool,
    batch: usize,
    tokens: usize,
    steps: usize,
) -> Result<StepMeasurement> {
    let tok = encoder.tokenizer();
    let model = encoder.model();
    let rows: &[u32] = if train_special_rows { tok.special_ids() } else { &[] };
    let state = TrainState::new(model, kind, 16, 32.0, rows, 7)?;
    let vocab = model.config.vocab_size;
    let synthetic = move |n: usize, seed: usize| synthetic_ids(n, seed, vocab);
    let step: Box<LossFn>;
    let step_tokens;
    match stage {
        Stage::Adapt => {
            let layout = AdaptLayout::new(tok)?;
            let examples: Vec<AdaptExample> = (0..batch)
                .map(|b| {
                    let passage = synthetic(tokens, b);
                    AdaptExample {
                        self_targets: passage[..tokens / 2].to_vec(),
                        next_targets: passage[tokens / 2..].to_vec(),
                        passage,
                    }
                })
                .collect();
            let refs: Vec<&AdaptExample> = examples.iter().collect();
            let inputs =
                layout.batch(&refs, model.config.vocab_size, model.dtype(), model.device())?;
            step_tokens = inputs.tokens;
            step = Box::new(move |m| Ok(adapt_losses(m, &inputs)?.total));
        }
        Stage::Finetune { group, query_tokens } => {
            // The Llama2Vec layout: text, then the 8 `<sN>` ids of its kind, pooled.
            let special = tok.special_ids().to_vec();
            let text = |n: usize, seed: usize, ids: &[u32]| {
                let mut v = synthetic(n, seed);
                v.extend_from_slice(ids);
                let len = v.len();
                Prepared { ids: v, pool: (len - 8..len).collect(), truncated: false }
            };
            let queries: Vec<Prepared> =
                (0..batch).map(|b| text(query_tokens, b, &special[8..16])).collect();
            let passages: Vec<Prepared> =
                (0..batch * group).map(|p| text(tokens, 1000 + p, &special[..8])).collect();
            step_tokens = queries.iter().chain(&passages).map(|p| p.ids.len()).sum();
            let pad = tok.pad_id();
            step = Box::new(move |m| {
                let q = embed_with_grad(m, &queries.iter().collect::<Vec<_>>(), pad, None)?;
                let p = embed_with_grad(m, &passages.iter().collect::<Vec<_>>(), pad, None)?;
                info_nce(&q, &p, group, 0.01)
            });
        }
    }
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for i in 0..=steps {
        if i == 1 {
            // The warm-up step allocated what every step needs; peaks from here on are the
            // steady state's.
            peak_rss::reset();
        }
        let m = state.model()?;
        let t = Instant::now();
        let loss = step(&m)?;
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        let b = t.elapsed().as_secs_f64();
        drop(grads);
        if i > 0 {
            fwd.push(f);
            bwd.push(b);
        }
    }
    let forward_s = crate::encoder::bench::median(&mut fwd);
    let backward_s = crate::encoder::bench::median(&mut bwd);
    Ok(StepMeasurement {
        stage: stage.name(),
        trainable: kind.to_string(),
        train_special_rows,
        frozen_layers: state.frozen_prefix(),
        trainable_params: state.num_trainable(),
        forward_s,
        backward_s,
        tokens_per_s: step_tokens as f64 / (forward_s + backward_s),
        peak_rss_bytes: peak_rss::read(),
    })
}

/// The process's peak resident set size, from Linux's `/proc/self/status` (`VmHWM`), which
/// writing `5` to `/proc/self/clear_refs` resets to the current size.
pub mod peak_rss {
    /// Starts a new peak at the current size (no-op where unsupported).
    pub fn reset() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    /// The peak since the start or the last [`reset`], in bytes.
    pub fn read() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::testing::write_tiny_model;
    use crate::encoder::{EncoderOptions, Padding, Pooling, Template};
    use candle_core::{DType, Device};

    /// Both stages run a real forward and backward on a tiny model and report their work.
    #[test]
    fn both_stages_measure_tokens_per_second_and_peak_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(&dir.path().join("m"), 3).unwrap();
        let options = EncoderOptions {
            pooling: Pooling::Llama2Vec,
            template: Template::Llama2Vec,
            padding: Padding::Left,
            max_query_tokens: 32,
            max_passage_tokens: 32,
            batch_size: 4,
        };
        let enc = Encoder::load(&path, options, DType::F32, &Device::Cpu).unwrap();
        for stage in [Stage::Adapt, Stage::Finetune { group: 2, query_tokens: 4 }] {
            let m = measure_step(&enc, stage, Trainable::Last(1), true, 2, 8, 1).unwrap();
            assert_eq!(m.stage, stage.name());
            assert!(m.trainable_params > 0 && m.forward_s > 0.0 && m.backward_s > 0.0, "{m:?}");
            assert!(m.tokens_per_s.is_finite() && m.tokens_per_s > 0.0, "{m:?}");
            if cfg!(target_os = "linux") {
                assert!(m.peak_rss_bytes.unwrap() > 1 << 20, "{m:?}");
            }
        }
    }
}
