//! The frozen prefix's hidden states of training texts, kept across steps.
//!
//! With `trainable = "last:N"` and the `<sN>` rows frozen, the embedding and the layers below
//! the trained ones never change, so a text's states after them are the same every time it
//! recurs: fine-tuning sees each query and its positive once per epoch. The recipe's 300
//! steps are three epochs of SciFact train; from the second on, half of a step's tokens skip
//! the 26 frozen layers. The states are f32 and exact (a token's states depend only on its own
//! row's earlier tokens: RoPE positions count from each row's first real token and padding is
//! masked), so training takes the same path with the cache as without.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::encoder::model::Llama;
use crate::encoder::template::{self, PaddedBatch, Padding, Prepared};
use crate::error::{Error, Result};

/// States of the frozen prefix per text (by token ids), up to a memory budget: texts met after
/// it is spent are computed each time.
#[derive(Debug)]
pub struct PrefixCache {
    states: HashMap<Vec<u32>, Vec<f32>>,
    bytes: usize,
    budget: usize,
    /// Texts served from the cache, and computed, so far.
    pub hits: u64,
    pub misses: u64,
}

impl PrefixCache {
    /// A cache holding at most `budget_mb` MiB of states (0: none kept).
    pub fn new(budget_mb: usize) -> Self {
        Self { states: HashMap::new(), bytes: 0, budget: budget_mb << 20, hits: 0, misses: 0 }
    }

    /// MiB held.
    pub fn mb(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64
    }

    /// The [`Llama::prefix_states`] of `batch` (padded on the right from `items`), its rows
    /// taken from the cache where held and computed (and kept, budget allowing) where not.
    pub fn prefix_states(
        &mut self,
        model: &Llama,
        items: &[&Prepared],
        batch: &PaddedBatch,
        pad_id: u32,
    ) -> Result<Tensor> {
        let (b, t) = batch.inputs.ids.dims2()?;
        let hidden = model.config.hidden_size;
        // The texts not held, each once.
        let mut missing: Vec<&Prepared> = Vec::new();
        for &item in items {
            if !self.states.contains_key(&item.ids) && !missing.iter().any(|m| m.ids == item.ids) {
                missing.push(item);
            }
        }
        self.misses += missing.len() as u64;
        self.hits += (items.len() - missing.len()) as u64;
        let mut fresh: HashMap<&[u32], Vec<f32>> = HashMap::new();
        if !missing.is_empty() {
            let (dtype, device) = (model.dtype(), model.device());
            let sub = template::pad_batch(&missing, pad_id, Padding::Right, dtype, device)?;
            let states = model.prefix_states(&sub.inputs)?.to_dtype(DType::F32)?;
            let tm = states.dim(1)?;
            let values = states.flatten_all()?.to_vec1::<f32>()?;
            for (r, item) in missing.iter().enumerate() {
                let rows = values[r * tm * hidden..(r * tm + item.ids.len()) * hidden].to_vec();
                let size = rows.len() * std::mem::size_of::<f32>();
                if self.bytes + size <= self.budget {
                    self.bytes += size;
                    self.states.insert(item.ids.clone(), rows);
                } else {
                    fresh.insert(&item.ids, rows);
                }
            }
        }
        // Right padding: each row's real tokens come first; padding rows stay zero (masked
        // as keys, never pooled).
        let mut x = vec![0f32; b * t * hidden];
        for (i, item) in items.iter().enumerate() {
            let rows = self.states.get(&item.ids).or_else(|| fresh.get(item.ids.as_slice()));
            let rows =
                rows.ok_or_else(|| Error::Train("a text's prefix states went missing".into()))?;
            x[i * t * hidden..][..rows.len()].copy_from_slice(rows);
        }
        let x = Tensor::from_vec(x, (b, t, hidden), model.device())?;
        Ok(x.to_dtype(model.dtype())?)
    }
}
