//! A bf16 GEMM for `x @ W.T` on CPUs with AVX-512 BF16 (`vdpbf16ps`), used by the inference
//! forward when the configured dtype is bf16.
//!
//! Why our own kernel: candle's CPU bf16 matmul does not use the BF16 dot-product instruction
//! and is slower than its f32 path, while `vdpbf16ps` does twice the multiply-adds of an f32
//! FMA per instruction. Weights are packed once at load into panels of 32 output columns with
//! K stored as bf16 pairs (the instruction's operand layout); activations stay f32 in the model
//! and are rounded to bf16 pairs per call. Accumulation is f32.

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// Output columns per packed panel: two 16-lane vectors.
const NR: usize = 32;
/// Rows per micro-kernel call: 12 rows x 2 vectors = 24 accumulators of the 32 registers.
const MR: usize = 12;
/// Rows per parallel work unit (a multiple of MR, small enough to stay in L2).
const MC: usize = 48;
/// Panels per parallel work unit.
const PANELS_PER_UNIT: usize = 4;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix `[n, k]` packed for the kernel.
#[derive(Debug)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// K pairs (k rounded up to even, halved).
    kp: usize,
    /// `[panel][kp][NR]` u32 words, each two bf16 (low = even k, high = odd k).
    data: Vec<u32>,
}

fn bf16_bits(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

impl PackedBf16 {
    /// Packs a row-major `[n, k]` f32 matrix.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight length");
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        data.par_chunks_mut(kp * NR).enumerate().for_each(|(p, panel)| {
            for j in 0..NR {
                let col = p * NR + j;
                if col >= n {
                    continue;
                }
                let row = &w[col * k..(col + 1) * k];
                for q in 0..kp {
                    let lo = bf16_bits(row[2 * q]);
                    let hi = if 2 * q + 1 < k { bf16_bits(row[2 * q + 1]) } else { 0 };
                    panel[q * NR + j] = lo | (hi << 16);
                }
            }
        });
        Self { n, k, kp, data }
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `x[m, k] @ W.T` as a row-major `[m, n]` vector. Panics if the CPU lacks AVX-512 BF16
    /// (check [`available`] first) or `x` has the wrong length.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!(available(), "AVX-512 BF16 not available");
        assert_eq!(x.len(), m * self.k, "input length");
        let rows = m.div_ceil(MR) * MR;
        // Activations as bf16 pairs. Only the padding rows of the last micro-tile are zeroed:
        // zero-filling buffers that are overwritten anyway was ~5% of a forward pass in a
        // cpu-clock profile, so the real rows and the output are written into spare capacity.
        let mut a: Vec<u32> = Vec::with_capacity(rows * self.kp);
        a.spare_capacity_mut()[..m * self.kp]
            .par_chunks_mut(self.kp)
            .zip(x.par_chunks(self.k))
            .for_each(|(dst, src)| {
                // Safety: `available()` was asserted above.
                unsafe { convert_row(src, dst) };
            });
        // Safety: convert_row initialised every element of the first m rows.
        unsafe { a.set_len(m * self.kp) };
        a.resize(rows * self.kp, 0);
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        let panels = self.n.div_ceil(NR);
        let m_units = rows.div_ceil(MC);
        let n_units = panels.div_ceil(PANELS_PER_UNIT);
        let out_ptr = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
        (0..m_units * n_units).into_par_iter().for_each(|u| {
            let (mu, nu) = (u / n_units, u % n_units);
            let out_ptr = &out_ptr;
            for p in nu * PANELS_PER_UNIT..((nu + 1) * PANELS_PER_UNIT).min(panels) {
                let b = &self.data[p * self.kp * NR..(p + 1) * self.kp * NR];
                let cols = NR.min(self.n - p * NR);
                let mut r0 = mu * MC;
                while r0 < ((mu + 1) * MC).min(rows) {
                    let valid_rows = MR.min(m.saturating_sub(r0));
                    if valid_rows > 0 {
                        // Safety: each unit writes rows [r0, r0+valid_rows) x columns of panel
                        // p only, disjoint from every other unit; `a` has MR rows from r0.
                        unsafe {
                            kernel(
                                a.as_ptr().add(r0 * self.kp),
                                self.kp,
                                b.as_ptr(),
                                out_ptr.0.add(r0 * self.n + p * NR),
                                self.n,
                                valid_rows,
                                cols,
                            );
                        }
                    }
                    r0 += MR;
                }
            }
        });
        // Safety: the units together write every row < m of every panel, i.e. all m x n.
        unsafe { out.set_len(m * self.n) };
        out
    }
}

struct SendPtr(*mut f32);
// Safety: the pointer is only used for disjoint writes, see `matmul`.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

fn convert_row_scalar(src: &[f32], dst: &mut [MaybeUninit<u32>]) {
    for (q, d) in dst.iter_mut().enumerate() {
        let lo = bf16_bits(src[2 * q]);
        let hi = src.get(2 * q + 1).map_or(0, |&v| bf16_bits(v));
        d.write(lo | (hi << 16));
    }
}

/// f32 row to bf16 pairs, 32 values per instruction (round to nearest even, like the scalar
/// path). Callers must have checked [`available`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_row(src: &[f32], dst: &mut [MaybeUninit<u32>]) {
    use std::arch::x86_64::*;
    let full = (src.len() / 32).min(dst.len() / 16);
    for c in 0..full {
        let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
        let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
        // Lower 16 bf16 lanes from `lo`, upper from `hi`: memory order, i.e. one u32 pair each.
        let v: __m512 = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_ps(dst.as_mut_ptr().add(16 * c).cast::<f32>(), v);
    }
    convert_row_scalar(&src[32 * full..], &mut dst[16 * full..]);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn convert_row(src: &[f32], dst: &mut [MaybeUninit<u32>]) {
    convert_row_scalar(src, dst)
}

/// Never called: `matmul` asserts [`available`], which is false off x86_64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _: *const u32,
    _: usize,
    _: *const u32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("bf16 kernel is x86_64-only; callers check available()")
}

/// MR x 32 tile: for every K pair, broadcast one activation pair per row and multiply-add it
/// with the panel's two 16-lane vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    a: *const u32,
    kp: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for q in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + q) as i32));
            acc_r[0] = _mm512_dpbf16_ps(acc_r[0], av, b0);
            acc_r[1] = _mm512_dpbf16_ps(acc_r[1], av, b1);
        }
    }
    let mask0: __mmask16 = if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 };
    let mask1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
        let row = c.add(r * ldc);
        _mm512_mask_storeu_ps(row, mask0, acc_r[0]);
        _mm512_mask_storeu_ps(row.add(16), mask1, acc_r[1]);
    }
}

/// candle op applying a packed weight to the last dimension of an f32 tensor (no backward:
/// inference only; training uses the f32 weights).
pub struct PackedLinear(pub Arc<PackedBf16>);

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-bf16-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("packed-bf16-linear expects f32 activations")
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("packed-bf16-linear expects a contiguous input")
        };
        let dims = l.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.0.k {
            candle_core::bail!("packed-bf16-linear: input width {k}, weight expects {}", self.0.k)
        }
        let m = l.shape().elem_count() / k.max(1);
        let out = self.0.matmul(&v[start..end], m);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap_or(&mut 0) = self.0.n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_f32_matmul_within_bf16_rounding_for_ragged_shapes() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        for &(m, n, k) in &[(1, 16, 8), (13, 70, 33), (50, 96, 64), (7, 32, 2)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let packed = PackedBf16::pack(&w, n, k);
            let out = packed.matmul(&x, m);
            assert_eq!(out.len(), m * n);
            let want = reference(&x, &w, m, n, k);
            for (g, r) in out.iter().zip(&want) {
                // Two bf16 roundings (8-bit mantissa) per product, k products.
                assert!((g - r).abs() <= 0.01 * (k as f32).sqrt(), "{m}x{n}x{k}: {g} vs {r}");
            }
        }
    }
}
