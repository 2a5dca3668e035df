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

/// Inputs of [`exp`] are clamped to this range: below it e^x is 0 (masked attention scores),
/// above it +inf.
pub(crate) const EXP_RANGE: (f32, f32) = (-87.3, 88.7);
/// ln 2 split in a part exact in f32 and a remainder (Cody-Waite), for [`exp`].
pub(crate) const LN2_HI_LO: (f32, f32) = (0.693_359_4, -2.121_944_4e-4);
/// `1.5 * 2^23`: adding and subtracting it rounds to the nearest integer (|n| < 2^22).
pub(crate) const ROUNDING: f32 = 12_582_912.0;
/// Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf coefficients), highest degree
/// first: Horner over these, then `p r^2 + r + 1`.
pub(crate) const EXP_POLYNOMIAL: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];

/// `e^x` to ~2 ulp over the f32 range, written without branches or calls so loops over it
/// vectorise. Inputs below -87.3 give 0 (masked attention scores), above 88.7 give +inf. The
/// bf16 kernel's SwiGLU epilogue runs the same operations on 16 lanes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_RANGE.0, EXP_RANGE.1);
    let n = (x * std::f32::consts::LOG2_E + ROUNDING) - ROUNDING;
    let r = x - n * LN2_HI_LO.0 - n * LN2_HI_LO.1;
    let mut p = EXP_POLYNOMIAL[0];
    for c in &EXP_POLYNOMIAL[1..] {
        p = p * r + c;
    }
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

/// "Rotate half" RoPE of one head row from element `from` on: `[x1 c - x2 s, x2 c + x1 s]`
/// for its two halves, each product rounded before the sum (as candle's RoPE).
#[inline(always)]
fn rope_row_from(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32], from: usize) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in from..half {
        o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        o2[i] = x2[i] * cos[i] + x1[i] * sin[i];
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

    /// [`super::rope_row`], 16 pairs per step.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let half = x.len() / 2;
        assert!(cos.len() >= half && sin.len() >= half && out.len() >= 2 * half, "rope row");
        let (x1, x2) = x.split_at(half);
        let mut done = 0;
        while done + 16 <= half {
            // Safety: every access is below `half` (asserted above).
            let at = |v: &[f32]| unsafe { _mm512_loadu_ps(v.as_ptr().add(done)) };
            let (a, b, c, s) = (at(x1), at(x2), at(cos), at(sin));
            let (ac, bs) = (_mm512_mul_ps(a, c), _mm512_mul_ps(b, s));
            let (bc, as_) = (_mm512_mul_ps(b, c), _mm512_mul_ps(a, s));
            let o = out.as_mut_ptr().add(done);
            _mm512_storeu_ps(o, _mm512_sub_ps(ac, bs));
            _mm512_storeu_ps(o.add(half), _mm512_add_ps(bc, as_));
            done += 16;
        }
        super::rope_row_from(x, cos, sin, out, done)
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

/// "Rotate half" RoPE of one head row `x` (`D` values) by its angles' `cos` and `sin` (`D / 2`
/// each) into `out`; AVX-512 where the CPU has it, with the same bits.
pub(crate) fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // Safety: AVX-512F was detected.
        return unsafe { avx512::rope_row(x, cos, sin, out) };
    }
    rope_row_from(x, cos, sin, out, 0)
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
        if t > 0 {
            out.par_chunks_mut(r * t).enumerate().for_each(|(bh, block)| {
                let bias_b = &bias[(bh / h) * t0 * t..(bh / h + 1) * t0 * t];
                // Each of the block's R / T0 stacked heads reads the same T0 bias rows.
                for head in block.chunks_mut(t0 * t) {
                    masked_softmax_strided(head, t, bias_b, t, self.scale);
                }
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
