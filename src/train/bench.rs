//! Training-step throughput: forward + backward of the adaptation loss (`engine bench train`).

use std::time::Instant;

use super::loss::{adapt_losses, AdaptExample, AdaptLayout};
use super::params::{TrainState, Trainable};
use crate::encoder::Encoder;
use crate::error::Result;

/// One trainable mode's measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMeasurement {
    pub trainable: String,
    pub train_special_rows: bool,
    /// Leading layers run without autograd.
    pub frozen_layers: usize,
    pub trainable_params: usize,
    pub forward_s: f64,
    pub backward_s: f64,
    pub tokens_per_s: f64,
}

/// Median forward and backward times of `steps` adaptation steps (after one warm-up) on a
/// synthetic `batch x tokens` batch, for one trainable mode, with or without trainable `<sN>`
/// rows. No optimizer update: this is the part the encoder speed decides.
pub fn measure_step(
    encoder: &Encoder,
    trainable: &str,
    train_special_rows: bool,
    batch: usize,
    tokens: usize,
    steps: usize,
) -> Result<StepMeasurement> {
    let kind: Trainable = trainable.parse()?;
    let tok = encoder.tokenizer();
    let model = encoder.model();
    let rows: &[u32] = if train_special_rows { tok.special_ids() } else { &[] };
    let state = TrainState::new(model, kind, 16, 32.0, rows, 7)?;
    let layout = AdaptLayout::new(tok)?;
    let examples: Vec<AdaptExample> = (0..batch)
        .map(|b| {
            let passage: Vec<u32> =
                (0..tokens).map(|i| 1000 + ((i * 37 + b * 101) % 20000) as u32).collect();
            AdaptExample {
                self_targets: passage[..tokens / 2].to_vec(),
                next_targets: passage[tokens / 2..].to_vec(),
                passage,
            }
        })
        .collect();
    let refs: Vec<&AdaptExample> = examples.iter().collect();
    let inputs = layout.batch(&refs, model.config.vocab_size, model.dtype(), model.device())?;
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for step in 0..=steps {
        let m = state.model()?;
        let t = Instant::now();
        let losses = adapt_losses(&m, &inputs)?;
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = losses.total.backward()?;
        let b = t.elapsed().as_secs_f64();
        drop(grads);
        if step > 0 {
            fwd.push(f);
            bwd.push(b);
        }
    }
    let forward_s = crate::encoder::bench::median(&mut fwd);
    let backward_s = crate::encoder::bench::median(&mut bwd);
    Ok(StepMeasurement {
        trainable: trainable.to_string(),
        train_special_rows,
        frozen_layers: state.frozen_prefix(),
        trainable_params: state.num_trainable(),
        forward_s,
        backward_s,
        tokens_per_s: inputs.tokens as f64 / (forward_s + backward_s),
    })
}
