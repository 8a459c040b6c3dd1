//! Host-side launch logic: the by-value kernel arguments describing strided operands (mirroring
//! `ember_shape` and `ember_operand` in the prelude, field for field), with adjacent dims merged
//! where every operand allows it, and the grid size of a grid-stride loop.

use ember_storage::{Error, Layout, Result, WindowGeometry};

/// The most dims a kernel indexes (`EMBER_MAX_DIMS` in the prelude), after merging.
pub const MAX_DIMS: usize = 8;

/// `ember_shape`: the output's element count and row-major sizes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeArg {
    /// Elements of the output.
    pub numel: i64,
    /// Dims in use.
    pub ndim: i32,
    /// 1 when every operand is contiguous from its offset 0, so element `i` is at `i`.
    pub contiguous: i32,
    /// Sizes of the dims in use.
    pub size: [i64; MAX_DIMS],
}

/// `ember_operand`: where one operand's elements are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperandArg {
    /// Offset of element 0.
    pub offset: i64,
    /// Stride per dim of [`ShapeArg::size`] (0 where broadcast).
    pub stride: [i64; MAX_DIMS],
}

/// The arguments of an elementwise kernel over operands that all have `layouts[0]`'s shape: dims
/// merged where every operand is contiguous across them, size-1 dims dropped.
pub fn elementwise_args(op: &str, layouts: &[&Layout]) -> Result<(ShapeArg, Vec<OperandArg>)> {
    let shape = layouts[0].shape();
    if let Some(l) = layouts.iter().find(|l| l.shape() != shape) {
        return Err(Error::shape(op, format!("operand shapes {:?} and {:?} differ", shape, l.shape())));
    }
    // dims kept, innermost last: (size, stride per operand)
    let mut dims: Vec<(usize, Vec<usize>)> = vec![];
    for (d, &len) in shape.iter().enumerate() {
        if len == 1 {
            continue;
        }
        let strides: Vec<usize> = layouts.iter().map(|l| l.strides()[d]).collect();
        if let Some((size, prev)) = dims.last_mut() {
            if prev.iter().zip(&strides).all(|(&p, &s)| p == s * len) {
                *size *= len;
                *prev = strides;
                continue;
            }
        }
        dims.push((len, strides));
    }
    if dims.len() > MAX_DIMS {
        return Err(Error::unsupported(
            op,
            format!("CUDA kernels index at most {MAX_DIMS} non-mergeable dims, got shape {shape:?}"),
        ));
    }
    let numel: usize = shape.iter().product();
    let mut s = ShapeArg {
        numel: to_i64(op, numel)?,
        ndim: dims.len() as i32,
        contiguous: i32::from(layouts.iter().all(|l| l.is_contiguous() && l.offset() == 0)),
        size: [1; MAX_DIMS],
    };
    for (i, (size, _)) in dims.iter().enumerate() {
        s.size[i] = to_i64(op, *size)?;
    }
    let operands = layouts
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let mut o = OperandArg { offset: to_i64(op, l.offset())?, stride: [0; MAX_DIMS] };
            for (i, (_, strides)) in dims.iter().enumerate() {
                o.stride[i] = to_i64(op, strides[k])?;
            }
            Ok(o)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((s, operands))
}

/// The view of `l` with the `dims` to reduce moved last (kept dims first, in order), the number of
/// output rows (elements of the kept dims) and the elements per row.
pub fn reduce_view(op: &str, l: &Layout, dims: &[usize]) -> Result<(Layout, usize, usize)> {
    let nd = l.ndim();
    let mut reduced = dims.to_vec();
    reduced.sort_unstable();
    reduced.dedup();
    if reduced.len() != dims.len() || reduced.iter().any(|&d| d >= nd) {
        return Err(Error::invalid(op, format!("dims {dims:?} must be distinct and below {nd}")));
    }
    let mut perm: Vec<usize> = (0..nd).filter(|d| !reduced.contains(d)).collect();
    let rows = perm.iter().map(|&d| l.shape()[d]).product();
    let k = reduced.iter().map(|&d| l.shape()[d]).product();
    perm.extend(&reduced);
    Ok((l.permute(&perm)?, rows, k))
}

/// The batch part of a matrix operand `[..., r, c]`: a layout of the batch dims (same offset and
/// strides), and the row and column strides.
pub fn matrix_batch(op: &str, l: &Layout) -> Result<(Layout, i64, i64)> {
    let nd = l.ndim();
    if nd < 2 {
        return Err(Error::shape(op, format!("expected a matrix or a batch of them, got shape {:?}", l.shape())));
    }
    let batch = Layout::strided(&l.shape()[..nd - 2], &l.strides()[..nd - 2], l.offset())?;
    Ok((batch, to_i64(op, l.strides()[nd - 2])?, to_i64(op, l.strides()[nd - 1])?))
}

/// `ember_window`: a window geometry by value (mirrors the struct in `kernels::window`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowArg {
    /// N.
    pub batch: i64,
    /// C.
    pub channels: i64,
    /// Kernel positions (product of the kernel sizes).
    pub kernel_numel: i64,
    /// Output positions (product of the output sizes).
    pub out_numel: i64,
    /// Spatial dims in use.
    pub nsp: i32,
    /// Input sizes.
    pub input: [i64; crate::kernels::window::WINDOW_DIMS],
    /// Kernel sizes.
    pub kernel: [i64; crate::kernels::window::WINDOW_DIMS],
    /// Strides.
    pub stride: [i64; crate::kernels::window::WINDOW_DIMS],
    /// Paddings.
    pub padding: [i64; crate::kernels::window::WINDOW_DIMS],
    /// Dilations.
    pub dilation: [i64; crate::kernels::window::WINDOW_DIMS],
    /// Output sizes.
    pub output: [i64; crate::kernels::window::WINDOW_DIMS],
}

/// The kernel argument of a window geometry: `Err` when the window does not fit the input or has
/// more spatial dims than the kernels handle.
pub fn window_arg(op: &str, g: &WindowGeometry) -> Result<WindowArg> {
    const D: usize = crate::kernels::window::WINDOW_DIMS;
    let out = g.output().ok_or_else(|| Error::invalid(op, format!("window {g:?} does not fit")))?;
    let nsp = g.input.len();
    if nsp == 0 || nsp > D {
        return Err(Error::unsupported(op, format!("CUDA windows have 1 to {D} spatial dims, got {nsp}")));
    }
    let fill = |v: &[usize]| -> Result<[i64; D]> {
        let mut a = [1i64; D];
        for (a, &v) in a.iter_mut().zip(v) {
            *a = to_i64(op, v)?;
        }
        Ok(a)
    };
    Ok(WindowArg {
        batch: to_i64(op, g.batch)?,
        channels: to_i64(op, g.channels)?,
        kernel_numel: to_i64(op, g.kernel_numel())?,
        out_numel: to_i64(op, out.iter().product())?,
        nsp: nsp as i32,
        input: fill(&g.input)?,
        kernel: fill(&g.kernel)?,
        stride: fill(&g.stride)?,
        padding: fill(&g.padding)?,
        dilation: fill(&g.dilation)?,
        output: fill(&out)?,
    })
}

/// A layout's offset and strides as an `ember_operand` (no dim merging: window kernels address
/// `[N, C, *spatial]` or `[N, C*K, L]` by coordinates).
pub fn raw_operand(op: &str, l: &Layout) -> Result<OperandArg> {
    if l.ndim() > MAX_DIMS {
        return Err(Error::unsupported(op, format!("at most {MAX_DIMS} dims, got {:?}", l.shape())));
    }
    let mut o = OperandArg { offset: to_i64(op, l.offset())?, stride: [0; MAX_DIMS] };
    for (s, &v) in o.stride.iter_mut().zip(l.strides()) {
        *s = to_i64(op, v)?;
    }
    Ok(o)
}

fn to_i64(op: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(op, format!("size {v} does not fit a 64-bit index")))
}

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;

/// Blocks for a grid-stride loop over `numel` elements: enough to fill the device
/// (`max_blocks`, e.g. 32 per multiprocessor), fewer for small inputs.
pub fn grid_for(numel: usize, max_blocks: u32) -> u32 {
    let needed = numel.div_ceil(BLOCK as usize).max(1);
    needed.min(max_blocks.max(1) as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_of(i: usize, s: &ShapeArg, o: &OperandArg) -> i64 {
        // the prelude's ember_offset, in Rust
        let (mut i, mut off) = (i as i64, o.offset);
        for d in (0..s.ndim as usize).rev() {
            off += (i % s.size[d]) * o.stride[d];
            i /= s.size[d];
        }
        off
    }

    #[test]
    fn merged_dims_address_the_same_elements() {
        let base = Layout::contiguous(&[2, 3, 4, 5]);
        let views = [
            base.clone(),
            base.permute(&[0, 2, 1, 3]).unwrap(),
            base.narrow(3, 1, 3).unwrap(),
            Layout::contiguous(&[1, 3, 1, 5]).expand(&[2, 3, 4, 5]).unwrap(),
        ];
        for v in &views {
            let (s, ops) = elementwise_args("test", &[v, &Layout::contiguous(v.shape())]).unwrap();
            assert!(s.ndim as usize <= v.ndim());
            let dense = Layout::contiguous(v.shape());
            for i in 0..v.numel() {
                let mut idx = vec![0; v.ndim()];
                let mut r = i;
                for d in (0..v.ndim()).rev() {
                    idx[d] = r % v.shape()[d];
                    r /= v.shape()[d];
                }
                assert_eq!(offset_of(i, &s, &ops[0]) as usize, v.index_of(&idx), "{v:?} element {i}");
                assert_eq!(offset_of(i, &s, &ops[1]) as usize, dense.index_of(&idx));
            }
        }
    }

    #[test]
    fn contiguous_operands_merge_to_one_dim() {
        let l = Layout::contiguous(&[4, 5, 6]);
        let (s, _) = elementwise_args("test", &[&l, &l]).unwrap();
        assert_eq!((s.ndim, s.contiguous, s.size[0], s.numel), (1, 1, 120, 120));
    }

    #[test]
    fn too_many_dims_is_an_error_and_mismatched_shapes_too() {
        let l = Layout::contiguous(&[2; 10]).permute(&[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
        let e = elementwise_args("exp", &[&l]).unwrap_err().to_string();
        assert!(e.contains("exp") && e.contains("at most 8"), "{e}");
        let (a, b) = (Layout::contiguous(&[2, 3]), Layout::contiguous(&[3, 2]));
        assert!(elementwise_args("add", &[&a, &b]).is_err());
    }

    #[test]
    fn grids_cover_small_inputs_and_cap_large_ones() {
        assert_eq!(grid_for(0, 100), 1);
        assert_eq!(grid_for(1000, 100), 4);
        assert_eq!(grid_for(1 << 30, 100), 100);
    }
}
