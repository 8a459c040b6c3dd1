//! Winograd F(2x2, 3x3) and F(2x2, 5x5) convolution for 3x3 and 5x5, stride-1, undilated f32
//! layers with many channels (ResNet blocks, W5's second layer, the main job's second layer):
//! each 2x2 output tile is computed from its `α x α` input tile (`α = r + 1`) with `α²` products
//! per channel pair instead of `4 r²` (16 instead of 36 for 3x3, 36 instead of 100 for 5x5), so
//! the matrix products, nearly all of a convolution's time, do 2.25 or 2.8 times less work.
//!
//! Per tile and channel pair, with `d` the input tile, `g` the kernel and `y` the 2x2 output,
//! `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, each of the `α²` positions `ξ`
//! of the transformed tile is one matrix product over all tiles of a block:
//! `M[ξ] (out x tiles) = U[ξ] (out x in) @ V[ξ] (in x tiles)`.
//!
//! - The input gradient is the forward convolution of the output gradient with the kernel
//!   flipped and its channel axes swapped, padded by `r - 1 - pad`: the same code.
//! - The weight gradient is the adjoint of the forward:
//!   `dU[ξ] = Σ_blocks dM[ξ] @ V[ξ]ᵀ` with `dM = A dY Aᵀ` per tile, then `dg = Gᵀ dU G`.
//!
//! F(2, 3) uses the points 0, ±1 (transforms of 0, ±1 and ±1/2). Measured against the direct
//! convolution in f64 on layers of 32 and 64 channels, its error is that of PyTorch's own f32
//! convolution (relative to the largest value, 0.4e-6 to 1e-5 for the output and both
//! gradients, PyTorch 0.5e-6 to 1.1e-5), so it is on by default for every 3x3 layer it fits.
//!
//! F(2, 5) (points 0, ±1, ±2: Bᵀ has entries up to 5, G fractions down to 1/24) is about ten
//! times less accurate than PyTorch on the same measurement (W5's 32 -> 64 layer: weight
//! gradient 1.5e-4 against 2.7e-5, failing `allclose(rtol 1e-3, atol 1e-4)` against PyTorch),
//! so it is used only when asked for with `EMBER_CONV_WINOGRAD=all`; W5 keeps the direct
//! kernel. `EMBER_CONV_WINOGRAD=0` uses the direct kernel everywhere. f64 always does.
//!
//! Blocks are whole tile rows of one sample, or several whole samples when an image has few
//! tiles (a 14x14 image has 49). Block sizes, task splits and the order in which the weight
//! gradient's partial sums are added depend only on the shapes, so results do not depend on
//! the thread count.

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

/// The transform matrices of F(2x2, r x r) (`Bᵀ` α x α, `G` α x r, `Aᵀ` 2 x α), in arrays of the
/// largest size (α = 6).
struct Algorithm {
    bt: [[f32; 6]; 6],
    g: [[f32; 5]; 6],
    at: [[f32; 6]; 2],
}

/// F(2, 3) on the points 0, 1, -1 and ∞.
const F2_3: Algorithm = Algorithm {
    bt: [
        [1.0, 0.0, -1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, -1.0, 0.0, 0.0],
        [0.0; 6],
        [0.0; 6],
    ],
    g: [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.5, 0.0, 0.0],
        [0.5, -0.5, 0.5, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0],
        [0.0; 5],
        [0.0; 5],
    ],
    at: [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, -1.0, 0.0, 0.0]],
};

/// F(2, 5) on the points 0, 1, -1, 2, -2 and ∞ (the Toom-Cook construction, 1/f_j in G).
const F2_5: Algorithm = Algorithm {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [0.25, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ],
    at: [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 2.0, -2.0, 1.0]],
};

/// The algorithm for kernel size `r` (3 or 5).
#[inline(always)]
fn algorithm(r: usize) -> &'static Algorithm {
    if r == 3 {
        &F2_3
    } else {
        &F2_5
    }
}

/// Whether a 2-d convolution with this geometry and `cout` output channels runs on the Winograd
/// kernels (f32 only; the caller checks the dtype).
pub(crate) fn applies(g: &WindowGeometry, cout: usize) -> bool {
    static MODE: OnceLock<Option<String>> = OnceLock::new();
    let mode = MODE.get_or_init(|| std::env::var("EMBER_CONV_WINOGRAD").ok());
    let r = g.kernel.first().copied().unwrap_or(0);
    enabled_for(mode.as_deref(), r) && kernel_fits(g, r, cout)
}

/// Whether kernels of size `r` use Winograd under the `EMBER_CONV_WINOGRAD` setting `mode`.
fn enabled_for(mode: Option<&str>, r: usize) -> bool {
    match mode {
        Some("0") => false,
        Some("all") => r == 3 || r == 5,
        _ => r == 3,
    }
}

/// Whether the geometry is one the kernels handle: 2-d, `r x r` with r 3 or 5, stride 1,
/// undilated, padding below `r`, enough channels.
fn kernel_fits(g: &WindowGeometry, r: usize, cout: usize) -> bool {
    (r == 3 || r == 5)
        && g.input.len() == 2
        && g.kernel == [r, r]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.padding.iter().all(|&p| p < r)
        && g.channels >= MIN_CHANNELS
        && cout >= MIN_CHANNELS
        && g.output().is_some()
}

/// Shapes of one Winograd convolution and its split into tasks and blocks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Kernel size r (3 or 5).
    r: usize,
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
    fn new(
        r: usize,
        batch: usize,
        (cin, cout): (usize, usize),
        (h, w): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> Plan {
        let (ho, wo) = (h + 2 * ph + 1 - r, w + 2 * pw + 1 - r);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        // at least two tasks, so both threads of a small batch have work
        let samples = BLOCK_TILES.div_ceil(th * tw).min(batch.div_ceil(2)).max(1);
        let band = if samples > 1 { th } else { BLOCK_TILES.div_ceil(tw).clamp(1, th) };
        Plan { r, batch, cin, cout, h, w, ph, pw, ho, wo, th, tw, samples, band }
    }

    fn of(g: &WindowGeometry, cout: usize) -> Plan {
        Plan::new(g.kernel[0], g.batch, (g.channels, cout), (g.input[0], g.input[1]), (g.padding[0], g.padding[1]))
    }

    /// Positions of a transformed tile, α².
    fn xi(&self) -> usize {
        (self.r + 1) * (self.r + 1)
    }

    fn x_sample(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn y_sample(&self) -> usize {
        self.cout * self.ho * self.wo
    }

    /// Tile slots per tile row in the products: the tiles, then `r / 2` zero slots, so the
    /// transforms run over a whole band as one vector (a slot's neighbours in the next row are
    /// at a fixed distance).
    fn slots(&self) -> usize {
        self.tw + self.r / 2
    }

    /// The blocks `(first tile row, tile rows)` of a task.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.th).step_by(self.band).map(|t0| (t0, self.band.min(self.th - t0)))
    }
}

/// Compiles a transform for each kernel size, and for AVX2 when the CPU has it: `$body` is an
/// `#[inline(always)]` method generic over `const R: usize`.
macro_rules! dispatch {
    ($name:ident => $body:ident($in:ident: &[f32], $out:ident: &mut [f32])) => {
        fn $name(&self, $in: &[f32], band: (usize, usize), $out: &mut [f32], scratch: &mut Vec<f32>) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn wide<const R: usize>(
                    p: &Plan,
                    $in: &[f32],
                    band: (usize, usize),
                    $out: &mut [f32],
                    scratch: &mut Vec<f32>,
                ) {
                    p.$body::<R>($in, band, $out, scratch)
                }
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe {
                    match self.r {
                        3 => wide::<3>(self, $in, band, $out, scratch),
                        _ => wide::<5>(self, $in, band, $out, scratch),
                    }
                };
            }
            match self.r {
                3 => self.$body::<3>($in, band, $out, scratch),
                _ => self.$body::<5>($in, band, $out, scratch),
            }
        }
    };
}

impl Plan {
    dispatch!(transform_input => transform_input_body(xs: &[f32], v: &mut [f32]));
    dispatch!(transform_output_grad => transform_output_grad_body(gs: &[f32], dm: &mut [f32]));
    dispatch!(transform_output => transform_output_body(m: &[f32], ys: &mut [f32]));

    /// Writes the transformed input tiles `Bᵀ d B` of samples `xs` (`[count, C, H, W]`), tile
    /// rows `t0..t0 + rows`, into `v` `[α², C, T]` (`T` the block's tile slots, see
    /// [`Plan::slots`]; the padding slots are zero).
    ///
    /// The padded plane is split into its four phases (even/odd rows x even/odd columns), so
    /// both passes of the transform run over the whole band as one flat vector per term.
    #[inline(always)]
    fn transform_input_body<const R: usize>(
        &self,
        xs: &[f32],
        (t0, rows): (usize, usize),
        v: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (alpha, alg) = (R + 1, algorithm(R));
        let (n, count) = (self.slots(), xs.len() / self.x_sample());
        let tiles = count * rows * n;
        // phase rows: padded row 2 (t0 + y) + py for y < rows + R / 2
        let (ph_rows, flat) = (rows + R / 2, rows * n);
        scratch.clear();
        scratch.resize(4 * ph_rows * n + 2 * flat, 0.0);
        let (phases, comb) = scratch.split_at_mut(4 * ph_rows * n);
        let phase = |py: usize, px: usize| (py * 2 + px) * ph_rows * n;
        for s in 0..count {
            for c in 0..self.cin {
                let plane = &xs[(s * self.cin + c) * self.h * self.w..][..self.h * self.w];
                split_phases(plane, (self.h, self.w), (self.ph, self.pw), (t0, ph_rows), n, phases);
                let at = s * rows * n;
                let phases = &*phases;
                for i in 0..alpha {
                    // row i of Bᵀ d over the band, even and odd columns: padded row 2 ty + a is
                    // phase row ty + a / 2 of row phase a % 2
                    let (e, o) = comb.split_at_mut(flat);
                    combine(e, &alg.bt[i], alpha, |a| &phases[phase(a % 2, 0) + (a / 2) * n..][..flat]);
                    combine(o, &alg.bt[i], alpha, |a| &phases[phase(a % 2, 1) + (a / 2) * n..][..flat]);
                    // times B: tile t's column b is e[t + b / 2] (b even) or o[t + b / 2]
                    let (e, o) = (&*e, &*o);
                    for j in 0..alpha {
                        let dst = &mut v[((i * alpha + j) * self.cin + c) * tiles + at..][..flat];
                        let (body, _) = dst.split_at_mut(flat - R / 2);
                        combine(body, &alg.bt[j], alpha, |b| if b % 2 == 0 { &e[b / 2..] } else { &o[b / 2..] });
                        for slots in dst.chunks_exact_mut(n) {
                            slots[self.tw..].fill(0.0);
                        }
                    }
                }
            }
        }
    }

    /// Writes `A dY Aᵀ` of the output gradient `gs` (`[count, OC, Ho, Wo]`), tile rows
    /// `t0..t0 + rows`, into `dm` `[α², OC, T]` (zero in the padding slots).
    #[inline(always)]
    fn transform_output_grad_body<const R: usize>(
        &self,
        gs: &[f32],
        (t0, rows): (usize, usize),
        dm: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (alpha, alg) = (R + 1, algorithm(R));
        let (n, count) = (self.slots(), gs.len() / self.y_sample());
        let tiles = count * rows * n;
        let flat = rows * n;
        scratch.clear();
        scratch.resize(6 * flat, 0.0);
        let (phases, comb) = scratch.split_at_mut(4 * flat);
        let phase = |py: usize, px: usize| (py * 2 + px) * flat;
        for s in 0..count {
            for k in 0..self.cout {
                let plane = &gs[(s * self.cout + k) * self.ho * self.wo..][..self.ho * self.wo];
                split_phases(plane, (self.ho, self.wo), (0, 0), (t0, rows), n, phases);
                let at = s * rows * n;
                let phases = &*phases;
                for i in 0..alpha {
                    // row i of A dY: column i of Aᵀ over the two gradient row phases
                    let col = [alg.at[0][i], alg.at[1][i], 0.0, 0.0, 0.0, 0.0];
                    let (e, o) = comb.split_at_mut(flat);
                    combine(e, &col, 2, |a| &phases[phase(a, 0)..][..flat]);
                    combine(o, &col, 2, |a| &phases[phase(a, 1)..][..flat]);
                    // times Aᵀ: tile t's columns are e[t], o[t]
                    let (e, o) = (&*e, &*o);
                    for j in 0..alpha {
                        let col = [alg.at[0][j], alg.at[1][j], 0.0, 0.0, 0.0, 0.0];
                        let dst = &mut dm[((i * alpha + j) * self.cout + k) * tiles + at..][..flat];
                        combine(dst, &col, 2, |b| if b == 0 { e } else { o });
                    }
                }
            }
        }
    }

    /// Writes `Aᵀ M A` of the products `m` (`[α², OC, T]`) for tile rows `t0..t0 + rows` into
    /// the output `ys` (`[count, OC, Ho, Wo]`).
    #[inline(always)]
    fn transform_output_body<const R: usize>(
        &self,
        m: &[f32],
        (t0, rows): (usize, usize),
        ys: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (alpha, alg) = (R + 1, algorithm(R));
        let (n, tw, count) = (self.slots(), self.tw, ys.len() / self.y_sample());
        let tiles = count * rows * n;
        let flat = rows * n;
        scratch.clear();
        scratch.resize((alpha + 2) * flat, 0.0);
        let (sums, pair) = scratch.split_at_mut(alpha * flat);
        for s in 0..count {
            for k in 0..self.cout {
                let plane = &mut ys[(s * self.cout + k) * self.ho * self.wo..][..self.ho * self.wo];
                let at = s * rows * n;
                let mij = |i: usize, j: usize| &m[((i * alpha + j) * self.cout + k) * tiles + at..][..flat];
                for a in 0..2 {
                    // row a of Aᵀ M, per column j, over the band
                    for j in 0..alpha {
                        combine(&mut sums[j * flat..][..flat], &alg.at[a], alpha, |i| mij(i, j));
                    }
                    let sums = &*sums;
                    let (even, odd) = pair.split_at_mut(flat);
                    combine(even, &alg.at[0], alpha, |j| &sums[j * flat..][..flat]);
                    combine(odd, &alg.at[1], alpha, |j| &sums[j * flat..][..flat]);
                    for ty in t0..t0 + rows {
                        let y = 2 * ty + a;
                        if y >= self.ho {
                            continue;
                        }
                        let (even, odd) = (&even[(ty - t0) * n..][..tw], &odd[(ty - t0) * n..][..tw]);
                        let out = &mut plane[y * self.wo..][..self.wo];
                        let mut pairs = out.chunks_exact_mut(2);
                        for ((p, &e), &o) in (&mut pairs).zip(even).zip(odd) {
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

/// `dst[t] = Σ_a coef[a] src(a)[t]` over `a < count`, skipping zero coefficients: one pass over
/// `dst`, the terms added in order of `a`.
#[inline(always)]
fn combine<'s>(dst: &mut [f32], coef: &[f32; 6], count: usize, src: impl Fn(usize) -> &'s [f32]) {
    let n = dst.len();
    let mut terms: [(f32, &[f32]); 6] = [(0.0, &[]); 6];
    let mut k = 0;
    for (a, &c) in coef.iter().enumerate().take(count) {
        if c != 0.0 {
            terms[k] = (c, &src(a)[..n]);
            k += 1;
        }
    }
    let [(c0, s0), (c1, s1), (c2, s2), (c3, s3), (c4, s4), (c5, s5)] = terms;
    // each arm re-slices its terms to `n`, so the loop has no bounds checks and vectorises
    match k {
        0 => dst.fill(0.0),
        1 => {
            let s0 = &s0[..n];
            for t in 0..n {
                dst[t] = c0 * s0[t];
            }
        }
        2 => {
            let (s0, s1) = (&s0[..n], &s1[..n]);
            for t in 0..n {
                dst[t] = c0 * s0[t] + c1 * s1[t];
            }
        }
        3 => {
            let (s0, s1, s2) = (&s0[..n], &s1[..n], &s2[..n]);
            for t in 0..n {
                dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t];
            }
        }
        4 => {
            let (s0, s1, s2, s3) = (&s0[..n], &s1[..n], &s2[..n], &s3[..n]);
            for t in 0..n {
                dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t];
            }
        }
        5 => {
            let (s0, s1, s2, s3, s4) = (&s0[..n], &s1[..n], &s2[..n], &s3[..n], &s4[..n]);
            for t in 0..n {
                dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t] + c4 * s4[t];
            }
        }
        _ => {
            let (s0, s1, s2, s3, s4, s5) = (&s0[..n], &s1[..n], &s2[..n], &s3[..n], &s4[..n], &s5[..n]);
            for t in 0..n {
                dst[t] = c0 * s0[t] + c1 * s1[t] + c2 * s2[t] + c3 * s3[t] + c4 * s4[t] + c5 * s5[t];
            }
        }
    }
}

/// Splits the padded rows `2 (t0 + y) + py` (`y < count`) of `plane` (`h x w`, padded by `pad`
/// rows above and columns to the left, zeros elsewhere) into its four phases, even/odd rows x
/// even/odd columns, `phases[py][px][y][..n]`.
#[inline(always)]
fn split_phases(
    plane: &[f32],
    (h, w): (usize, usize),
    (pad_top, pad_left): (usize, usize),
    (t0, count): (usize, usize),
    n: usize,
    phases: &mut [f32],
) {
    let phase = |py: usize, px: usize| (py * 2 + px) * count * n;
    for y in 0..count {
        for py in 0..2 {
            let (even, odd) = phases.split_at_mut(phase(py, 1));
            let (even, odd) = (&mut even[phase(py, 0) + y * n..][..n], &mut odd[y * n..][..n]);
            let row = (2 * (t0 + y) + py).wrapping_sub(pad_top);
            if row < h {
                split_row(&plane[row * w..][..w], pad_left, even, odd);
            } else {
                even.fill(0.0);
                odd.fill(0.0);
            }
        }
    }
}

/// Splits one row into the even and odd columns of its padded form (`pad` zeros on the left,
/// zeros past the right end), `even.len() == odd.len()` columns each.
#[inline(always)]
fn split_row(row: &[f32], pad: usize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    // row[2j] lands at padded column 2j + pad, row[2j + 1] at 2j + 1 + pad
    let (first, second, at_first, at_second) = match pad % 2 {
        0 => (even, odd, pad / 2, pad / 2),
        _ => (odd, even, pad / 2, pad / 2 + 1),
    };
    let (first_at, second_at) = (at_first.min(first.len()), at_second.min(second.len()));
    let (first, second) = (&mut first[first_at..], &mut second[second_at..]);
    let pairs = row.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    let whole = pairs.len().min(first.len()).min(second.len());
    for ((a, b), pair) in first[..whole].iter_mut().zip(second[..whole].iter_mut()).zip(pairs) {
        *a = pair[0];
        *b = pair[1];
    }
    // the pairs past `whole` (the arrays hold the padded row) and an odd row's last value
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

/// `U = G g Gᵀ` of every kernel of `w` (`[OC, C * r²]`, each kernel row-major; `flip` reads `w`
/// as the input gradient's kernel `w'[c][k] = rot180(w[k][c])`, `[C, OC * r²]`), as `[α², OC', C']`.
fn transform_weights(w: &[f32], r: usize, (cout, cin): (usize, usize), flip: bool) -> Vec<f32> {
    let (alpha, alg, taps) = (r + 1, algorithm(r), r * r);
    // the kernel's own channels (out, in) after an optional swap
    let (ko, ki) = if flip { (cin, cout) } else { (cout, cin) };
    let mut u = vec![0f32; alpha * alpha * ko * ki];
    let mut g = [0f32; 25];
    for k in 0..ko {
        for c in 0..ki {
            if flip {
                let src = &w[(c * cin + k) * taps..][..taps];
                g[..taps].iter_mut().zip(src.iter().rev()).for_each(|(d, &s)| *d = s);
            } else {
                g[..taps].copy_from_slice(&w[(k * ki + c) * taps..][..taps]);
            }
            // G g: α x r
            let mut gg = [[0f32; 5]; 6];
            for (i, row) in gg.iter_mut().enumerate().take(alpha) {
                for (q, v) in row.iter_mut().enumerate().take(r) {
                    *v = (0..r).map(|p| alg.g[i][p] * g[p * r + q]).sum();
                }
            }
            for i in 0..alpha {
                for j in 0..alpha {
                    let val: f32 = (0..r).map(|q| gg[i][q] * alg.g[j][q]).sum();
                    u[((i * alpha + j) * ko + k) * ki + c] = val;
                }
            }
        }
    }
    u
}

/// The forward products of one plan: `y = conv(x)` with transformed weights `u` `[α², OC, C]`.
fn run_forward(p: &Plan, x: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y: Vec<f32> = crate::pool::take_n(&[p.batch, p.cout, p.ho, p.wo]);
    if y.is_empty() {
        return y;
    }
    let task = |(ti, ys): (usize, &mut [f32])| {
        let n0 = ti * p.samples;
        let count = ys.len() / p.y_sample();
        let xs = &x[n0 * p.x_sample()..(n0 + count) * p.x_sample()];
        let most = count * p.band * p.slots();
        let mut v: Vec<f32> = crate::pool::take_n(&[p.xi(), p.cin, most]);
        let mut m: Vec<f32> = crate::pool::take_n(&[p.xi(), p.cout, most]);
        let mut scratch = Vec::new();
        for band in p.bands() {
            let tiles = count * band.1 * p.slots();
            p.transform_input(xs, band, &mut v, &mut scratch);
            for xi in 0..p.xi() {
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

/// `y = conv(x, w)`: `x` dense `[N, C, H, W]`, `w` dense `[OC, C * r²]`; returns
/// `[N, OC, Ho * Wo]`. The caller checked [`applies`].
pub(crate) fn forward(x: &[f32], w: &[f32], cout: usize, g: &WindowGeometry) -> Vec<f32> {
    let p = Plan::of(g, cout);
    run_forward(&p, x, &transform_weights(w, p.r, (cout, p.cin), false))
}

/// Gradients of [`forward`] from `gy` `[N, OC, Ho * Wo]`: the input's (when `need_x`) and the
/// weight's `[OC, C * r²]` (when `need_w`). `x` is read only when `need_w`.
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
        let back = Plan::new(p.r, p.batch, (p.cout, p.cin), (p.ho, p.wo), (p.r - 1 - p.ph, p.r - 1 - p.pw));
        run_forward(&back, gy, &transform_weights(w, p.r, (p.cout, p.cin), true))
    });
    let dw = need_w.then(|| weight_grad(&p, x, gy));
    (dx, dw)
}

/// `dw` `[OC, C * r²]`: per task `dU[ξ] = Σ dM[ξ] @ V[ξ]ᵀ`, summed over tasks in order, then `Gᵀ dU G`.
fn weight_grad(p: &Plan, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let tasks = p.batch.div_ceil(p.samples);
    let part = p.xi() * p.cout * p.cin;
    let mut parts: Vec<f32> = crate::pool::take_n(&[tasks.max(1), part]);
    parts.fill(0.0);
    let task = |(ti, du): (usize, &mut [f32])| {
        let n0 = ti * p.samples;
        let count = p.samples.min(p.batch - n0);
        let xs = &x[n0 * p.x_sample()..(n0 + count) * p.x_sample()];
        let gs = &gy[n0 * p.y_sample()..(n0 + count) * p.y_sample()];
        let most = count * p.band * p.slots();
        let mut v: Vec<f32> = crate::pool::take_n(&[p.xi(), p.cin, most]);
        let mut dm: Vec<f32> = crate::pool::take_n(&[p.xi(), p.cout, most]);
        let mut scratch = Vec::new();
        for band in p.bands() {
            let tiles = count * band.1 * p.slots();
            p.transform_input(xs, band, &mut v, &mut scratch);
            p.transform_output_grad(gs, band, &mut dm, &mut scratch);
            for xi in 0..p.xi() {
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
    let (r, alpha, alg) = (p.r, p.r + 1, algorithm(p.r));
    let mut dw = vec![0f32; p.cout * p.cin * r * r];
    for k in 0..p.cout {
        for c in 0..p.cin {
            let du = |i: usize, j: usize| sum[((i * alpha + j) * p.cout + k) * p.cin + c];
            // Gᵀ dU: r x α
            let mut gdu = [[0f32; 6]; 5];
            for (q, row) in gdu.iter_mut().enumerate().take(r) {
                for (j, v) in row.iter_mut().enumerate().take(alpha) {
                    *v = (0..alpha).map(|i| alg.g[i][q] * du(i, j)).sum();
                }
            }
            for q in 0..r {
                for t in 0..r {
                    dw[(k * p.cin + c) * r * r + q * r + t] = (0..alpha).map(|j| gdu[q][j] * alg.g[j][t]).sum();
                }
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
                            for (i, j) in (0..p.r).flat_map(|i| (0..p.r).map(move |j| (i, j))) {
                                let (iy, ix) = ((oy + i) as isize - p.ph as isize, (ox + j) as isize - p.pw as isize);
                                if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                    continue;
                                }
                                let xi = ((n * p.cin + c) * p.h + iy as usize) * p.w + ix as usize;
                                let wi = ((k * p.cin + c) * p.r + i) * p.r + j;
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
            (3, 2, 16, 17, (5, 6), (1, 1)),
            (3, 3, 17, 16, (7, 7), (0, 2)),
            (3, 1, 16, 16, (9, 4), (2, 0)),
            (3, 5, 16, 18, (3, 3), (1, 1)),
            (3, 1, 16, 16, (40, 13), (1, 1)),
            (3, 0, 16, 16, (4, 4), (1, 1)),
            (5, 2, 16, 17, (7, 8), (2, 2)),
            (5, 3, 17, 16, (6, 9), (0, 4)),
            (5, 1, 16, 16, (11, 5), (3, 1)),
            (5, 1, 16, 16, (40, 13), (2, 2)),
        ];
        for (seed, &(r, batch, cin, cout, hw, pad)) in cases.iter().enumerate() {
            let p = Plan::new(r, batch, (cin, cout), hw, pad);
            let x = values(batch * cin * hw.0 * hw.1, seed as u64);
            let w = values(cout * cin * r * r, 100 + seed as u64);
            let gy = values(batch * cout * p.ho * p.wo, 200 + seed as u64);
            let g = WindowGeometry {
                batch,
                channels: cin,
                input: vec![hw.0, hw.1],
                kernel: vec![r, r],
                stride: vec![1, 1],
                padding: vec![pad.0, pad.1],
                dilation: vec![1, 1],
            };
            assert!(kernel_fits(&g, r, cout));
            let want = direct(&p, &x, &w, &gy);
            let what = format!("{r}x{r} {batch}x{cin}->{cout} {hw:?} pad {pad:?}");
            // F(2, 5)'s transforms have larger entries (Bᵀ up to 5, Aᵀ up to 2, G fractions
            // like 1/6 that round), so its intermediate values carry more rounding: measured
            // up to about 40 ulps of the summed magnitudes (PyTorch's own f32 convolution
            // measured up to about 50 ulps of the largest output on 64-channel layers)
            let ulps = if r == 3 { 8.0 } else { 64.0 };
            assert_close(&format!("y of {what}"), &forward(&x, &w, cout, &g), &want.y, ulps);
            let (dx, dw) = backward(&x, &w, cout, &gy, &g, (true, true));
            assert_close(&format!("dx of {what}"), &dx.expect("asked"), &want.dx, ulps);
            assert_close(&format!("dw of {what}"), &dw.expect("asked"), &want.dw, ulps);
        }
    }

    #[test]
    fn small_channel_counts_strides_other_kernels_and_opt_in_sizes_keep_the_direct_kernel() {
        let g = |channels, kernel: usize, stride: usize| WindowGeometry {
            batch: 2,
            channels,
            input: vec![8, 8],
            kernel: vec![kernel; 2],
            stride: vec![stride; 2],
            padding: vec![1, 1],
            dilation: vec![1, 1],
        };
        assert!(kernel_fits(&g(16, 3, 1), 3, 16));
        assert!(!kernel_fits(&g(1, 3, 1), 3, 32));
        assert!(!kernel_fits(&g(32, 3, 1), 3, 8));
        assert!(!kernel_fits(&g(32, 3, 2), 3, 32));
        assert!(kernel_fits(&g(32, 5, 1), 5, 32));
        assert!(!kernel_fits(&g(32, 7, 1), 7, 32));
        // F(2, 5) only when asked for; 0 turns both off
        assert!(enabled_for(None, 3) && !enabled_for(None, 5));
        assert!(enabled_for(Some("all"), 3) && enabled_for(Some("all"), 5) && !enabled_for(Some("all"), 7));
        assert!(!enabled_for(Some("0"), 3) && !enabled_for(Some("0"), 5));
    }
}
