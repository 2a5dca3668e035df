//! Grouped-query attention of the fast forward, straight from the fused q/k/v projection:
//! one task per (sequence, query head) rotates its query and key rows (RoPE), computes the
//! scores `Q K.T` (f32) and the scaled masked softmax, then `P V` on the bf16 kernel, written
//! straight into the `[B, T, heads * D]` layout the output projection reads.
//!
//! Why: candle's batched f32 matmuls for these small products, the transposes around them
//! and their zero-filled outputs were ~15 % of a bf16 forward; the products themselves are
//! ~5 % of its multiply-adds. Query rows go in blocks, each against the span of keys its rows
//! may see (the mask's [`KeySpan`]s): under the causal mask the scores, the softmax and `P V`
//! skip the upper triangle, about 40 % of their work at 128 tokens. The scores stay f32: in
//! bf16 they moved the shipped encoder's dense nDCG@10 on Cranfield by -0.004 (p 0.01;
//! docs/results.md); `P V` in bf16 did not. No backward: inference and frozen layers only.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::fused::{contiguous_f32, masked_softmax_strided, rope_row};
use super::gemm::{PackedBf16, PackedFormat, SendPtr, MR};
use super::model::MASK_VALUE;

/// Query rows per block: whole micro-tiles of the `P V` kernel.
const QUERY_BLOCK: usize = 3 * MR;

/// The keys `[start, end)` a query row may see: every visible key lies inside (masked ones
/// may too). Empty when the row sees none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpan {
    pub start: usize,
    pub end: usize,
}

impl KeySpan {
    const EMPTY: Self = Self { start: 0, end: 0 };

    fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A batch's attention mask as [`PackedAttention`] reads it: built once per forward, shared by
/// every layer.
#[derive(Debug)]
pub struct AttentionMask {
    /// `[B, T, T]` additive bias: 0 where query `i` may see key `j`, else [`MASK_VALUE`].
    bias: Vec<f32>,
    /// `[B, T]`: each query row's span of visible keys.
    spans: Vec<KeySpan>,
    t: usize,
}

impl AttentionMask {
    /// The mask of a batch of `T`-token rows from its `[B, T, T]` additive bias.
    pub fn new(bias: Vec<f32>, t: usize) -> Self {
        let visible = |v: &f32| *v > MASK_VALUE / 2.0;
        let spans = match t {
            0 => Vec::new(),
            _ => bias
                .chunks(t)
                .map(|row| match row.iter().position(visible) {
                    Some(start) => KeySpan {
                        start,
                        end: row.iter().rposition(visible).map_or(start, |j| j) + 1,
                    },
                    None => KeySpan::EMPTY,
                })
                .collect(),
        };
        Self { bias, spans, t }
    }

    /// The span covering the visible keys of rows `rows` of sequence `b`, its start rounded
    /// down to even (the kernel reads keys in bf16 pairs).
    fn block_span(&self, b: usize, rows: std::ops::Range<usize>) -> KeySpan {
        let spans = &self.spans[b * self.t + rows.start..b * self.t + rows.end];
        let seen = spans.iter().filter(|s| !s.is_empty());
        match seen.clone().map(|s| s.start).min() {
            Some(start) => {
                KeySpan { start: start & !1, end: seen.map(|s| s.end).max().unwrap_or(start) }
            }
            None => KeySpan::EMPTY,
        }
    }
}

/// candle op on `(qkv [B, T, (H + 2 KV) D], cos [B, T, D/2], sin [B, T, D/2])`, all
/// contiguous f32 (the fused q/k/v projection's output and the RoPE tables), returning the
/// attention `[B, T, H D]`.
pub struct PackedAttention {
    pub mask: Arc<AttentionMask>,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads `KV` (`H` a multiple of it).
    pub kv_heads: usize,
    /// Multiplies the scores before the mask (`1 / sqrt(D)`).
    pub scale: f32,
}

impl PackedAttention {
    /// Whether this CPU runs the op.
    pub fn available() -> bool {
        PackedFormat::Bf16.available()
    }
}

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    head_dim: usize,
    /// Width of a qkv row.
    qkv_width: usize,
    /// Width of an output row (`H D`).
    out_width: usize,
}

impl CustomOp3 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
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
        let (qkv, cos, sin) = (
            contiguous_f32(s1, l1, name)?,
            contiguous_f32(s2, l2, name)?,
            contiguous_f32(s3, l3, name)?,
        );
        let (b, t, qkv_width) = l1.shape().dims3()?;
        let (nh, nkv) = (self.heads, self.kv_heads);
        let slots = nh + 2 * nkv;
        let head_dim = if nkv > 0 && nh % nkv == 0 { qkv_width / slots } else { 0 };
        if head_dim == 0
            || !head_dim.is_multiple_of(2)
            || head_dim * slots != qkv_width
            || l2.shape().dims() != [b, t, head_dim / 2]
            || l3.shape() != l2.shape()
            || self.mask.t != t
            || self.mask.bias.len() != b * t * t
        {
            candle_core::bail!(
                "{name}: qkv {:?} with {nh}/{nkv} heads, tables {:?} and {:?}, mask of {} for {} tokens",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.mask.bias.len(),
                self.mask.t,
            )
        }
        if !Self::available() {
            candle_core::bail!("{name}: this CPU lacks AVX-512 BF16")
        }
        let dims = Dims { t, head_dim, qkv_width, out_width: nh * head_dim };
        let len = b * t * dims.out_width;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let out_ptr = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
        (0..b * nh).into_par_iter().for_each(|u| {
            let out_ptr = &out_ptr;
            let (bi, h) = (u / nh, u % nh);
            // Safety: task (bi, h) writes the T rows of sequence bi in columns
            // [h D, (h + 1) D) only; the tasks together cover the whole output.
            unsafe {
                self.head(
                    qkv,
                    (cos, sin),
                    (bi, h),
                    dims,
                    out_ptr.0.add(bi * t * dims.out_width + h * head_dim),
                )
            }
        });
        // Safety: every element was written (see above).
        unsafe { out.set_len(len) };
        Ok((CpuStorage::F32(out), Shape::from((b, t, dims.out_width))))
    }
}

impl PackedAttention {
    /// One query head `h` of sequence `b`: its `[T, D]` output written through `out` (row
    /// stride `H D`).
    ///
    /// # Safety
    /// `out` must be valid for writes of `T` rows of `D` values, `H D` apart.
    unsafe fn head(
        &self,
        qkv: &[f32],
        (cos, sin): (&[f32], &[f32]),
        (b, h): (usize, usize),
        dims: Dims,
        out: *mut f32,
    ) {
        let Dims { t, head_dim: d, qkv_width, out_width } = dims;
        let (nh, nkv) = (self.heads, self.kv_heads);
        let g = h / (nh / nkv);
        let half = d / 2;
        let mut queries = vec![0f32; t * d];
        let mut keys = vec![0f32; t * d];
        let mut values = vec![0f32; t * d];
        for ti in 0..t {
            let row = &qkv[(b * t + ti) * qkv_width..][..qkv_width];
            let table = (b * t + ti) * half;
            let (c, s) = (&cos[table..table + half], &sin[table..table + half]);
            rope_row(&row[h * d..][..d], c, s, &mut queries[ti * d..][..d]);
            rope_row(&row[(nh + g) * d..][..d], c, s, &mut keys[ti * d..][..d]);
            values[ti * d..][..d].copy_from_slice(&row[(nh + nkv + g) * d..][..d]);
        }
        let values = PackedBf16::pack_transposed(&values, t, d);
        let mut scores = vec![0f32; QUERY_BLOCK * t];
        let mut pairs = Vec::new();
        for i0 in (0..t).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(t - i0);
            let block_out = out.add(i0 * out_width);
            let span = self.mask.block_span(b, i0..i0 + rows);
            if span.is_empty() {
                // Rows that see no key (all padding): never read, written as zeros.
                for r in 0..rows {
                    std::ptr::write_bytes(block_out.add(r * out_width), 0, d);
                }
                continue;
            }
            let n = span.end - span.start;
            let block = &mut scores[..rows * n];
            // Scores in f32 (see the module docs), the gemm crate on this thread alone.
            // Safety: row-major [rows, D] queries, [n, D] keys read as [D, n], [rows, n] output.
            gemm::gemm(
                rows,
                n,
                d,
                block.as_mut_ptr(),
                1,
                n as isize,
                false,
                queries[i0 * d..].as_ptr(),
                1,
                d as isize,
                keys[span.start * d..].as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            let bias = &self.mask.bias[((b * t + i0) * t + span.start)..];
            masked_softmax_strided(block, n, bias, t, self.scale);
            // Safety: the caller's contract on `out`; the span lies inside the T keys.
            values.matmul_span_serial(block, rows, span.start, n, &mut pairs, block_out, out_width);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::gemm::tests::values;
    use candle_core::{Device, Tensor};

    /// Against RoPE and attention written out in f64, with grouped heads (6 query heads on 2
    /// kv heads), a causal mask with a left-padded row, and T spanning several query blocks
    /// with a ragged last one.
    #[test]
    fn matches_f64_attention_with_groups_and_padding() {
        if !PackedAttention::available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        let (b, nh, nkv, t, d) = (2, 6, 2, 2 * QUERY_BLOCK + 5, 16);
        let (rep, scale, pad) = (nh / nkv, 0.25f32, 3);
        let width = (nh + 2 * nkv) * d;
        let qkv = values(b * t * width, 7919, 97);
        // Sequence 1 starts after `pad` padding positions; positions count real tokens.
        let position = |bi: usize, ti: usize| if bi == 1 { ti.saturating_sub(pad) } else { ti };
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for bi in 0..b {
            for ti in 0..t {
                for i in 0..d / 2 {
                    let angle = position(bi, ti) as f64 / 100f64.powf(2.0 * i as f64 / d as f64);
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let mut bias = vec![0f32; b * t * t];
        for (i, m) in bias.iter_mut().enumerate() {
            let (bi, qi, kj) = (i / (t * t), (i / t) % t, i % t);
            if kj > qi || (bi == 1 && kj < pad) {
                *m = MASK_VALUE;
            }
        }
        let op = PackedAttention {
            mask: Arc::new(AttentionMask::new(bias.clone(), t)),
            heads: nh,
            kv_heads: nkv,
            scale,
        };
        let tensor = |x: &[f32], w: usize| Tensor::from_slice(x, (b, t, w), &Device::Cpu).unwrap();
        let got = tensor(&qkv, width)
            .apply_op3_no_bwd(&tensor(&cos, d / 2), &tensor(&sin, d / 2), &op)
            .unwrap();
        assert_eq!(got.dims(), &[b, t, nh * d]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Rotated head rows in f64: `slot` 0..H are queries, H..H+KV keys.
        let rotated = |bi: usize, ti: usize, slot: usize| -> Vec<f64> {
            let x = &qkv[(bi * t + ti) * width + slot * d..][..d];
            let (c, s) = (&cos[(bi * t + ti) * d / 2..], &sin[(bi * t + ti) * d / 2..]);
            let h = d / 2;
            let mut r = vec![0f64; d];
            for i in 0..h {
                let (x1, x2, c, s) = (x[i] as f64, x[i + h] as f64, c[i] as f64, s[i] as f64);
                r[i] = x1 * c - x2 * s;
                r[i + h] = x2 * c + x1 * s;
            }
            r
        };
        let mut worst = 0f64;
        for bi in 0..b {
            for h in 0..nh {
                let g = h / rep;
                // Padding rows see no key: their output is never read.
                for qi in (0..t).filter(|&qi| bi == 0 || qi >= pad) {
                    let q = rotated(bi, qi, h);
                    let scores: Vec<f64> = (0..t)
                        .map(|kj| {
                            let k = rotated(bi, kj, nh + g);
                            let dot: f64 = q.iter().zip(&k).map(|(a, b)| a * b).sum();
                            dot * scale as f64 + bias[(bi * t + qi) * t + kj] as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for j in 0..d {
                        let want: f64 = (0..t)
                            .map(|kj| {
                                let v = qkv[(bi * t + kj) * width + (nh + nkv + g) * d + j];
                                exps[kj] / sum * v as f64
                            })
                            .sum();
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

    #[test]
    fn key_spans_cover_the_visible_keys_of_each_block() {
        // Row 0 sees nothing (padding), rows 1-3 causal from key 1.
        let t = 4;
        let mut bias = vec![MASK_VALUE; t * t];
        for i in 1..t {
            for j in 1..=i {
                bias[i * t + j] = 0.0;
            }
        }
        let mask = AttentionMask::new(bias, t);
        let spans: Vec<(usize, usize)> = mask.spans.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(spans, [(0, 0), (1, 2), (1, 3), (1, 4)]);
        assert!(mask.block_span(0, 0..1).is_empty());
        // Started at an even key for the kernel's pairs; ended past the last visible one.
        assert_eq!(mask.block_span(0, 0..2), KeySpan { start: 0, end: 2 });
        assert_eq!(mask.block_span(0, 2..4), KeySpan { start: 0, end: 4 });
    }
}
