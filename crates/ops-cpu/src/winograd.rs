//! Winograd F(2x2, 3x3) convolution for 3x3, stride-1, undilated f32 layers with many channels
//! (ResNet blocks, the main job's second layer): each 2x2 output tile is computed from its 4x4
//! input tile with 16 products per channel pair instead of 36, so the matrix products, which are
//! nearly all of a convolution's time, do 2.25 times less work.
//!
//! Per tile and channel pair, with `d` the 4x4 input tile, `g` the 3x3 kernel and `y` the 2x2
//! output, `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, each of the 16 positions
//! `ξ` of the transformed tile is one matrix product over all tiles of a block:
//! `M[ξ] (out x tiles) = U[ξ] (out x in) @ V[ξ] (in x tiles)`.
//!
//! - The input gradient is the forward convolution of the output gradient with the kernel
//!   flipped and its channel axes swapped, padded by `2 - pad`: the same code.
//! - The weight gradient is the adjoint of the forward:
//!   `dU[ξ] = Σ_blocks dM[ξ] @ V[ξ]ᵀ` with `dM = A dY Aᵀ` per tile, then `dg = Gᵀ dU G`.
//!
//! The transforms use only 0, ±1 and ±1/2, so rounding stays close to the direct product's
//! (checked against every f32 conformance case and, in the tests, against the direct kernel
//! with a bound of a few ulps of the summed magnitudes). f64 keeps the direct kernel.
//!
//! Blocks are whole tile rows of one sample, or several whole samples when an image has few
//! tiles (a 14x14 image has 49). Block sizes, task splits and the order in which the weight
//! gradient's partial sums are added depend only on the shapes, so results do not depend on
//! the thread count. Set `EMBER_CONV_WINOGRAD=0` to use the direct kernel everywhere.

use crate::matmul::{gemm_into, Operand};
use crate::threading::pool;
use ember_storage::WindowGeometry;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Tiles (product columns) a block aims for.
const BLOCK_TILES: usize = 256;

/// Fewest input and output channels for which the transforms pay for themselves (a 1-channel
/// first layer has products of depth 1; its patch matrix is cheap anyway).
const MIN_CHANNELS: usize = 16;

/// Positions of a transformed tile.
const XI: usize = 16;

/// Whether a 2-d convolution with this geometry and `cout` output channels runs on the Winograd
/// kernels (f32 only; the caller checks the dtype).
pub(crate) fn applies(g: &WindowGeometry, cout: usize) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("EMBER_CONV_WINOGRAD").map_or(true, |v| v != "0"));
    enabled
        && g.input.len() == 2
        && g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.padding.iter().all(|&p| p <= 2)
        && g.channels >= MIN_CHANNELS
        && cout >= MIN_CHANNELS
        && g.output().is_some()
}

/// Shapes of one Winograd convolution and its split into tasks and blocks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    batch: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
    /// Tile rows and tiles per row.
    th: usize,
    tw: usize,
    /// Samples per task (several only when each has fewer tiles than a block).
    samples: usize,
    /// Tile rows per block within one sample.
    band: usize,
}

impl Plan {
    fn new(batch: usize, (cin, cout): (usize, usize), (h, w): (usize, usize), (ph, pw): (usize, usize)) -> Plan {
        let (ho, wo) = (h + 2 * ph - 2, w + 2 * pw - 2);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        // at least two tasks, so both threads of a small batch have work
        let samples = BLOCK_TILES.div_ceil(th * tw).min(batch.div_ceil(2)).max(1);
        let band = if samples > 1 { th } else { BLOCK_TILES.div_ceil(tw).clamp(1, th) };
        Plan { batch, cin, cout, h, w, ph, pw, ho, wo, th, tw, samples, band }
    }

    fn of(g: &WindowGeometry, cout: usize) -> Plan {
        Plan::new(g.batch, (g.channels, cout), (g.input[0], g.input[1]), (g.padding[0], g.padding[1]))
    }

    fn x_sample(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn y_sample(&self) -> usize {
        self.cout * self.ho * self.wo
    }

    /// The blocks `(first tile row, tile rows)` of a task.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.th).step_by(self.band).map(|t0| (t0, self.band.min(self.th - t0)))
    }

    /// [`Plan::transform_input_body`], compiled for AVX2 when the CPU has it.
    fn transform_input(&self, xs: &[f32], band: (usize, usize), v: &mut [f32], scratch: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            #[target_feature(enable = "avx2")]
            fn wide(p: &Plan, xs: &[f32], band: (usize, usize), v: &mut [f32], scratch: &mut Vec<f32>) {
                p.transform_input_body(xs, band, v, scratch)
            }
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { wide(self, xs, band, v, scratch) };
        }
        self.transform_input_body(xs, band, v, scratch)
    }

    /// [`Plan::transform_output_grad_body`], compiled for AVX2 when the CPU has it.
    fn transform_output_grad(&self, gs: &[f32], band: (usize, usize), dm: &mut [f32], scratch: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            #[target_feature(enable = "avx2")]
            fn wide(p: &Plan, gs: &[f32], band: (usize, usize), dm: &mut [f32], scratch: &mut Vec<f32>) {
                p.transform_output_grad_body(gs, band, dm, scratch)
            }
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { wide(self, gs, band, dm, scratch) };
        }
        self.transform_output_grad_body(gs, band, dm, scratch)
    }

    /// [`Plan::transform_output_body`], compiled for AVX2 when the CPU has it.
    fn transform_output(&self, m: &[f32], band: (usize, usize), ys: &mut [f32], scratch: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            #[target_feature(enable = "avx2")]
            fn wide(p: &Plan, m: &[f32], band: (usize, usize), ys: &mut [f32], scratch: &mut Vec<f32>) {
                p.transform_output_body(m, band, ys, scratch)
            }
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { wide(self, m, band, ys, scratch) };
        }
        self.transform_output_body(m, band, ys, scratch)
    }

    /// Writes the transformed input tiles `Bᵀ d B` of samples `xs` (`[count, C, H, W]`), tile
    /// rows `t0..t0 + rows`, into `v` `[16, C, T]` (`T` the block's tiles).
    #[inline(always)]
    fn transform_input_body(&self, xs: &[f32], (t0, rows): (usize, usize), v: &mut [f32], scratch: &mut Vec<f32>) {
        let (tw, count) = (self.tw, xs.len() / self.x_sample());
        let tiles = count * rows * tw;
        let n = tw + 1;
        // four input rows split into even and odd columns of the padded row, then one row
        // combination (even, odd)
        scratch.clear();
        scratch.resize(10 * n, 0.0);
        let (split, comb) = scratch.split_at_mut(8 * n);
        for s in 0..count {
            for c in 0..self.cin {
                let plane = &xs[(s * self.cin + c) * self.h * self.w..][..self.h * self.w];
                for ty in t0..t0 + rows {
                    for (r, eo) in split.chunks_exact_mut(2 * n).enumerate() {
                        let (even, odd) = eo.split_at_mut(n);
                        let y = (2 * ty + r).wrapping_sub(self.ph);
                        if y < self.h {
                            split_row(&plane[y * self.w..][..self.w], self.pw, even, odd);
                        } else {
                            even.fill(0.0);
                            odd.fill(0.0);
                        }
                    }
                    let at = (s * rows + ty - t0) * tw;
                    let row = |r: usize| (&split[2 * r * n..][..n], &split[(2 * r + 1) * n..][..n]);
                    for i in 0..4 {
                        // row i of Bᵀ d: d0 - d2, d1 + d2, d2 - d1, d1 - d3
                        let (e, o) = comb.split_at_mut(n);
                        let ((ae, ao), (be, bo)) = match i {
                            0 => (row(0), row(2)),
                            1 => (row(1), row(2)),
                            2 => (row(2), row(1)),
                            _ => (row(1), row(3)),
                        };
                        if i == 1 {
                            zip_into(e, ae, be, |a, b| a + b);
                            zip_into(o, ao, bo, |a, b| a + b);
                        } else {
                            zip_into(e, ae, be, |a, b| a - b);
                            zip_into(o, ao, bo, |a, b| a - b);
                        }
                        // times B, per tile t: e_t - e_{t+1}, o_t + e_{t+1}, e_{t+1} - o_t, o_t - o_{t+1}
                        let (e, o) = (&*e, &*o);
                        let at_j = |j: usize| ((i * 4 + j) * self.cin + c) * tiles + at;
                        zip_into(&mut v[at_j(0)..][..tw], &e[..tw], &e[1..], |a, b| a - b);
                        zip_into(&mut v[at_j(1)..][..tw], &o[..tw], &e[1..], |a, b| a + b);
                        zip_into(&mut v[at_j(2)..][..tw], &e[1..], &o[..tw], |a, b| a - b);
                        zip_into(&mut v[at_j(3)..][..tw], &o[..tw], &o[1..], |a, b| a - b);
                    }
                }
            }
        }
    }

    /// Writes `A dY Aᵀ` of the output gradient `gs` (`[count, OC, Ho, Wo]`), tile rows
    /// `t0..t0 + rows`, into `dm` `[16, OC, T]`.
    #[inline(always)]
    fn transform_output_grad_body(
        &self,
        gs: &[f32],
        (t0, rows): (usize, usize),
        dm: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (tw, count) = (self.tw, gs.len() / self.y_sample());
        let tiles = count * rows * tw;
        scratch.clear();
        scratch.resize(6 * tw, 0.0);
        let (split, comb) = scratch.split_at_mut(4 * tw);
        for s in 0..count {
            for k in 0..self.cout {
                let plane = &gs[(s * self.cout + k) * self.ho * self.wo..][..self.ho * self.wo];
                for ty in t0..t0 + rows {
                    for (r, eo) in split.chunks_exact_mut(2 * tw).enumerate() {
                        let (even, odd) = eo.split_at_mut(tw);
                        let y = 2 * ty + r;
                        if y < self.ho {
                            split_row(&plane[y * self.wo..][..self.wo], 0, even, odd);
                        } else {
                            even.fill(0.0);
                            odd.fill(0.0);
                        }
                    }
                    let at = (s * rows + ty - t0) * tw;
                    let (g0, g1) = split.split_at(2 * tw);
                    for i in 0..4 {
                        // row i of A dY: g0, g0 + g1, g0 - g1, -g1
                        let (e, o) = comb.split_at_mut(tw);
                        match i {
                            0 => {
                                e.copy_from_slice(&g0[..tw]);
                                o.copy_from_slice(&g0[tw..]);
                            }
                            1 => {
                                zip_into(e, &g0[..tw], &g1[..tw], |a, b| a + b);
                                zip_into(o, &g0[tw..], &g1[tw..], |a, b| a + b);
                            }
                            2 => {
                                zip_into(e, &g0[..tw], &g1[..tw], |a, b| a - b);
                                zip_into(o, &g0[tw..], &g1[tw..], |a, b| a - b);
                            }
                            _ => {
                                e.iter_mut().zip(&g1[..tw]).for_each(|(d, &b)| *d = -b);
                                o.iter_mut().zip(&g1[tw..]).for_each(|(d, &b)| *d = -b);
                            }
                        }
                        // times Aᵀ, per tile: e, e + o, e - o, -o
                        let (e, o) = (&*e, &*o);
                        let at_j = |j: usize| ((i * 4 + j) * self.cout + k) * tiles + at;
                        dm[at_j(0)..][..tw].copy_from_slice(e);
                        zip_into(&mut dm[at_j(1)..][..tw], e, o, |a, b| a + b);
                        zip_into(&mut dm[at_j(2)..][..tw], e, o, |a, b| a - b);
                        dm[at_j(3)..][..tw].iter_mut().zip(o).for_each(|(d, &b)| *d = -b);
                    }
                }
            }
        }
    }

    /// Writes `Aᵀ M A` of the products `m` (`[16, OC, T]`) for tile rows `t0..t0 + rows` into
    /// the output `ys` (`[count, OC, Ho, Wo]`).
    #[inline(always)]
    fn transform_output_body(&self, m: &[f32], (t0, rows): (usize, usize), ys: &mut [f32], scratch: &mut Vec<f32>) {
        let (tw, count) = (self.tw, ys.len() / self.y_sample());
        let tiles = count * rows * tw;
        scratch.clear();
        scratch.resize(10 * tw, 0.0);
        let (sums, pair) = scratch.split_at_mut(8 * tw);
        for s in 0..count {
            for k in 0..self.cout {
                let plane = &mut ys[(s * self.cout + k) * self.ho * self.wo..][..self.ho * self.wo];
                for ty in t0..t0 + rows {
                    let at = (s * rows + ty - t0) * tw;
                    let mj = |i: usize, j: usize| &m[((i * 4 + j) * self.cout + k) * tiles + at..][..tw];
                    // rows of Aᵀ M: m0 + m1 + m2, m1 - m2 - m3 (per column j)
                    for j in 0..4 {
                        let (m0, m1, m2, m3) = (mj(0, j), mj(1, j), mj(2, j), mj(3, j));
                        let (s0, s1) = sums[2 * j * tw..][..2 * tw].split_at_mut(tw);
                        for t in 0..tw {
                            s0[t] = m0[t] + m1[t] + m2[t];
                            s1[t] = m1[t] - m2[t] - m3[t];
                        }
                    }
                    for a in 0..2 {
                        let y = 2 * ty + a;
                        if y >= self.ho {
                            continue;
                        }
                        let sj = |j: usize| &sums[(2 * j + a) * tw..][..tw];
                        let (s0, s1, s2, s3) = (sj(0), sj(1), sj(2), sj(3));
                        let (even, odd) = pair.split_at_mut(tw);
                        for t in 0..tw {
                            even[t] = s0[t] + s1[t] + s2[t];
                            odd[t] = s1[t] - s2[t] - s3[t];
                        }
                        let out = &mut plane[y * self.wo..][..self.wo];
                        let mut pairs = out.chunks_exact_mut(2);
                        for ((p, &e), &o) in (&mut pairs).zip(&*even).zip(&*odd) {
                            p[0] = e;
                            p[1] = o;
                        }
                        if let [last] = pairs.into_remainder() {
                            *last = even[tw - 1];
                        }
                    }
                }
            }
        }
    }
}

/// `dst[t] = f(a[t], b[t])`.
#[inline(always)]
fn zip_into(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

/// Splits one row into the even and odd columns of its padded form (`pad` zeros on the left,
/// zeros past the right end), `even.len() == odd.len()` columns each.
#[inline(always)]
fn split_row(row: &[f32], pad: usize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    // row[2j] lands at padded column 2j + pad, row[2j + 1] at 2j + 1 + pad
    let (first, second, at_second) = match pad % 2 {
        0 => (even, odd, pad / 2),
        _ => (odd, even, pad / 2 + 1),
    };
    let (first, second) = (&mut first[pad / 2..], &mut second[at_second..]);
    let pairs = row.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    let whole = pairs.len().min(first.len()).min(second.len());
    for ((a, b), pair) in first[..whole].iter_mut().zip(second[..whole].iter_mut()).zip(pairs) {
        *a = pair[0];
        *b = pair[1];
    }
    // the pairs past `whole` (at most one: the arrays hold the padded row) and an odd row's
    // last value
    for (j, pair) in row.chunks_exact(2).enumerate().skip(whole) {
        if let Some(a) = first.get_mut(j) {
            *a = pair[0];
        }
        if let Some(b) = second.get_mut(j) {
            *b = pair[1];
        }
    }
    if let (Some(v), Some(a)) = (last, first.get_mut(row.len() / 2)) {
        *a = v;
    }
}

/// Rows of G (4x3): g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2.
fn g_times(a: f32, b: f32, c: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

/// Rows of Gᵀ (3x4): u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3.
fn gt_times(u: [f32; 4]) -> [f32; 3] {
    [u[0] + 0.5 * (u[1] + u[2]), 0.5 * (u[1] - u[2]), 0.5 * (u[1] + u[2]) + u[3]]
}

/// `U = G g Gᵀ` of every kernel of `w` (`[OC, C * 9]`, each 3x3 kernel row-major; `flip` reads
/// `w` as the input gradient's kernel `w'[c][k] = rot180(w[k][c])`, `[C, OC * 9]`), as `[16, OC', C']`.
fn transform_weights(w: &[f32], (cout, cin): (usize, usize), flip: bool) -> Vec<f32> {
    // the kernel's own channels (out, in) after an optional swap
    let (ko, ki) = if flip { (cin, cout) } else { (cout, cin) };
    let mut u = vec![0f32; XI * ko * ki];
    for k in 0..ko {
        for c in 0..ki {
            let g: [f32; 9] = if flip {
                let src = &w[(c * cin + k) * 9..][..9];
                std::array::from_fn(|i| src[8 - i])
            } else {
                w[(k * ki + c) * 9..][..9].try_into().expect("nine taps")
            };
            // G g: 4x3, column by column
            let cols: [[f32; 4]; 3] = std::array::from_fn(|q| g_times(g[q], g[3 + q], g[6 + q]));
            for i in 0..4 {
                let row = g_times(cols[0][i], cols[1][i], cols[2][i]);
                for (j, &val) in row.iter().enumerate() {
                    u[((i * 4 + j) * ko + k) * ki + c] = val;
                }
            }
        }
    }
    u
}

/// The forward products of one plan: `y = conv(x)` with transformed weights `u` `[16, OC, C]`.
fn run_forward(p: &Plan, x: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y: Vec<f32> = crate::pool::take_n(&[p.batch, p.cout, p.ho, p.wo]);
    if y.is_empty() {
        return y;
    }
    let task = |(ti, ys): (usize, &mut [f32])| {
        let n0 = ti * p.samples;
        let count = ys.len() / p.y_sample();
        let xs = &x[n0 * p.x_sample()..(n0 + count) * p.x_sample()];
        let most = count * p.band * p.tw;
        let mut v: Vec<f32> = crate::pool::take_n(&[XI, p.cin, most]);
        let mut m: Vec<f32> = crate::pool::take_n(&[XI, p.cout, most]);
        let mut scratch = Vec::new();
        for band in p.bands() {
            let tiles = count * band.1 * p.tw;
            p.transform_input(xs, band, &mut v, &mut scratch);
            for xi in 0..XI {
                let a = Operand { data: &u[xi * p.cout * p.cin..][..p.cout * p.cin], rs: p.cin, cs: 1 };
                let b = Operand { data: &v[xi * p.cin * tiles..][..p.cin * tiles], rs: tiles, cs: 1 };
                gemm_into((p.cout, p.cin, tiles), &mut m[xi * p.cout * tiles..][..p.cout * tiles], a, b, false);
            }
            p.transform_output(&m, band, ys, &mut scratch);
        }
        crate::pool::give(v);
        crate::pool::give(m);
    };
    pool().install(|| y.par_chunks_mut(p.samples * p.y_sample()).enumerate().for_each(task));
    y
}

/// `y = conv(x, w)`: `x` dense `[N, C, H, W]`, `w` dense `[OC, C * 9]`; returns `[N, OC, Ho * Wo]`.
/// The caller checked [`applies`].
pub(crate) fn forward(x: &[f32], w: &[f32], cout: usize, g: &WindowGeometry) -> Vec<f32> {
    let p = Plan::of(g, cout);
    run_forward(&p, x, &transform_weights(w, (cout, p.cin), false))
}

/// Gradients of [`forward`] from `gy` `[N, OC, Ho * Wo]`: the input's (when `need_x`) and the
/// weight's `[OC, C * 9]` (when `need_w`). `x` is read only when `need_w`.
pub(crate) fn backward(
    x: &[f32],
    w: &[f32],
    cout: usize,
    gy: &[f32],
    g: &WindowGeometry,
    (need_x, need_w): (bool, bool),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let p = Plan::of(g, cout);
    let dx = need_x.then(|| {
        // the forward convolution of gy with the flipped, channel-swapped kernel
        let back = Plan::new(p.batch, (p.cout, p.cin), (p.ho, p.wo), (2 - p.ph, 2 - p.pw));
        run_forward(&back, gy, &transform_weights(w, (p.cout, p.cin), true))
    });
    let dw = need_w.then(|| weight_grad(&p, x, gy));
    (dx, dw)
}

/// `dw` `[OC, C * 9]`: per task `dU[ξ] = Σ dM[ξ] @ V[ξ]ᵀ`, summed over tasks in order, then `Gᵀ dU G`.
fn weight_grad(p: &Plan, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let tasks = p.batch.div_ceil(p.samples);
    let part = XI * p.cout * p.cin;
    let mut parts: Vec<f32> = crate::pool::take_n(&[tasks.max(1), part]);
    parts.fill(0.0);
    let task = |(ti, du): (usize, &mut [f32])| {
        let n0 = ti * p.samples;
        let count = p.samples.min(p.batch - n0);
        let xs = &x[n0 * p.x_sample()..(n0 + count) * p.x_sample()];
        let gs = &gy[n0 * p.y_sample()..(n0 + count) * p.y_sample()];
        let most = count * p.band * p.tw;
        let mut v: Vec<f32> = crate::pool::take_n(&[XI, p.cin, most]);
        let mut dm: Vec<f32> = crate::pool::take_n(&[XI, p.cout, most]);
        let mut scratch = Vec::new();
        for band in p.bands() {
            let tiles = count * band.1 * p.tw;
            p.transform_input(xs, band, &mut v, &mut scratch);
            p.transform_output_grad(gs, band, &mut dm, &mut scratch);
            for xi in 0..XI {
                let a = Operand { data: &dm[xi * p.cout * tiles..][..p.cout * tiles], rs: tiles, cs: 1 };
                let b = Operand { data: &v[xi * p.cin * tiles..][..p.cin * tiles], rs: 1, cs: tiles };
                gemm_into((p.cout, tiles, p.cin), &mut du[xi * p.cout * p.cin..][..p.cout * p.cin], a, b, true);
            }
        }
        crate::pool::give(v);
        crate::pool::give(dm);
    };
    pool().install(|| parts.par_chunks_mut(part).take(tasks).enumerate().for_each(task));
    let (sum, rest) = parts.split_at_mut(part);
    for other in rest.chunks(part) {
        sum.iter_mut().zip(other).for_each(|(a, &b)| *a += b);
    }
    // dg = Gᵀ dU G per kernel
    let mut dw = vec![0f32; p.cout * p.cin * 9];
    for k in 0..p.cout {
        for c in 0..p.cin {
            let du = |i: usize, j: usize| sum[((i * 4 + j) * p.cout + k) * p.cin + c];
            // Gᵀ dU: 3x4, column by column
            let cols: [[f32; 3]; 4] = std::array::from_fn(|j| gt_times([du(0, j), du(1, j), du(2, j), du(3, j)]));
            for q in 0..3 {
                let row = gt_times([cols[0][q], cols[1][q], cols[2][q], cols[3][q]]);
                dw[(k * p.cin + c) * 9 + q * 3..][..3].copy_from_slice(&row);
            }
        }
    }
    crate::pool::give(parts);
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The direct convolution in f64, with the sum of the terms' magnitudes per output (the
    /// scale of its rounding error), and its gradients from `gy`, by the definitions.
    struct Direct {
        y: Vec<(f64, f64)>,
        dx: Vec<(f64, f64)>,
        dw: Vec<(f64, f64)>,
    }

    fn direct(p: &Plan, x: &[f32], w: &[f32], gy: &[f32]) -> Direct {
        let (h, wd, ho, wo) = (p.h as isize, p.w as isize, p.ho, p.wo);
        let mut y = vec![(0.0, 0.0); p.batch * p.cout * ho * wo];
        let mut dx = vec![(0.0, 0.0); x.len()];
        let mut dw = vec![(0.0, 0.0); w.len()];
        for n in 0..p.batch {
            for k in 0..p.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let yi = ((n * p.cout + k) * ho + oy) * wo + ox;
                        for c in 0..p.cin {
                            for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                                let (iy, ix) = ((oy + i) as isize - p.ph as isize, (ox + j) as isize - p.pw as isize);
                                if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                    continue;
                                }
                                let xi = ((n * p.cin + c) * p.h + iy as usize) * p.w + ix as usize;
                                let wi = (k * p.cin + c) * 9 + i * 3 + j;
                                let (xv, wv, gv) = (x[xi] as f64, w[wi] as f64, gy[yi] as f64);
                                add(&mut y[yi], xv * wv);
                                add(&mut dx[xi], gv * wv);
                                add(&mut dw[wi], gv * xv);
                            }
                        }
                    }
                }
            }
        }
        Direct { y, dx, dw }
    }

    fn add(acc: &mut (f64, f64), term: f64) {
        acc.0 += term;
        acc.1 += term.abs();
    }

    /// Every value within `ulps` f32 ulps of its terms' summed magnitude of the exact result.
    fn assert_close(what: &str, got: &[f32], want: &[(f64, f64)], ulps: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &(v, scale))) in got.iter().zip(want).enumerate() {
            let bound = ulps * f32::EPSILON as f64 * scale.max(f32::MIN_POSITIVE as f64);
            assert!((g as f64 - v).abs() <= bound, "{what}[{i}]: {g} against {v} (bound {bound:e})");
        }
    }

    #[test]
    fn matches_the_direct_convolution_and_its_gradients() {
        // odd and even sizes, every padding, one-sample and many-sample blocks, several bands
        let cases = [
            (2, 16, 17, (5, 6), (1, 1)),
            (3, 17, 16, (7, 7), (0, 2)),
            (1, 16, 16, (9, 4), (2, 0)),
            (5, 16, 18, (3, 3), (1, 1)),
            (1, 16, 16, (40, 13), (1, 1)),
            (0, 16, 16, (4, 4), (1, 1)),
        ];
        for (seed, &(batch, cin, cout, hw, pad)) in cases.iter().enumerate() {
            let p = Plan::new(batch, (cin, cout), hw, pad);
            let x = values(batch * cin * hw.0 * hw.1, seed as u64);
            let w = values(cout * cin * 9, 100 + seed as u64);
            let gy = values(batch * cout * p.ho * p.wo, 200 + seed as u64);
            let g = WindowGeometry {
                batch,
                channels: cin,
                input: vec![hw.0, hw.1],
                kernel: vec![3, 3],
                stride: vec![1, 1],
                padding: vec![pad.0, pad.1],
                dilation: vec![1, 1],
            };
            assert!(applies(&g, cout));
            let want = direct(&p, &x, &w, &gy);
            let what = format!("{batch}x{cin}->{cout} {hw:?} pad {pad:?}");
            assert_close(&format!("y of {what}"), &forward(&x, &w, cout, &g), &want.y, 8.0);
            let (dx, dw) = backward(&x, &w, cout, &gy, &g, (true, true));
            assert_close(&format!("dx of {what}"), &dx.expect("asked"), &want.dx, 8.0);
            assert_close(&format!("dw of {what}"), &dw.expect("asked"), &want.dw, 8.0);
        }
    }

    #[test]
    fn small_channel_counts_strides_and_other_kernels_keep_the_direct_kernel() {
        let g = |channels, kernel: usize, stride: usize| WindowGeometry {
            batch: 2,
            channels,
            input: vec![8, 8],
            kernel: vec![kernel; 2],
            stride: vec![stride; 2],
            padding: vec![1, 1],
            dilation: vec![1, 1],
        };
        assert!(applies(&g(16, 3, 1), 16));
        assert!(!applies(&g(1, 3, 1), 32));
        assert!(!applies(&g(32, 3, 1), 8));
        assert!(!applies(&g(32, 3, 2), 32));
        assert!(!applies(&g(32, 5, 1), 32));
    }
}
