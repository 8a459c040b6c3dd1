//! Resampling kernels: `interpolate` (nearest, linear, bilinear, trilinear, bicubic), `grid_sample`
//! (bilinear, zero padding) and `affine_grid`. Built from index_select/gather and arithmetic, so they
//! are differentiable with respect to their inputs.

use crate::Tensor;
use ember_storage::{DType, Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.interpolate`.
pub const INTERPOLATE: OpDescriptor = OpDescriptor {
    name: "interpolate",
    forward: "Tensor::interpolate",
    conformance: &["interpolate"],
    shape_rule: "[N, C, *size], or floor(in * scale_factor)",
    backward: OpBackward::Composed,
};

/// `F.grid_sample`.
pub const GRID_SAMPLE: OpDescriptor = OpDescriptor {
    name: "grid_sample",
    forward: "Tensor::grid_sample",
    conformance: &["grid_sample"],
    shape_rule: "[N, C, H_out, W_out] from input [N, C, H, W] and grid [N, H_out, W_out, 2]",
    backward: OpBackward::Composed,
};

/// `F.affine_grid`.
pub const AFFINE_GRID: OpDescriptor = OpDescriptor {
    name: "affine_grid",
    forward: "Tensor::affine_grid",
    conformance: &["affine_grid"],
    shape_rule: "[N, H, W, 2] from theta [N, 2, 3] and size [N, C, H, W]",
    backward: OpBackward::Composed,
};

/// Interpolation modes of [`Tensor::interpolate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpMode {
    /// Nearest neighbour (PyTorch's legacy `nearest`).
    Nearest,
    /// Linear along each spatial dim (linear, bilinear, trilinear).
    Linear,
    /// Cubic convolution (A = -0.75) along each spatial dim.
    Cubic,
}

impl InterpMode {
    /// Parses PyTorch's mode names.
    pub fn parse(s: &str) -> Result<InterpMode> {
        Ok(match s {
            "nearest" => InterpMode::Nearest,
            "linear" | "bilinear" | "trilinear" => InterpMode::Linear,
            "bicubic" => InterpMode::Cubic,
            _ => return Err(Error::unsupported("interpolate", format!("mode {s:?}"))),
        })
    }
}

fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

impl Tensor {
    /// Resizes the spatial dims of `[N, C, ...]` to `size`, or by `scale` (one per spatial dim).
    pub fn interpolate(
        &self,
        size: Option<&[usize]>,
        scale: Option<&[f64]>,
        mode: InterpMode,
        align_corners: bool,
    ) -> Result<Tensor> {
        let d = self.ndim().saturating_sub(2);
        if d == 0 {
            return Err(Error::shape("interpolate", format!("expects [N, C, ...], got {:?}", self.shape())));
        }
        let out: Vec<usize> = match (size, scale) {
            (Some(s), _) if s.len() == d => s.to_vec(),
            (Some(s), _) if s.len() == 1 => vec![s[0]; d],
            (None, Some(f)) if f.len() == d || f.len() == 1 => {
                (0..d).map(|i| (self.shape()[2 + i] as f64 * f[i.min(f.len() - 1)]).floor() as usize).collect()
            }
            _ => {
                return Err(Error::invalid(
                    "interpolate",
                    format!("give size or scale_factor for the {d} spatial dims"),
                ))
            }
        };
        if out.contains(&0) || scale.is_some_and(|f| f.iter().any(|&s| !(s.is_finite() && s > 0.0))) {
            return Err(Error::invalid(
                "interpolate",
                format!("output size {out:?} and scale factors {scale:?} must be positive and finite"),
            ));
        }
        let mut full = self.shape()[..2].to_vec();
        full.extend(&out);
        ember_storage::shape::checked_numel(&full, "interpolate")?;
        for &o in &out {
            // the index and weight vectors are host memory: allocate them fallibly
            ember_storage::alloc::try_with_capacity::<f64>("interpolate", o.saturating_mul(4))?;
        }
        let (x, back) = self.upcast_low_precision()?;
        let mut t = x;
        for i in 0..d {
            let dim = (2 + i) as isize;
            let (inn, o) = (self.shape()[2 + i], out[i]);
            // PyTorch uses 1/scale_factor when given, else in/out
            let scale_i = match (size, scale) {
                (None, Some(f)) => 1.0 / f[i.min(f.len() - 1)],
                _ => inn as f64 / o.max(1) as f64,
            };
            let src = |j: usize| -> f64 {
                if align_corners {
                    if o > 1 {
                        j as f64 * (inn as f64 - 1.0) / (o as f64 - 1.0)
                    } else {
                        0.0
                    }
                } else {
                    (j as f64 + 0.5) * scale_i - 0.5
                }
            };
            let dev = self.device();
            let idx = |v: Vec<i64>| Tensor::from_vec(v, [o]).and_then(|t| t.to(dev));
            let wts = |v: Vec<f64>| -> Result<Tensor> {
                let mut s = vec![1isize; self.ndim()];
                s[2 + i] = o as isize;
                Tensor::from_vec(v, [o])?.to(dev)?.to_dtype(t.dtype())?.reshape(&s)
            };
            t = match mode {
                InterpMode::Nearest => {
                    let v: Vec<i64> =
                        (0..o).map(|j| ((j as f64 * scale_i).floor() as i64).min(inn as i64 - 1)).collect();
                    t.index_select(dim, &idx(v)?)?
                }
                InterpMode::Linear => {
                    let (mut i0, mut i1, mut w1) = (vec![], vec![], vec![]);
                    for j in 0..o {
                        let s = src(j).max(0.0);
                        let a = (s.floor() as usize).min(inn - 1);
                        i0.push(a as i64);
                        i1.push((a + 1).min(inn - 1) as i64);
                        w1.push(s - a as f64);
                    }
                    let w0: Vec<f64> = w1.iter().map(|w| 1.0 - w).collect();
                    t.index_select(dim, &idx(i0)?)?
                        .mul(&wts(w0)?)?
                        .add(&t.index_select(dim, &idx(i1)?)?.mul(&wts(w1)?)?)?
                }
                InterpMode::Cubic => {
                    let mut acc: Option<Tensor> = None;
                    let taps: Vec<(i64, [f64; 4])> = (0..o)
                        .map(|j| {
                            let s = src(j);
                            let f = s.floor();
                            (f as i64, cubic_weights(s - f))
                        })
                        .collect();
                    for k in 0..4 {
                        let ii: Vec<i64> =
                            taps.iter().map(|(f, _)| (f - 1 + k as i64).clamp(0, inn as i64 - 1)).collect();
                        let ww: Vec<f64> = taps.iter().map(|(_, w)| w[k]).collect();
                        let term = t.index_select(dim, &idx(ii)?)?.mul(&wts(ww)?)?;
                        acc = Some(match acc {
                            None => term,
                            Some(a) => a.add(&term)?,
                        });
                    }
                    acc.expect("four taps")
                }
            };
        }
        t.to_dtype(back)
    }

    /// Samples `[N, C, H, W]` at `grid` `[N, Ho, Wo, 2]` (x, y in [-1, 1]) bilinearly, zeros outside.
    pub fn grid_sample(&self, grid: &Tensor, align_corners: bool) -> Result<Tensor> {
        if self.ndim() != 4 || grid.ndim() != 4 || grid.shape()[3] != 2 || grid.shape()[0] != self.shape()[0] {
            return Err(Error::shape(
                "grid_sample",
                format!("input {:?} and grid {:?} must be [N, C, H, W] and [N, Ho, Wo, 2]", self.shape(), grid.shape()),
            ));
        }
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (ho, wo) = (grid.shape()[1], grid.shape()[2]);
        let unnorm = |g: Tensor, size: usize| -> Result<Tensor> {
            if align_corners {
                g.add(1.0)?.mul((size as f64 - 1.0) / 2.0)
            } else {
                g.add(1.0)?.mul(size as f64)?.sub(1.0)?.div(2.0)
            }
        };
        let gx = unnorm(grid.select(3, 0)?, w)?;
        let gy = unnorm(grid.select(3, 1)?, h)?;
        let (x0, y0) = (gx.floor()?, gy.floor()?);
        let flat = self.reshape([n as isize, c as isize, (h * w) as isize])?;
        let mut acc: Option<Tensor> = None;
        for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
            let (xi, yi) = (x0.add(dx)?, y0.add(dy)?);
            let wx = if dx == 0.0 { xi.add(1.0)?.sub(&gx)? } else { gx.sub(&x0)? };
            let wy = if dy == 0.0 { yi.add(1.0)?.sub(&gy)? } else { gy.sub(&y0)? };
            let inside = xi
                .ge(0.0)?
                .logical_and(&xi.le((w - 1) as f64)?)?
                .logical_and(&yi.ge(0.0)?)?
                .logical_and(&yi.le((h - 1) as f64)?)?;
            let lin = yi
                .clamp(Some(0.0), Some((h - 1) as f64))?
                .mul(w as f64)?
                .add(&xi.clamp(Some(0.0), Some((w - 1) as f64))?)?;
            let lin = lin.to_dtype(DType::I64)?.reshape([n as isize, 1, (ho * wo) as isize])?.expand([
                n as isize,
                c as isize,
                (ho * wo) as isize,
            ])?;
            let vals = flat.gather(2, &lin)?.reshape([n as isize, c as isize, ho as isize, wo as isize])?;
            let weight = Tensor::where_cond(&inside, &wx.mul(&wy)?, 0.0)?.unsqueeze(1)?;
            let term = vals.mul(&weight)?;
            acc = Some(match acc {
                None => term,
                Some(a) => a.add(&term)?,
            });
        }
        Ok(acc.expect("four corners"))
    }

    /// Sampling grid `[N, H, W, 2]` for affine matrices `self` `[N, 2, 3]` and output size `[N, C, H, W]`.
    pub fn affine_grid(&self, size: &[usize], align_corners: bool) -> Result<Tensor> {
        if self.ndim() != 3 || self.shape()[1..] != [2, 3] || size.len() != 4 {
            return Err(Error::shape(
                "affine_grid",
                format!("theta {:?} must be [N, 2, 3] with a 4-d size, got size {size:?}", self.shape()),
            ));
        }
        let (n, h, w) = (size[0], size[2], size[3]);
        let coords = |k: usize| -> Vec<f64> {
            (0..k)
                .map(|i| {
                    if k == 1 {
                        0.0
                    } else if align_corners {
                        -1.0 + 2.0 * i as f64 / (k - 1) as f64
                    } else {
                        (2.0 * i as f64 + 1.0) / k as f64 - 1.0
                    }
                })
                .collect()
        };
        let (xs, ys) = (coords(w), coords(h));
        let mut base = Vec::with_capacity(h * w * 3);
        for y in &ys {
            for x in &xs {
                base.extend([*x, *y, 1.0]);
            }
        }
        let base = Tensor::from_vec(base, [1, h * w, 3])?.to(self.device())?.to_dtype(self.dtype())?;
        base.matmul(&self.mt()?)?.reshape([n as isize, h as isize, w as isize, 2])
    }
}
