//! The bf16 format: `vdpbf16ps` on CPUs with AVX-512 BF16 (`model.dtype = "bf16"`).
//!
//! Why our own kernel: candle's CPU bf16 matmul does not use the BF16 dot-product instruction
//! and is slower than its f32 path, while `vdpbf16ps` does twice the multiply-adds of an f32
//! FMA per instruction. Panels store K as bf16 pairs (the instruction's operand layout);
//! activations are rounded to bf16 pairs per call. Accumulation is f32.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{column_masks, for_each_tile, PackedFormat, MR, NR};

fn available() -> bool {
    PackedFormat::Bf16.available()
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
    /// Each panel holds 16 gate and the same 16 up columns, and the product applies SwiGLU
    /// (`n` output columns, see [`PackedBf16::pack_swiglu`]).
    swiglu: bool,
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
        Self { n, k, kp, data, swiglu: false }
    }

    /// Packs gate and up weights (row-major `[n, k]` each) for `silu(x G.T) * (x U.T)` in one
    /// product: panel `p` holds gate columns `16p..16p + 16` in its first vector and the same
    /// up columns in its second, so the kernel's epilogue has both halves of each output in
    /// registers. Why: the SwiGLU pass over a `[m, 2n]` product was ~5 % of a bf16 forward,
    /// most of it moving that product through memory.
    pub fn pack_swiglu(gate: &[f32], up: &[f32], n: usize, k: usize) -> Self {
        assert!(gate.len() == n * k && up.len() == n * k, "weight length");
        const HALF: usize = NR / 2;
        let panels = n.div_ceil(HALF);
        let mut interleaved = vec![0f32; panels * NR * k];
        for (p, panel) in interleaved.chunks_mut(NR * k).enumerate() {
            let cols = HALF.min(n - p * HALF);
            let rows = p * HALF * k..(p * HALF + cols) * k;
            panel[..cols * k].copy_from_slice(&gate[rows.clone()]);
            panel[HALF * k..][..cols * k].copy_from_slice(&up[rows]);
        }
        Self { n, swiglu: true, ..Self::pack(&interleaved, panels * NR, k) }
    }

    /// Whether the product applies SwiGLU ([`PackedBf16::pack_swiglu`]).
    pub fn applies_swiglu(&self) -> bool {
        self.swiglu
    }

    /// Packs `W.T` for a row-major `[k, n]` matrix `w` (so `matmul` computes `x @ w`), without
    /// a transposed copy.
    pub fn pack_transposed(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight length");
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        data.par_chunks_mut(kp * NR).enumerate().for_each(|(p, panel)| {
            let cols = NR.min(n - p * NR);
            for q in 0..kp {
                let lo = &w[2 * q * n + p * NR..][..cols];
                let hi = (2 * q + 1 < k).then(|| &w[(2 * q + 1) * n + p * NR..][..cols]);
                for j in 0..cols {
                    let hi = hi.map_or(0, |h| bf16_bits(h[j]));
                    panel[q * NR + j] = bf16_bits(lo[j]) | (hi << 16);
                }
            }
        });
        Self { n, k, kp, data, swiglu: false }
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `x[m, k] @ W.T` as a row-major `[m, n]` vector. Panics if the CPU lacks AVX-512 BF16
    /// (check [`PackedFormat::available`] first) or `x` has the wrong length.
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
        let (kp, ldc) = (self.kp, self.n);
        // Safety: `kernel` writes exactly its tile's rows x cols through `out` with stride n;
        // `a` holds MR rows from every tile's r0 (padded above).
        // A SwiGLU panel's two halves make one output column each.
        let width = if self.swiglu { NR / 2 } else { NR };
        unsafe {
            for_each_tile(m, self.n, width, |r0, rows, p, cols, out| {
                let (a, b) =
                    (a.as_ptr().add(r0 * kp), self.data[p * kp * NR..(p + 1) * kp * NR].as_ptr());
                match self.swiglu {
                    true => kernel::<true>(a, kp, b, out, ldc, rows, cols),
                    false => kernel::<false>(a, kp, b, out, ldc, rows, cols),
                }
            })
        }
    }
}

impl PackedBf16 {
    /// [`PackedBf16::matmul`] on the calling thread only, into `out` (`[m, n]`): for many
    /// small products that are themselves spread over threads (attention heads).
    pub fn matmul_serial(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(out.len(), m * self.n, "output length");
        // Safety: `out` holds m rows of n.
        unsafe {
            self.matmul_span_serial(x, m, 0, self.k, &mut Vec::new(), out.as_mut_ptr(), self.n)
        }
    }

    /// `x[m, len] @ W[:, k0..k0 + len].T` on the calling thread, written through `out` with
    /// row stride `ldc`: `P V` over the span of keys a block of queries sees. `k0` must be
    /// even (K is packed in pairs); `pairs` is scratch kept across calls.
    ///
    /// # Safety
    /// `out` must be valid for writes of `m` rows of `n` values, `ldc` apart.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn matmul_span_serial(
        &self,
        x: &[f32],
        m: usize,
        k0: usize,
        len: usize,
        pairs: &mut Vec<u32>,
        out: *mut f32,
        ldc: usize,
    ) {
        assert!(available(), "AVX-512 BF16 not available");
        assert!(!self.swiglu, "a span product of a SwiGLU pack");
        assert!(k0.is_multiple_of(2) && k0 + len <= self.k, "span {k0}+{len} of {}", self.k);
        assert_eq!(x.len(), m * len, "input length");
        let (kp, q0) = (len.div_ceil(2), k0 / 2);
        let rows = m.div_ceil(MR) * MR;
        pairs.clear();
        pairs.reserve(rows * kp);
        for (dst, src) in pairs.spare_capacity_mut()[..m * kp].chunks_mut(kp).zip(x.chunks(len)) {
            // Safety: `available()` was asserted above.
            unsafe { convert_row(src, dst) };
        }
        // Safety: convert_row initialised every element of the first m rows.
        unsafe { pairs.set_len(m * kp) };
        // Padding rows, and an odd span's last pair meets the next key with a zero.
        pairs.resize(rows * kp, 0);
        for p in 0..self.n.div_ceil(NR) {
            let cols = NR.min(self.n - p * NR);
            let b = &self.data[(p * self.kp + q0) * NR..(p + 1) * self.kp * NR];
            for r0 in (0..m).step_by(MR) {
                // Safety: the tile's rows x cols lie inside `out` (the caller's contract), `a`
                // holds MR rows of kp pairs from r0, `b` kp pairs of the panel from q0.
                unsafe {
                    kernel::<false>(
                        pairs.as_ptr().add(r0 * kp),
                        kp,
                        b.as_ptr(),
                        out.add(r0 * ldc + p * NR),
                        ldc,
                        MR.min(m - r0),
                        cols,
                    )
                }
            }
        }
    }
}

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
unsafe fn kernel<const SWIGLU: bool>(
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
/// with the panel's two 16-lane vectors. With `SWIGLU` the two vectors are a gate and an up
/// half ([`PackedBf16::pack_swiglu`]) and the tile stores `silu(gate) * up`, 16 columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const SWIGLU: bool>(
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
    let (mask0, mask1) = column_masks(cols);
    // Every row index constant (the loop unrolls, `rows` only guards): an index that
    // depends on `rows` kept the accumulators in a stack array that was zeroed by a memset
    // call per tile, 4 % of a forward.
    for (r, acc_r) in acc.iter().enumerate() {
        if r < rows {
            let row = c.add(r * ldc);
            if SWIGLU {
                _mm512_mask_storeu_ps(row, mask0, silu_mul(acc_r[0], acc_r[1]));
            } else {
                _mm512_mask_storeu_ps(row, mask0, acc_r[0]);
                _mm512_mask_storeu_ps(row.add(16), mask1, acc_r[1]);
            }
        }
    }
}

/// `silu(g) * u` on 16 lanes, the same operations in the same order as
/// [`super::super::fused::exp`] and the SwiGLU pass, so both give the same bits.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn silu_mul(
    g: std::arch::x86_64::__m512,
    u: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use super::super::fused::{EXP_POLYNOMIAL, EXP_RANGE, LN2_HI_LO, ROUNDING};
    use std::arch::x86_64::*;
    let c = _mm512_set1_ps;
    let minus_g =
        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(i32::MIN)));
    let x = _mm512_min_ps(_mm512_max_ps(minus_g, c(EXP_RANGE.0)), c(EXP_RANGE.1));
    let n = _mm512_sub_ps(
        _mm512_add_ps(_mm512_mul_ps(x, c(std::f32::consts::LOG2_E)), c(ROUNDING)),
        c(ROUNDING),
    );
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(n, c(LN2_HI_LO.0))),
        _mm512_mul_ps(n, c(LN2_HI_LO.1)),
    );
    let mut p = c(EXP_POLYNOMIAL[0]);
    for &coefficient in &EXP_POLYNOMIAL[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c(coefficient));
    }
    let p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), c(1.0));
    let bits =
        _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)));
    let e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(c(1.0), e)), u)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{reference, values, SHAPES};
    use super::*;

    #[test]
    fn matches_f32_matmul_within_bf16_rounding_for_ragged_shapes() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        for &(m, n, k) in &SHAPES {
            let (x, w) = (values(m * k, 7919, 97), values(n * k, 104729, 89));
            let out = PackedBf16::pack(&w, n, k).matmul(&x, m);
            assert_eq!(out.len(), m * n);
            for (g, r) in out.iter().zip(&reference(&x, &w, m, n, k)) {
                // Two bf16 roundings (8-bit mantissa) per product, k products.
                assert!((g - r).abs() <= 0.01 * (k as f32).sqrt(), "{m}x{n}x{k}: {g} vs {r}");
            }
        }
    }

    #[test]
    fn serial_matmul_equals_the_parallel_one() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        for &(m, n, k) in &SHAPES {
            let (x, w) = (values(m * k, 7919, 97), values(n * k, 104729, 89));
            let packed = PackedBf16::pack(&w, n, k);
            let mut out = vec![f32::NAN; m * n];
            packed.matmul_serial(&x, m, &mut out);
            assert_eq!(out, packed.matmul(&x, m), "{m}x{n}x{k}");
        }
    }

    #[test]
    fn a_span_of_k_equals_the_product_over_those_columns() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        let (m, n, k) = (13, 40, 29);
        let w = values(n * k, 104729, 89);
        let packed = PackedBf16::pack(&w, n, k);
        let mut pairs = Vec::new();
        // Spans from an even start, odd and even lengths, up to the end of k.
        for (k0, len) in [(0, 29), (2, 7), (4, 25), (10, 8)] {
            let x = values(m * len, 7919, 97);
            let sub: Vec<f32> = w.chunks(k).flat_map(|r| r[k0..k0 + len].to_vec()).collect();
            let want = PackedBf16::pack(&sub, n, len).matmul(&x, m);
            // Written with a row stride wider than n; the gap stays untouched.
            let ldc = n + 3;
            let mut out = vec![f32::NAN; m * ldc];
            // Safety: `out` holds m rows of ldc >= n.
            unsafe { packed.matmul_span_serial(&x, m, k0, len, &mut pairs, out.as_mut_ptr(), ldc) };
            for (r, row) in out.chunks(ldc).enumerate() {
                assert_eq!(&row[..n], &want[r * n..(r + 1) * n], "span {k0}+{len}, row {r}");
                assert!(row[n..].iter().all(|v| v.is_nan()), "wrote past n");
            }
        }
    }

    #[test]
    fn fused_swiglu_equals_the_product_then_the_swiglu_pass() {
        if !available() {
            eprintln!("SKIPPED: CPU lacks AVX-512 BF16");
            return;
        }
        // n not a multiple of the 16-column half panels; gate values spanning exp's clamp.
        for (m, n, k) in [(13, 40, 33), (1, 16, 8), (50, 7, 64)] {
            let x = values(m * k, 7919, 97);
            let gate: Vec<f32> = values(n * k, 104729, 89).iter().map(|v| v * 40.0).collect();
            let up = values(n * k, 1299709, 83);
            let fused = PackedBf16::pack_swiglu(&gate, &up, n, k);
            assert_eq!((fused.out_dim(), fused.applies_swiglu()), (n, true));
            let both = PackedBf16::pack(&[gate, up].concat(), 2 * n, k).matmul(&x, m);
            let mut want = vec![0f32; m * n];
            for (row, out) in both.chunks(2 * n).zip(want.chunks_mut(n)) {
                crate::encoder::fused::silu_mul(&row[..n], &row[n..], out);
            }
            assert_eq!(fused.matmul(&x, m), want, "{m}x{n}x{k}");
        }
    }

    #[test]
    fn packing_the_transpose_equals_packing_a_transposed_copy() {
        for &(_, n, k) in &SHAPES {
            let w = values(n * k, 104729, 89);
            let transposed: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let direct = PackedBf16::pack_transposed(&w, k, n);
            let copied = PackedBf16::pack(&transposed, n, k);
            assert_eq!((direct.n, direct.k), (n, k));
            assert_eq!(direct.data, copied.data, "{n}x{k}");
        }
    }
}
