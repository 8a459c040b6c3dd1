//! Host-side (f64, row-major) matrix decompositions behind `linalg`: LU, Cholesky, Householder QR, and
//! Jacobi eigen/singular value decompositions with their vectors (the vectors feed the backward passes).

/// LU with partial pivoting in place; returns (permutation sign, pivots) or None when singular.
pub(crate) fn lu(a: &mut [f64], n: usize) -> Option<(f64, Vec<usize>)> {
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

pub(crate) fn lu_solve(lu: &[f64], piv: &[usize], n: usize, b: &[f64], m: usize) -> Vec<f64> {
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

/// Cholesky factor L (lower) of a symmetric positive-definite matrix, or the 1-based index of the
/// first leading minor that is not positive-definite.
pub(crate) fn cholesky(a: &[f64], n: usize) -> std::result::Result<Vec<f64>, usize> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|k| l[j * n + k] * l[j * n + k]).sum::<f64>();
        if d <= 0.0 || d.is_nan() {
            return Err(j + 1);
        }
        l[j * n + j] = d.sqrt();
        for i in j + 1..n {
            l[i * n + j] = (a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>()) / l[j * n + j];
        }
    }
    Ok(l)
}

/// Reduced QR of an m x n matrix by Householder reflections: (Q m x k, R k x n), k = min(m, n).
pub(crate) fn householder_qr(a: &[f64], m: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let k = m.min(n);
    let mut r = a.to_vec();
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
    let mut qk = Vec::with_capacity(m * k);
    for i in 0..m {
        qk.extend_from_slice(&q[i * m..i * m + k]);
    }
    let mut rk = Vec::with_capacity(k * n);
    for i in 0..k {
        rk.extend((0..n).map(|c| if c < i { 0.0 } else { r[i * n + c] }));
    }
    (qk, rk)
}

/// Applies the rotation (c, s) to columns p and q of the row-major `rows` x `cols` matrix `m`.
fn rotate_columns(m: &mut [f64], rows: usize, cols: usize, p: usize, q: usize, c: f64, s: f64) {
    for k in 0..rows {
        let (x, y) = (m[k * cols + p], m[k * cols + q]);
        m[k * cols + p] = c * x - s * y;
        m[k * cols + q] = s * x + c * y;
    }
}

fn identity(n: usize) -> Vec<f64> {
    (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect()
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: eigenvalues ascending and the
/// matching eigenvectors as the columns of a row-major n x n matrix.
pub(crate) fn jacobi_eigh(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = identity(n);
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
                rotate_columns(&mut a, n, n, p, q, c, s);
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                rotate_columns(&mut v, n, n, p, q, c, s);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = (0..n * n).map(|k| v[(k / n) * n + order[k % n]]).collect();
    (values, vectors)
}

/// Thin SVD of an r x c matrix by one-sided Jacobi: singular values descending, U (r x k) and V (c x k),
/// k = min(r, c), so that A = U diag(S) V^T.
pub(crate) fn jacobi_svd(a: &[f64], r: usize, c: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    // work on the matrix with more rows than columns: M V = U S, M = A or A^T
    let transposed = r < c;
    let (rows, cols) = if transposed { (c, r) } else { (r, c) };
    let mut m: Vec<f64> = if transposed { (0..c * r).map(|k| a[(k % r) * c + k / r]).collect() } else { a.to_vec() };
    let mut v = identity(cols);
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
                rotate_columns(&mut m, rows, cols, p, q, cs, sn);
                rotate_columns(&mut v, cols, cols, p, q, cs, sn);
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..cols).map(|j| (0..rows).map(|i| m[i * cols + j].powi(2)).sum::<f64>().sqrt()).collect();
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let s: Vec<f64> = order.iter().map(|&j| norms[j]).collect();
    // left vectors of M: normalised columns (zero columns stay zero)
    let left: Vec<f64> = (0..rows * cols)
        .map(|k| {
            let j = order[k % cols];
            if norms[j] > 0.0 {
                m[(k / cols) * cols + j] / norms[j]
            } else {
                0.0
            }
        })
        .collect();
    let right: Vec<f64> = (0..cols * cols).map(|k| v[(k / cols) * cols + order[k % cols]]).collect();
    if transposed {
        (s, right, left)
    } else {
        (s, left, right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
        (0..n * m).map(|x| (0..k).map(|j| a[(x / m) * k + j] * b[j * m + x % m]).sum()).collect()
    }

    #[test]
    fn svd_reconstructs_wide_and_tall() {
        for &(r, c) in &[(4usize, 3usize), (3, 5), (3, 3)] {
            let a: Vec<f64> = (0..r * c).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
            let (s, u, v) = jacobi_svd(&a, r, c);
            let k = r.min(c);
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
            let us: Vec<f64> = (0..r * k).map(|x| u[x] * s[x % k]).collect();
            let vt: Vec<f64> = (0..k * c).map(|x| v[(x % c) * k + x / c]).collect();
            let back = matmul(&us, &vt, r, k, c);
            for (x, y) in back.iter().zip(&a) {
                assert!((x - y).abs() < 1e-10, "{r}x{c}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn eigh_reconstructs() {
        let n = 4;
        let b: Vec<f64> = (0..n * n).map(|i| ((i * 31) % 7) as f64 - 3.0).collect();
        let a: Vec<f64> = (0..n * n).map(|k| b[k] + b[(k % n) * n + k / n]).collect();
        let (w, v) = jacobi_eigh(&a, n);
        assert!(w.windows(2).all(|p| p[0] <= p[1]));
        let vw: Vec<f64> = (0..n * n).map(|x| v[x] * w[x % n]).collect();
        let vt: Vec<f64> = (0..n * n).map(|x| v[(x % n) * n + x / n]).collect();
        for (x, y) in matmul(&vw, &vt, n, n, n).iter().zip(&a) {
            assert!((x - y).abs() < 1e-10);
        }
    }
}
