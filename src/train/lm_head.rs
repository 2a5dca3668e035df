//! The adaptation's next-token loss over the LM head, computed in row chunks on the bf16
//! kernel.
//!
//! Why: the composed path (`lm_logits` then `log_softmax`) materialises `[N, V]` f32 logits
//! (200 MB for 8 x 128 passage tokens with SmolLM2's 49,152-token vocabulary), several
//! same-sized intermediates in its backward, and a gradient for the tied embedding even when it
//! is frozen (candle's matmul backward computes both operands'). Here [`CHUNK_ROWS`] rows of
//! logits exist at a time, the loss and its gradient come from one pass over each row
//! ([`cross_entropy_rows`]), and the gradient with respect to the hidden states is finished in
//! the forward, so the backward is one scaling.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, TensorId};

use crate::encoder::fused::{contiguous_f32, cross_entropy_rows};
use crate::encoder::gemm::PackedBf16;
use crate::encoder::model::Llama;
use crate::error::Result;

/// Logit rows alive at a time: `[64, 49152]` f32 is 12.6 MB.
pub const CHUNK_ROWS: usize = 64;

/// Whether [`chunked_lm_losses`] applies: the fast training kernels are on and the LM head
/// gets no gradient (it is the frozen embedding or a frozen head).
pub fn chunked_lm_loss_applies(model: &Llama, hidden: &Tensor) -> bool {
    model.fast_training() && hidden.device().is_cpu() && !model.lm_head().track_op()
}

/// Per-row cross-entropy `logsumexp(h W.T) - (h W.T)[target]` of `hidden [N, H]` against
/// `targets` under the frozen LM head, as an `[N]` tensor whose backward reaches `hidden`.
/// Callers check [`chunked_lm_loss_applies`].
pub fn chunked_lm_losses(model: &Llama, hidden: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let head = packed_head(model.lm_head())?;
    let op = ChunkedLmLoss { head, targets: targets.to_vec(), unit_grad: Mutex::new(None) };
    Ok(hidden.contiguous()?.apply_op1(op)?)
}

/// The frozen head packed both ways: `W` for the logits, `W.T` for the hidden-state gradient.
struct HeadPacks {
    head: PackedBf16,
    head_t: PackedBf16,
}

/// The packs of the last head seen, by tensor id: the head is frozen here, so every step of a
/// run reuses them (packing 2 x 28 M weights took ~10 % of an adaptation step).
static PACKED_HEAD: Mutex<Option<(TensorId, Arc<HeadPacks>)>> = Mutex::new(None);

fn packed_head(head: &Tensor) -> Result<Arc<HeadPacks>> {
    let mut cache = PACKED_HEAD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((id, packs)) = cache.as_ref() {
        if *id == head.id() {
            return Ok(packs.clone());
        }
    }
    let (vocab, dim) = head.dims2()?;
    let w = head.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let packs = Arc::new(HeadPacks {
        head: PackedBf16::pack(&w, vocab, dim),
        head_t: PackedBf16::pack_transposed(&w, vocab, dim),
    });
    *cache = Some((head.id(), packs.clone()));
    Ok(packs)
}

/// candle op on `hidden [N, H]`; see the module docs.
struct ChunkedLmLoss {
    head: Arc<HeadPacks>,
    targets: Vec<u32>,
    /// `d loss_r / d hidden_r`, `[N, H]`, filled by the forward.
    unit_grad: Mutex<Option<Vec<f32>>>,
}

impl CustomOp1 for ChunkedLmLoss {
    fn name(&self) -> &'static str {
        "chunked-lm-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = contiguous_f32(s, l, self.name())?;
        let (n, dim) = l.shape().dims2()?;
        let (vocab, head_dim) = (self.head.head.out_dim(), self.head.head.in_dim());
        if dim != head_dim || n != self.targets.len() {
            candle_core::bail!(
                "chunked-lm-loss: hidden {:?}, head [{vocab}, {head_dim}], {} targets",
                l.shape(),
                self.targets.len()
            )
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("chunked-lm-loss: target {t} beyond the vocabulary ({vocab})")
        }
        // Logits are h @ W.T; the hidden-state gradient is (softmax - onehot) @ W.
        let mut losses = Vec::with_capacity(n);
        let mut unit_grad = Vec::with_capacity(n * dim);
        for r0 in (0..n).step_by(CHUNK_ROWS) {
            let rows = CHUNK_ROWS.min(n - r0);
            let mut logits = self.head.head.matmul(&h[r0 * dim..(r0 + rows) * dim], rows);
            losses.extend(cross_entropy_rows(&mut logits, vocab, &self.targets[r0..r0 + rows]));
            unit_grad.extend(self.head.head_t.matmul(&logits, rows));
        }
        *self.unit_grad.lock().unwrap_or_else(|e| e.into_inner()) = Some(unit_grad);
        Ok((CpuStorage::F32(losses), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        _losses: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let unit =
            self.unit_grad.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| {
                candle_core::Error::Msg("chunked-lm-loss: backward before forward".into())
            })?;
        let unit = Tensor::from_vec(unit, hidden.shape(), hidden.device())?;
        Ok(Some(unit.broadcast_mul(&grad.unsqueeze(1)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::gemm::PackedFormat;
    use crate::encoder::testing::{random_llama, tiny_config};
    use crate::train::loss::cross_entropy;
    use candle_core::{Device, Var};

    /// Per-row losses and the hidden states' gradient of the chunked op against the composed
    /// path (full logits, `log_softmax`), over 150 rows: two full chunks and a partial one.
    #[test]
    fn chunked_loss_matches_full_logits() {
        let mut model = random_llama(&tiny_config(), 5, &Device::Cpu).unwrap();
        let reference = model.clone();
        if !model.enable_packed_kernel(PackedFormat::Bf16, &[]).unwrap() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        let n = 2 * CHUNK_ROWS + 22;
        // Seeded values in [-2, 2): a fixed case, so the tolerances below are checked margins.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let dim = model.config.hidden_size;
        let values: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let hidden = Var::from_vec(values, (n, dim), &Device::Cpu).unwrap();
        assert!(chunked_lm_loss_applies(&model, hidden.as_tensor()));
        assert!(
            !chunked_lm_loss_applies(&reference, hidden.as_tensor()),
            "f32 keeps the reference"
        );
        let vocab = model.config.vocab_size as u32;
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % vocab).collect();
        let fast = chunked_lm_losses(&model, hidden.as_tensor(), &targets).unwrap();
        let logits = reference.lm_logits(hidden.as_tensor()).unwrap();
        let target_t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        let slow_rows = candle_nn::ops::log_softmax(&logits, 1)
            .unwrap()
            .gather(&target_t.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        let (f, s) = (fast.to_vec1::<f32>().unwrap(), slow_rows.to_vec1::<f32>().unwrap());
        for (i, (a, b)) in f.iter().zip(&s).enumerate() {
            // bf16 logits: ~0.4 % per product, summed over the hidden width.
            assert!((a - b).abs() < 0.02 * (1.0 + b.abs()), "row {i}: {a} vs {b}");
        }
        let g_fast = fast.mean_all().unwrap().backward().unwrap();
        let g_slow = cross_entropy(&logits, &target_t).unwrap().backward().unwrap();
        let (a, b) = (g_fast.get(&hidden).unwrap(), g_slow.get(&hidden).unwrap());
        let norm = |t: &Tensor| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let error = (norm(&(a - b).unwrap()) / norm(b)).sqrt();
        assert!(error < 1e-2, "hidden gradient off by {error}");
    }
}
