//! The int8 format: `vpdpbusd` on CPUs with AVX-512 VNNI (`model.dtype = "int8"`).
//!
//! Weights are quantised once, symmetric per output channel (`w ≈ scale_n · q`, q in ±127);
//! each call quantises every activation row to 8 bits with its own scale (`x ≈ s_m · p`).
//! `vpdpbusd` multiplies unsigned by signed bytes, so rows are stored as `p + 128` and the
//! excess `128 · Σ_k q[n, k]` is subtracted per column after the i32 accumulation:
//! `y[m, n] = s_m · scale_n · (Σ_k (p + 128) · q − 128 · Σ_k q)`. One instruction does 64
//! multiply-adds, twice `vdpbf16ps`.
//!
//! A few activation channels of an LLM are far larger than the rest, and one scale per row
//! then leaves the others a handful of levels. Given the channels' ranges on typical inputs,
//! packing smooths them as SmoothQuant (Xiao et al. 2023) does: channel `j` is divided by
//! `f_j = sqrt(max|x_j| / max|w_j|)` before the row is quantised and its weights multiplied by
//! it, which leaves `x · Wᵀ` unchanged and splits the range between the two sides.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{column_masks, for_each_tile, PackedFormat, MR, NR};

fn available() -> bool {
    PackedFormat::Int8.available()
}

/// The largest quantised magnitude (symmetric: -128 is not used).
const QMAX: f32 = 127.0;

/// A weight matrix `[n, k]` quantised and packed for the kernel.
#[derive(Debug)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    /// K quads (k rounded up to a multiple of 4, quartered).
    kq: usize,
    /// `[panel][kq][NR]` u32 words, each four i8 weights (k ascending from the low byte).
    data: Vec<u32>,
    /// Per output column (padded to whole panels): the dequantisation scale.
    scale: Vec<f32>,
    /// Per output column (padded): `128 · Σ_k q`, the excess of the unsigned activations.
    excess: Vec<i32>,
    /// Per input channel, `1 / f_j` of the smoothing (all ones without an input range).
    smooth: Vec<f32>,
}

impl PackedI8 {
    /// Quantises and packs a row-major `[n, k]` f32 matrix, smoothed by `input_range` (per
    /// input channel, the largest |activation| on typical inputs) when given.
    pub fn pack(w: &[f32], n: usize, k: usize, input_range: Option<&[f32]>) -> Self {
        assert_eq!(w.len(), n * k, "weight length");
        let factors = smoothing(w, n, k, input_range);
        let smoothed: Vec<f32>;
        let w = match &factors {
            Some(f) => {
                smoothed = w
                    .par_chunks(k)
                    .flat_map_iter(|r| r.iter().zip(f).map(|(v, f)| v * f))
                    .collect();
                &smoothed[..]
            }
            None => w,
        };
        let smooth = factors.map_or_else(|| vec![1.0; k], |f| f.iter().map(|f| 1.0 / f).collect());
        let kq = k.div_ceil(4);
        let padded = n.div_ceil(NR) * NR;
        let mut scale = vec![0f32; padded];
        let mut excess = vec![0i32; padded];
        let mut quantised = vec![0i8; n * kq * 4];
        quantised
            .par_chunks_mut(kq * 4)
            .zip(w.par_chunks(k))
            .zip(scale.par_iter_mut().zip(excess.par_iter_mut()))
            .for_each(|((q, row), (s, e))| {
                let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                *s = if amax > 0.0 { amax / QMAX } else { 1.0 };
                for (d, &v) in q.iter_mut().zip(row) {
                    *d = (v / *s).round_ties_even().clamp(-QMAX, QMAX) as i8;
                }
                *e = 128 * q.iter().map(|&v| v as i32).sum::<i32>();
            });
        let mut data = vec![0u32; padded * kq];
        data.par_chunks_mut(kq * NR).enumerate().for_each(|(p, panel)| {
            for j in 0..NR.min(n - p * NR) {
                let row = &quantised[(p * NR + j) * kq * 4..(p * NR + j + 1) * kq * 4];
                for (t, quad) in row.chunks_exact(4).enumerate() {
                    panel[t * NR + j] =
                        u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]].map(|v| v as u8));
                }
            }
        });
        Self { n, k, kq, data, scale, excess, smooth }
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `x[m, k] @ W.T` as a row-major `[m, n]` vector. Panics if the CPU lacks AVX-512 VNNI
    /// (check [`PackedFormat::available`] first) or `x` has the wrong length.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!(available(), "AVX-512 VNNI not available");
        assert_eq!(x.len(), m * self.k, "input length");
        let rows = m.div_ceil(MR) * MR;
        let kq = self.kq;
        // Rows as unsigned byte quads with their scales; the padding rows of the last
        // micro-tile are zero (computed, never stored).
        let mut a: Vec<u32> = Vec::with_capacity(rows * kq);
        let mut row_scale = vec![0f32; rows];
        a.spare_capacity_mut()[..m * kq]
            .par_chunks_mut(kq)
            .zip(x.par_chunks(self.k))
            .zip(row_scale.par_iter_mut())
            .for_each(|((dst, src), s)| *s = quantise_row(src, &self.smooth, dst));
        // Safety: quantise_row initialised every element of the first m rows.
        unsafe { a.set_len(m * kq) };
        a.resize(rows * kq, 0);
        let ldc = self.n;
        // Safety: `kernel` writes exactly its tile's rows x cols through `out` with stride n;
        // `a` and `row_scale` hold MR rows from every tile's r0; `scale` and `excess` cover
        // whole panels.
        unsafe {
            for_each_tile(m, self.n, NR, |r0, rows, p, cols, out| {
                kernel(
                    a.as_ptr().add(r0 * kq),
                    kq,
                    self.data[p * kq * NR..].as_ptr(),
                    Epilogue {
                        excess: self.excess[p * NR..].as_ptr(),
                        col_scale: self.scale[p * NR..].as_ptr(),
                        row_scale: row_scale[r0..].as_ptr(),
                    },
                    out,
                    ldc,
                    rows,
                    cols,
                )
            })
        }
    }
}

/// SmoothQuant's factors `f_j = sqrt(max|x_j| / max|w_j|)`, kept within [1/64, 64]; none
/// without a range (or a range of the wrong width), 1 for a channel that is zero on a side.
fn smoothing(w: &[f32], n: usize, k: usize, input_range: Option<&[f32]>) -> Option<Vec<f32>> {
    let range = input_range.filter(|r| r.len() == k)?;
    let mut wmax = vec![0f32; k];
    for row in w.chunks(k).take(n) {
        wmax.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
    }
    Some(
        range
            .iter()
            .zip(&wmax)
            .map(
                |(&x, &w)| {
                    if x > 0.0 && w > 0.0 {
                        (x / w).sqrt().clamp(1.0 / 64.0, 64.0)
                    } else {
                        1.0
                    }
                },
            )
            .collect(),
    )
}

/// One activation row to `p + 128` byte quads (the tail quad padded with 128, which meets zero
/// weights); returns the row's scale. Callers must have checked [`available`].
fn quantise_row(src: &[f32], smooth: &[f32], dst: &mut [MaybeUninit<u32>]) -> f32 {
    // Safety: `matmul` asserted `available()`.
    let amax = unsafe { abs_max(src, smooth) };
    let inv = if amax > 0.0 { QMAX / amax } else { 0.0 };
    // Safety: as above; `dst` holds k.div_ceil(4) quads for the k values of `src`.
    let done = unsafe { quantise_bulk(src, smooth, dst, inv) };
    for (q, d) in dst.iter_mut().enumerate().skip(done / 4) {
        let mut b = [128u8; 4];
        let values = src.iter().zip(smooth).skip(4 * q).take(4).map(|(v, s)| v * s);
        for (o, v) in b.iter_mut().zip(values) {
            // Round half to even by the 1.5 * 2^23 trick (|v * inv| <= 127): libm's rintf
            // was a quarter of the forward when called per element.
            let r = (v * inv + 12_582_912.0) - 12_582_912.0;
            *o = (r.clamp(-QMAX, QMAX) as i32 + 128) as u8;
        }
        d.write(u32::from_le_bytes(b));
    }
    amax / QMAX
}

/// `max |x_j · s_j|` with 16-lane vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn abs_max(x: &[f32], s: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let blocks = x.len() / 16;
    let tail =
        x[16 * blocks..].iter().zip(&s[16 * blocks..]).fold(0f32, |m, (v, s)| m.max((v * s).abs()));
    let mut acc = _mm512_setzero_ps();
    for b in 0..blocks {
        let v = _mm512_mul_ps(
            _mm512_loadu_ps(x.as_ptr().add(16 * b)),
            _mm512_loadu_ps(s.as_ptr().add(16 * b)),
        );
        acc = _mm512_max_ps(acc, _mm512_abs_ps(v));
    }
    _mm512_reduce_max_ps(acc).max(tail)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn abs_max(x: &[f32], s: &[f32]) -> f32 {
    x.iter().zip(s).fold(0f32, |m, (v, s)| m.max((v * s).abs()))
}

/// Quantises whole 16-value blocks of `src` into `dst`'s bytes (round half to even, the
/// default rounding mode); returns how many values it did (a multiple of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantise_bulk(
    src: &[f32],
    smooth: &[f32],
    dst: &mut [MaybeUninit<u32>],
    inv: f32,
) -> usize {
    use std::arch::x86_64::*;
    let blocks = src.len() / 16;
    let (scale, offset) = (_mm512_set1_ps(inv), _mm512_set1_epi32(128));
    let out = dst.as_mut_ptr().cast::<__m128i>();
    for b in 0..blocks {
        let s = _mm512_mul_ps(_mm512_loadu_ps(smooth.as_ptr().add(16 * b)), scale);
        let v = _mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(16 * b)), s);
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), offset);
        // Low byte of each lane: 1..=255 after the offset, so truncation is exact.
        _mm_storeu_si128(out.add(b), _mm512_cvtepi32_epi8(q));
    }
    16 * blocks
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn quantise_bulk(_: &[f32], _: &[f32], _: &mut [MaybeUninit<u32>], _: f32) -> usize {
    0
}

/// What turns a tile's i32 sums into outputs: per column the excess and scale, per row the
/// scale.
struct Epilogue {
    excess: *const i32,
    col_scale: *const f32,
    row_scale: *const f32,
}

/// Never called: `matmul` asserts [`available`], which is false off x86_64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: *const u32,
    _: usize,
    _: *const u32,
    _: Epilogue,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("int8 kernel is x86_64-only; callers check available()")
}

/// MR x 32 tile: for every K quad, broadcast one activation quad per row and multiply-add it
/// with the panel's two 16-lane vectors of weight quads; then dequantise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    a: *const u32,
    kq: usize,
    b: *const u32,
    epilogue: Epilogue,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    for q in 0..kq {
        let b0 = _mm512_loadu_si512(b.add(q * NR) as *const _);
        let b1 = _mm512_loadu_si512(b.add(q * NR + 16) as *const _);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(*a.add(r * kq + q) as i32);
            acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], av, b0);
            acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], av, b1);
        }
    }
    let excess = [
        _mm512_loadu_si512(epilogue.excess as *const _),
        _mm512_loadu_si512(epilogue.excess.add(16) as *const _),
    ];
    let col_scale =
        [_mm512_loadu_ps(epilogue.col_scale), _mm512_loadu_ps(epilogue.col_scale.add(16))];
    let (mask0, mask1) = column_masks(cols);
    // Constant row indices keep the accumulators in registers (see the bf16 kernel).
    for (r, acc_r) in acc.iter().enumerate() {
        if r >= rows {
            continue;
        }
        let row = c.add(r * ldc);
        let s = _mm512_set1_ps(*epilogue.row_scale.add(r));
        let y = |h: usize| {
            let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc_r[h], excess[h]));
            _mm512_mul_ps(sum, _mm512_mul_ps(col_scale[h], s))
        };
        _mm512_mask_storeu_ps(row, mask0, y(0));
        _mm512_mask_storeu_ps(row.add(16), mask1, y(1));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{reference, values, SHAPES};
    use super::*;

    #[test]
    fn matches_f32_matmul_within_int8_rounding_for_ragged_shapes() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 VNNI");
            return;
        }
        for &(m, n, k) in &SHAPES {
            let (mut x, w) = (values(m * k, 7919, 97), values(n * k, 104729, 89));
            // A zero row has scale 0 and must give zeros, not NaN.
            x[..k].fill(0.0);
            let out = PackedI8::pack(&w, n, k, None).matmul(&x, m);
            assert_eq!(out.len(), m * n);
            let want = reference(&x, &w, m, n, k);
            for (i, (g, r)) in out.iter().zip(&want).enumerate() {
                if i < n {
                    assert_eq!(*g, 0.0, "zero row");
                }
                // Values in ±0.5 rounded to steps of 0.5/127 on both sides: each product is
                // off by at most ~0.004, the sum by a random walk over k of them.
                assert!((g - r).abs() <= 0.01 * (k as f32).sqrt(), "{m}x{n}x{k}: {g} vs {r}");
            }
        }
    }

    #[test]
    fn smoothing_by_the_input_range_cuts_the_error_of_an_outlier_channel() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 VNNI");
            return;
        }
        // The model's widest shape (k = 1536), every row with one outlier channel as LLM
        // activations have: one scale per row then coarsens every other channel.
        let (m, n, k) = (24, 64, 1536);
        let mut x = values(m * k, 7919, 997);
        for r in 0..m {
            x[r * k + 5] = 40.0;
        }
        let w = values(n * k, 104729, 991);
        let mut range = vec![0f32; k];
        for row in x.chunks(k) {
            range.iter_mut().zip(row).for_each(|(r, v)| *r = r.max(v.abs()));
        }
        let want = reference(&x, &w, m, n, k);
        let relative_error = |got: Vec<f32>| {
            let err: f32 = got.iter().zip(&want).map(|(g, r)| (g - r).powi(2)).sum();
            (err / want.iter().map(|r| r * r).sum::<f32>()).sqrt()
        };
        let plain = relative_error(PackedI8::pack(&w, n, k, None).matmul(&x, m));
        let smoothed = relative_error(PackedI8::pack(&w, n, k, Some(&range)).matmul(&x, m));
        assert!(smoothed < plain / 2.0, "smoothed {smoothed} vs plain {plain}");
        assert!(smoothed < 0.02, "smoothed relative error {smoothed}");
    }
}
