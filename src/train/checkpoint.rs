//! Checkpoints and the seeded data order, so `--resume` continues exactly where a run stopped.
//!
//! A checkpoint is `OUT/checkpoint/` with `state.safetensors` (every trainable tensor and its
//! two AdamW moments) and `state.json` ([`RunState`]: step, optimizer step count, the sampler's
//! position, loss history, and the hyper-parameters, which must match on resume). The data order
//! is a pure function of (seed, epoch), so the sampler's (epoch, cursor) *is* its RNG state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::Hyper;
use crate::error::{Error, Result};

/// Seeded epoch-wise shuffling of `n` items.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sampler {
    pub n: usize,
    pub seed: u64,
    pub epoch: u64,
    pub cursor: usize,
    #[serde(skip)]
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(n: usize, seed: u64) -> Self {
        let mut s = Self { n, seed, epoch: 0, cursor: 0, order: vec![] };
        s.shuffle();
        s
    }

    fn shuffle(&mut self) {
        self.order = (0..self.n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(self.epoch));
        self.order.shuffle(&mut rng);
    }

    /// The next `k` items (wrapping into a freshly shuffled epoch).
    pub fn take(&mut self, k: usize) -> Vec<usize> {
        if self.order.len() != self.n {
            self.shuffle();
        }
        let mut out = Vec::with_capacity(k);
        while out.len() < k && self.n > 0 {
            if self.cursor == self.n {
                self.epoch += 1;
                self.cursor = 0;
                self.shuffle();
            }
            out.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        out
    }
}

/// Everything but tensors needed to resume a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub step: usize,
    pub opt_t: usize,
    pub sampler: Sampler,
    /// A second RNG stream (hard-negative choice), saved as its word position.
    pub rng_word_pos: u128,
    pub hyper: Hyper,
    pub tokens: u64,
    pub seconds: f64,
    pub history: Vec<serde_json::Value>,
}

pub fn dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Writes the checkpoint (to a temporary folder, then renamed over the old one).
pub fn save(out: &Path, state: &RunState, vars: &[(String, Var)], opt: &AdamW) -> Result<()> {
    let final_dir = dir(out);
    let tmp = out.join("checkpoint.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, (name, v)) in vars.iter().enumerate() {
        tensors.insert(format!("var.{name}"), v.as_tensor().to_device(&Device::Cpu)?);
        tensors.insert(format!("m.{name}"), opt.m[i].to_device(&Device::Cpu)?);
        tensors.insert(format!("v.{name}"), opt.v[i].to_device(&Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, tmp.join("state.safetensors"))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)?;
    Ok(())
}

/// Restores vars and optimizer moments; checks the hyper-parameters match this run's.
pub fn load(
    out: &Path,
    hyper: &Hyper,
    vars: &[(String, Var)],
    opt: &mut AdamW,
) -> Result<RunState> {
    let d = dir(out);
    let text = std::fs::read_to_string(d.join("state.json"))
        .map_err(|e| Error::Train(format!("--resume: no checkpoint in {} ({e})", d.display())))?;
    let mut state: RunState = serde_json::from_str(&text)
        .map_err(|e| Error::Train(format!("--resume: malformed state.json: {e}")))?;
    if &state.hyper != hyper {
        return Err(Error::Train(format!(
            "--resume: hyper-parameters differ from the checkpoint's ({:?} vs {:?})",
            state.hyper, hyper
        )));
    }
    let device = vars.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu);
    let tensors = candle_core::safetensors::load(d.join("state.safetensors"), &device)?;
    let get = |k: String| {
        tensors.get(&k).cloned().ok_or_else(|| Error::Train(format!("checkpoint lacks {k}")))
    };
    for (i, (name, v)) in vars.iter().enumerate() {
        let t = get(format!("var.{name}"))?;
        if t.shape() != v.shape() {
            return Err(Error::Train(format!("checkpoint {name} has shape {:?}", t.shape())));
        }
        v.set(&t.to_dtype(v.dtype())?)?;
        opt.m[i] = get(format!("m.{name}"))?;
        opt.v[i] = get(format!("v.{name}"))?;
    }
    opt.t = state.opt_t;
    state.sampler.shuffle();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_is_seeded_and_resumable() {
        let mut a = Sampler::new(5, 9);
        let first: Vec<usize> = a.take(7);
        let mut sorted = first[..5].to_vec();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Sampler = serde_json::from_str(&json).unwrap();
        assert_eq!(a.take(6), b.take(6));
        assert_eq!(Sampler::new(5, 9).take(7), first);
    }
}
