//! Linear algebra: matmul (PyTorch's 1-d and batched broadcasting rules), mm, bmm, addmm, baddbmm, dot,
//! outer, einsum, tensordot, trace, kron, cross, cdist, and `linalg` inv/det/solve/cholesky/qr/svdvals/eigvalsh.

use crate::linalg_decomp as decomp;
use crate::Tensor;
use ember_storage::shape::{broadcast_shapes, normalize_dim};
use ember_storage::{Error, Result};

impl Tensor {
    /// Matrix product with `torch.matmul`'s rules: 1-d operands get a dim added then removed; batch
    /// dims broadcast.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("matmul", &[self, other], |t| t[0].matmul(&t[1]))? {
            return Ok(y);
        }
        crate::tensor::same_device("matmul", &[self, other])?;
        let (an, bn) = (self.ndim(), other.ndim());
        if an == 0 || bn == 0 {
            return Err(Error::shape("matmul", "both arguments need at least 1 dim, got a scalar"));
        }
        if an > 2 && bn == 2 && self.shape()[an - 1] == other.shape()[0] {
            // [..., m, k] @ [k, n] is one [(... m), k] @ [k, n] product (as PyTorch folds it): one
            // large gemm instead of many small ones, and the gradient of the shared matrix is one
            // product too, instead of a per-batch product summed afterwards.
            let mut shape: Vec<isize> = self.shape()[..an - 1].iter().map(|&d| d as isize).collect();
            shape.push(other.shape()[1] as isize);
            let rows: usize = self.shape()[..an - 1].iter().product();
            let flat = self.reshape([rows as isize, self.shape()[an - 1] as isize])?;
            return flat.matmul(other)?.reshape(&shape);
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
        // only the gradients that have somewhere to go (an input without requires_grad has no
        // edge): a network's first layer skips the product for its input's gradient, as PyTorch does
        let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
        let r = crate::graph::record_saving(r, "matmul", &[&a, &b], &[&a, &b], move |g| {
            // An operand that is a transposed view (e.g. linear's `weight.t()`) gets its gradient
            // as the transpose of a dense product, so the gradient that reaches the stored tensor
            // (through the transpose's backward) is dense too, as PyTorch's is.
            let ga = if !need_a {
                None
            } else if transposed_view(&sa) {
                Some(sb.matmul(&g.mt()?)?.mt()?)
            } else {
                Some(g.matmul(&sb.mt()?)?)
            };
            let gb = if !need_b {
                None
            } else if transposed_view(&sb) {
                Some(g.mt()?.matmul(&sa)?.mt()?)
            } else {
                Some(sa.mt()?.matmul(g)?)
            };
            Ok(smallvec::smallvec![ga, gb])
        });
        match (an, bn) {
            (1, 1) => r.reshape(crate::SCALAR),
            (1, _) => r.squeeze_dim(-2),
            (_, 1) => r.squeeze_dim(-1),
            _ => Ok(r),
        }
    }
    /// 2-d matrix product.
    pub fn mm(&self, other: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("mm", &[self, other], |t| t[0].mm(&t[1]))? {
            return Ok(y);
        }
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
        if let Some(y) = crate::autocast::autocast_op("bmm", &[self, other], |t| t[0].bmm(&t[1]))? {
            return Ok(y);
        }
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
        if let Some(y) =
            crate::autocast::autocast_op("addmm", &[self, m1, m2], |t| t[0].addmm(&t[1], &t[2], beta, alpha))?
        {
            return Ok(y);
        }
        let p = m1.mm(m2)?;
        scaled_sum(self, &p, beta, alpha)
    }
    /// `beta * self + alpha * (b1 @ b2)` for batches.
    pub fn baddbmm(&self, b1: &Tensor, b2: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
        if let Some(y) =
            crate::autocast::autocast_op("baddbmm", &[self, b1, b2], |t| t[0].baddbmm(&t[1], &t[2], beta, alpha))?
        {
            return Ok(y);
        }
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
        if let Some(y) = crate::autocast::autocast_op("trace", &[self], |t| t[0].trace())? {
            return Ok(y);
        }
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
    pub fn cross(&self, other: &Tensor, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
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
        if let Some(y) = crate::autocast::autocast_op("cdist", &[self, other], |t| t[0].cdist(&t[1], p))? {
            return Ok(y);
        }
        if self.ndim() < 2 || other.ndim() < 2 || self.shape()[self.ndim() - 1] != other.shape()[other.ndim() - 1] {
            return Err(Error::shape(
                "cdist",
                format!("needs [.., P, M] and [.., R, M], got {:?} and {:?}", self.shape(), other.shape()),
            ));
        }
        self.unsqueeze(-2)?.sub(&other.unsqueeze(-3)?)?.vector_norm(p, [-1], false)
    }
    /// Contracts `dims_a` of `self` with `dims_b` of `other`.
    pub fn tensordot(&self, other: &Tensor, dims_a: impl crate::Dims, dims_b: impl crate::Dims) -> Result<Tensor> {
        let dims_a: &[isize] = &dims_a.to_isizes();
        let dims_b: &[isize] = &dims_b.to_isizes();
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
        let a = self.permute(&pa)?.reshape([-1, k as isize])?;
        let b = other.permute(&pb)?.reshape([k as isize, -1])?;
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
    if r * c == 0 {
        // empty matrices: one (empty) matrix per batch entry, so each op returns PyTorch's empty
        // result (det 1, inv/solve/cholesky/qr/svdvals/eigvalsh of the empty shapes)
        let batch = ember_storage::shape::numel(&t.shape()[..t.ndim() - 2]);
        let mut mats = ember_storage::alloc::try_with_capacity(op, batch)?;
        mats.resize(batch, vec![]);
        return Ok((mats, r, c));
    }
    let v = t.to_vec_f64()?;
    Ok((v.chunks(r * c).map(|m| m.to_vec()).collect(), r, c))
}

/// A host-computed f64 result as a tensor of `t`'s dtype and device (not recorded).
fn host_tensor(t: &Tensor, data: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_host(ember_storage::HostData::from_f64s(t.dtype(), &data), shape, t.device())
}

/// Shape of a batch of matrices: `t`'s batch dims followed by `rows x cols`.
fn batch_shape(t: &Tensor, tail: &[usize]) -> Vec<usize> {
    let mut s = t.shape()[..t.ndim() - 2].to_vec();
    s.extend_from_slice(tail);
    s
}

/// Constant factors (singular/eigen vectors) that a first-order backward uses. When the backward is
/// itself recorded (`create_graph`), they are marked so that differentiating through them again is a
/// clear error instead of a silently missing term.
fn vectors_for_backward(a: &Tensor, data: Vec<f64>, shape: &[usize], op: &'static str) -> Result<Tensor> {
    let out = host_tensor(a, data, shape)?;
    Ok(crate::graph::record(out, op, &[a], move |_| {
        Err(Error::unsupported(
            op,
            "second-order gradients (through the singular/eigen vectors) are not implemented yet",
        ))
    }))
}

/// `triu(n) + triu(n, 1)^T`: the symmetric matrix built from the upper triangle of `n`.
fn sym_from_upper(n: &Tensor) -> Result<Tensor> {
    n.triu(0)?.add(&n.triu(1)?.mt()?)
}

/// Gradient of A = QR (square R, m >= n) for the cotangents (gQ, gR).
/// Gradient of the reduced QR of `a` for the cotangents of Q and/or R (a missing one is zero).
fn qr_backward(a: &Tensor, gq: Option<&Tensor>, gr: Option<&Tensor>) -> Result<Tensor> {
    let (q, r) = a.linalg_qr()?;
    let gq = match gq {
        Some(g) => g.clone(),
        None => q.zeros_like()?,
    };
    let gr = match gr {
        Some(g) => g.clone(),
        None => r.zeros_like()?,
    };
    let (m, n) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    if m >= n {
        return qr_backward_square(&q, &r, &gq, &gr);
    }
    // wide: A = Q [R1 | R2] with R1 square; R2 = Q^T A2 adds A2 gR2^T to Q's cotangent
    let (r1, gr1, gr2) = (r.narrow(-1, 0, m)?, gr.narrow(-1, 0, m)?, gr.narrow(-1, m as isize, n - m)?);
    let a2 = a.narrow(-1, m as isize, n - m)?;
    let ga1 = qr_backward_square(&q, &r1, &gq.add(&a2.matmul(&gr2.mt()?)?)?, &gr1)?;
    Tensor::cat(&[ga1, q.matmul(&gr2)?], -1)
}

/// The symmetric matrix whose lower triangle is `a`'s.
fn lower_symmetric(a: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|k| if k / n >= k % n { a[k] } else { a[(k % n) * n + k / n] }).collect()
}

fn qr_backward_square(q: &Tensor, r: &Tensor, gq: &Tensor, gr: &Tensor) -> Result<Tensor> {
    let n = gr.matmul(&r.mt()?)?.sub(&q.mt()?.matmul(gq)?)?;
    let k = sym_from_upper(&n)?;
    gq.add(&q.matmul(&k)?)?.matmul(&r.linalg_inv()?.mt()?)
}

impl Tensor {
    /// Inverse of (a batch of) square matrices; an error names a singular matrix.
    /// Backward: `-A^-T g A^-T`.
    pub fn linalg_inv(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_inv", &[self], |t| t[0].linalg_inv())? {
            return Ok(y);
        }
        let (mats, n, _) = matrices(self, "linalg.inv", true)?;
        let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        let mut out = vec![];
        for mut m in mats {
            let (_, piv) =
                decomp::lu(&mut m, n).ok_or_else(|| Error::invalid("linalg.inv", "the matrix is singular"))?;
            out.extend(decomp::lu_solve(&m, &piv, n, &eye, n));
        }
        let r = host_tensor(self, out, self.shape())?;
        let a = self.clone();
        Ok(crate::graph::record_saving(r, "linalg_inv", &[self], &[self], move |g| {
            let ait = a.linalg_inv()?.mt()?;
            Ok(smallvec::smallvec![Some(ait.matmul(g)?.matmul(&ait)?.neg()?)])
        }))
    }
    /// Determinant of (a batch of) square matrices. Backward: `g det(A) A^-T` (invertible A).
    pub fn linalg_det(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_det", &[self], |t| t[0].linalg_det())? {
            return Ok(y);
        }
        let (mats, n, _) = matrices(self, "linalg.det", true)?;
        let out: Vec<f64> = mats
            .into_iter()
            .map(|mut m| match decomp::lu(&mut m, n) {
                Some((s, _)) => s * (0..n).map(|i| m[i * n + i]).product::<f64>(),
                None => 0.0,
            })
            .collect();
        let r = host_tensor(self, out, &self.shape()[..self.ndim() - 2])?;
        let a = self.clone();
        Ok(crate::graph::record_saving(r, "linalg_det", &[self], &[self], move |g| {
            let scale = g.mul(&a.linalg_det()?)?.unsqueeze(-1)?.unsqueeze(-1)?;
            Ok(smallvec::smallvec![Some(a.linalg_inv()?.mt()?.mul(&scale)?)])
        }))
    }
    /// Solves `self @ X = b` (b a matrix or a batch of matrices with the same batch dims, or a vector
    /// per matrix). Backward: `gB = A^-T g`, `gA = -gB X^T`.
    pub fn linalg_solve(&self, b: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_solve", &[self, b], |t| t[0].linalg_solve(&t[1]))? {
            return Ok(y);
        }
        let (mats, n, _) = matrices(self, "linalg.solve", true)?;
        let vector = b.ndim() == self.ndim() - 1;
        let bm = if vector { b.unsqueeze(-1)? } else { b.clone() };
        if bm.ndim() != self.ndim()
            || bm.shape()[bm.ndim() - 2] != n
            || bm.shape()[..bm.ndim() - 2] != self.shape()[..self.ndim() - 2]
        {
            return Err(Error::shape("linalg.solve", format!("A {:?} and B {:?} do not fit", self.shape(), b.shape())));
        }
        let m = bm.shape()[bm.ndim() - 1];
        let bv = bm.to_dtype(self.dtype())?.to_vec_f64()?;
        let mut out = vec![];
        for (k, mut a) in mats.into_iter().enumerate() {
            let (_, piv) =
                decomp::lu(&mut a, n).ok_or_else(|| Error::invalid("linalg.solve", "the matrix is singular"))?;
            out.extend(decomp::lu_solve(&a, &piv, n, &bv[k * n * m..(k + 1) * n * m], m));
        }
        let r = host_tensor(self, out, b.shape())?;
        let (a, bb) = (self.clone(), b.clone());
        Ok(crate::graph::record_saving(r, "linalg_solve", &[self, b], &[self, b], move |g| {
            let gb = a.mt()?.linalg_solve(g)?;
            let x = a.linalg_solve(&bb)?;
            let (gbm, xm) = if vector { (gb.unsqueeze(-1)?, x.unsqueeze(-1)?) } else { (gb.clone(), x) };
            Ok(smallvec::smallvec![Some(gbm.matmul(&xm.mt()?)?.neg()?), Some(gb.to_dtype(bb.dtype())?)])
        }))
    }
    /// Lower Cholesky factor of (a batch of) symmetric positive-definite matrices (the lower triangle
    /// is read). Backward: the symmetric `L^-T Φ(L^T gL) L^-1`, Φ taking the lower triangle with a
    /// halved diagonal, symmetrised (PyTorch's convention).
    pub fn linalg_cholesky(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_cholesky", &[self], |t| t[0].linalg_cholesky())? {
            return Ok(y);
        }
        let (mats, n, _) = matrices(self, "linalg.cholesky", true)?;
        let mut out = vec![];
        for a in mats {
            out.extend(decomp::cholesky(&a, n).map_err(|minor| {
                Error::invalid(
                    "linalg.cholesky",
                    format!("the matrix is not positive-definite (leading minor {minor})"),
                )
            })?);
        }
        let r = host_tensor(self, out, self.shape())?;
        let a = self.clone();
        Ok(crate::graph::record_saving(r, "linalg_cholesky", &[self], &[self], move |g| {
            let l = a.linalg_cholesky()?;
            let p = l.mt()?.matmul(g)?.tril(0)?;
            let s = p.add(&p.tril(-1)?.mt()?)?.mul(0.5)?;
            let linv = l.linalg_inv()?;
            Ok(smallvec::smallvec![Some(linv.mt()?.matmul(&s)?.matmul(&linv)?)])
        }))
    }
    /// Reduced QR by Householder reflections: (Q `[.., m, k]`, R `[.., k, n]`), k = min(m, n).
    /// Backward needs R's leading k x k block to be invertible.
    pub fn linalg_qr(&self) -> Result<(Tensor, Tensor)> {
        let (mats, m, n) = matrices(self, "linalg.qr", false)?;
        let k = m.min(n);
        let (mut qs, mut rs) = (vec![], vec![]);
        for a in mats {
            let (q, r) = decomp::householder_qr(&a, m, n);
            qs.extend(q);
            rs.extend(r);
        }
        let q = host_tensor(self, qs, &batch_shape(self, &[m, k]))?;
        let r = host_tensor(self, rs, &batch_shape(self, &[k, n]))?;
        // The gradient is linear in (gQ, gR): each output's node contributes its half.
        let a = self.clone();
        let q = crate::graph::record_saving(q, "linalg_qr", &[self], &[self], move |gq| {
            Ok(smallvec::smallvec![Some(qr_backward(&a, Some(gq), None)?)])
        });
        let a = self.clone();
        let r = crate::graph::record_saving(r, "linalg_qr", &[self], &[self], move |gr| {
            Ok(smallvec::smallvec![Some(qr_backward(&a, None, Some(gr))?)])
        });
        Ok((q, r))
    }
    /// Singular values, descending. Backward: `U diag(g) V^T`.
    pub fn linalg_svdvals(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_svdvals", &[self], |t| t[0].linalg_svdvals())? {
            return Ok(y);
        }
        let (mats, r, c) = matrices(self, "linalg.svdvals", false)?;
        let out: Vec<f64> = mats.iter().flat_map(|a| decomp::jacobi_svd(a, r, c).0).collect();
        let s = host_tensor(self, out, &batch_shape(self, &[r.min(c)]))?;
        let a = self.clone();
        Ok(crate::graph::record_saving(s, "linalg_svdvals", &[self], &[self], move |g| {
            let (mats, r, c) = matrices(&a, "linalg.svdvals", false)?;
            let k = r.min(c);
            let (mut us, mut vs) = (vec![], vec![]);
            for m in &mats {
                let (_, u, v) = decomp::jacobi_svd(m, r, c);
                us.extend(u);
                vs.extend(v);
            }
            let u = vectors_for_backward(&a, us, &batch_shape(&a, &[r, k]), "svd_vectors")?;
            let v = vectors_for_backward(&a, vs, &batch_shape(&a, &[c, k]), "svd_vectors")?;
            Ok(smallvec::smallvec![Some(u.mul(&g.unsqueeze(-2)?)?.matmul(&v.mt()?)?)])
        }))
    }
    /// Eigenvalues of symmetric matrices (the lower triangle is used), ascending.
    /// Backward: `V diag(g) V^T` (symmetric, as PyTorch's).
    pub fn linalg_eigvalsh(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("linalg_eigvalsh", &[self], |t| t[0].linalg_eigvalsh())? {
            return Ok(y);
        }
        let (mats, n, _) = matrices(self, "linalg.eigvalsh", true)?;
        let out: Vec<f64> = mats.iter().flat_map(|a| decomp::jacobi_eigh(&lower_symmetric(a, n), n).0).collect();
        let w = host_tensor(self, out, &batch_shape(self, &[n]))?;
        let a = self.clone();
        Ok(crate::graph::record_saving(w, "linalg_eigvalsh", &[self], &[self], move |g| {
            let (mats, n, _) = matrices(&a, "linalg.eigvalsh", true)?;
            let vs: Vec<f64> = mats.iter().flat_map(|m| decomp::jacobi_eigh(&lower_symmetric(m, n), n).1).collect();
            let v = vectors_for_backward(&a, vs, a.shape(), "eigh_vectors")?;
            Ok(smallvec::smallvec![Some(v.mul(&g.unsqueeze(-2)?)?.matmul(&v.mt()?)?)])
        }))
    }
    /// Matrix or vector norm helper: Frobenius norm of the last two dims.
    pub fn frobenius_norm(&self) -> Result<Tensor> {
        self.vector_norm(2.0, [-2, -1], false)
    }
}

/// Whether `t` is not dense but its last-two-dims transpose is.
fn transposed_view(t: &Tensor) -> bool {
    let n = t.ndim();
    n >= 2 && !t.is_contiguous() && t.layout().transpose(n - 2, n - 1).is_ok_and(|l| l.is_contiguous())
}
