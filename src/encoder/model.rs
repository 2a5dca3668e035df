//! A Llama decoder forward that returns the final-norm hidden state of every position.
//!
//! candle-transformers' Llama only yields last-position logits, and its quantized variant cannot
//! be trained, so the engine carries its own forward. Two numerically equivalent paths exist:
//! [`ForwardMode::Fast`] uses candle's fused kernels (rms_norm, rope, softmax_last_dim), which
//! have no backward pass; [`ForwardMode::Differentiable`] composes the same maths from basic ops
//! so gradients reach every weight. Tests check the two agree.
//!
//! Weights follow the Hugging Face layout (q/k rows in "rotate half" order); GGUF loading
//! un-permutes llama.cpp's interleaved q/k rows so one RoPE variant serves both formats.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};
use serde::{Deserialize, Serialize};

use super::attention::{AttentionMask, PackedAttention};
use super::fused::{f32_values, MaskedSoftmax, SiluMul};
use super::fused_grad;
use super::gemm::{Bf16TrainLinear, PackedFormat, PackedLinear, PackedWeight};
use crate::error::Result;

/// Large negative attention bias for masked pairs. Finite, so a fully masked row (a left-pad
/// position) softmaxes to a uniform distribution instead of NaN.
pub const MASK_VALUE: f32 = -1e9;

/// Architecture hyper-parameters, in the vocabulary of Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parameters excluding the token embedding (and an untied LM head): the per-token FLOP
    /// count of a forward is about twice this.
    pub fn non_embedding_params(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim();
        let per_layer = h * h * 2 + h * kv * 2 + 3 * h * self.intermediate_size + 2 * h;
        per_layer * self.num_hidden_layers + h
    }
}

/// One transformer block's weights; matrices are `[out, in]` like `nn.Linear`.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

impl LayerWeights {
    /// Hugging Face parameter names relative to `model.layers.N.`, paired with the tensor.
    pub fn named(&self) -> [(&'static str, &Tensor); 9] {
        [
            ("input_layernorm.weight", &self.attn_norm),
            ("self_attn.q_proj.weight", &self.q),
            ("self_attn.k_proj.weight", &self.k),
            ("self_attn.v_proj.weight", &self.v),
            ("self_attn.o_proj.weight", &self.o),
            ("post_attention_layernorm.weight", &self.ffn_norm),
            ("mlp.gate_proj.weight", &self.gate),
            ("mlp.up_proj.weight", &self.up),
            ("mlp.down_proj.weight", &self.down),
        ]
    }

    pub fn named_mut(&mut self) -> [(&'static str, &mut Tensor); 9] {
        [
            ("input_layernorm.weight", &mut self.attn_norm),
            ("self_attn.q_proj.weight", &mut self.q),
            ("self_attn.k_proj.weight", &mut self.k),
            ("self_attn.v_proj.weight", &mut self.v),
            ("self_attn.o_proj.weight", &mut self.o),
            ("post_attention_layernorm.weight", &mut self.ffn_norm),
            ("mlp.gate_proj.weight", &mut self.gate),
            ("mlp.up_proj.weight", &mut self.up),
            ("mlp.down_proj.weight", &mut self.down),
        ]
    }
}

/// All weights of the model. `lm_head` is `None` when tied to `embed` (SmolLM2).
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    pub lm_head: Option<Tensor>,
}

impl LlamaWeights {
    /// Every tensor under its Hugging Face name (the safetensors layout written on save).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, t) in layer.named() {
                out.push((format!("model.layers.{i}.{name}"), t.clone()));
            }
        }
        out.push(("model.norm.weight".into(), self.final_norm.clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.clone()));
        }
        out
    }

    /// Mutable access to every tensor by name (used to swap in trainable `Var`s).
    pub fn named_tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), &mut self.embed)];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, t) in layer.named_mut() {
                out.push((format!("model.layers.{i}.{name}"), t));
            }
        }
        out.push(("model.norm.weight".into(), &mut self.final_norm));
        if let Some(head) = &mut self.lm_head {
            out.push(("lm_head.weight".into(), head));
        }
        out
    }

    /// Appends `n` rows to the token embedding (and an untied LM head) for newly added special
    /// tokens. Each row is a distinct draw from a Gaussian with the existing rows' per-dimension
    /// mean and standard deviation, from a fixed seed: distinct rows, as the reference's
    /// `resize_token_embeddings` gives, so the eight pooled `<sN>` positions can differ by more
    /// than position even while the rows are frozen; the same base always loads the same rows.
    pub fn grow_vocab(&mut self, n: usize) -> Result<()> {
        fn grow(t: &Tensor, n: usize) -> Result<Tensor> {
            let rows = new_token_rows(&t.to_dtype(DType::F32)?, n, SPECIAL_ROW_SEED)?;
            Ok(Tensor::cat(&[t, &rows.to_dtype(t.dtype())?], 0)?)
        }
        self.embed = grow(&self.embed, n)?;
        if let Some(head) = &self.lm_head {
            self.lm_head = Some(grow(head, n)?);
        }
        Ok(())
    }
}

/// Seed of the added `<sN>` rows' initialisation (part of what an untrained encoder is).
pub const SPECIAL_ROW_SEED: u64 = 0x5e1f_2ec7;

/// `n` rows drawn from N(mean, std²) per dimension of `table` `[V, H]` (f32), seeded.
pub fn new_token_rows(table: &Tensor, n: usize, seed: u64) -> Result<Tensor> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mean = table.mean_keepdim(0)?;
    let std = table.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.sqrt()?;
    let hidden = table.dim(1)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise: Vec<f32> = (0..n * hidden).map(|_| StandardNormal.sample(&mut rng)).collect();
    let noise = Tensor::from_vec(noise, (n, hidden), table.device())?;
    Ok(noise.broadcast_mul(&std)?.broadcast_add(&mean)?)
}

/// Which kernels the forward uses; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    Fast,
    Differentiable,
}

/// A padded batch ready for [`Llama::forward`].
#[derive(Debug, Clone)]
pub struct BatchInputs {
    /// `[B, T]` u32 token ids (pads included).
    pub ids: Tensor,
    /// `[B, T]` u32 RoPE positions (pads get any valid position).
    pub positions: Tensor,
    /// `[B, 1, T, T]` additive attention bias: 0 where query `i` may see key `j`, else
    /// [`MASK_VALUE`].
    pub bias: Tensor,
}

impl BatchInputs {
    /// Builds inputs from per-row ids, positions and an `allowed(b, i, j)` predicate.
    pub fn build(
        ids: &[Vec<u32>],
        positions: &[Vec<u32>],
        allowed: impl Fn(usize, usize, usize) -> bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let b = ids.len();
        let t = ids.first().map_or(0, |r| r.len());
        let flat_ids: Vec<u32> = ids.iter().flatten().copied().collect();
        let flat_pos: Vec<u32> = positions.iter().flatten().copied().collect();
        let mut bias = vec![0f32; b * t * t];
        for bi in 0..b {
            for i in 0..t {
                let row = &mut bias[(bi * t + i) * t..(bi * t + i + 1) * t];
                for (j, v) in row.iter_mut().enumerate() {
                    if !allowed(bi, i, j) {
                        *v = MASK_VALUE;
                    }
                }
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(flat_ids, (b, t), device)?,
            positions: Tensor::from_vec(flat_pos, (b, t), device)?,
            bias: Tensor::from_vec(bias, (b, 1, t, t), device)?.to_dtype(dtype)?,
        })
    }

    /// Causal attention restricted to real (non-pad) keys: the standard encoder batch.
    pub fn causal(
        ids: &[Vec<u32>],
        positions: &[Vec<u32>],
        valid: &[Vec<bool>],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::build(ids, positions, |b, i, j| j <= i && valid[b][j], dtype, device)
    }
}

/// One layer's projections packed for a [`super::gemm`] kernel, q/k/v and gate/up fused so
/// each input is converted and streamed once.
#[derive(Debug, Clone)]
struct PackedLayer {
    qkv: Arc<PackedWeight>,
    o: Arc<PackedWeight>,
    gate_up: Arc<PackedWeight>,
    down: Arc<PackedWeight>,
}

/// One layer's activation ranges: per projection input (q/k/v, o, gate/up, down), the largest
/// |value| seen in each channel; see [`Llama::input_ranges`].
#[derive(Debug, Clone, Default)]
pub struct InputRanges(pub [Vec<f32>; 4]);

impl InputRanges {
    fn record(&mut self, proj: usize, input: &Tensor) -> Result<()> {
        let c = input.dim(D::Minus1)?;
        let max = input.reshape(((), c))?.abs()?.max(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let seen = &mut self.0[proj];
        if seen.is_empty() {
            *seen = max;
        } else {
            seen.iter_mut().zip(max).for_each(|(s, m)| *s = s.max(m));
        }
        Ok(())
    }
}

/// The model: configuration, weights and the RoPE frequency table.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
    /// Packed projections used by [`ForwardMode::Fast`] when enabled.
    packed: Option<Arc<Vec<PackedLayer>>>,
    /// Leading layers (with the embedding) that training leaves unchanged; see
    /// [`Llama::freeze_prefix`].
    frozen_layers: usize,
    /// Unmerged LoRA adapters with input dropout (training only; see [`LoraBranch`]).
    lora: Option<Arc<LoraBranch>>,
    /// The differentiable forward runs the fast training kernels: projections forward and
    /// backward on the bf16 kernel, fused RMSNorm, RoPE, softmax and SwiGLU with their own
    /// backward ([`super::fused_grad`]). Set with a packed kernel (see
    /// [`Llama::enable_packed_kernel`]).
    fast_training: bool,
}

/// Projections a LoRA adapter can sit on, in [`LoraBranch::adapters`] order.
pub const LORA_PROJECTIONS: usize = 7;

/// LoRA adapters applied beside the weights instead of merged into them, so their input can
/// take dropout as in the reference (PEFT): `y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ`. The dropout
/// masks are drawn from `seed`, so a training step is reproducible (checkpoint and resume).
#[derive(Debug, Clone)]
pub struct LoraBranch {
    /// Per layer, per projection (q, k, v, o, gate, up, down): `(A [r, in], B [out, r])`.
    pub adapters: Vec<[Option<(Tensor, Tensor)>; LORA_PROJECTIONS]>,
    pub scale: f64,
    /// Probability of zeroing an input element of the adapter.
    pub dropout: f32,
    pub seed: u64,
}

impl LoraBranch {
    /// The adapter's contribution for projection `proj` of layer `layer` on input `x`.
    fn apply(&self, layer: usize, proj: usize, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(Some((a, b))) = self.adapters.get(layer).map(|l| &l[proj]) else {
            return Ok(None);
        };
        let x = if self.dropout > 0.0 {
            let seed = self.seed ^ ((layer as u64) << 32) ^ ((proj as u64) << 48);
            let mask =
                dropout_mask(x.dims(), self.dropout, seed, x.device())?.to_dtype(x.dtype())?;
            (x * mask)?
        } else {
            x.clone()
        };
        Ok(Some((linear(&linear(&x, a)?, b)? * self.scale)?))
    }
}

/// Inverted-dropout mask of `shape`: 0 with probability `p`, else `1 / (1 - p)`, from `seed`.
pub fn dropout_mask(shape: &[usize], p: f32, seed: u64, device: &Device) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let n: usize = shape.iter().product();
    let keep = 1.0 / (1.0 - p);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..n).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

impl Llama {
    pub fn new(config: LlamaConfig, weights: LlamaWeights) -> Result<Self> {
        let hd = config.head_dim();
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / (config.rope_theta as f32).powf(2.0 * i as f32 / hd as f32))
            .collect();
        let device = weights.embed.device().clone();
        let dtype = weights.embed.dtype();
        Ok(Self {
            config,
            weights,
            inv_freq,
            device,
            dtype,
            packed: None,
            frozen_layers: 0,
            lora: None,
            fast_training: false,
        })
    }

    /// This model with unmerged LoRA adapters beside its weights (see [`LoraBranch`]).
    pub fn with_lora(mut self, branch: LoraBranch) -> Self {
        self.lora = Some(Arc::new(branch));
        self
    }

    /// Packs the layer projections for the CPU kernel of `format` (f32 CPU weights only).
    /// Returns false, changing nothing, where the CPU or the weights do not allow it. Training
    /// keeps using the f32 weights (call again after they change); where the CPU has the bf16
    /// kernel, its differentiable forward and backward run the fast training kernels
    /// ([`Bf16TrainLinear`]: bf16 operands, f32 accumulation; [`super::fused_grad`]).
    ///
    /// For int8, `calibration` (typical inputs, unpadded) gives the activation ranges the
    /// quantisation is smoothed by (see [`PackedWeight::pack`]); with none, it is not.
    pub fn enable_packed_kernel(
        &mut self,
        format: PackedFormat,
        calibration: &[BatchInputs],
    ) -> Result<bool> {
        if !format.available() || !self.device.is_cpu() || self.dtype != DType::F32 {
            return Ok(false);
        }
        let ranges = match format {
            PackedFormat::Int8 if !calibration.is_empty() => Some(self.input_ranges(calibration)?),
            _ => None,
        };
        // int8 leaves the down projection in bf16 where it can: its inputs (the SwiGLU
        // products) span the widest range, and with them in int8 the embeddings of real
        // passages fell to cosine 0.998 of f32 (0.999 with them in bf16; docs/results.md).
        let down_format = match format {
            PackedFormat::Int8 if PackedFormat::Bf16.available() => PackedFormat::Bf16,
            _ => format,
        };
        let pack = |format, ts: &[&Tensor], range: Option<&Vec<f32>>| -> Result<_> {
            let t = Tensor::cat(ts, 0)?;
            let (n, k) = t.dims2()?;
            let w = f32_values(&t)?;
            Ok(Arc::new(PackedWeight::pack(format, &w, n, k, range.map(Vec::as_slice))))
        };
        let layers = self
            .weights
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let r = |proj: usize| ranges.as_ref().map(|r| &r[i].0[proj]);
                Ok(PackedLayer {
                    qkv: pack(format, &[&l.q, &l.k, &l.v], r(0))?,
                    o: pack(format, &[&l.o], r(1))?,
                    gate_up: {
                        let (n, k) = l.gate.dims2()?;
                        let range = r(2).map(Vec::as_slice);
                        let (gate, up) = (f32_values(&l.gate)?, f32_values(&l.up)?);
                        Arc::new(PackedWeight::pack_swiglu(format, &gate, &up, n, k, range))
                    },
                    down: pack(down_format, &[&l.down], r(3))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.packed = Some(Arc::new(layers));
        self.fast_training = PackedFormat::Bf16.available();
        Ok(true)
    }

    /// Declares that the embedding and the first `n` layers will not change (training only the
    /// layers above them, with no trainable input rows). The differentiable forward then runs
    /// them with the fast kernels (the packed ones where enabled) and cuts the graph after them, so
    /// neither the forward nor the backward pays autograd for layers that get no gradient.
    /// Packed copies of the later layers are dropped: their weights may change.
    pub fn freeze_prefix(&mut self, n: usize) {
        self.frozen_layers = n.min(self.weights.layers.len());
        if let Some(p) = &self.packed {
            let kept: Vec<PackedLayer> = p.iter().take(self.frozen_layers).cloned().collect();
            self.packed = (!kept.is_empty()).then(|| Arc::new(kept));
        }
    }

    /// Leading layers declared frozen by [`Llama::freeze_prefix`].
    pub fn frozen_prefix(&self) -> usize {
        self.frozen_layers
    }

    /// This model with other weights of the same shapes, keeping the frozen prefix and its
    /// packed kernels (cheap: tensors and packs are shared).
    pub fn with_weights(&self, weights: LlamaWeights) -> Self {
        Self { weights, ..self.clone() }
    }

    /// The packed kernel the fast forward runs, if any.
    pub fn packed_format(&self) -> Option<PackedFormat> {
        self.packed.as_ref().and_then(|p| p.first()).map(|l| l.qkv.format())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Total parameter count (embedding and LM head included).
    pub fn num_params(&self) -> usize {
        self.weights.named_tensors().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// `(cos, sin)` of shape `[B, T, head_dim/2]` for per-row positions.
    fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let inv = Tensor::new(self.inv_freq.as_slice(), &self.device)?;
        let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
        let freqs = pos.broadcast_mul(&inv.reshape((1, 1, inv.elem_count()))?)?;
        Ok((freqs.cos()?.to_dtype(self.dtype)?, freqs.sin()?.to_dtype(self.dtype)?))
    }

    /// Final-norm hidden states `[B, T, hidden]` for a padded batch.
    pub fn forward(&self, inputs: &BatchInputs, mode: ForwardMode) -> Result<Tensor> {
        self.forward_observed(inputs, mode, None)
    }

    /// Per layer, the largest |value| of each input channel of its four projections (q/k/v,
    /// o, gate/up, down, the `PackedLayer` order) over every row of `batches`, from the f32
    /// fast forward: the activation ranges the int8 kernel's smoothing is fitted to.
    pub fn input_ranges(&self, batches: &[BatchInputs]) -> Result<Vec<InputRanges>> {
        let unpacked = Self { packed: None, ..self.clone() };
        let mut ranges = vec![InputRanges::default(); self.weights.layers.len()];
        for inputs in batches {
            unpacked.forward_observed(inputs, ForwardMode::Fast, Some(&mut ranges))?;
        }
        Ok(ranges)
    }

    fn forward_observed(
        &self,
        inputs: &BatchInputs,
        mode: ForwardMode,
        ranges: Option<&mut [InputRanges]>,
    ) -> Result<Tensor> {
        let x = self.embed(inputs)?;
        let x = self.run_layers(x, inputs, 0..self.weights.layers.len(), mode, ranges)?;
        self.norm(&x, &self.weights.final_norm, mode)
    }

    /// The hidden states `[B, T, hidden]` after the embedding and the frozen prefix (see
    /// [`Llama::freeze_prefix`]), on the fast kernels and cut from the graph: what
    /// [`Llama::forward_from_prefix`] continues from. A token's states depend only on the
    /// tokens before it in its own row, so they can be kept across steps for texts that recur.
    pub fn prefix_states(&self, inputs: &BatchInputs) -> Result<Tensor> {
        let x = self.embed(inputs)?;
        let mode = ForwardMode::Differentiable;
        Ok(self.run_layers(x, inputs, 0..self.frozen_layers, mode, None)?.detach())
    }

    /// The differentiable forward (final-norm hidden states) from `prefix`, the
    /// [`Llama::prefix_states`] of `inputs` (rows may come from other batches: only the real
    /// tokens' states matter).
    pub fn forward_from_prefix(&self, prefix: &Tensor, inputs: &BatchInputs) -> Result<Tensor> {
        let mode = ForwardMode::Differentiable;
        let layers = self.frozen_layers..self.weights.layers.len();
        let x = self.run_layers(prefix.clone(), inputs, layers, mode, None)?;
        self.norm(&x, &self.weights.final_norm, mode)
    }

    /// The token embeddings `[B, T, hidden]` of a batch.
    fn embed(&self, inputs: &BatchInputs) -> Result<Tensor> {
        let (b, t) = inputs.ids.dims2()?;
        let x = self.weights.embed.index_select(&inputs.ids.flatten_all()?, 0)?;
        Ok(x.reshape((b, t, self.config.hidden_size))?)
    }

    /// Layers `layers` over `x`. In the differentiable forward the frozen prefix runs the fast
    /// kernels and the graph is cut after it.
    fn run_layers(
        &self,
        mut x: Tensor,
        inputs: &BatchInputs,
        layers: std::ops::Range<usize>,
        mode: ForwardMode,
        mut ranges: Option<&mut [InputRanges]>,
    ) -> Result<Tensor> {
        let t = inputs.ids.dim(1)?;
        let (cos, sin) = self.rope_tables(&inputs.positions)?;
        let frozen = if mode == ForwardMode::Differentiable { self.frozen_layers } else { 0 };
        // The packed layers' attention runs on the bf16 kernel and reads the mask as values.
        let packed_mask = match &self.packed {
            Some(_) if PackedAttention::available() && self.dtype == DType::F32 => {
                Some(Arc::new(AttentionMask::new(inputs.bias.flatten_all()?.to_vec1::<f32>()?, t)))
            }
            _ => None,
        };
        for i in layers {
            let layer = &self.weights.layers[i];
            let layer_mode = if i < frozen && self.dtype != DType::F64 {
                // candle's fused kernels have no f64 (used by gradient tests): those run the
                // composed ops, still cut from the graph below.
                ForwardMode::Fast
            } else {
                mode
            };
            let packed = match (layer_mode, &self.packed) {
                (ForwardMode::Fast, Some(p)) => p.get(i),
                _ => None,
            };
            let observe = ranges.as_deref_mut().and_then(|r| r.get_mut(i));
            let attention = AttentionInputs {
                bias: &inputs.bias,
                packed_mask: packed.and(packed_mask.as_ref()),
            };
            x = self.block(i, layer, packed, &x, &cos, &sin, attention, layer_mode, observe)?;
            if i + 1 == frozen {
                x = x.detach();
            }
        }
        Ok(x)
    }

    /// The LM head's `[vocab, hidden]` weights: its own, or the embedding where they are tied.
    pub fn lm_head(&self) -> &Tensor {
        self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed)
    }

    /// Whether the differentiable forward runs the fast training kernels (bf16 products,
    /// fused ops with their own backward; see [`Llama::enable_packed_kernel`]).
    pub fn fast_training(&self) -> bool {
        self.fast_training
    }

    /// Whether a step of `mode` on `x` runs the fast training kernels.
    fn fast_training_step(&self, mode: ForwardMode, x: &Tensor) -> bool {
        mode == ForwardMode::Differentiable
            && self.fast_training
            && x.dtype() == DType::F32
            && x.device().is_cpu()
    }

    /// RMSNorm of `x` by `w` for the forward `mode`.
    fn norm(&self, x: &Tensor, w: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        if self.fast_training_step(mode, x) {
            let eps = self.config.rms_norm_eps as f32;
            return Ok(x.contiguous()?.apply_op2(w, fused_grad::RmsNorm { eps })?);
        }
        rms_norm(x, w, self.config.rms_norm_eps, mode)
    }

    /// RoPE of `x [B, H, T, D]` for the forward `mode`.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        if self.fast_training_step(mode, x) {
            return Ok(x.contiguous()?.apply_op3(cos, sin, fused_grad::Rope)?);
        }
        rope(x, cos, sin, mode)
    }

    /// Attention of `q [B, H, T, D]` over `k`, `v [B, KV, T, D]` with candle's products, as
    /// `[B, T, H * D]`: the differentiable path, and the fast one without a packed kernel.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        scale: f64,
        mode: ForwardMode,
        (b, t): (usize, usize),
    ) -> Result<Tensor> {
        let (nh, nkv, hd) = (q.dim(1)?, k.dim(1)?, q.dim(3)?);
        // The query heads of one kv group are adjacent: stacking them as rows lets each kv head
        // serve its group in one matmul, with no repeated k/v copies.
        let rep = nh / nkv;
        let scores = q.reshape((b, nkv, rep * t, hd))?.matmul(&k.t()?)?;
        let f32_cpu = q.device().is_cpu() && q.dtype() == DType::F32;
        let probs = if mode == ForwardMode::Fast && f32_cpu {
            scores.apply_op2_no_bwd(bias, &MaskedSoftmax { scale: scale as f32 })?
        } else if self.fast_training_step(mode, q) {
            scores.apply_op2(bias, MaskedSoftmax { scale: scale as f32 })?
        } else {
            let scores = (scores.reshape((b, nh, t, t))? * scale)?.broadcast_add(bias)?;
            let probs = match mode {
                ForwardMode::Fast => candle_nn::ops::softmax_last_dim(&scores)?,
                ForwardMode::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
            };
            probs.reshape((b, nkv, rep * t, t))?
        };
        let attn = probs.matmul(&v.contiguous()?)?.reshape((b, nh, t, hd))?;
        Ok(attn.transpose(1, 2)?.reshape((b, t, nh * hd))?)
    }

    /// Logits of the (possibly tied) LM head for hidden states `[.., hidden]`, in f32.
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = hidden.to_dtype(self.dtype)?;
        Ok(linear(&h, self.lm_head())?.to_dtype(DType::F32)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        index: usize,
        w: &LayerWeights,
        packed: Option<&PackedLayer>,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attention: AttentionInputs,
        mode: ForwardMode,
        mut observe: Option<&mut InputRanges>,
    ) -> Result<Tensor> {
        let bias = attention.bias;
        let cfg = &self.config;
        let mut record = |proj: usize, input: &Tensor| -> Result<()> {
            match observe.as_deref_mut() {
                Some(r) => r.record(proj, input),
                None => Ok(()),
            }
        };
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim());
        // `x·Wᵀ`, plus the LoRA branch of projection `proj` when adapters are attached.
        let proj = |h: &Tensor, weight: &Tensor, proj: usize| -> Result<Tensor> {
            let y = if self.fast_training_step(mode, h) {
                bf16_training_linear(h, weight)?
            } else {
                linear(h, weight)?
            };
            match &self.lora {
                Some(l) => match l.apply(index, proj, h)? {
                    Some(extra) => Ok((y + extra)?),
                    None => Ok(y),
                },
                None => Ok(y),
            }
        };

        let h = self.norm(x, &w.attn_norm, mode)?;
        record(0, &h)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let attn = match (packed, attention.packed_mask) {
            (Some(p), Some(mask)) => {
                // RoPE, scores, softmax and `P V` in one op on the fused projection's output.
                let op = PackedAttention {
                    mask: mask.clone(),
                    heads: nh,
                    kv_heads: nkv,
                    scale: scale as f32,
                };
                packed_linear(&h, &p.qkv)?.apply_op3_no_bwd(cos, sin, &op)?
            }
            _ => {
                let (q, k, v) = match packed {
                    Some(p) => {
                        let qkv = packed_linear(&h, &p.qkv)?;
                        let kvd = nkv * hd;
                        (
                            qkv.narrow(D::Minus1, 0, nh * hd)?,
                            qkv.narrow(D::Minus1, nh * hd, kvd)?,
                            qkv.narrow(D::Minus1, nh * hd + kvd, kvd)?,
                        )
                    }
                    None => (proj(&h, &w.q, 0)?, proj(&h, &w.k, 1)?, proj(&h, &w.v, 2)?),
                };
                let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
                let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
                let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
                let q = self.rotate(&q, cos, sin, mode)?;
                let k = self.rotate(&k, cos, sin, mode)?;
                self.attention(&q, &k, &v, bias, scale, mode, (b, t))?
            }
        };
        record(1, &attn)?;
        let x = match packed {
            Some(p) => (x + packed_linear(&attn, &p.o)?)?,
            None => (x + proj(&attn, &w.o, 3)?)?,
        };

        let h = self.norm(&x, &w.ffn_norm, mode)?;
        record(2, &h)?;
        if let Some(p) = packed {
            // Fast mode on CPU: SwiGLU in the bf16 kernel's epilogue, or one pass over the
            // fused gate/up output.
            let act = match p.gate_up.applies_swiglu() {
                true => packed_linear(&h, &p.gate_up)?,
                false => packed_linear(&h, &p.gate_up)?.apply_op1_no_bwd(&SiluMul)?,
            };
            return Ok((x + packed_linear(&act, &p.down)?)?);
        }
        let (gate, up) = (proj(&h, &w.gate, 4)?, proj(&h, &w.up, 5)?);
        let act = if self.fast_training_step(mode, &gate) {
            gate.contiguous()?.apply_op2(&up.contiguous()?, fused_grad::SwiGlu)?
        } else {
            let act = match mode {
                ForwardMode::Fast => candle_nn::Activation::Silu.forward(&gate)?,
                // x * sigmoid(x) from basic ops, so the backward pass is certain to exist.
                ForwardMode::Differentiable => (&gate / (gate.neg()?.exp()? + 1.0)?)?,
            };
            (act * up)?
        };
        record(3, &act)?;
        let mlp = proj(&act, &w.down, 6)?;
        Ok((x + mlp)?)
    }
}

/// What a block's attention reads besides q, k, v.
#[derive(Clone, Copy)]
struct AttentionInputs<'a> {
    /// `[B, 1, T, T]` additive mask.
    bias: &'a Tensor,
    /// The same mask as values, where the layer's attention runs on the bf16 kernel.
    packed_mask: Option<&'a Arc<AttentionMask>>,
}

/// `x @ W.T` through the packed kernel.
fn packed_linear(x: &Tensor, w: &Arc<PackedWeight>) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&PackedLinear(w.clone()))?)
}

/// [`linear`] with its forward and backward products on the bf16 kernel.
fn bf16_training_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    on_rows(x, w, |rows| Ok(rows.contiguous()?.apply_op2(w, Bf16TrainLinear)?))
}

/// `x @ w.T` with the batch dims flattened so the matmul is one large GEMM.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    on_rows(x, w, |rows| Ok(rows.matmul(&w.t()?)?))
}

/// `product` of `x` flattened to `[rows, in]` with `w [out, in]`, reshaped back to `[.., out]`.
fn on_rows(
    x: &Tensor,
    w: &Tensor,
    product: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().unwrap_or(&0);
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let out = product(&x.reshape((rows, in_dim))?)?;
    let mut out_dims = dims;
    let last = out_dims.len() - 1;
    out_dims[last] = w.dim(0)?;
    Ok(out.reshape(out_dims)?)
}

/// RMSNorm computed in f32 (bf16 squares lose too much), returned in the input dtype.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: ForwardMode) -> Result<Tensor> {
    match mode {
        ForwardMode::Fast => Ok(candle_nn::ops::rms_norm(x, w, eps as f32)?),
        ForwardMode::Differentiable => {
            let dtype = x.dtype();
            let xf = x.to_dtype(DType::F32)?;
            let inv = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
            let normed = xf.broadcast_mul(&inv)?.to_dtype(dtype)?;
            Ok(normed.broadcast_mul(w)?)
        }
    }
}

/// "Rotate half" RoPE for `x: [B, H, T, D]` with per-row tables `[B, T, D/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: ForwardMode) -> Result<Tensor> {
    match mode {
        ForwardMode::Fast => Ok(candle_nn::rotary_emb::rope(x, cos, sin)?),
        ForwardMode::Differentiable => {
            let half = x.dim(D::Minus1)? / 2;
            let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Var;

    /// A tiny random model for unit tests (vocab 64, 2 layers, GQA 4/2 heads).
    pub fn tiny(seed: u64) -> Llama {
        let cfg = LlamaConfig {
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vocab_size: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 256,
            tie_word_embeddings: true,
        };
        crate::encoder::testing::random_llama(&cfg, seed, &Device::Cpu).unwrap()
    }

    fn batch(ids: &[Vec<u32>]) -> BatchInputs {
        let positions: Vec<Vec<u32>> = ids.iter().map(|r| (0..r.len() as u32).collect()).collect();
        let valid: Vec<Vec<bool>> = ids.iter().map(|r| vec![true; r.len()]).collect();
        BatchInputs::causal(ids, &positions, &valid, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn fast_and_differentiable_forwards_agree() {
        let m = tiny(1);
        let inputs = batch(&[vec![1, 5, 9, 3, 7, 2], vec![4, 4, 8, 1, 0, 6]]);
        let a = m.forward(&inputs, ForwardMode::Fast).unwrap();
        let b = m.forward(&inputs, ForwardMode::Differentiable).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "max abs diff {diff}");
    }

    #[test]
    fn packed_kernel_forwards_stay_close_to_f32() {
        for format in [PackedFormat::Bf16, PackedFormat::Int8] {
            let mut m = tiny(4);
            let inputs = batch(&[vec![1, 5, 9, 3, 7, 2, 11, 13], vec![4, 4, 8, 1, 0, 6, 2, 2]]);
            let a = m.forward(&inputs, ForwardMode::Fast).unwrap();
            if !m.enable_packed_kernel(format, std::slice::from_ref(&inputs)).unwrap() {
                eprintln!("SKIPPED: CPU lacks the {} kernel's instructions", format.dtype());
                continue;
            }
            assert_eq!(m.packed_format(), Some(format));
            let b = m.forward(&inputs, ForwardMode::Fast).unwrap();
            let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
            let cosine = |x: &Tensor, y: &Tensor| {
                let dot = |p: &Tensor, q: &Tensor| {
                    (p * q).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
                };
                dot(x, y) / (dot(x, x).sqrt() * dot(y, y).sqrt())
            };
            let cos = cosine(&a, &b);
            assert!(cos > 0.999, "{}: cosine {cos}", format.dtype());
            let moved = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(moved.to_scalar::<f32>().unwrap() > 0.0, "{}: kernel not run", format.dtype());
            // The differentiable path keeps the f32 weights (training changes them) and runs
            // its products on the bf16 kernel.
            assert!(m.fast_training());
            let c = m.forward(&inputs, ForwardMode::Differentiable).unwrap().flatten_all().unwrap();
            let cos = cosine(&a, &c);
            assert!(cos > 0.999, "{}: differentiable cosine {cos}", format.dtype());
        }
    }

    /// After `freeze_prefix(1)`, changing layer 1's weights must change the fast forward: a
    /// stale bf16 pack of a trainable layer would silently keep the old weights.
    #[test]
    fn freeze_prefix_keeps_packs_of_frozen_layers_only() {
        let mut m = tiny(5);
        if !m.enable_packed_kernel(PackedFormat::Bf16, &[]).unwrap() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        m.freeze_prefix(1);
        assert_eq!(m.frozen_prefix(), 1);
        assert!(m.packed_format().is_some(), "the frozen layer keeps its pack");
        let mut w = m.weights.clone();
        w.layers[1].down = (&w.layers[1].down * 3.0).unwrap();
        let changed = m.with_weights(w.clone());
        let reference = Llama::new(m.config.clone(), w).unwrap();
        let inputs = batch(&[vec![1, 5, 9, 3, 7, 2, 11, 13]]);
        let a = changed.forward(&inputs, ForwardMode::Fast).unwrap();
        let b = reference.forward(&inputs, ForwardMode::Fast).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 0.05, "layer 1 ran stale packed weights: max diff {d}");
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let m = tiny(2);
        let a = m.forward(&batch(&[vec![1, 2, 3, 4]]), ForwardMode::Fast).unwrap();
        let b = m.forward(&batch(&[vec![1, 2, 3, 9]]), ForwardMode::Fast).unwrap();
        let first3 = |t: &Tensor| t.narrow(1, 0, 3).unwrap();
        let d = (first3(&a) - first3(&b)).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let last = |t: &Tensor| t.narrow(1, 3, 1).unwrap();
        let d = (last(&a) - last(&b)).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-4, "the changed token must matter");
    }

    /// Gradients must reach every weight through the differentiable path (the fused kernels
    /// would silently stop them).
    #[test]
    fn gradients_reach_every_weight() {
        let mut m = tiny(3);
        let mut vars = Vec::new();
        for (_, t) in m.weights.named_tensors_mut() {
            let v = Var::from_tensor(t).unwrap();
            *t = v.as_tensor().clone();
            vars.push(v);
        }
        let h = m.forward(&batch(&[vec![1, 2, 3, 4, 5]]), ForwardMode::Differentiable).unwrap();
        let loss = m.lm_logits(&h).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        for v in &vars {
            let g = grads.get(v.as_tensor()).expect("gradient for every weight");
            let n = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(n > 0.0);
        }
    }
}
