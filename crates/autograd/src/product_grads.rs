//! Zero-safe gradients of products (`prod`, `cumprod`), as PyTorch computes them: the product of the
//! *other* elements, by exclusive scans, never `prod / x` (which gives `0/0 = NaN` at a zero).
//! The division formula is kept for inputs without zeros, where it is exact and cheaper.

use crate::Tensor;
use ember_storage::Result;

fn has_zero(x: &Tensor) -> Result<bool> {
    Ok(x.eq(0.0)?.any()?.item()? != 0.0)
}

/// `out[i] = prod(x[j] for j != i)` along `dim`: exclusive products from the left times those from
/// the right.
fn products_of_others(x: &Tensor, dim: isize) -> Result<Tensor> {
    let n = x.size_of(dim)?;
    if n == 0 {
        return Ok(x.clone());
    }
    let ones = x.narrow(dim, 0, 1)?.ones_like()?;
    let left = Tensor::cat(&[ones.clone(), x.narrow(dim, 0, n - 1)?], dim)?.cumprod(dim)?;
    let flipped = x.flip([dim])?;
    let right = Tensor::cat(&[ones, flipped.narrow(dim, 0, n - 1)?], dim)?.cumprod(dim)?.flip([dim])?;
    left.mul(&right)
}

/// The gradient of `y = prod(x over dims)` (`y` kept with size-1 dims), given `ge`, the incoming
/// gradient already broadcast to `x`'s shape.
pub(crate) fn prod_backward(x: &Tensor, y: &Tensor, ge: &Tensor, dims: &[usize]) -> Result<Tensor> {
    if !has_zero(x)? {
        return ge.mul(&y.broadcast_to(x.shape())?)?.div(x);
    }
    // move the reduced dims last and flatten them into one, take the products of the others there,
    // and undo the moves
    let nd = x.ndim();
    let kept: Vec<usize> = (0..nd).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims.iter()).copied().collect();
    let perm_i: Vec<isize> = perm.iter().map(|&d| d as isize).collect();
    let xp = x.permute(&perm_i)?;
    let mut flat: Vec<isize> = kept.iter().map(|&d| x.shape()[d] as isize).collect();
    flat.push(-1);
    let others = products_of_others(&xp.reshape(&flat)?, -1)?;
    let permuted: Vec<isize> = perm.iter().map(|&d| x.shape()[d] as isize).collect();
    let mut inverse = vec![0isize; nd];
    for (i, &d) in perm.iter().enumerate() {
        inverse[d] = i as isize;
    }
    ge.mul(&others.reshape(&permuted)?.permute(&inverse)?)
}

/// The gradient of `y = cumprod(x, dim)` given the incoming gradient `g`:
/// `dx[i] = sum_{k >= i} g[k] * prod_{j <= k, j != i} x[j]`. Without zeros this is
/// `reverse_cumsum(g * y) / x`; with zeros it is `left[i] * r[i]`, where `left` are the exclusive
/// products from the left and `r[i] = g[i] + x[i + 1] * r[i + 1]` (one step per position along `dim`).
pub(crate) fn cumprod_backward(x: &Tensor, y: &Tensor, g: &Tensor, dim: isize) -> Result<Tensor> {
    if !has_zero(x)? {
        return g.mul(y)?.flip([dim])?.cumsum(dim)?.flip([dim])?.div(x);
    }
    let n = x.size_of(dim)?;
    let mut r = vec![g.narrow(dim, n as isize - 1, 1)?];
    for i in (0..n - 1).rev() {
        let next = r.last().expect("one entry at least");
        let ri = g.narrow(dim, i as isize, 1)?.add(&x.narrow(dim, i as isize + 1, 1)?.mul(next)?)?;
        r.push(ri);
    }
    r.reverse();
    let r = Tensor::cat(&r, dim)?;
    let ones = x.narrow(dim, 0, 1)?.ones_like()?;
    let left = Tensor::cat(&[ones, x.narrow(dim, 0, n - 1)?], dim)?.cumprod(dim)?;
    left.mul(&r)
}
