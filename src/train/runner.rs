//! The optimisation loop both commands share: seeded batches, gradient accumulation, global-norm
//! clipping, AdamW with warm-up/decay, logging, periodic validation and checkpoints, `--resume`.

use std::path::Path;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{self, RunState, Sampler};
use super::optim::{clip_global_norm, AdamW, GradAccum};
use super::params::TrainState;
use super::{check_finite, lr_at, progress, Hyper};
use crate::encoder::model::Llama;
use crate::error::{Error, Result};

/// What one micro-batch produced.
pub struct MicroOut {
    /// The loss to minimise (scalar).
    pub loss: Tensor,
    /// Named scalar parts for the log (the first is the total).
    pub parts: Vec<(&'static str, f32)>,
    pub tokens: usize,
}

/// Where and how a run executes (besides the hyper-parameters).
pub struct RunSpec<'a> {
    pub out: &'a Path,
    pub hyper: &'a Hyper,
    pub resume: bool,
    pub stop_after: Option<usize>,
    /// "adapt" or "finetune" (progress bar and messages).
    pub what: &'a str,
}

/// Runs `hyper.max_steps` optimizer steps over `n_items` items. `micro` computes the loss of a
/// micro-batch of item indices at an optimizer step; `validate` reports held-out quality (called
/// every `validation_every` steps and at the end).
pub fn run(
    spec: &RunSpec,
    state: &TrainState,
    n_items: usize,
    mut micro: impl FnMut(&Llama, &[usize], &mut ChaCha8Rng, usize) -> Result<MicroOut>,
    mut validate: impl FnMut(&TrainState, usize) -> Result<serde_json::Value>,
) -> Result<RunState> {
    let RunSpec { out, hyper, resume, stop_after, what } = *spec;
    if n_items == 0 {
        return Err(Error::Train("no training examples".into()));
    }
    std::fs::create_dir_all(out)?;
    let mut opt = AdamW::new(&state.vars, hyper.weight_decay)?;
    let mut run = if resume {
        checkpoint::load(out, hyper, &state.vars, &mut opt)?
    } else {
        RunState {
            step: 0,
            opt_t: 0,
            sampler: Sampler::new(n_items, hyper.seed),
            rng_word_pos: 0,
            hyper: hyper.clone(),
            tokens: 0,
            seconds: 0.0,
            history: vec![],
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(hyper.seed.wrapping_add(1));
    rng.set_word_pos(run.rng_word_pos);
    let pb = progress(hyper.max_steps, run.step, what);
    let started = std::time::Instant::now();
    let seconds_before = run.seconds;
    let tokens_before = run.tokens;
    if run.step == 0 && hyper.validation_every > 0 {
        let v = validate(state, 0)?;
        tracing::info!(step = 0, validation = %v, "validation");
        run.history.push(serde_json::json!({"step": 0, "validation": v}));
    }
    let stop = stop_after.unwrap_or(usize::MAX).min(hyper.max_steps);
    while run.step < stop {
        let lr = lr_at(run.step, hyper.max_steps, hyper.lr, hyper.warmup_ratio);
        let mut acc = GradAccum::new(state.vars.len());
        let mut sums: Vec<(&'static str, f32)> = Vec::new();
        for micro_step in 0..hyper.grad_accum {
            let idx = run.sampler.take(hyper.batch_size);
            // Dropout masks (LoRA) follow from the seed, the step and the micro-batch.
            let mask_seed = hyper.seed ^ ((run.step as u64) << 20) ^ micro_step as u64;
            let model = state.training_model(mask_seed)?;
            let m = micro(&model, &idx, &mut rng, run.step)?;
            check_finite(what, m.parts.first().map_or(0.0, |p| p.1), run.step)?;
            let grads = (m.loss / hyper.grad_accum as f64)?.backward()?;
            acc.add(&state.vars, &grads)?;
            run.tokens += m.tokens as u64;
            for (i, (name, v)) in m.parts.into_iter().enumerate() {
                match sums.get_mut(i) {
                    Some(s) => s.1 += v / hyper.grad_accum as f32,
                    None => sums.push((name, v / hyper.grad_accum as f32)),
                }
            }
        }
        let mut grads = acc.finish(&state.vars)?;
        let norm = clip_global_norm(&mut grads, hyper.max_grad_norm)?;
        opt.step(&state.vars, &grads, lr)?;
        run.step += 1;
        run.opt_t = opt.t;
        run.rng_word_pos = rng.get_word_pos();
        run.seconds = seconds_before + started.elapsed().as_secs_f64();
        let tps = (run.tokens - tokens_before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let msg: Vec<String> = sums.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        pb.set_message(format!("{} | {tps:.0} tok/s", msg.join(" ")));
        pb.set_position(run.step as u64);
        if run.step % hyper.log_every.max(1) == 0 || run.step == hyper.max_steps || run.step == 1 {
            let mut rec = serde_json::json!({
                "step": run.step, "lr": lr, "grad_norm": norm, "tokens_per_s": tps,
                "seconds": run.seconds,
            });
            for (n, v) in &sums {
                rec[*n] = serde_json::json!(v);
            }
            tracing::info!(%rec, "train");
            say(&pb, rec.to_string());
            run.history.push(rec);
        }
        let last = run.step == stop;
        if (hyper.validation_every > 0 && run.step % hyper.validation_every == 0) || last {
            let v = validate(state, run.step)?;
            say(&pb, format!("{{\"step\":{},\"validation\":{v}}}", run.step));
            run.history.push(serde_json::json!({"step": run.step, "validation": v}));
        }
        if (hyper.checkpoint_every > 0 && run.step % hyper.checkpoint_every == 0) || last {
            checkpoint::save(out, &run, &state.vars, &opt)?;
        }
    }
    pb.finish_and_clear();
    Ok(run)
}

/// Log lines go above the progress bar, or to stderr when the bar is hidden (not a terminal).
fn say(pb: &indicatif::ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// The last logged training record and the last validation record of a run.
pub fn final_records(run: &RunState) -> (serde_json::Value, serde_json::Value) {
    let train = run.history.iter().rev().find(|r| r.get("lr").is_some()).cloned();
    let val = run.history.iter().rev().find_map(|r| r.get("validation").cloned());
    (train.unwrap_or_default(), val.unwrap_or_default())
}
