//! Which weights train, and how trained weights become a plain model again.
//!
//! The forward in `encoder::model` reads weights straight from [`LlamaWeights`], so training
//! works by building, every step, an *effective* weight set whose trainable parts are
//! expressions of `Var`s: the var itself (`all`, `last:N`), `W0 + (alpha/r)·B·A` (LoRA), and
//! `E0 + Sᵀ·Δ` for the 16 `<sN>` embedding rows (a one-hot scatter `S`), which must train in every
//! mode or the special tokens stay identical mean vectors. Gradients flow from the loss through
//! the effective tensors to the vars. Saving evaluates the same expressions detached, so the
//! written model *is* the merged one (LoRA merged, special rows written in place).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::config::Trainable;
use crate::encoder::model::{Llama, LlamaConfig, LlamaWeights, LoraBranch};
use crate::error::{Error, Result};

/// Names of the LoRA-adapted projections inside a block (HF names).
pub const LORA_TARGETS: [&str; crate::encoder::model::LORA_PROJECTIONS] = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// `W0 + scale · B·A`, the LoRA-merged weight (differentiable in `a` and `b`).
pub fn lora_merge(w0: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    Ok((w0 + (b.matmul(a)? * scale)?.to_dtype(w0.dtype())?)?)
}

/// The unmerged LoRA linear `x·W0ᵀ + scale·(x·Aᵀ)·Bᵀ` (reference for the merge test).
pub fn lora_linear_unmerged(
    x: &Tensor,
    w0: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    use crate::encoder::model::linear;
    Ok((linear(x, w0)? + (linear(&linear(x, a)?, b)? * scale)?)?)
}

/// A model under training: frozen base weights plus named trainable vars.
pub struct TrainState {
    pub config: LlamaConfig,
    pub kind: Trainable,
    /// Trainable vars in a fixed order (the optimizer and checkpoints rely on it).
    pub vars: Vec<(String, Var)>,
    lora_scale: f64,
    /// Dropout on the LoRA branch's input during training steps (0 = merged LoRA everywhere).
    lora_dropout: f32,
    /// `[16, vocab]` one-hot rows of the special ids (modes other than `all`).
    special_scatter: Option<Tensor>,
    /// The wrapped model (its weights are the frozen base) with its frozen prefix declared;
    /// [`TrainState::model`] swaps in the effective weights.
    template: Llama,
}

impl TrainState {
    /// Wraps `model`; LoRA A matrices are initialised from `seed` (B starts at zero, so the
    /// initial model equals the base). `special_ids` are the rows trained besides the chosen
    /// weights (ignored by `all`, which trains the whole embedding); with none, `last:N` freezes
    /// everything below its N layers (see [`Llama::freeze_prefix`]).
    pub fn new(
        model: &Llama,
        kind: Trainable,
        lora_rank: usize,
        lora_alpha: f64,
        special_ids: &[u32],
        seed: u64,
    ) -> Result<Self> {
        let config = model.config.clone();
        let base = model.weights.clone();
        let device = model.device().clone();
        let dtype = model.dtype();
        let n_layers = config.num_hidden_layers;
        let mut vars = Vec::new();
        let mut var_of = |name: String, t: &Tensor| -> Result<()> {
            vars.push((name, Var::from_tensor(&t.copy()?)?));
            Ok(())
        };
        match kind {
            Trainable::All => {
                for (name, t) in base.named_tensors() {
                    var_of(name, &t)?;
                }
            }
            Trainable::Last(n) => {
                if n > n_layers {
                    return Err(Error::InvalidInput(format!(
                        "trainable last:{n} but the model has {n_layers} layers"
                    )));
                }
                for (name, t) in base.named_tensors() {
                    let layer = layer_index(&name);
                    if layer.is_some_and(|l| l >= n_layers - n) || name == "model.norm.weight" {
                        var_of(name, &t)?;
                    }
                }
            }
            Trainable::Lora => {
                if lora_rank == 0 {
                    return Err(Error::InvalidInput("lora_rank must be > 0".into()));
                }
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10ba);
                for (name, t) in base.named_tensors() {
                    if layer_index(&name).is_none()
                        || !LORA_TARGETS.iter().any(|s| name.ends_with(s))
                    {
                        continue;
                    }
                    let (out, inp) = t.dims2()?;
                    // Kaiming-uniform-like A (as PEFT), zero B.
                    let bound = 1.0 / (inp as f32).sqrt();
                    let a: Vec<f32> =
                        (0..lora_rank * inp).map(|_| rng.gen_range(-bound..bound)).collect();
                    let a = Tensor::from_vec(a, (lora_rank, inp), &device)?.to_dtype(dtype)?;
                    let b = Tensor::zeros((out, lora_rank), dtype, &device)?;
                    let stem = name.trim_end_matches(".weight");
                    var_of(format!("{stem}.lora_A"), &a)?;
                    var_of(format!("{stem}.lora_B"), &b)?;
                }
            }
        }
        let special_scatter = if kind == Trainable::All || special_ids.is_empty() {
            None
        } else {
            let (vocab, hidden) = base.embed.dims2()?;
            let mut onehot = vec![0f32; special_ids.len() * vocab];
            for (i, &id) in special_ids.iter().enumerate() {
                if id as usize >= vocab {
                    return Err(Error::Train(format!("special id {id} beyond vocab {vocab}")));
                }
                onehot[i * vocab + id as usize] = 1.0;
            }
            let s =
                Tensor::from_vec(onehot, (special_ids.len(), vocab), &device)?.to_dtype(dtype)?;
            let zeros = Tensor::zeros((special_ids.len(), hidden), dtype, &device)?;
            var_of("special_rows.embed_delta".into(), &zeros)?;
            if base.lm_head.is_some() {
                var_of("special_rows.head_delta".into(), &zeros)?;
            }
            Some(s)
        };
        let mut template = model.clone();
        template.freeze_prefix(match (kind, &special_scatter) {
            (Trainable::Last(n), None) => n_layers - n,
            _ => 0,
        });
        Ok(Self {
            config,
            kind,
            vars,
            lora_scale: lora_alpha / lora_rank.max(1) as f64,
            lora_dropout: 0.0,
            special_scatter,
            template,
        })
    }

    /// Sets the dropout on the LoRA branch's input for [`TrainState::training_model`].
    pub fn with_lora_dropout(mut self, p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidInput(format!("lora_dropout must be in [0, 1), got {p}")));
        }
        self.lora_dropout = p as f32;
        Ok(self)
    }

    /// The state a run's hyper-parameters ask for (trainable kind, LoRA shape, special rows,
    /// seed).
    pub fn for_run(model: &Llama, hyper: &super::Hyper, special_ids: &[u32]) -> Result<Self> {
        Self::new(
            model,
            hyper.trainable,
            hyper.lora_rank,
            hyper.lora_alpha,
            if hyper.train_special_rows { special_ids } else { &[] },
            hyper.seed,
        )?
        .with_lora_dropout(hyper.lora_dropout)
    }

    /// Leading layers the forward runs without autograd (see [`Llama::freeze_prefix`]).
    pub fn frozen_prefix(&self) -> usize {
        self.template.frozen_prefix()
    }

    pub fn device(&self) -> &Device {
        self.template.weights.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.template.weights.embed.dtype()
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The effective weights (differentiable in the vars), LoRA merged in.
    pub fn effective_weights(&self) -> Result<LlamaWeights> {
        self.weights_with(true)
    }

    /// The effective weights; with `merge_lora` false the LoRA targets keep their base weights
    /// (the adapters then run beside them, see [`TrainState::training_model`]).
    fn weights_with(&self, merge_lora: bool) -> Result<LlamaWeights> {
        let mut w = self.template.weights.clone();
        let scatter = self.special_scatter.clone();
        let scale = self.lora_scale;
        for (name, t) in w.named_tensors_mut() {
            if let Some(v) = self.var(&name) {
                *t = v.as_tensor().clone();
                continue;
            }
            let stem = name.trim_end_matches(".weight");
            if let (true, Some(a), Some(b)) = (
                merge_lora,
                self.var(&format!("{stem}.lora_A")),
                self.var(&format!("{stem}.lora_B")),
            ) {
                *t = lora_merge(t, a.as_tensor(), b.as_tensor(), scale)?;
            }
            let delta = match name.as_str() {
                "model.embed_tokens.weight" => self.var("special_rows.embed_delta"),
                "lm_head.weight" => self.var("special_rows.head_delta"),
                _ => None,
            };
            if let (Some(d), Some(s)) = (delta, &scatter) {
                *t = (&*t + s.t()?.matmul(d.as_tensor())?)?;
            }
        }
        Ok(w)
    }

    /// A model whose forward is differentiable in the vars (no dropout).
    pub fn model(&self) -> Result<Llama> {
        Ok(self.template.with_weights(self.effective_weights()?))
    }

    /// The model of one training micro-batch: as [`TrainState::model`], except that with LoRA
    /// dropout the adapters run unmerged beside the base weights, their input dropped out by
    /// masks drawn from `seed`.
    pub fn training_model(&self, seed: u64) -> Result<Llama> {
        if self.kind != Trainable::Lora || self.lora_dropout == 0.0 {
            return self.model();
        }
        let n = self.config.num_hidden_layers;
        let mut adapters = vec![std::array::from_fn(|_| None); n];
        for (layer, slots) in adapters.iter_mut().enumerate() {
            for (j, target) in LORA_TARGETS.iter().enumerate() {
                let stem = format!("model.layers.{layer}.{}", target.trim_end_matches(".weight"));
                if let (Some(a), Some(b)) =
                    (self.var(&format!("{stem}.lora_A")), self.var(&format!("{stem}.lora_B")))
                {
                    slots[j] = Some((a.as_tensor().clone(), b.as_tensor().clone()));
                }
            }
        }
        let branch =
            LoraBranch { adapters, scale: self.lora_scale, dropout: self.lora_dropout, seed };
        Ok(self.template.with_weights(self.weights_with(false)?).with_lora(branch))
    }

    /// Detached merged weights, ready to save.
    pub fn merged(&self) -> Result<LlamaWeights> {
        let mut w = self.effective_weights()?;
        for (_, t) in w.named_tensors_mut() {
            *t = t.detach();
        }
        Ok(w)
    }
}

#[cfg(test)]
impl TrainState {
    /// A copy sharing the same vars (tests only).
    fn clone_for_test(&self) -> Self {
        Self {
            config: self.config.clone(),
            kind: self.kind,
            vars: self.vars.clone(),
            lora_scale: self.lora_scale,
            lora_dropout: self.lora_dropout,
            special_scatter: self.special_scatter.clone(),
            template: self.template.clone(),
        }
    }
}

/// `model.layers.N.…` → N.
pub fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::model::{BatchInputs, ForwardMode};
    use crate::encoder::testing::{random_llama, tiny_config};

    #[test]
    fn lora_merge_equals_unmerged_forward() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let w0 = Tensor::randn(0f32, 1.0, (8, 16), &dev).unwrap();
        let a = Tensor::randn(0f32, 1.0, (4, 16), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (8, 4), &dev).unwrap();
        let merged = lora_merge(&w0, &a, &b, 0.5).unwrap();
        let y1 = crate::encoder::model::linear(&x, &merged).unwrap();
        let y2 = lora_linear_unmerged(&x, &w0, &a, &b, 0.5).unwrap();
        let d = (y1 - y2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
    }

    /// With B = 0 the LoRA model equals the base; after perturbing B, the merged (saved)
    /// weights give the same forward as the differentiable effective model.
    #[test]
    fn lora_state_starts_at_base_and_merges_exactly() {
        let cfg = tiny_config();
        let m = random_llama(&cfg, 3, &Device::Cpu).unwrap();
        let st = TrainState::new(&m, Trainable::Lora, 4, 8.0, &[250, 251], 1).unwrap();
        let ids = vec![vec![1u32, 5, 9, 250, 251]];
        let pos = vec![(0..5).collect::<Vec<u32>>()];
        let inp =
            BatchInputs::causal(&ids, &pos, &[vec![true; 5]], DType::F32, &Device::Cpu).unwrap();
        let base = m.forward(&inp, ForwardMode::Fast).unwrap();
        let eff = st.model().unwrap().forward(&inp, ForwardMode::Differentiable).unwrap();
        let d = (&base - &eff).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
        for (n, v) in &st.vars {
            if n.ends_with("lora_B") || n.starts_with("special_rows") {
                v.set(&Tensor::randn(0f32, 0.1, v.shape(), &Device::Cpu).unwrap()).unwrap();
            }
        }
        let eff = st.model().unwrap().forward(&inp, ForwardMode::Differentiable).unwrap();
        let merged = Llama::new(cfg, st.merged().unwrap()).unwrap();
        let saved = merged.forward(&inp, ForwardMode::Fast).unwrap();
        let d = (&eff - &saved).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
        let d = (&base - &saved).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-3, "perturbation must matter");
    }

    /// LoRA dropout: the unmerged training forward equals the merged one without dropout,
    /// is reproducible for a seed, and differs between seeds.
    #[test]
    fn lora_dropout_is_seeded_and_off_means_merged() {
        let cfg = tiny_config();
        let m = random_llama(&cfg, 3, &Device::Cpu).unwrap();
        let st = TrainState::new(&m, Trainable::Lora, 4, 8.0, &[], 1).unwrap();
        for (n, v) in &st.vars {
            if n.ends_with("lora_B") {
                v.set(&Tensor::randn(0f32, 0.5, v.shape(), &Device::Cpu).unwrap()).unwrap();
            }
        }
        let ids = vec![vec![1u32, 5, 9, 20, 30]];
        let pos = vec![(0..5).collect::<Vec<u32>>()];
        let inp =
            BatchInputs::causal(&ids, &pos, &[vec![true; 5]], DType::F32, &Device::Cpu).unwrap();
        let run = |model: Llama| model.forward(&inp, ForwardMode::Differentiable).unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        let merged = run(st.model().unwrap());
        let st0 = TrainState { lora_dropout: 0.0, ..st.clone_for_test() };
        assert!(diff(&merged, &run(st0.training_model(9).unwrap())) < 1e-5);
        let st = st.with_lora_dropout(0.5).unwrap();
        let unmerged_no_drop = {
            let mut branch_off = st.clone_for_test();
            branch_off.lora_dropout = 1e-9;
            run(branch_off.training_model(9).unwrap())
        };
        assert!(diff(&merged, &unmerged_no_drop) < 1e-4, "unmerged adapters equal the merge");
        let a = run(st.training_model(9).unwrap());
        let b = run(st.training_model(9).unwrap());
        let c = run(st.training_model(10).unwrap());
        assert_eq!(diff(&a, &b), 0.0, "same seed, same masks");
        assert!(diff(&a, &c) > 1e-3, "another seed drops other inputs");
        assert!(diff(&a, &merged) > 1e-3, "dropout changes the training forward");
        assert!(st.with_lora_dropout(1.0).is_err());
    }
}
