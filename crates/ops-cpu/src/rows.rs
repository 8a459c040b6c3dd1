//! Row iteration over several same-shape strided views at once: dims are coalesced where every
//! view allows it (so a `[N, C, H, W]` tensor plus a `[1, C, 1, 1]` broadcast walks rows of
//! `H·W`), and a cursor steps from row to row with additions only.

use ember_storage::Layout;

/// The common row structure of `K` views: coalesced outer dims, the inner length, strides.
pub(crate) struct Rows<const K: usize> {
    outer: Vec<usize>,
    outer_strides: Vec<[usize; K]>,
    offsets: [usize; K],
    /// Elements per row.
    pub len: usize,
    /// Inner stride of each view.
    pub inner: [usize; K],
}

impl<const K: usize> Rows<K> {
    /// Coalesces the views' dims (all views must have the same shape).
    pub(crate) fn new(ls: [&Layout; K]) -> Self {
        let shape = ls[0].shape();
        let mut dims: Vec<(usize, [usize; K])> = vec![];
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let st: [usize; K] = std::array::from_fn(|k| ls[k].strides()[d]);
            if let Some((n, prev)) = dims.last_mut() {
                // merge the previous (outer) dim into this one when it steps exactly over it
                if (0..K).all(|k| prev[k] == st[k] * size) {
                    *n *= size;
                    *prev = st;
                    continue;
                }
            }
            dims.push((size, st));
        }
        let offsets = std::array::from_fn(|k| ls[k].offset());
        match dims.pop() {
            Some((len, inner)) => Rows {
                outer: dims.iter().map(|d| d.0).collect(),
                outer_strides: dims.iter().map(|d| d.1).collect(),
                offsets,
                len,
                inner,
            },
            None => Rows { outer: vec![], outer_strides: vec![], offsets, len: 1, inner: [1; K] },
        }
    }

    /// Calls `f(row bases)` for rows `first..first + count`.
    #[inline]
    pub(crate) fn for_rows(&self, first: usize, count: usize, mut f: impl FnMut([usize; K])) {
        let nd = self.outer.len();
        let mut idx = vec![0usize; nd];
        let mut base = self.offsets;
        let mut rem = first;
        for d in (0..nd).rev() {
            idx[d] = rem % self.outer[d];
            rem /= self.outer[d];
            for (b, s) in base.iter_mut().zip(self.outer_strides[d]) {
                *b += idx[d] * s;
            }
        }
        for r in 0..count {
            f(base);
            if r + 1 == count {
                break;
            }
            let mut d = nd;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for (b, s) in base.iter_mut().zip(self.outer_strides[d]) {
                    *b += s;
                }
                if idx[d] < self.outer[d] {
                    break;
                }
                for (b, s) in base.iter_mut().zip(self.outer_strides[d]) {
                    *b -= s * self.outer[d];
                }
                idx[d] = 0;
            }
        }
    }

    /// Rows per parallel task so each task has at least ~16K elements.
    pub(crate) fn rows_per_task(&self) -> usize {
        (16384 / self.len.max(1)).max(1)
    }
}
