//! Host side of the indexing ops: how each `IndexOp` maps onto the gather and scatter kernels of
//! [`crate::kernels::index`] (the loop shape, the three operands' layouts, the indexed stride), with
//! every shape checked so that no kernel can address memory outside its buffers.

use ember_storage::{Error, IndexOp, Layout, Result};

/// Which kernel runs an indexing op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKernel {
    /// `out[i] = read[read(i) + j * stride]` into a dense output of the loop's shape.
    Gather,
    /// `out[write(i) + j * stride] = read[read(i)]` on a dense copy of the input.
    Scatter,
    /// As `Scatter`, adding (atomically).
    ScatterAdd,
}

/// An indexing op as one kernel launch over `index`'s shape (all three layouts have it).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexPlan {
    /// The kernel.
    pub kernel: IndexKernel,
    /// The operand read: the input (gather) or `src` (scatter), through a zero stride along the
    /// indexed dim for gather.
    pub read: Layout,
    /// The i64 indices, as a view of the loop's shape.
    pub index: Layout,
    /// Where scatter kernels write in the dense output (zero stride along the indexed dim); for
    /// gather, the dense output itself.
    pub write: Layout,
    /// The element stride of the indexed dim in the operand an index addresses.
    pub stride: usize,
    /// The indexed dim's size (indices must be below it).
    pub size: usize,
    /// The result's shape.
    pub out_shape: Vec<usize>,
}

/// `l` read over `shape` (no larger in any dim) with a zero stride along `dim`.
fn without_dim(l: &Layout, shape: &[usize], dim: usize, op: &str) -> Result<Layout> {
    let mut strides = l.strides().to_vec();
    strides[dim] = 0;
    Layout::strided(shape, &strides, l.offset()).map_err(|e| Error::invalid(op, e.to_string()))
}

/// A 1-d (or 0-d) index as a view of `shape` that varies only along `dim`.
fn along_dim(index: &Layout, shape: &[usize], dim: usize, op: &str) -> Result<Layout> {
    let stride = match index.ndim() {
        0 => 0,
        1 => index.strides()[0],
        _ => return Err(Error::shape(op, format!("index must be 1-d, got shape {:?}", index.shape()))),
    };
    let mut strides = vec![0; shape.len()];
    strides[dim] = stride;
    Layout::strided(shape, &strides, index.offset()).map_err(|e| Error::invalid(op, e.to_string()))
}

/// Plans `op` on input `x`, `index` and (for the scatter family) `src`; errors name the op and the
/// shapes when they do not fit.
pub fn plan(op: IndexOp, x: &Layout, index: &Layout, src: Option<&Layout>) -> Result<IndexPlan> {
    let name = op.name();
    let dim = op.dim();
    let xs = x.shape();
    if dim >= xs.len() {
        return Err(Error::invalid(name, format!("dim {dim} is out of range for input shape {xs:?}")));
    }
    let dense = Layout::contiguous(xs);
    let misfit = |what: &str, shape: &[usize]| {
        Error::shape(name, format!("{what} {shape:?} does not fit input {xs:?} along dim {dim}"))
    };
    let src = || src.ok_or_else(|| Error::invalid(name, "needs a src tensor"));
    let fits_within = |small: &[usize], big: &[usize], skip: Option<usize>| {
        small.len() == big.len() && small.iter().zip(big).enumerate().all(|(d, (s, b))| Some(d) == skip || s <= b)
    };
    match op {
        IndexOp::IndexSelect { .. } => {
            let mut shape = xs.to_vec();
            shape[dim] = index.numel();
            Ok(IndexPlan {
                kernel: IndexKernel::Gather,
                read: without_dim(x, &shape, dim, name)?,
                index: along_dim(index, &shape, dim, name)?,
                write: Layout::contiguous(&shape),
                stride: x.strides()[dim],
                size: xs[dim],
                out_shape: shape,
            })
        }
        IndexOp::Gather { .. } => {
            let shape = index.shape();
            if !fits_within(shape, xs, Some(dim)) {
                return Err(misfit("index", shape));
            }
            Ok(IndexPlan {
                kernel: IndexKernel::Gather,
                read: without_dim(x, shape, dim, name)?,
                index: index.clone(),
                write: Layout::contiguous(shape),
                stride: x.strides()[dim],
                size: xs[dim],
                out_shape: shape.to_vec(),
            })
        }
        IndexOp::Scatter { .. } | IndexOp::ScatterAdd { .. } => {
            let (shape, ls) = (index.shape(), src()?);
            if !fits_within(shape, xs, Some(dim)) || !fits_within(shape, ls.shape(), None) {
                return Err(misfit("index", shape));
            }
            Ok(IndexPlan {
                kernel: if matches!(op, IndexOp::Scatter { .. }) {
                    IndexKernel::Scatter
                } else {
                    IndexKernel::ScatterAdd
                },
                read: Layout::strided(shape, &ls.strides()[..shape.len()], ls.offset())?,
                index: index.clone(),
                write: without_dim(&dense, shape, dim, name)?,
                stride: dense.strides()[dim],
                size: xs[dim],
                out_shape: xs.to_vec(),
            })
        }
        IndexOp::IndexAdd { .. } => {
            let ls = src()?;
            let mut expect = xs.to_vec();
            expect[dim] = index.numel();
            if ls.shape() != expect.as_slice() {
                return Err(misfit("src", ls.shape()));
            }
            Ok(IndexPlan {
                kernel: IndexKernel::ScatterAdd,
                read: ls.clone(),
                index: along_dim(index, ls.shape(), dim, name)?,
                write: without_dim(&dense, ls.shape(), dim, name)?,
                stride: dense.strides()[dim],
                size: xs[dim],
                out_shape: xs.to_vec(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element offsets of `l` in row-major order.
    fn offsets(l: &Layout) -> Vec<usize> {
        let mut out = vec![];
        ember_storage::for_each_run(l, |start, stride, len| out.extend((0..len).map(|i| start + i * stride)));
        out
    }

    /// Runs a plan on the host the way the kernels do, for comparison with the definitions.
    fn run(p: &IndexPlan, x: &[f64], xl: &Layout, idx: &[i64], src: &[f64]) -> Result<Vec<f64>> {
        let (reads, idxs, writes) = (offsets(&p.read), offsets(&p.index), offsets(&p.write));
        let mut out: Vec<f64> = match p.kernel {
            IndexKernel::Gather => vec![0.0; p.write.numel()],
            _ => offsets(xl).iter().map(|&o| x[o]).collect(),
        };
        for i in 0..idxs.len() {
            let j = idx[idxs[i]];
            if j < 0 || j as usize >= p.size {
                return Err(Error::invalid("test", format!("index {j}")));
            }
            let j = j as usize;
            match p.kernel {
                IndexKernel::Gather => out[i] = x[reads[i] + j * p.stride],
                IndexKernel::Scatter => out[writes[i] + j * p.stride] = src[reads[i]],
                IndexKernel::ScatterAdd => out[writes[i] + j * p.stride] += src[reads[i]],
            }
        }
        Ok(out)
    }

    #[test]
    fn plans_compute_pytorchs_definitions() {
        // x: a transposed [3, 4] view of a [4, 3] buffer, x[r][c] = buffer[c * 3 + r]
        let buf: Vec<f64> = (0..12).map(f64::from).collect();
        let xl = Layout::contiguous(&[4, 3]).transpose(0, 1).unwrap();
        let x = |r: usize, c: usize| buf[c * 3 + r];
        // index_select along dim 1 with [3, 0, 3]
        let idx = [3i64, 0, 3];
        let p = plan(IndexOp::IndexSelect { dim: 1 }, &xl, &Layout::contiguous(&[3]), None).unwrap();
        let got = run(&p, &buf, &xl, &idx, &[]).unwrap();
        let want: Vec<f64> = (0..3).flat_map(|r| idx.iter().map(move |&j| x(r, j as usize))).collect();
        assert_eq!((got, p.out_shape.clone()), (want, vec![3, 3]));
        // gather along dim 0 with a [2, 4] index
        let gi = [2i64, 0, 1, 2, 0, 0, 2, 1];
        let p = plan(IndexOp::Gather { dim: 0 }, &xl, &Layout::contiguous(&[2, 4]), None).unwrap();
        let got = run(&p, &buf, &xl, &gi, &[]).unwrap();
        let want: Vec<f64> = (0..8).map(|k| x(gi[k] as usize, k % 4)).collect();
        assert_eq!(got, want);
        // scatter_add along dim 1 from a [3, 2] src with repeated indices
        let (si, src) = ([1i64, 1, 0, 3, 2, 2], [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        let p =
            plan(IndexOp::ScatterAdd { dim: 1 }, &xl, &Layout::contiguous(&[3, 2]), Some(&Layout::contiguous(&[3, 2])))
                .unwrap();
        let got = run(&p, &buf, &xl, &si, &src).unwrap();
        let mut want: Vec<f64> = (0..12).map(|k| x(k / 4, k % 4)).collect();
        for k in 0..6 {
            want[(k / 2) * 4 + si[k] as usize] += src[k];
        }
        assert_eq!(got, want);
        // index_add along dim 0: rows of a [2, 4] src into rows 2 and 0
        let ai = [2i64, 0];
        let p = plan(IndexOp::IndexAdd { dim: 0 }, &xl, &Layout::contiguous(&[2]), Some(&Layout::contiguous(&[2, 4])))
            .unwrap();
        let got = run(&p, &buf, &xl, &ai, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        let mut want: Vec<f64> = (0..12).map(|k| x(k / 4, k % 4)).collect();
        for k in 0..8 {
            want[ai[k / 4] as usize * 4 + k % 4] += (k + 1) as f64;
        }
        assert_eq!(got, want);
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors_naming_the_op() {
        let x = Layout::contiguous(&[3, 4]);
        let e = plan(IndexOp::Gather { dim: 1 }, &x, &Layout::contiguous(&[4, 2]), None).unwrap_err();
        assert!(e.to_string().contains("gather") && e.to_string().contains("[4, 2]"), "{e}");
        let e = plan(IndexOp::Scatter { dim: 0 }, &x, &Layout::contiguous(&[2, 4]), Some(&Layout::contiguous(&[2, 3])))
            .unwrap_err();
        assert!(e.to_string().contains("scatter"), "{e}");
        let e = plan(IndexOp::IndexAdd { dim: 0 }, &x, &Layout::contiguous(&[2]), Some(&Layout::contiguous(&[3, 4])))
            .unwrap_err();
        assert!(e.to_string().contains("index_add"), "{e}");
        let e = plan(IndexOp::IndexSelect { dim: 2 }, &x, &Layout::contiguous(&[2]), None).unwrap_err();
        assert!(e.to_string().contains("index_select"), "{e}");
        assert!(plan(IndexOp::Scatter { dim: 0 }, &x, &Layout::contiguous(&[2, 4]), None).is_err());
    }
}
