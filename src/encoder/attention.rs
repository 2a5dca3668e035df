//! Grouped-query attention of the fast forward, one (sequence, kv head) per task: scores
//! `Q_g K.T` for the group's query heads stacked as rows (f32), the scaled masked softmax in
//! place, then `P V` on the bf16 kernel, written straight into the `[B, T, heads * D]` layout
//! the output projection reads.
//!
//! Why: candle's batched f32 matmuls for these small products, the transposes around them
//! and their zero-filled outputs were ~15 % of a bf16 forward; the products themselves are
//! ~5 % of its multiply-adds. The scores stay f32: in bf16 they moved the shipped encoder's
//! dense nDCG@10 on Cranfield by -0.004 (p 0.01; docs/results.md); `P V` in bf16 did not. No
//! backward: inference and frozen layers only.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::fused::{contiguous_f32, masked_softmax_rows};
use super::gemm::{PackedBf16, PackedFormat};

/// candle op on `(q [B, H, T, D], k [B, KV, T, D], v [B, KV, T, D])`, all contiguous f32,
/// returning `[B, T, H * D]`.
pub struct Bf16Attention {
    /// `[B, T, T]` additive mask (0 where query `i` may see key `j`).
    pub bias: Arc<Vec<f32>>,
    /// Multiplies the scores before the mask (`1 / sqrt(D)`).
    pub scale: f32,
}

impl Bf16Attention {
    /// Whether this CPU runs the op.
    pub fn available() -> bool {
        PackedFormat::Bf16.available()
    }
}

impl CustomOp3 for Bf16Attention {
    fn name(&self) -> &'static str {
        "bf16-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (q, k, v) = (
            contiguous_f32(s1, l1, name)?,
            contiguous_f32(s2, l2, name)?,
            contiguous_f32(s3, l3, name)?,
        );
        let (b, nh, t, d) = l1.shape().dims4()?;
        let (kb, nkv, kt, kd) = l2.shape().dims4()?;
        if (kb, kt, kd) != (b, t, d)
            || l3.shape() != l2.shape()
            || nkv == 0
            || nh % nkv != 0
            || self.bias.len() != b * t * t
        {
            candle_core::bail!(
                "bf16-attention: q {:?}, k {:?}, v {:?}, bias of {}",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.bias.len()
            )
        }
        if !Bf16Attention::available() {
            candle_core::bail!("bf16-attention: this CPU lacks AVX-512 BF16")
        }
        let rep = nh / nkv;
        let (head, group_rows) = (t * d, rep * t);
        // One task per (sequence, kv head): its query heads' rows are adjacent in q.
        let groups: Vec<Vec<f32>> = (0..b * nkv)
            .into_par_iter()
            .map(|u| {
                let (bi, g) = (u / nkv, u % nkv);
                let keys = &k[u * head..(u + 1) * head];
                let values = PackedBf16::pack_transposed(&v[u * head..(u + 1) * head], t, d);
                let queries = &q[(bi * nh + g * rep) * head..(bi * nh + (g + 1) * rep) * head];
                let mut scores = vec![0f32; group_rows * t];
                // Scores in f32 (see the module docs); the gemm crate on this thread alone.
                // Safety: row-major [R, D] queries, [T, D] keys read as [D, T], [R, T] output,
                // all of these lengths.
                unsafe {
                    gemm::gemm(
                        group_rows,
                        t,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        t as isize,
                        false,
                        queries.as_ptr(),
                        1,
                        d as isize,
                        keys.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
                let bias = &self.bias[bi * t * t..(bi + 1) * t * t];
                masked_softmax_rows(&mut scores, bias, t, t, self.scale);
                let mut out = vec![0f32; group_rows * d];
                values.matmul_serial(&scores, group_rows, &mut out);
                out
            })
            .collect();
        // Scatter each head's [T, D] rows to [B, T, H * D].
        let width = nh * d;
        let mut out = vec![0f32; b * t * width];
        out.par_chunks_mut(t * width).enumerate().for_each(|(bi, seq)| {
            for g in 0..nkv {
                let rows = &groups[bi * nkv + g];
                for r in 0..group_rows {
                    let (h, ti) = (g * rep + r / t, r % t);
                    seq[ti * width + h * d..ti * width + (h + 1) * d]
                        .copy_from_slice(&rows[r * d..(r + 1) * d]);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::gemm::tests::values;
    use crate::encoder::model::MASK_VALUE;
    use candle_core::{Device, Tensor};

    /// Against attention written out in f64, with grouped heads (6 query heads on 2 kv heads),
    /// a causal mask with a left-padded row, and T not a multiple of the kernel's tile.
    #[test]
    fn matches_f64_attention_with_groups_and_padding() {
        if !Bf16Attention::available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        let (b, nh, nkv, t, d) = (2, 6, 2, 13, 16);
        let (rep, scale) = (nh / nkv, 0.25f32);
        let q = values(b * nh * t * d, 7919, 97);
        let k = values(b * nkv * t * d, 104729, 89);
        let v = values(b * nkv * t * d, 1299709, 83);
        // Sequence 1 has 3 padding positions on the left.
        let mut bias = vec![0f32; b * t * t];
        for (i, m) in bias.iter_mut().enumerate() {
            let (bi, qi, kj) = (i / (t * t), (i / t) % t, i % t);
            if kj > qi || (bi == 1 && kj < 3) {
                *m = MASK_VALUE;
            }
        }
        let tensor = |x: &[f32], h: usize| Tensor::from_slice(x, (b, h, t, d), &Device::Cpu);
        let op = Bf16Attention { bias: Arc::new(bias.clone()), scale };
        let got = tensor(&q, nh)
            .unwrap()
            .apply_op3_no_bwd(&tensor(&k, nkv).unwrap(), &tensor(&v, nkv).unwrap(), &op)
            .unwrap();
        assert_eq!(got.dims(), &[b, t, nh * d]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut worst = 0f64;
        for bi in 0..b {
            for h in 0..nh {
                let g = h / rep;
                // Padding rows see no key: their output is never read (and in f32 the mask
                // swamps the scores, in f64 not).
                for qi in (0..t).filter(|&qi| bi == 0 || qi >= 3) {
                    let at = |x: &[f32], heads: usize, hh: usize, ti: usize, j: usize| {
                        x[((bi * heads + hh) * t + ti) * d + j] as f64
                    };
                    let scores: Vec<f64> = (0..t)
                        .map(|kj| {
                            let dot: f64 =
                                (0..d).map(|j| at(&q, nh, h, qi, j) * at(&k, nkv, g, kj, j)).sum();
                            dot * scale as f64 + bias[(bi * t + qi) * t + kj] as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for j in 0..d {
                        let want: f64 =
                            (0..t).map(|kj| exps[kj] / sum * at(&v, nkv, g, kj, j)).sum();
                        let have = got[(bi * t + qi) * nh * d + h * d + j] as f64;
                        worst = worst.max((have - want).abs());
                    }
                }
            }
        }
        // Values lie in [-0.5, 0.5): bf16 rounding of p and v moves outputs by < 1e-2.
        assert!(worst < 1e-2, "max abs error {worst}");
        assert!(worst > 0.0, "bf16 rounding should show");
    }
}
