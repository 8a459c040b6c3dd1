//! Linear algebra: matmul (PyTorch's 1-d and batched broadcasting rules), mm, bmm, addmm, baddbmm, dot,
//! outer, einsum, tensordot, trace, kron, cross, cdist, and `linalg` inv/det/solve/cholesky/qr/svdvals/eigvalsh.

use crate::Tensor;
use ember_storage::shape::{broadcast_shapes, normalize_dim};
use ember_storage::{Error, Result};

impl Tensor {
    /// Matrix product with `torch.matmul`'s rules: 1-d operands get a dim added then removed; batch
    /// dims broadcast.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        crate::tensor::same_device("matmul", &[self, other])?;
        let (an, bn) = (self.ndim(), other.ndim());
        if an == 0 || bn == 0 {
            return Err(Error::shape("matmul", "both arguments need at least 1 dim, got a scalar"));
        }
        let a = if an == 1 { self.unsqueeze(0)? } else { self.clone() };
        let b = if bn == 1 { other.unsqueeze(1)? } else { other.clone() };
        let (ra, rb) = (a.ndim(), b.ndim());
        let (m, k1) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k1 != k2 {
            return Err(Error::shape(
                "matmul",
                format!(
                    "shapes {:?} and {:?} are not compatible (inner dims {k1} and {k2})",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        let batch = broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2], "matmul")?;
        let dt = crate::elementwise::result_type(self, other);
        let mut sa = batch.clone();
        sa.extend([m, k1]);
        let mut sb = batch.clone();
        sb.extend([k2, n]);
        let (a, b) = (a.to_dtype(dt)?.broadcast_to(&sa)?, b.to_dtype(dt)?.broadcast_to(&sb)?);
        let buf = a.backend().matmul(a.v(), b.v())?;
        let mut out = batch;
        out.extend([m, n]);
        let r = a.same_backend(buf, &out);
        let (sa, sb) = (a.clone(), b.clone());
        let r = crate::graph::record_saving(r, "matmul", &[&a, &b], &[&a, &b], move |g| {
            Ok(vec![Some(g.matmul(&sb.mt()?)?), Some(sa.mt()?.matmul(g)?)])
        });
        match (an, bn) {
            (1, 1) => r.reshape(&[]),
            (1, _) => r.squeeze_dim(-2),
            (_, 1) => r.squeeze_dim(-1),
            _ => Ok(r),
        }
    }
    /// 2-d matrix product.
    pub fn mm(&self, other: &Tensor) -> Result<Tensor> {
        if self.ndim() != 2 || other.ndim() != 2 {
            return Err(Error::shape(
                "mm",
                format!("needs two 2-d tensors, got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.matmul(other)
    }
    /// Batched (3-d) matrix product without broadcasting.
    pub fn bmm(&self, other: &Tensor) -> Result<Tensor> {
        if self.ndim() != 3 || other.ndim() != 3 || self.shape()[0] != other.shape()[0] {
            return Err(Error::shape(
                "bmm",
                format!("needs 3-d tensors with equal batch, got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.matmul(other)
    }
    /// `beta * self + alpha * (m1 @ m2)`.
    pub fn addmm(&self, m1: &Tensor, m2: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
        let p = m1.mm(m2)?;
        scaled_sum(self, &p, beta, alpha)
    }
    /// `beta * self + alpha * (b1 @ b2)` for batches.
    pub fn baddbmm(&self, b1: &Tensor, b2: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
        let p = b1.bmm(b2)?;
        scaled_sum(self, &p, beta, alpha)
    }
    /// Inner product of two 1-d tensors.
    pub fn dot(&self, other: &Tensor) -> Result<Tensor> {
        if self.ndim() != 1 || other.ndim() != 1 || self.numel() != other.numel() {
            return Err(Error::shape(
                "dot",
                format!("needs two 1-d tensors of one length, got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.matmul(other)
    }
    /// Outer product of two 1-d tensors.
    pub fn outer(&self, other: &Tensor) -> Result<Tensor> {
        if self.ndim() != 1 || other.ndim() != 1 {
            return Err(Error::shape(
                "outer",
                format!("needs two 1-d tensors, got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.unsqueeze(1)?.mul(&other.unsqueeze(0)?)
    }
    /// Sum of the main diagonal of a 2-d tensor.
    pub fn trace(&self) -> Result<Tensor> {
        if self.ndim() != 2 {
            return Err(Error::shape("trace", format!("needs a 2-d tensor, got {:?}", self.shape())));
        }
        self.diagonal(0, 0, 1)?.sum()
    }
    /// Kronecker product.
    pub fn kron(&self, other: &Tensor) -> Result<Tensor> {
        let n = self.ndim().max(other.ndim());
        let pad = |t: &Tensor| -> Result<Tensor> {
            let mut s: Vec<isize> = vec![1; n - t.ndim()];
            s.extend(t.shape().iter().map(|&x| x as isize));
            t.reshape(&s)
        };
        let (a, b) = (pad(self)?, pad(other)?);
        let (mut sa, mut sb, mut out) = (vec![], vec![], vec![]);
        for i in 0..n {
            sa.extend([a.shape()[i] as isize, 1]);
            sb.extend([1, b.shape()[i] as isize]);
            out.push((a.shape()[i] * b.shape()[i]) as isize);
        }
        a.reshape(&sa)?.mul(&b.reshape(&sb)?)?.reshape(&out)
    }
    /// Cross product of 3-vectors along `dim`.
    pub fn cross(&self, other: &Tensor, dim: isize) -> Result<Tensor> {
        let shape = broadcast_shapes(self.shape(), other.shape(), "cross")?;
        let d = normalize_dim(dim, shape.len(), "cross")?;
        if shape.get(d) != Some(&3) {
            return Err(Error::shape("cross", format!("dim {dim} must have size 3, got shape {shape:?}")));
        }
        let (a, b) = (self.broadcast_to(&shape)?, other.broadcast_to(&shape)?);
        let c = |t: &Tensor, i: isize| t.narrow(d as isize, i, 1);
        let x = c(&a, 1)?.mul(&c(&b, 2)?)?.sub(&c(&a, 2)?.mul(&c(&b, 1)?)?)?;
        let y = c(&a, 2)?.mul(&c(&b, 0)?)?.sub(&c(&a, 0)?.mul(&c(&b, 2)?)?)?;
        let z = c(&a, 0)?.mul(&c(&b, 1)?)?.sub(&c(&a, 1)?.mul(&c(&b, 0)?)?)?;
        Tensor::cat(&[x, y, z], d as isize)
    }
    /// Pairwise p-norm distances between the rows of `self` `[.., P, M]` and `other` `[.., R, M]`.
    pub fn cdist(&self, other: &Tensor, p: f64) -> Result<Tensor> {
        if self.ndim() < 2 || other.ndim() < 2 || self.shape()[self.ndim() - 1] != other.shape()[other.ndim() - 1] {
            return Err(Error::shape(
                "cdist",
                format!("needs [.., P, M] and [.., R, M], got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.unsqueeze(-2)?.sub(&other.unsqueeze(-3)?)?.vector_norm(p, &[-1], false)
    }
    /// Contracts `dims_a` of `self` with `dims_b` of `other`.
    pub fn tensordot(&self, other: &Tensor, dims_a: &[isize], dims_b: &[isize]) -> Result<Tensor> {
        let da = ember_storage::shape::normalize_dims(dims_a, self.ndim(), "tensordot")?;
        let db = ember_storage::shape::normalize_dims(dims_b, other.ndim(), "tensordot")?;
        if da.len() != db.len() || da.iter().zip(&db).any(|(&i, &j)| self.shape()[i] != other.shape()[j]) {
            return Err(Error::shape(
                "tensordot",
                format!(
                    "contracted dims {dims_a:?} of {:?} and {dims_b:?} of {:?} differ",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        let fa: Vec<usize> = (0..self.ndim()).filter(|i| !da.contains(i)).collect();
        let fb: Vec<usize> = (0..other.ndim()).filter(|i| !db.contains(i)).collect();
        let k: usize = da.iter().map(|&i| self.shape()[i]).product();
        let pa: Vec<isize> = fa.iter().chain(&da).map(|&i| i as isize).collect();
        let pb: Vec<isize> = db.iter().chain(&fb).map(|&i| i as isize).collect();
        let a = self.permute(&pa)?.reshape(&[-1, k as isize])?;
        let b = other.permute(&pb)?.reshape(&[k as isize, -1])?;
        let out: Vec<isize> =
            fa.iter().map(|&i| self.shape()[i] as isize).chain(fb.iter().map(|&i| other.shape()[i] as isize)).collect();
        a.mm(&b)?.reshape(&out)
    }
    /// `torch.tensordot(a, b, dims=n)`: the last `n` dims of `self` with the first `n` of `other`.
    pub fn tensordot_n(&self, other: &Tensor, n: usize) -> Result<Tensor> {
        if n > self.ndim() || n > other.ndim() {
            return Err(Error::invalid(
                "tensordot",
                format!("dims={n} exceeds a rank ({} or {})", self.ndim(), other.ndim()),
            ));
        }
        let da: Vec<isize> = (self.ndim() - n..self.ndim()).map(|i| i as isize).collect();
        let db: Vec<isize> = (0..n).map(|i| i as isize).collect();
        self.tensordot(other, &da, &db)
    }

    /// Einstein summation over `operands`, e.g. `"bij,bjk->bik"` (implicit output and `...` supported).
    pub fn einsum(equation: &str, operands: &[Tensor]) -> Result<Tensor> {
        let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l.to_string(), Some(r.to_string())),
            None => (eq.clone(), None),
        };
        let inputs: Vec<&str> = lhs.split(',').collect();
        if inputs.len() != operands.len() {
            return Err(Error::invalid(
                "einsum",
                format!("{equation:?} names {} operands, got {}", inputs.len(), operands.len()),
            ));
        }
        // expand "..." into upper-case letters that cannot clash with user labels
        let max_ell = inputs
            .iter()
            .zip(operands)
            .map(|(s, t)| if s.contains("...") { t.ndim() + 3 - s.len() } else { 0 })
            .max()
            .unwrap_or(0);
        let ell: Vec<char> = (0..max_ell).map(|i| char::from(b'A' + i as u8)).collect();
        let mut specs = vec![];
        for (s, t) in inputs.iter().zip(operands) {
            let spec: Vec<char> = if let Some((a, b)) = s.split_once("...") {
                let n = t.ndim().checked_sub(a.len() + b.len()).ok_or_else(|| {
                    Error::invalid("einsum", format!("{s:?} has more labels than dims of {:?}", t.shape()))
                })?;
                a.chars().chain(ell[max_ell - n..].iter().copied()).chain(b.chars()).collect()
            } else {
                s.chars().collect()
            };
            if spec.len() != t.ndim() {
                return Err(Error::invalid(
                    "einsum",
                    format!("{s:?} has {} labels but operand has shape {:?}", spec.len(), t.shape()),
                ));
            }
            specs.push(spec);
        }
        let out: Vec<char> = match rhs {
            Some(r) => r.replace("...", &ell.iter().collect::<String>()).chars().collect(),
            None => {
                let mut counts = std::collections::BTreeMap::new();
                for s in &specs {
                    for &c in s {
                        *counts.entry(c).or_insert(0) += 1;
                    }
                }
                ell.iter()
                    .copied()
                    .chain(counts.iter().filter(|(c, &n)| n == 1 && c.is_lowercase()).map(|(&c, _)| c))
                    .collect()
            }
        };
        let mut all: Vec<char> = out.clone();
        for s in &specs {
            for &c in s {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        let mut acc: Option<Tensor> = None;
        for (spec, t) in specs.iter().zip(operands) {
            // take diagonals of repeated labels, then align to `all`
            let mut t = t.clone();
            let mut labels = spec.clone();
            while let Some((i, j)) = repeated(&labels) {
                t = t.diagonal(0, i as isize, j as isize)?;
                let c = labels[i];
                labels.remove(j);
                labels.remove(i);
                labels.push(c);
            }
            let mut perm: Vec<isize> = vec![];
            let mut shape: Vec<isize> = vec![];
            for &c in &all {
                if let Some(p) = labels.iter().position(|&x| x == c) {
                    perm.push(p as isize);
                }
            }
            let tp = t.permute(&perm)?;
            let mut k = 0;
            for &c in &all {
                if labels.contains(&c) {
                    shape.push(tp.shape()[k] as isize);
                    k += 1;
                } else {
                    shape.push(1);
                }
            }
            let tr = tp.reshape(&shape)?;
            acc = Some(match acc {
                None => tr,
                Some(a) => a.mul(&tr)?,
            });
        }
        let acc = acc.ok_or_else(|| Error::invalid("einsum", "needs at least one operand"))?;
        let sum_dims: Vec<isize> = (out.len()..all.len()).map(|i| i as isize).collect();
        if sum_dims.is_empty() {
            acc.contiguous()
        } else {
            acc.sum_dim(&sum_dims, false)
        }
    }
}

fn repeated(labels: &[char]) -> Option<(usize, usize)> {
    for i in 0..labels.len() {
        for j in i + 1..labels.len() {
            if labels[i] == labels[j] {
                return Some((i, j));
            }
        }
    }
    None
}

fn scaled_sum(input: &Tensor, prod: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
    let p = if alpha == 1.0 { prod.clone() } else { prod.mul(alpha)? };
    if beta == 0.0 {
        return p.add(&input.zeros_like()?);
    }
    let i = if beta == 1.0 { input.clone() } else { input.mul(beta)? };
    i.add(&p)
}

/// Dense row-major f64 matrices of a batch, for the host-side decompositions.
fn matrices(t: &Tensor, op: &str, square: bool) -> Result<(Vec<Vec<f64>>, usize, usize)> {
    if t.ndim() < 2 || !t.dtype().is_float() {
        return Err(Error::shape(
            op,
            format!("needs a floating (batch of) matrices, got {:?} {}", t.shape(), t.dtype()),
        ));
    }
    let (r, c) = (t.shape()[t.ndim() - 2], t.shape()[t.ndim() - 1]);
    if square && r != c {
        return Err(Error::shape(op, format!("needs square matrices, got {:?}", t.shape())));
    }
    let v = t.to_vec_f64()?;
    Ok((v.chunks(r * c).map(|m| m.to_vec()).collect::<Vec<_>>().into_iter().filter(|_| r * c > 0).collect(), r, c))
}

/// Wraps a host-computed result; its backward is not implemented yet, which backward reports clearly
/// instead of silently dropping the gradient.
fn from_batches(t: &Tensor, data: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
    let out = Tensor::from_host(ember_storage::HostData::from_f64s(t.dtype(), &data), shape, t.device())?;
    Ok(crate::graph::record(out, "linalg", &[t], |_| {
        Err(Error::unsupported(
            "linalg backward",
            "gradients of inv/det/solve/cholesky/qr/svdvals/eigvalsh are not implemented yet",
        ))
    }))
}

/// LU with partial pivoting in place; returns (permutation sign, pivots) or None when singular.
fn lu(a: &mut [f64], n: usize) -> Option<(f64, Vec<usize>)> {
    let mut piv: Vec<usize> = (0..n).collect();
    let mut sign = 1.0;
    for k in 0..n {
        let p = (k..n).max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))?;
        if a[p * n + k] == 0.0 {
            return None;
        }
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
            piv.swap(k, p);
            sign = -sign;
        }
        for i in k + 1..n {
            let f = a[i * n + k] / a[k * n + k];
            a[i * n + k] = f;
            for j in k + 1..n {
                a[i * n + j] -= f * a[k * n + j];
            }
        }
    }
    Some((sign, piv))
}

fn lu_solve(lu: &[f64], piv: &[usize], n: usize, b: &[f64], m: usize) -> Vec<f64> {
    // b is n x m; solve for each column
    let mut x = vec![0.0; n * m];
    for c in 0..m {
        let mut y: Vec<f64> = (0..n).map(|i| b[piv[i] * m + c]).collect();
        for i in 0..n {
            for j in 0..i {
                y[i] -= lu[i * n + j] * y[j];
            }
        }
        for i in (0..n).rev() {
            for j in i + 1..n {
                y[i] -= lu[i * n + j] * y[j];
            }
            y[i] /= lu[i * n + i];
        }
        for i in 0..n {
            x[i * m + c] = y[i];
        }
    }
    x
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations, ascending.
fn jacobi_eigvals(a: &mut [f64], n: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    ev.sort_by(|a, b| a.total_cmp(b));
    ev
}

/// Singular values by one-sided Jacobi on the columns, descending.
fn jacobi_svdvals(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    // work on the matrix with more rows than columns
    let (rows, cols, mut m) =
        if r >= c { (r, c, a.to_vec()) } else { (c, r, (0..c * r).map(|k| a[(k % r) * c + k / r]).collect()) };
    for _ in 0..100 {
        let mut rotated = false;
        for p in 0..cols {
            for q in p + 1..cols {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..rows {
                    let (x, y) = (m[i * cols + p], m[i * cols + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                for i in 0..rows {
                    let (x, y) = (m[i * cols + p], m[i * cols + q]);
                    m[i * cols + p] = cs * x - sn * y;
                    m[i * cols + q] = sn * x + cs * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sv: Vec<f64> = (0..cols).map(|j| (0..rows).map(|i| m[i * cols + j].powi(2)).sum::<f64>().sqrt()).collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    sv
}

impl Tensor {
    /// Inverse of (a batch of) square matrices; an error names a singular matrix.
    pub fn linalg_inv(&self) -> Result<Tensor> {
        let (mats, n, _) = matrices(self, "linalg.inv", true)?;
        let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        let mut out = vec![];
        for mut m in mats {
            let (_, piv) = lu(&mut m, n).ok_or_else(|| Error::invalid("linalg.inv", "the matrix is singular"))?;
            out.extend(lu_solve(&m, &piv, n, &eye, n));
        }
        from_batches(self, out, self.shape())
    }
    /// Determinant of (a batch of) square matrices.
    pub fn linalg_det(&self) -> Result<Tensor> {
        let (mats, n, _) = matrices(self, "linalg.det", true)?;
        let out: Vec<f64> = mats
            .into_iter()
            .map(|mut m| match lu(&mut m, n) {
                Some((s, _)) => s * (0..n).map(|i| m[i * n + i]).product::<f64>(),
                None => 0.0,
            })
            .collect();
        from_batches(self, out, &self.shape()[..self.ndim() - 2])
    }
    /// Solves `self @ X = b` (b a matrix or a batch of matrices with the same batch dims).
    pub fn linalg_solve(&self, b: &Tensor) -> Result<Tensor> {
        let (mats, n, _) = matrices(self, "linalg.solve", true)?;
        let vector = b.ndim() == self.ndim() - 1;
        let bm = if vector { b.unsqueeze(-1)? } else { b.clone() };
        if bm.ndim() != self.ndim() || bm.shape()[bm.ndim() - 2] != n {
            return Err(Error::shape("linalg.solve", format!("A {:?} and B {:?} do not fit", self.shape(), b.shape())));
        }
        let m = bm.shape()[bm.ndim() - 1];
        let bv = bm.to_dtype(self.dtype())?.to_vec_f64()?;
        let mut out = vec![];
        for (k, mut a) in mats.into_iter().enumerate() {
            let (_, piv) = lu(&mut a, n).ok_or_else(|| Error::invalid("linalg.solve", "the matrix is singular"))?;
            out.extend(lu_solve(&a, &piv, n, &bv[k * n * m..(k + 1) * n * m], m));
        }
        from_batches(self, out, b.shape())
    }
    /// Lower Cholesky factor of (a batch of) symmetric positive-definite matrices.
    pub fn linalg_cholesky(&self) -> Result<Tensor> {
        let (mats, n, _) = matrices(self, "linalg.cholesky", true)?;
        let mut out = vec![];
        for a in mats {
            let mut l = vec![0.0; n * n];
            for j in 0..n {
                let d = a[j * n + j] - (0..j).map(|k| l[j * n + k] * l[j * n + k]).sum::<f64>();
                if d <= 0.0 || d.is_nan() {
                    return Err(Error::invalid(
                        "linalg.cholesky",
                        format!("the matrix is not positive-definite (leading minor {})", j + 1),
                    ));
                }
                l[j * n + j] = d.sqrt();
                for i in j + 1..n {
                    l[i * n + j] =
                        (a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>()) / l[j * n + j];
                }
            }
            out.extend(l);
        }
        from_batches(self, out, self.shape())
    }
    /// Reduced QR by Householder reflections: (Q `[.., m, k]`, R `[.., k, n]`), k = min(m, n).
    pub fn linalg_qr(&self) -> Result<(Tensor, Tensor)> {
        let (mats, m, n) = matrices(self, "linalg.qr", false)?;
        let k = m.min(n);
        let (mut qs, mut rs) = (vec![], vec![]);
        for a in mats {
            let mut r = a.clone();
            let mut q: Vec<f64> = (0..m * m).map(|i| if i / m == i % m { 1.0 } else { 0.0 }).collect();
            for j in 0..k {
                let norm = (j..m).map(|i| r[i * n + j].powi(2)).sum::<f64>().sqrt();
                if norm == 0.0 {
                    continue;
                }
                let alpha = if r[j * n + j] > 0.0 { -norm } else { norm };
                let mut v: Vec<f64> = (0..m).map(|i| if i < j { 0.0 } else { r[i * n + j] }).collect();
                v[j] -= alpha;
                let vn: f64 = v.iter().map(|x| x * x).sum();
                if vn == 0.0 {
                    continue;
                }
                for c in 0..n {
                    let d: f64 = (j..m).map(|i| v[i] * r[i * n + c]).sum::<f64>() * 2.0 / vn;
                    for i in j..m {
                        r[i * n + c] -= d * v[i];
                    }
                }
                for row in 0..m {
                    let d: f64 = (j..m).map(|i| q[row * m + i] * v[i]).sum::<f64>() * 2.0 / vn;
                    for i in j..m {
                        q[row * m + i] -= d * v[i];
                    }
                }
            }
            for i in 0..m {
                qs.extend_from_slice(&q[i * m..i * m + k]);
            }
            for i in 0..k {
                rs.extend((0..n).map(|c| if c < i { 0.0 } else { r[i * n + c] }));
            }
        }
        let batch = &self.shape()[..self.ndim() - 2];
        let (mut sq, mut sr) = (batch.to_vec(), batch.to_vec());
        sq.extend([m, k]);
        sr.extend([k, n]);
        Ok((from_batches(self, qs, &sq)?, from_batches(self, rs, &sr)?))
    }
    /// Singular values, descending.
    pub fn linalg_svdvals(&self) -> Result<Tensor> {
        let (mats, r, c) = matrices(self, "linalg.svdvals", false)?;
        let out: Vec<f64> = mats.iter().flat_map(|a| jacobi_svdvals(a, r, c)).collect();
        let mut shape = self.shape()[..self.ndim() - 2].to_vec();
        shape.push(r.min(c));
        from_batches(self, out, &shape)
    }
    /// Eigenvalues of symmetric matrices (the lower triangle is used), ascending.
    pub fn linalg_eigvalsh(&self) -> Result<Tensor> {
        let (mats, n, _) = matrices(self, "linalg.eigvalsh", true)?;
        let out: Vec<f64> = mats
            .into_iter()
            .flat_map(|a| {
                let mut s: Vec<f64> = (0..n * n)
                    .map(|k| {
                        let (i, j) = (k / n, k % n);
                        if i >= j {
                            a[k]
                        } else {
                            a[j * n + i]
                        }
                    })
                    .collect();
                jacobi_eigvals(&mut s, n)
            })
            .collect();
        let mut shape = self.shape()[..self.ndim() - 2].to_vec();
        shape.push(n);
        from_batches(self, out, &shape)
    }
    /// Matrix or vector norm helper: Frobenius norm of the last two dims.
    pub fn frobenius_norm(&self) -> Result<Tensor> {
        self.vector_norm(2.0, &[-2, -1], false)
    }
}
