//! Packed-weight GEMMs for `x @ W.T` on AVX-512 CPUs, used by the inference forward (and the
//! frozen layers of training) in place of candle's f32 matmul.
//!
//! Weights are packed once at load into panels of `NR` output columns in the operand layout
//! of the CPU's dot-product instruction: bf16 pairs for `vdpbf16ps` ([`bf16`], `model.dtype =
//! "bf16"`), signed bytes in fours with per-output-channel scales for `vpdpbusd` ([`int8`],
//! `"int8"`). Activations stay f32 in the model and are converted per call (to bf16, or to
//! bytes with a per-row scale). The two share the tiling below: rows in micro-tiles of
//! `MR`, spread with the panels over rayon in units that stay in L2.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::fused::contiguous_f32;
use crate::config::Dtype;
use rayon::prelude::*;

pub mod bf16;
pub mod int8;

pub use bf16::PackedBf16;
pub use int8::PackedI8;

/// Output columns per packed panel: two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Rows per micro-kernel call: 12 rows x 2 vectors = 24 accumulators of the 32 registers.
pub(crate) const MR: usize = 12;
/// Rows per parallel work unit (a multiple of MR, small enough to stay in L2).
const MC: usize = 48;
/// Panels per parallel work unit.
const PANELS_PER_UNIT: usize = 4;

/// The packed formats, as `model.dtype` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// bf16 weights and activations, f32 accumulation (AVX-512 BF16).
    Bf16,
    /// int8 weights with a scale per output channel, activations quantised to 8 bits per row
    /// at each call, i32 accumulation (AVX-512 VNNI). The model keeps its down projections in
    /// bf16 where the CPU has AVX-512 BF16 (see `Llama::enable_packed_kernel`).
    Int8,
}

impl PackedFormat {
    /// Whether this CPU has the instructions the format's kernel needs.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx512f")
                && match self {
                    Self::Bf16 => has!("avx512bf16"),
                    Self::Int8 => has!("avx512bw") && has!("avx512vnni"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The `model.dtype` that selects this format (its text names the format in reports).
    pub fn dtype(self) -> Dtype {
        match self {
            Self::Bf16 => Dtype::Bf16,
            Self::Int8 => Dtype::Int8,
        }
    }
}

/// One weight matrix `[n, k]` packed in one of the formats.
#[derive(Debug)]
pub enum PackedWeight {
    Bf16(PackedBf16),
    Int8(PackedI8),
}

impl PackedWeight {
    /// Packs a row-major `[n, k]` f32 matrix. `input_range` (per input channel, the largest
    /// |activation| seen on typical inputs) lets int8 smooth its quantisation; bf16 ignores it.
    /// Panics if the CPU lacks the format's instructions (check [`PackedFormat::available`]).
    pub fn pack(
        format: PackedFormat,
        w: &[f32],
        n: usize,
        k: usize,
        input_range: Option<&[f32]>,
    ) -> Self {
        assert!(format.available(), "{} kernel not available on this CPU", format.dtype());
        match format {
            PackedFormat::Bf16 => Self::Bf16(PackedBf16::pack(w, n, k)),
            PackedFormat::Int8 => Self::Int8(PackedI8::pack(w, n, k, input_range)),
        }
    }

    /// `silu(x G.T) * (x U.T)` for gate and up weights `[n, k]` each: on the bf16 kernel one
    /// product with SwiGLU in its epilogue (output `[m, n]`, see [`PackedBf16::pack_swiglu`]);
    /// int8 packs `[G; U]` (output `[m, 2n]`, SwiGLU left to the caller: see
    /// [`PackedWeight::applies_swiglu`]).
    pub fn pack_swiglu(
        format: PackedFormat,
        gate: &[f32],
        up: &[f32],
        n: usize,
        k: usize,
        input_range: Option<&[f32]>,
    ) -> Self {
        match format {
            PackedFormat::Bf16 => {
                assert!(format.available(), "bf16 kernel not available on this CPU");
                Self::Bf16(PackedBf16::pack_swiglu(gate, up, n, k))
            }
            PackedFormat::Int8 => Self::pack(format, &[gate, up].concat(), 2 * n, k, input_range),
        }
    }

    /// Whether the product applies SwiGLU itself ([`PackedWeight::pack_swiglu`]).
    pub fn applies_swiglu(&self) -> bool {
        matches!(self, Self::Bf16(w) if w.applies_swiglu())
    }

    pub fn format(&self) -> PackedFormat {
        match self {
            Self::Bf16(_) => PackedFormat::Bf16,
            Self::Int8(_) => PackedFormat::Int8,
        }
    }

    pub fn in_dim(&self) -> usize {
        match self {
            Self::Bf16(w) => w.in_dim(),
            Self::Int8(w) => w.in_dim(),
        }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            Self::Bf16(w) => w.out_dim(),
            Self::Int8(w) => w.out_dim(),
        }
    }

    /// `x[m, k] @ W.T` as a row-major `[m, n]` vector.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        match self {
            Self::Bf16(w) => w.matmul(x, m),
            Self::Int8(w) => w.matmul(x, m),
        }
    }
}

/// A raw output pointer shared by the tile workers, which write disjoint tiles.
pub(crate) struct SendPtr(pub *mut f32);
// Safety: only used for disjoint writes, see `for_each_tile`.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Runs `tile(r0, rows, panel, cols, out)` over every micro-tile of an `[m, n]` output in
/// parallel: rows `[r0, r0 + rows)` (`rows <= MR`) by the `cols <= width` output columns of
/// `panel` (`width` = [`NR`], or `NR / 2` where a panel's two halves make one output column
/// each, as the fused SwiGLU does), `out` pointing at the tile's first element (row stride
/// `n`). Returns the output, every element written by exactly one tile.
///
/// # Safety
/// `tile` must write exactly the `rows x cols` elements of its tile through `out` (stride
/// `n`) and nothing else.
pub(crate) unsafe fn for_each_tile(
    m: usize,
    n: usize,
    width: usize,
    tile: impl Fn(usize, usize, usize, usize, *mut f32) + Sync,
) -> Vec<f32> {
    let rows = m.div_ceil(MR) * MR;
    let panels = n.div_ceil(width);
    let m_units = rows.div_ceil(MC);
    let n_units = panels.div_ceil(PANELS_PER_UNIT);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // Written in spare capacity: zero-filling buffers that are overwritten anyway was ~5% of a
    // forward pass in a cpu-clock profile.
    let out_ptr = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    (0..m_units * n_units).into_par_iter().for_each(|u| {
        let (mu, nu) = (u / n_units, u % n_units);
        let out_ptr = &out_ptr;
        for p in nu * PANELS_PER_UNIT..((nu + 1) * PANELS_PER_UNIT).min(panels) {
            let cols = width.min(n - p * width);
            let mut r0 = mu * MC;
            while r0 < ((mu + 1) * MC).min(m) {
                let valid = MR.min(m - r0);
                // Safety: tiles of different (rows, panel) pairs are disjoint in `out`.
                tile(r0, valid, p, cols, unsafe { out_ptr.0.add(r0 * n + p * width) });
                r0 += MR;
            }
        }
    });
    // Safety: the tiles together cover every row < m of every panel, i.e. all m x n.
    unsafe { out.set_len(m * n) };
    out
}

/// Masks for storing a tile row's `cols` columns as two 16-lane vectors.
pub(crate) fn column_masks(cols: usize) -> (u16, u16) {
    let first = if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 };
    let second = match cols {
        32.. => 0xffff,
        17..=31 => ((1u32 << (cols - 16)) - 1) as u16,
        _ => 0,
    };
    (first, second)
}

/// candle op applying a packed weight to the last dimension of an f32 tensor (no backward:
/// inference and frozen layers only; trained layers use the f32 weights).
pub struct PackedLinear(pub Arc<PackedWeight>);

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let dims = l.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.0.in_dim() {
            candle_core::bail!("packed-linear: input width {k}, weight expects {}", self.0.in_dim())
        }
        let m = l.shape().elem_count() / k.max(1);
        let out = self.0.matmul(x, m);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap_or(&mut 0) = self.0.out_dim();
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// candle op `x[m, k] @ w[n, k].T` whose forward and backward products all run on the bf16
/// kernel: the trainable layers' projections under `model.dtype = "bf16"`. The weights change
/// every optimizer step, so each call packs its operands (O(n·k), against the O(m·n·k) product).
/// The gradient of an operand that does not track one (a frozen weight, a detached input) is
/// not computed. Needs AVX-512 BF16 ([`PackedFormat::available`]).
pub struct Bf16TrainLinear;

/// `a @ b.T` on the bf16 kernel, for tensors of any layout (no backward).
fn matmul_t(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &Bf16TrainLinear)
}

impl candle_core::CustomOp2 for Bf16TrainLinear {
    fn name(&self) -> &'static str {
        "bf16-train-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w) = (contiguous_f32(s1, l1, name)?, contiguous_f32(s2, l2, name)?);
        let ((m, k), (n, k2)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if k != k2 {
            candle_core::bail!("{name}: inner widths {k} and {k2} differ")
        }
        let out = PackedBf16::pack(w, n, k).matmul(x, m);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = grad @ w = grad @ (w.T).T;  dw = grad.T @ x = grad.T @ (x.T).T.
        let dx = if x.track_op() { Some(matmul_t(grad, &w.t()?)?) } else { None };
        let dw = if w.track_op() { Some(matmul_t(&grad.t()?, &x.t()?)?) } else { None };
        Ok((dx, dw))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// `x @ w.T` in f64, the reference both kernels are tested against.
    pub fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] =
                    (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    /// Deterministic values in [-0.5, 0.5) for shapes of the tests.
    pub fn values(len: usize, prime: usize, modulus: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * prime) % modulus) as f32 / modulus as f32 - 0.5).collect()
    }

    /// Ragged shapes: partial micro-tiles, partial panels, k not a multiple of 2 or 4.
    pub const SHAPES: [(usize, usize, usize); 5] =
        [(1, 16, 8), (13, 70, 33), (50, 96, 64), (7, 32, 2), (61, 40, 129)];
}
