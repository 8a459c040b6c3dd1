//! Mapping Ember's row-major batched products onto cuBLAS's column-major strided-batched GEMM
//! without copies: `C = A·B` (row-major, `C` dense) is computed as `Cᵀ = Bᵀ·Aᵀ` in column-major
//! terms, and each operand's strides decide whether cuBLAS reads it as stored (`N`) or transposed
//! (`T`) and with which leading dimension. Views that fit neither (no unit stride in the matrix
//! dims, or batch dims that do not collapse to one stride) are gathered to dense first.

use ember_storage::Layout;

/// How cuBLAS reads one operand: transposed or not, its leading dimension, its batch stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    /// `CUBLAS_OP_T` when true.
    pub transpose: bool,
    /// The leading dimension.
    pub ld: usize,
    /// Elements between consecutive matrices of the batch (0 when broadcast).
    pub batch_stride: usize,
    /// Offset of the first element.
    pub offset: usize,
}

/// A strided-batched GEMM call in cuBLAS's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmPlan {
    /// cuBLAS's `m` (= Ember's `n`), `n` (= Ember's `m`), `k`.
    pub m: usize,
    /// cuBLAS's `n`.
    pub n: usize,
    /// The shared dim.
    pub k: usize,
    /// Matrices in the batch.
    pub batch: usize,
    /// cuBLAS's first operand: Ember's `b`.
    pub a: Operand,
    /// cuBLAS's second operand: Ember's `a`.
    pub b: Operand,
}

/// How the column-major matrix `Mᵀ` (cols x rows) is read from a row-major-indexed `M` (rows x
/// cols) whose element `(i, j)` is at `i * rs + j * cs`, or `None` when it cannot be.
fn as_column_major_transpose(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    if cs == 1 || cols <= 1 {
        // stored column-major with leading dim rs: exactly Mᵀ
        let ld = if rows <= 1 { cols.max(1) } else { rs };
        (ld >= cols.max(1)).then_some((false, ld))
    } else if rs == 1 || rows <= 1 {
        // stored column-major as M itself (leading dim cs): read transposed
        let ld = if cols <= 1 { rows.max(1) } else { cs };
        (ld >= rows.max(1)).then_some((true, ld))
    } else {
        None
    }
}

/// The single stride of a layout's batch dims (all but the last two), when they collapse.
fn batch_stride(l: &Layout) -> Option<usize> {
    let nd = l.ndim();
    let dims: Vec<(usize, usize)> =
        (0..nd - 2).map(|d| (l.shape()[d], l.strides()[d])).filter(|&(size, _)| size != 1).collect();
    let Some(&(_, inner)) = dims.last() else { return Some(0) };
    dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0).then_some(inner)
}

fn operand(l: &Layout) -> Option<Operand> {
    let nd = l.ndim();
    let (rows, cols) = (l.shape()[nd - 2], l.shape()[nd - 1]);
    let (transpose, ld) = as_column_major_transpose(rows, cols, l.strides()[nd - 2], l.strides()[nd - 1])?;
    Some(Operand { transpose, ld, batch_stride: batch_stride(l)?, offset: l.offset() })
}

/// The cuBLAS call for `a` `[..., m, k]` times `b` `[..., k, n]` (equal batch dims), or `None` for
/// an operand that must be gathered first (see [`plan_needs`]).
pub fn plan(a: &Layout, b: &Layout) -> Option<GemmPlan> {
    let nd = a.ndim();
    let (m, k, n) = (a.shape()[nd - 2], a.shape()[nd - 1], b.shape()[nd - 1]);
    let batch = a.shape()[..nd - 2].iter().product();
    Some(GemmPlan { m: n, n: m, k, batch, a: operand(b)?, b: operand(a)? })
}

/// Which of `(a, b)` cuBLAS cannot read as they are.
pub fn plan_needs(a: &Layout, b: &Layout) -> (bool, bool) {
    (operand(a).is_none(), operand(b).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's GEMM semantics on the host: column-major `C (m x n) = op(A) op(B)`, `C` dense with
    /// leading dim m, each batch offset by the strides.
    fn reference_gemm(p: &GemmPlan, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; p.batch * p.m * p.n];
        for t in 0..p.batch {
            let (oa, ob) = (p.a.offset + t * p.a.batch_stride, p.b.offset + t * p.b.batch_stride);
            for j in 0..p.n {
                for i in 0..p.m {
                    let mut s = 0.0;
                    for l in 0..p.k {
                        // op(A)(i, l), op(B)(l, j)
                        let av = if p.a.transpose { a[oa + l + i * p.a.ld] } else { a[oa + i + l * p.a.ld] };
                        let bv = if p.b.transpose { b[ob + j + l * p.b.ld] } else { b[ob + l + j * p.b.ld] };
                        s += av * bv;
                    }
                    c[t * p.m * p.n + i + j * p.m] = s;
                }
            }
        }
        c
    }

    fn naive(a: &[f64], la: &Layout, b: &[f64], lb: &Layout) -> Vec<f64> {
        let nd = la.ndim();
        let (m, k, n) = (la.shape()[nd - 2], la.shape()[nd - 1], lb.shape()[nd - 1]);
        let batch: usize = la.shape()[..nd - 2].iter().product();
        let mut out = vec![];
        for t in 0..batch {
            let mut idx = vec![0; nd];
            let mut r = t;
            for d in (0..nd - 2).rev() {
                idx[d] = r % la.shape()[d];
                r /= la.shape()[d];
            }
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        let (mut ia, mut ib) = (idx.clone(), idx.clone());
                        (ia[nd - 2], ia[nd - 1], ib[nd - 2], ib[nd - 1]) = (i, l, l, j);
                        s += a[la.index_of(&ia)] * b[lb.index_of(&ib)];
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919 + seed * 104729) % 97) as f64 - 48.0).collect()
    }

    #[test]
    fn strided_views_map_to_cublas_without_copies_and_give_the_row_major_product() {
        // a: [2, 3, m=4, k=5] in several layouts; b: [2, 3, k=5, n=6] likewise
        let a_views = [
            Layout::contiguous(&[2, 3, 4, 5]),
            Layout::contiguous(&[2, 3, 5, 4]).transpose(2, 3).unwrap(),
            Layout::contiguous(&[2, 3, 4, 9]).narrow(3, 2, 5).unwrap(),
            Layout::contiguous(&[1, 1, 4, 5]).expand(&[2, 3, 4, 5]).unwrap(),
        ];
        let b_views = [
            Layout::contiguous(&[2, 3, 5, 6]),
            Layout::contiguous(&[2, 3, 6, 5]).transpose(2, 3).unwrap(),
            Layout::contiguous(&[2, 3, 5, 7]).narrow(3, 1, 6).unwrap(),
            Layout::contiguous(&[1, 1, 5, 6]).expand(&[2, 3, 5, 6]).unwrap(),
        ];
        let mut planned = 0;
        for la in &a_views {
            for lb in &b_views {
                let (a, b) = (values(la.span_end(), 1), values(lb.span_end(), 2));
                let p = plan(la, lb).unwrap_or_else(|| panic!("{la:?} x {lb:?} should map"));
                let col_major = reference_gemm(&p, &b, &a);
                // Cᵀ column-major (n x m, ld n) is C row-major (m x n)
                assert_eq!(col_major, naive(&a, la, &b, lb), "{la:?} x {lb:?}");
                planned += 1;
            }
        }
        assert_eq!(planned, 16);
    }

    #[test]
    fn views_without_a_unit_stride_or_a_single_batch_stride_are_gathered() {
        let strided = Layout::contiguous(&[8, 10]).slice(0, 0, 8, 2).unwrap().slice(1, 0, 10, 2).unwrap(); // [4, 5]
        assert_eq!(plan_needs(&strided, &Layout::contiguous(&[5, 3])), (true, false));
        let batch = Layout::contiguous(&[3, 2, 4, 5]).permute(&[1, 0, 2, 3]).unwrap(); // batch dims do not collapse
        assert_eq!(plan_needs(&batch, &Layout::contiguous(&[2, 3, 5, 6])), (true, false));
        assert!(plan(&batch, &Layout::contiguous(&[2, 3, 5, 6])).is_none());
        // broadcast over the outer batch dim only: offsets are not linear in the batch index
        let half = Layout::contiguous(&[3, 5, 6]).unsqueeze(0).unwrap().expand(&[2, 3, 5, 6]).unwrap();
        assert_eq!(plan_needs(&Layout::contiguous(&[2, 3, 4, 5]), &half), (false, true));
    }
}
