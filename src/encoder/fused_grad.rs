//! Fused CPU ops with their own backward, for the trainable layers of the differentiable
//! forward (see `Llama::enable_packed_kernel`): RMSNorm, RoPE and SwiGLU; the attention's
//! masked softmax is [`super::fused::MaskedSoftmax`], whose backward is defined there.
//!
//! Why: composed from candle's basic ops, each of these is 5-10 element-wise passes with as
//! many allocations in the forward and again in the backward (candle also starts every
//! node's gradient as a zero tensor). Here each is one pass forward and one backward. f32,
//! contiguous inputs.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::{contiguous_f32 as contiguous, exp, f32_values as values, rope_row, silu_mul};

/// `x / rms(x) * w` over the last dimension: `(x [.., H], w [H])`.
pub struct RmsNorm {
    pub eps: f32,
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, self.name())?;
        let w = contiguous(s2, l2, self.name())?;
        let h = w.len();
        if h == 0 || *l1.shape().dims().last().unwrap_or(&0) != h {
            candle_core::bail!("rms-norm-grad: input {:?}, weight {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(o, row)| {
            let inv = inv_rms(row, self.eps);
            for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
                *o = v * inv * g;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, gs) = (values(x)?, values(w)?, values(grad)?);
        let h = ws.len();
        // Per row, with n = x * inv: dw += g * n;  dx = inv * (g*w - n * mean(g*w*n)).
        let mut dx = vec![0f32; xs.len()];
        let dw = dx
            .par_chunks_mut(h)
            .zip(xs.par_chunks(h).zip(gs.par_chunks(h)))
            .fold(
                || vec![0f32; h],
                |mut dw, (dx, (row, g))| {
                    let inv = inv_rms(row, self.eps);
                    let mut dot = 0f32;
                    for j in 0..h {
                        let n = row[j] * inv;
                        dw[j] += g[j] * n;
                        dot += g[j] * ws[j] * n;
                    }
                    let mean = dot / h as f32;
                    for j in 0..h {
                        dx[j] = inv * (g[j] * ws[j] - row[j] * inv * mean);
                    }
                    dw
                },
            )
            .reduce(
                || vec![0f32; h],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let dx = x.track_op().then(|| Tensor::from_vec(dx, x.shape(), x.device())).transpose()?;
        let dw = w.track_op().then(|| Tensor::from_vec(dw, w.shape(), w.device())).transpose()?;
        Ok((dx, dw))
    }
}

/// `silu(gate) * up`, element-wise: `(gate, up)` of one shape.
pub struct SwiGlu;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous(s1, l1, self.name())?;
        let u = contiguous(s2, l2, self.name())?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu-grad: gate {:?}, up {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(o, (g, u))| silu_mul(g, u, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, u, d) = (values(gate)?, values(up)?, values(grad)?);
        let mut dg = vec![0f32; g.len()];
        let mut du = vec![0f32; g.len()];
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)).zip(d.par_chunks(4096)))
            .for_each(|((dg, du), ((g, u), d))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    du[i] = d[i] * g[i] * s;
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        let dg = gate.track_op().then(|| Tensor::from_vec(dg, gate.shape(), gate.device()));
        let du = up.track_op().then(|| Tensor::from_vec(du, up.shape(), up.device()));
        Ok((dg.transpose()?, du.transpose()?))
    }
}

/// "Rotate half" RoPE: `(x [B, H, T, D], cos [B, T, D/2], sin [B, T, D/2])`. Its backward is
/// the rotation by the opposite angle.
pub struct Rope;

/// Rotates every `[T, D]` head of `x` by the per-row angles (`sign` -1 turns backwards).
fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (h, t, d): (usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    let turned: Vec<f32>;
    let sin = match sign < 0.0 {
        true => {
            turned = sin.iter().map(|v| -v).collect();
            &turned
        }
        false => sin,
    };
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(t * d).zip(x.par_chunks(t * d)).enumerate().for_each(|(bh, (o, xh))| {
        let bi = bh / h;
        for ti in 0..t {
            let table = (bi * t + ti) * half;
            let (c, s) = (&cos[table..table + half], &sin[table..table + half]);
            rope_row(&xh[ti * d..(ti + 1) * d], c, s, &mut o[ti * d..(ti + 1) * d]);
        }
    });
    out
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-grad"
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
        let x = contiguous(s1, l1, self.name())?;
        let cos = contiguous(s2, l2, self.name())?;
        let sin = contiguous(s3, l3, self.name())?;
        let (b, h, t, d) = l1.shape().dims4()?;
        if d % 2 != 0 || l2.shape().dims3()? != (b, t, d / 2) || l2.shape() != l3.shape() {
            candle_core::bail!(
                "rope-grad: x {:?}, cos {:?}, sin {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        Ok((CpuStorage::F32(rotate(x, cos, sin, (h, t, d), 1.0)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, h, t, d) = x.dims4()?;
        let dx = rotate(&values(grad)?, &values(cos)?, &values(sin)?, (h, t, d), -1.0);
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::model::{rms_norm, rope, ForwardMode};
    use candle_core::{Device, Var};

    /// Output and input gradients of `fused` against `composed` on the same inputs, for a
    /// random linear functional of the output.
    fn assert_same_gradients(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Tensor,
        composed: impl Fn(&[Tensor]) -> Tensor,
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fused(&ts), composed(&ts));
        let probe = Tensor::randn(0f32, 1.0, a.shape(), &Device::Cpu).unwrap();
        let max_diff = |x: &Tensor, y: &Tensor| {
            (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(max_diff(&a, &b) < 1e-4, "outputs differ by {}", max_diff(&a, &b));
        let ga = (&a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            assert!(max_diff(x, y) < 1e-4, "input {i}: gradients differ by {}", max_diff(x, y));
        }
    }

    #[test]
    fn rms_norm_matches_the_composed_ops() {
        let x = Tensor::randn(0f32, 2.0, (3, 5, 24), &Device::Cpu).unwrap();
        let w = Tensor::randn(1f32, 0.3, 24, &Device::Cpu).unwrap();
        assert_same_gradients(
            &[x, w],
            |t| t[0].apply_op2(&t[1], RmsNorm { eps: 1e-5 }).unwrap(),
            |t| rms_norm(&t[0], &t[1], 1e-5, ForwardMode::Differentiable).unwrap(),
        );
    }

    #[test]
    fn swiglu_matches_the_composed_ops() {
        let g = Tensor::randn(0f32, 3.0, (4, 5000), &Device::Cpu).unwrap();
        let u = Tensor::randn(0f32, 1.0, (4, 5000), &Device::Cpu).unwrap();
        assert_same_gradients(
            &[g, u],
            |t| t[0].apply_op2(&t[1], SwiGlu).unwrap(),
            |t| {
                let silu = (&t[0] / (t[0].neg().unwrap().exp().unwrap() + 1.0).unwrap()).unwrap();
                (silu * &t[1]).unwrap()
            },
        );
    }

    #[test]
    fn rope_matches_the_composed_ops() {
        let (b, h, t, d) = (2, 3, 7, 16);
        let x = Tensor::randn(0f32, 1.0, (b, h, t, d), &Device::Cpu).unwrap();
        let angles = Tensor::randn(0f32, 2.0, (b, t, d / 2), &Device::Cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        assert_same_gradients(
            &[x],
            |t| t[0].apply_op3(&cos, &sin, Rope).unwrap(),
            |t| rope(&t[0], &cos, &sin, ForwardMode::Differentiable).unwrap(),
        );
    }
}
