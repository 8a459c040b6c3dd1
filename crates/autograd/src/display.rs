//! `Display` and `Debug` for tensors, formatted like PyTorch's (`tensor([[1.0000, 2.0000], ...])`).

use crate::Tensor;
use std::fmt;

/// Above this many elements only the first and last `EDGE` items of each dim are printed.
const THRESHOLD: usize = 1000;
const EDGE: usize = 3;

fn fmt_float(v: f64, width: usize, sci: bool) -> String {
    let s = if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if sci {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    };
    format!("{s:>width$}")
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vals = match self.to_vec_f64() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let float = self.dtype().is_float();
        let finite: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
        let max = finite.iter().fold(0f64, |m, v| m.max(v.abs()));
        let min_nz = finite.iter().filter(|v| **v != 0.0).fold(f64::INFINITY, |m, v| m.min(v.abs()));
        let sci = float && (max >= 1e8 || (min_nz < 1e-4 && min_nz.is_finite()));
        let cell = |v: f64| -> String {
            if float {
                fmt_float(v, 0, sci)
            } else if self.dtype() == ember_storage::DType::Bool {
                if v != 0.0 {
                    "True".into()
                } else {
                    "False".into()
                }
            } else {
                format!("{}", v as i64)
            }
        };
        let width = vals.iter().map(|&v| cell(v).len()).max().unwrap_or(1);
        let summarize = vals.len() > THRESHOLD;
        let shape = self.shape().to_vec();
        let strides = ember_storage::shape::contiguous_strides(&shape);
        #[allow(clippy::too_many_arguments)]
        fn rec(
            out: &mut String,
            vals: &[f64],
            shape: &[usize],
            strides: &[usize],
            base: usize,
            depth: usize,
            summarize: bool,
            cell: &dyn Fn(f64) -> String,
            width: usize,
        ) {
            if shape.is_empty() {
                out.push_str(&format!("{:>width$}", cell(vals[base])));
                return;
            }
            out.push('[');
            let n = shape[0];
            let items: Vec<Option<usize>> = if summarize && n > 2 * EDGE {
                (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
            } else {
                (0..n).map(Some).collect()
            };
            let sep = if shape.len() == 1 {
                ", ".to_string()
            } else {
                format!(",{}{}", "\n".repeat(shape.len() - 1), " ".repeat(depth + 8))
            };
            for (k, it) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(&sep);
                }
                match it {
                    Some(i) => rec(
                        out,
                        vals,
                        &shape[1..],
                        &strides[1..],
                        base + i * strides[0],
                        depth + 1,
                        summarize,
                        cell,
                        width,
                    ),
                    None => out.push_str("..."),
                }
            }
            out.push(']');
        }
        let mut s = String::new();
        rec(&mut s, &vals, &shape, &strides, 0, 0, summarize, &cell, width);
        write!(f, "tensor({s}")?;
        if self.dtype() != ember_storage::DType::F32
            && self.dtype() != ember_storage::DType::I64
            && self.dtype() != ember_storage::DType::Bool
        {
            write!(f, ", dtype={}", self.dtype())?;
        }
        if self.device() != ember_storage::Device::Cpu {
            write!(f, ", device='{}'", self.device())?;
        }
        write!(f, ")")
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(shape={:?}, dtype={}, device={}) ", self.shape(), self.dtype(), self.device())?;
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn prints_like_pytorch() {
        let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], [2, 2]).unwrap();
        assert_eq!(t.to_string(), "tensor([[ 1.0000,  2.5000],\n        [-3.0000,  4.0000]])");
        let i = Tensor::from_vec(vec![1i64, 20], [2]).unwrap();
        assert_eq!(i.to_string(), "tensor([ 1, 20])");
        let big = Tensor::arange(2000).unwrap();
        assert!(big.to_string().contains("..."));
    }
}
