//! Fused CPU kernels for the inference forward's element-wise tail: SwiGLU (`silu(g) * u`)
//! and the attention's scaled, masked softmax; and for training, the cross-entropy of logit
//! rows with its gradient in the same pass.
//!
//! Why: candle runs each of `scale`, `+ mask`, `softmax` and `silu`, `*` as a separate pass with
//! its own allocation, and calls the scalar libm `expf` per element. A profile of the bf16
//! forward put `expf` at ~7% and element-wise passes at ~8% of the time. Here each is one pass
//! with an exp that the compiler vectorises (AVX-512 where available). f32 only, no backward:
//! [`super::model::ForwardMode::Fast`] uses them; training keeps candle's ops.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// `e^x` to ~2 ulp over the f32 range, written without branches or calls so loops over it
/// vectorise. Inputs below -87.3 give 0 (masked attention scores), above 88.7 give +inf.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and a remainder (Cody-Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5 * 2^23 trick (exact for |n| < 2^22).
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let p = p * r * r + r + 1.0;
    // 2^n by building the exponent bits; n + 127 is in [1, 254] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Sum with 16 independent lanes: a plain `iter().sum()` is a serial dependency chain that
/// the compiler may not reorder (strict floating point), so it would not vectorise.
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

#[inline(always)]
fn silu_mul_row(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        o.write(g / (1.0 + exp(-g)) * u);
    }
}

/// In place over each row: `softmax(scale * s + bias)`, every loop free of carried
/// dependencies except the lane-split reductions.
#[inline(always)]
fn masked_softmax_row(s: &mut [f32], bias: &[f32], scale: f32) {
    for (v, &b) in s.iter_mut().zip(bias) {
        *v = *v * scale + b;
    }
    let max = lanes_max(s);
    for v in s.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / lanes_sum(s);
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// One `[R, T]` block of scores with its `[T0, T]` bias.
#[inline(always)]
fn masked_softmax_block(block: &mut [f32], bias: &[f32], t: usize, t0: usize, scale: f32) {
    for (i, row) in block.chunks_mut(t).enumerate() {
        let q = i % t0;
        masked_softmax_row(row, &bias[q * t..(q + 1) * t], scale);
    }
}

/// One row of logits: returns `logsumexp(row) - row[target]` and overwrites the row with
/// its gradient, `softmax(row) - onehot(target)`.
#[inline(always)]
fn cross_entropy_row(row: &mut [f32], target: usize) -> f32 {
    let picked = row[target];
    let max = lanes_max(row);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum = lanes_sum(row);
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
    row[target] -= 1.0;
    max + sum.ln() - picked
}

/// The same loops compiled for AVX-512 (16 lanes), chosen at run time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::mem::MaybeUninit;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn cross_entropy_row(row: &mut [f32], target: usize) -> f32 {
        super::cross_entropy_row(row, target)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul_row(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>]) {
        super::silu_mul_row(gate, up, out)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn masked_softmax_strided(
        block: &mut [f32],
        n: usize,
        bias: &[f32],
        bias_stride: usize,
        scale: f32,
    ) {
        super::masked_softmax_strided_rows(block, n, bias, bias_stride, scale)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn masked_softmax_block(
        block: &mut [f32],
        bias: &[f32],
        t: usize,
        t0: usize,
        scale: f32,
    ) {
        super::masked_softmax_block(block, bias, t, t0, scale)
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn silu_mul_row_best(gate: &[f32], up: &[f32], out: &mut [MaybeUninit<f32>], wide: bool) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // Safety: `wide` is only true when AVX-512F was detected.
        return unsafe { avx512::silu_mul_row(gate, up, out) };
    }
    let _ = wide;
    silu_mul_row(gate, up, out)
}

/// In place over the `[R, n]` rows of `block`: `softmax(scale * s + bias)`, row `r` adding
/// `bias[r * bias_stride..][..n]`; on the calling thread.
pub fn masked_softmax_strided(
    block: &mut [f32],
    n: usize,
    bias: &[f32],
    bias_stride: usize,
    scale: f32,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // Safety: AVX-512F was detected.
        return unsafe { avx512::masked_softmax_strided(block, n, bias, bias_stride, scale) };
    }
    masked_softmax_strided_rows(block, n, bias, bias_stride, scale)
}

#[inline(always)]
fn masked_softmax_strided_rows(
    block: &mut [f32],
    n: usize,
    bias: &[f32],
    bias_stride: usize,
    scale: f32,
) {
    for (r, row) in block.chunks_mut(n).enumerate() {
        masked_softmax_row(row, &bias[r * bias_stride..][..n], scale);
    }
}

fn masked_softmax_block_best(
    block: &mut [f32],
    bias: &[f32],
    t: usize,
    t0: usize,
    scale: f32,
    wide: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // Safety: `wide` is only true when AVX-512F was detected.
        return unsafe { avx512::masked_softmax_block(block, bias, t, t0, scale) };
    }
    let _ = wide;
    masked_softmax_block(block, bias, t, t0, scale)
}

/// Cross-entropy of each `[.., width]` row of `logits` against its target (a column index
/// below `width`), in parallel over rows. Each row is overwritten with the loss's gradient
/// with respect to it, `softmax(row) - onehot(target)`: the backward needs nothing else.
pub fn cross_entropy_rows(logits: &mut [f32], width: usize, targets: &[u32]) -> Vec<f32> {
    assert_eq!(logits.len(), width * targets.len(), "logits for every target");
    let wide = has_avx512();
    logits
        .par_chunks_mut(width.max(1))
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let t = t as usize;
            assert!(t < width, "target {t} beyond {width} logits");
            #[cfg(target_arch = "x86_64")]
            if wide {
                // Safety: `wide` is only true when AVX-512F was detected.
                return unsafe { avx512::cross_entropy_row(row, t) };
            }
            let _ = wide;
            cross_entropy_row(row, t)
        })
        .collect()
}

/// An f32 tensor's values in row-major order, whatever its layout (for backward passes, which
/// receive tensors).
pub(crate) fn f32_values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// `silu(gate) * up` element-wise into `out`, vectorised where the CPU allows.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    // Safety: MaybeUninit<f32> has f32's layout, and only initialised f32s are written.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    silu_mul_row_best(gate, up, out, has_avx512())
}

/// The f32 values of a contiguous storage, or an error naming the op `what`.
pub(crate) fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what} expects f32") };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} expects a contiguous input")
    };
    Ok(&v[start..end])
}

/// `[.., 2I]` gate-then-up rows (the fused gate/up projection) to `[.., I]` SwiGLU outputs.
pub struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let dims = l.shape().dims();
        let width = *dims.last().unwrap_or(&0);
        if !width.is_multiple_of(2) {
            candle_core::bail!("fused-silu-mul: odd last dimension {width}")
        }
        let half = width / 2;
        let len = x.len() / 2;
        // Written in spare capacity: a zero-filled output is a wasted pass.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let wide = has_avx512();
        if half > 0 {
            out.spare_capacity_mut()[..len]
                .par_chunks_mut(half)
                .zip(x.par_chunks(width))
                .for_each(|(o, row)| silu_mul_row_best(&row[..half], &row[half..], o, wide));
        }
        // Safety: every row of `half` values was written above.
        unsafe { out.set_len(len) };
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// `softmax(scale * scores + bias)` over the last dimension. `scores` is `[B, H, R, T]` and
/// `bias` `[B, 1, T0, T]` with `R` a multiple of `T0`: row `r` uses bias row `r % T0`, so
/// grouped-query scores (`R = n_rep * T0`, heads of one kv group stacked) need no broadcast copy.
pub struct MaskedSoftmax {
    pub scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let scores = contiguous_f32(s1, l1, self.name())?;
        let bias = contiguous_f32(s2, l2, self.name())?;
        let (b, h, r, t) = l1.shape().dims4()?;
        let (bb, one, t0, bt) = l2.shape().dims4()?;
        if bb != b || one != 1 || bt != t || t0 == 0 || !r.is_multiple_of(t0) {
            candle_core::bail!(
                "fused-masked-softmax: scores {:?} and bias {:?} do not fit",
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = scores.to_vec();
        let scale = self.scale;
        let wide = has_avx512();
        if t > 0 {
            out.par_chunks_mut(r * t).enumerate().for_each(|(bh, block)| {
                let bias_b = &bias[(bh / h) * t0 * t..(bh / h + 1) * t0 * t];
                masked_softmax_block_best(block, bias_b, t, t0, scale, wide);
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// `d scores = scale * p * (g - sum(g * p))` per row; the mask gets no gradient.
    fn bwd(
        &self,
        scores: &Tensor,
        _bias: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let t = scores.dim(D::Minus1)?;
        let (p, g) = (f32_values(probs)?, f32_values(grad)?);
        let mut ds = vec![0f32; p.len()];
        if t > 0 {
            ds.par_chunks_mut(t).zip(p.par_chunks(t).zip(g.par_chunks(t))).for_each(
                |(d, (p, g))| {
                    let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                    for ((d, &p), &g) in d.iter_mut().zip(p).zip(g) {
                        *d = self.scale * p * (g - dot);
                    }
                },
            );
        }
        Ok((Some(Tensor::from_vec(ds, scores.shape(), scores.device())?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_matches_libm_over_the_range_used() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 1e-6, "max relative error {worst}");
        assert!(exp(-1e9) < 1e-37, "masked scores must vanish");
        assert!((exp(0.0) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn silu_mul_matches_candle() {
        let dev = Device::Cpu;
        let gu = (Tensor::randn(0f32, 3.0, (3, 5, 2 * 24), &dev).unwrap()).contiguous().unwrap();
        let got = gu.apply_op1_no_bwd(&SiluMul).unwrap();
        let g = gu.narrow(D::Minus1, 0, 24).unwrap();
        let u = gu.narrow(D::Minus1, 24, 24).unwrap();
        let want = (candle_nn::ops::silu(&g).unwrap() * u).unwrap();
        assert_eq!(got.dims(), want.dims());
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
    }

    /// The backward against candle's composed softmax on the same grouped layout.
    #[test]
    fn masked_softmax_gradient_matches_candle() {
        let dev = Device::Cpu;
        let (b, h, rep, t) = (2, 2, 3, 5);
        let scores = candle_core::Var::randn(0f32, 2.0, (b, h, rep * t, t), &dev).unwrap();
        let mut bias = vec![0f32; b * t * t];
        for (i, v) in bias.iter_mut().enumerate() {
            if i % t > (i / t) % t {
                *v = super::super::model::MASK_VALUE;
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, t), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (b, h, rep * t, t), &dev).unwrap();
        let fused = scores.apply_op2(&bias, MaskedSoftmax { scale: 0.7 }).unwrap();
        let composed = candle_nn::ops::softmax(
            &(scores.reshape((b, h * rep, t, t)).unwrap() * 0.7)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap(),
            D::Minus1,
        )
        .unwrap()
        .reshape((b, h, rep * t, t))
        .unwrap();
        let grad = |y: Tensor| {
            let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(&scores).unwrap().clone()
        };
        let d = (grad(fused) - grad(composed)).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }

    /// Grouped rows (R = 3 * T0) reuse bias row r % T0, matching an explicit broadcast.
    #[test]
    fn masked_softmax_matches_candle_with_grouped_rows() {
        let dev = Device::Cpu;
        let (b, h, rep, t) = (2, 2, 3, 7);
        let scores = Tensor::randn(0f32, 4.0, (b, h, rep * t, t), &dev).unwrap();
        let mut bias = vec![0f32; b * t * t];
        for (i, v) in bias.iter_mut().enumerate() {
            let (q, k) = ((i / t) % t, i % t);
            if k > q || (i / (t * t) == 1 && k == 0) {
                *v = super::super::model::MASK_VALUE;
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, t), &dev).unwrap();
        let got = scores.apply_op2_no_bwd(&bias, &MaskedSoftmax { scale: 0.3 }).unwrap();
        let per_head = scores.reshape((b, h * rep, t, t)).unwrap();
        let want = candle_nn::ops::softmax_last_dim(
            &(per_head * 0.3).unwrap().broadcast_add(&bias).unwrap(),
        )
        .unwrap()
        .reshape((b, h, rep * t, t))
        .unwrap();
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6, "{d}");
    }
}
