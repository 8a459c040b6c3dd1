//! Creation ops: zeros, ones, full, arange, linspace, logspace, eye, random tensors, *_like.

use crate::device::backend;
use crate::random::next_key;
use crate::Tensor;
use ember_storage::alloc::{try_filled, try_from_fn};
use ember_storage::shape::{checked_numel, MAX_ELEMENTS};
use ember_storage::{DType, Device, Error, HostData, Result, RngOp, Scalar};

/// The dtype new floating tensors get when none is given (PyTorch's default, f32).
pub const DEFAULT_FLOAT: DType = DType::F32;

impl Tensor {
    /// A tensor of `shape` filled with `value`, of the given dtype and device.
    pub fn full_with(shape: impl crate::Dims, value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("full_with")?;
        let be = backend(device)?;
        let scalar = if dtype.is_float() { Scalar::F(value) } else { Scalar::I(value as i64) };
        let buf = be.full(scalar, dtype, checked_numel(shape, "full")?)?;
        Ok(Tensor::from_buffer(buf, be, shape))
    }
    /// An f32 CPU tensor of `shape` filled with `value`.
    pub fn full(shape: impl crate::Dims, value: f64) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("full")?;
        Tensor::full_with(shape, value, DEFAULT_FLOAT, Device::Cpu)
    }
    /// f32 zeros on the CPU.
    pub fn zeros(shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("zeros")?;
        Tensor::full(shape, 0.0)
    }
    /// f32 ones on the CPU.
    pub fn ones(shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("ones")?;
        Tensor::full(shape, 1.0)
    }
    /// Zeros of a dtype on a device.
    pub fn zeros_with(shape: impl crate::Dims, dtype: DType, device: Device) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("zeros_with")?;
        Tensor::full_with(shape, 0.0, dtype, device)
    }
    /// Ones of a dtype on a device.
    pub fn ones_with(shape: impl crate::Dims, dtype: DType, device: Device) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("ones_with")?;
        Tensor::full_with(shape, 1.0, dtype, device)
    }
    /// `value` everywhere, with this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full_with(self.shape(), value, self.dtype(), self.device())
    }
    /// Zeros like `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        self.full_like(0.0)
    }
    /// Ones like `self`.
    pub fn ones_like(&self) -> Result<Tensor> {
        self.full_like(1.0)
    }
    /// Uniform [0, 1) like `self` (floating dtypes).
    pub fn rand_like(&self) -> Result<Tensor> {
        Tensor::random_with(self.shape(), RngOp::Uniform { low: 0.0, high: 1.0 }, self.dtype(), self.device())
    }
    /// Standard normal like `self`.
    pub fn randn_like(&self) -> Result<Tensor> {
        Tensor::random_with(self.shape(), RngOp::Normal { mean: 0.0, std: 1.0 }, self.dtype(), self.device())
    }

    /// A new tensor of values from a distribution, drawn from the global generator.
    pub fn random_with(shape: impl crate::Dims, op: RngOp, dtype: DType, device: Device) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("random_with")?;
        let be = backend(device)?;
        let n = checked_numel(shape, "random")?;
        let buf = be.random(op, dtype, n, next_key(n))?;
        Ok(Tensor::from_buffer(buf, be, shape))
    }
    /// f32 uniform on [0, 1).
    pub fn rand(shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("rand")?;
        Tensor::random_with(shape, RngOp::Uniform { low: 0.0, high: 1.0 }, DEFAULT_FLOAT, Device::Cpu)
    }
    /// f32 standard normal.
    pub fn randn(shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("randn")?;
        Tensor::random_with(shape, RngOp::Normal { mean: 0.0, std: 1.0 }, DEFAULT_FLOAT, Device::Cpu)
    }
    /// i64 integers uniform on [low, high).
    pub fn randint(low: i64, high: i64, shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("randint")?;
        if high <= low {
            return Err(Error::invalid("randint", format!("high ({high}) must be greater than low ({low})")));
        }
        let u = Tensor::random_with(shape, RngOp::Uniform { low: 0.0, high: 1.0 }, DType::F64, Device::Cpu)?;
        // i128: the span of the full i64 range does not fit an i64
        let span = high as i128 - low as i128;
        let v: Vec<i64> = u
            .to_vec::<f64>()?
            .into_iter()
            .map(|x| (low as i128 + ((x * span as f64) as i128).min(span - 1)) as i64)
            .collect();
        Tensor::from_vec(v, shape)
    }
    /// A random permutation of 0..n (i64), drawn from the global generator.
    pub fn randperm(n: usize) -> Result<Tensor> {
        let u = Tensor::random_with([n], RngOp::Uniform { low: 0.0, high: 1.0 }, DType::F64, Device::Cpu)?;
        u.argsort(0, false)
    }
    /// 0/1 samples with probabilities `self` (same dtype as `self`).
    pub fn bernoulli(&self) -> Result<Tensor> {
        let u = Tensor::random_with(self.shape(), RngOp::Uniform { low: 0.0, high: 1.0 }, DType::F64, self.device())?;
        u.lt(&self.to_dtype(DType::F64)?)?.to_dtype(self.dtype())
    }
    /// `n` category indices per row drawn with probabilities proportional to `self` (1-d or 2-d).
    pub fn multinomial(&self, n: usize, replacement: bool) -> Result<Tensor> {
        let rows = if self.ndim() == 1 { 1 } else { self.shape()[0] };
        let k = *self.shape().last().ok_or_else(|| Error::invalid("multinomial", "needs a 1-d or 2-d tensor"))?;
        if self.ndim() > 2 || (!replacement && n > k) {
            return Err(Error::invalid(
                "multinomial",
                format!("cannot draw {n} samples without replacement from {k} categories, or input is not 1-d/2-d"),
            ));
        }
        let p = self.to_vec_f64()?;
        if p.iter().any(|&x| x < 0.0 || !x.is_finite()) {
            return Err(Error::invalid("multinomial", "probabilities must be finite and non-negative"));
        }
        let u = Tensor::random_with([rows * n], RngOp::Uniform { low: 0.0, high: 1.0 }, DType::F64, Device::Cpu)?
            .to_vec::<f64>()?;
        let mut out = Vec::with_capacity(rows * n);
        for r in 0..rows {
            let mut w = p[r * k..(r + 1) * k].to_vec();
            for s in 0..n {
                let total: f64 = w.iter().sum();
                if total <= 0.0 {
                    return Err(Error::invalid("multinomial", "a row has no probability mass left"));
                }
                let mut target = u[r * n + s] * total;
                let mut pick = k - 1;
                for (i, &wi) in w.iter().enumerate() {
                    if target < wi {
                        pick = i;
                        break;
                    }
                    target -= wi;
                }
                out.push(pick as i64);
                if !replacement {
                    w[pick] = 0.0;
                }
            }
        }
        let shape = if self.ndim() == 1 { vec![n] } else { vec![rows, n] };
        // drawn on the host, returned on the input's device (as PyTorch)
        Tensor::from_vec(out, &shape)?.to(self.device())
    }

    /// Values `start, start+step, ...` below `end` (PyTorch's `arange`).
    pub fn arange_with(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        if !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", format!("start ({start}) and end ({end}) must be finite")));
        }
        if step == 0.0 || !step.is_finite() || ((end - start) / step).is_sign_negative() && end != start {
            return Err(Error::invalid("arange", format!("step {step} cannot go from {start} to {end}")));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        if count > MAX_ELEMENTS as f64 {
            return Err(Error::invalid(
                "arange",
                format!("{count} elements from {start} to {end} by {step} are too many"),
            ));
        }
        let n = count as usize;
        let vals = try_from_fn("arange", n, |i| start + i as f64 * step)?;
        Tensor::from_host(HostData::from_f64s(dtype, &vals), &[n], device)
    }
    /// i64 values `0..end`.
    pub fn arange(end: impl crate::Dim) -> Result<Tensor> {
        Tensor::arange_with(0.0, end.to_isize() as f64, 1.0, DType::I64, Device::Cpu)
    }
    /// `steps` evenly spaced values from `start` to `end` inclusive.
    pub fn linspace_with(start: f64, end: f64, steps: usize, dtype: DType, device: Device) -> Result<Tensor> {
        let step = if steps > 1 { (end - start) / (steps - 1) as f64 } else { 0.0 };
        // PyTorch fills the two halves from opposite ends so that both endpoints are exact.
        let half = steps / 2;
        checked_numel(&[steps], "linspace")?;
        let vals = try_from_fn("linspace", steps, |i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (steps - 1 - i) as f64
            }
        })?;
        Tensor::from_host(HostData::from_f64s(dtype, &vals), &[steps], device)
    }
    /// f32 `linspace`.
    pub fn linspace(start: f64, end: f64, steps: usize) -> Result<Tensor> {
        Tensor::linspace_with(start, end, steps, DEFAULT_FLOAT, Device::Cpu)
    }
    /// `base ** linspace(start, end, steps)`.
    pub fn logspace_with(
        start: f64,
        end: f64,
        steps: usize,
        base: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let lin = Tensor::linspace_with(start, end, steps, DType::F64, Device::Cpu)?.to_vec::<f64>()?;
        let vals: Vec<f64> = lin.iter().map(|&e| base.powf(e)).collect();
        Tensor::from_host(HostData::from_f64s(dtype, &vals), &[steps], device)
    }
    /// The `n x m` identity.
    pub fn eye_with(n: usize, m: usize, dtype: DType, device: Device) -> Result<Tensor> {
        let mut v = try_filled("eye", checked_numel(&[n, m], "eye")?, 0.0)?;
        for i in 0..n.min(m) {
            v[i * m + i] = 1.0;
        }
        Tensor::from_host(HostData::from_f64s(dtype, &v), &[n, m], device)
    }
    /// The f32 `n x n` identity.
    pub fn eye(n: usize) -> Result<Tensor> {
        Tensor::eye_with(n, n, DEFAULT_FLOAT, Device::Cpu)
    }
    /// Indices (2 x K, i64) of the lower triangle of a `row x col` matrix, shifted by `offset`.
    pub fn tril_indices(row: usize, col: usize, offset: i64) -> Result<Tensor> {
        Tensor::tri_indices(row, col, offset, true)
    }
    /// Indices (2 x K, i64) of the upper triangle.
    pub fn triu_indices(row: usize, col: usize, offset: i64) -> Result<Tensor> {
        Tensor::tri_indices(row, col, offset, false)
    }
    fn tri_indices(row: usize, col: usize, offset: i64, lower: bool) -> Result<Tensor> {
        let (mut r, mut c) = (vec![], vec![]);
        for i in 0..row as i64 {
            for j in 0..col as i64 {
                if (lower && j - i <= offset) || (!lower && j - i >= offset) {
                    r.push(i);
                    c.push(j);
                }
            }
        }
        let k = r.len();
        r.extend(c);
        Tensor::from_vec(r, [2, k])
    }
}
