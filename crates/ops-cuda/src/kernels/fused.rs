//! CUDA C for the fused kernels (`FusedKernels`, DESIGN.md decision 12) on f32 and f64: 2-d max
//! pooling with indices, batch norm's per-channel statistics and backward reductions, the
//! per-channel affine combination both directions of batch norm end with, layer/RMS norm and its
//! input gradient (one block per row: statistics and output in one launch), the LSTM cell's forward
//! and backward step (the recurrent products between steps are cuBLAS calls), and the SGD and
//! Adam/AdamW steps in place. Convolution has no kernel of its own: the backend builds it from
//! im2col/col2im and cuBLAS.
//!
//! Arithmetic mirrors ops-cpu's element by element (same operation order), so under the C++
//! emulation the pointwise kernels match the CPU backend exactly; on a GPU, NVRTC contracts
//! multiply-adds, so results agree to rounding. The per-channel sums accumulate in double over a
//! block of fixed size ([`FUSED_BLOCK`]): their order does not depend on the grid.

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::DType;

/// Threads per block of the per-channel reductions (a power of two; the shared arrays' size).
pub const FUSED_BLOCK: u32 = 256;

/// The dtypes the fused kernels take.
pub fn fused_supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

/// The fused kernels' names, one family each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedKernel {
    /// `max_pool2d_<t>(const S* x, S* vals, long long* idx, ember_window w, ember_operand ox)`.
    MaxPool2d,
    /// `bn_stats_<t>(const S* x, S* mean, S* var, ember_shape s, ember_operand ox, long long n,
    /// long long c, long long l)`.
    BatchNormStats,
    /// `bn_backward_reduce_<t>(const S* g, const S* x, const S* mean, S* sg, S* sgx, ember_shape s,
    /// ember_operand og, ember_operand ox, long long mean_off, long long mean_stride, long long n,
    /// long long c, long long l)`.
    BatchNormBackwardReduce,
    /// `channel_affine_<t>(const S* x, const S* y, const S* a, const S* b, const S* k, S* out,
    /// ember_shape s, ember_operand ox, ember_operand oy, long long a_off, long long a_st,
    /// long long b_off, long long b_st, long long k_off, long long k_st, int has_y, long long c,
    /// long long l)`.
    ChannelAffine,
    /// `layer_norm_<t>(const S* x, const S* w, const S* b, S* y, S* mean, S* rstd, ember_shape s,
    /// ember_operand ox, long long w_off, long long w_st, long long b_off, long long b_st, int flags,
    /// long long rows, long long k, double eps)` (flags: 1 weight, 2 bias, 4 RMS norm).
    LayerNorm,
    /// `layer_norm_backward_<t>(const S* gy, const S* x, const S* mean, const S* rstd, const S* w,
    /// S* gx, ember_shape s, ember_operand og, ember_operand ox, long long m_off, long long m_st,
    /// long long r_off, long long r_st, long long w_off, long long w_st, int flags, long long rows,
    /// long long k)` (flags as the forward's).
    LayerNormBackward,
    /// `lstm_cell_<t>(S* gates, const S* c0, S* y, long long t, long long prev, long long b,
    /// long long h, long long plane)`.
    LstmCell,
    /// `lstm_cell_backward_<t>(const S* gates, const S* y, const S* c0, const S* gy, S* dpre,
    /// S* dh, S* dc, long long t, long long prev, long long b, long long h, long long plane,
    /// int carry)`.
    LstmCellBackward,
    /// `sgd_step_<t>(S* w, const S* g, S* buf, long long n, double lr, double wd, double mom,
    /// double damp, int flags)` (flags: 1 maximize, 2 momentum buffer, 4 first step, 8 Nesterov).
    SgdStep,
    /// `adam_step_<t>(S* w, const S* g, S* m, S* v, long long n, double step_size, double bc2_sqrt,
    /// double decay, double l2, double b1, double b2, double eps, int maximize)`.
    AdamStep,
}

impl FusedKernel {
    /// Every family.
    pub const ALL: [FusedKernel; 10] = [
        FusedKernel::MaxPool2d,
        FusedKernel::BatchNormStats,
        FusedKernel::BatchNormBackwardReduce,
        FusedKernel::ChannelAffine,
        FusedKernel::LayerNorm,
        FusedKernel::LayerNormBackward,
        FusedKernel::LstmCell,
        FusedKernel::LstmCellBackward,
        FusedKernel::SgdStep,
        FusedKernel::AdamStep,
    ];

    fn stem(self) -> &'static str {
        match self {
            FusedKernel::MaxPool2d => "max_pool2d",
            FusedKernel::BatchNormStats => "bn_stats",
            FusedKernel::BatchNormBackwardReduce => "bn_backward_reduce",
            FusedKernel::ChannelAffine => "channel_affine",
            FusedKernel::LayerNorm => "layer_norm",
            FusedKernel::LayerNormBackward => "layer_norm_backward",
            FusedKernel::LstmCell => "lstm_cell",
            FusedKernel::LstmCellBackward => "lstm_cell_backward",
            FusedKernel::SgdStep => "sgd_step",
            FusedKernel::AdamStep => "adam_step",
        }
    }

    /// The kernel's name for `dtype` (f32 or f64).
    pub fn name(self, dtype: DType) -> String {
        format!("{}_{}", self.stem(), cuda_type(dtype).suffix)
    }
}

/// One block's tree sum of `part` (`FUSED_BLOCK` doubles in shared memory); every thread returns the total.
const BLOCK_SUM: &str = r#"
__device__ __forceinline__ double ember_block_sum(double* part, double v) {
    part[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    const double total = part[0];
    __syncthreads();
    return total;
}
"#;

fn max_pool2d(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, {s}* __restrict__ vals, long long* __restrict__ idx, ember_window w, ember_operand ox) {{
    const long long total = w.batch * w.channels * w.out_numel;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{
        const long long l = i % w.out_numel, p = i / w.out_numel;
        const long long c = p % w.channels, n = p / w.channels;
        const long long r = l / w.output[1], q = l % w.output[1];
        const long long base = ox.offset + n * ox.stride[0] + c * ox.stride[1];
        {s} best = 0;
        long long at = 0;
        bool found = false;
        for (long long kh = 0; kh < w.kernel[0]; ++kh) {{
            const long long hh = r * w.stride[0] + kh * w.dilation[0] - w.padding[0];
            if (hh < 0 || hh >= w.input[0]) continue;
            for (long long kw = 0; kw < w.kernel[1]; ++kw) {{
                const long long ww = q * w.stride[1] + kw * w.dilation[1] - w.padding[1];
                if (ww < 0 || ww >= w.input[1]) continue;
                const {s} v = x[base + hh * ox.stride[2] + ww * ox.stride[3]];
                // PyTorch's rule: a larger value or a NaN takes over
                if (!found || v > best || isnan(v)) {{ best = v; at = hh * w.input[1] + ww; found = true; }}
            }}
        }}
        vals[i] = best;
        idx[i] = at;
    }}
}}
"#,
        name = FusedKernel::MaxPool2d.name(t.dtype),
        s = t.storage,
    )
}

fn bn_stats(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, {s}* __restrict__ mean, {s}* __restrict__ var, ember_shape s, ember_operand ox, long long n, long long c, long long l) {{
    __shared__ double part[{block}];
    const long long count = n * l;
    const double denom = count > 0 ? (double)count : 1.0;
    for (long long ch = blockIdx.x; ch < c; ch += gridDim.x) {{
        double acc = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {{
            const long long i = ((j / l) * c + ch) * l + j % l;
            acc += (double)x[s.contiguous ? i : ember_offset(i, s, ox)];
        }}
        const double mu = ember_block_sum(part, acc) / denom;
        const {s} m = ({s})mu;
        acc = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {{
            const long long i = ((j / l) * c + ch) * l + j % l;
            const {s} d = x[s.contiguous ? i : ember_offset(i, s, ox)] - m;
            acc += (double)(d * d);
        }}
        const double ss = ember_block_sum(part, acc);
        if (threadIdx.x == 0) {{ mean[ch] = ({s})mu; var[ch] = ({s})(ss / denom); }}
    }}
}}
"#,
        name = FusedKernel::BatchNormStats.name(t.dtype),
        s = t.storage,
        block = FUSED_BLOCK,
    )
}

fn bn_backward_reduce(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ g, const {s}* __restrict__ x, const {s}* __restrict__ mean, {s}* __restrict__ sg, {s}* __restrict__ sgx, ember_shape s, ember_operand og, ember_operand ox, long long mean_off, long long mean_stride, long long n, long long c, long long l) {{
    __shared__ double part[{block}];
    const long long count = n * l;
    for (long long ch = blockIdx.x; ch < c; ch += gridDim.x) {{
        const {s} m = mean[mean_off + ch * mean_stride];
        double a = 0.0, b = 0.0;
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {{
            const long long i = ((j / l) * c + ch) * l + j % l;
            const {s} gv = g[s.contiguous ? i : ember_offset(i, s, og)];
            const {s} xv = x[s.contiguous ? i : ember_offset(i, s, ox)];
            a += (double)gv;
            b += (double)(gv * (xv - m));
        }}
        const double ta = ember_block_sum(part, a);
        const double tb = ember_block_sum(part, b);
        if (threadIdx.x == 0) {{ sg[ch] = ({s})ta; sgx[ch] = ({s})tb; }}
    }}
}}
"#,
        name = FusedKernel::BatchNormBackwardReduce.name(t.dtype),
        s = t.storage,
        block = FUSED_BLOCK,
    )
}

fn channel_affine(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, const {s}* __restrict__ y, const {s}* __restrict__ a, const {s}* __restrict__ b, const {s}* __restrict__ k, {s}* __restrict__ out, ember_shape s, ember_operand ox, ember_operand oy, long long a_off, long long a_st, long long b_off, long long b_st, long long k_off, long long k_st, int has_y, long long c, long long l) {{
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const long long ch = (i / l) % c;
        const {s} v = x[s.contiguous ? i : ember_offset(i, s, ox)];
        const {s} ac = a[a_off + ch * a_st], kc = k[k_off + ch * k_st];
        if (has_y) {{
            const {s} wv = y[s.contiguous ? i : ember_offset(i, s, oy)];
            const {s} bc = b[b_off + ch * b_st];
            out[i] = v * ac + wv * bc + kc;
        }} else {{
            out[i] = v * ac + kc;
        }}
    }}
}}
"#,
        name = FusedKernel::ChannelAffine.name(t.dtype),
        s = t.storage,
    )
}

/// One block per row of `k` elements (grid-stride over rows): the mean (skipped for RMS norm), the
/// sum of squared deviations, then the output in ops-cpu's order `((x - mean) * rstd) * w + b`.
fn layer_norm(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, const {s}* __restrict__ w, const {s}* __restrict__ b, {s}* __restrict__ y, {s}* __restrict__ mean, {s}* __restrict__ rstd, ember_shape s, ember_operand ox, long long w_off, long long w_st, long long b_off, long long b_st, int flags, long long rows, long long k, double eps) {{
    __shared__ double part[{block}];
    const double kf = k > 0 ? (double)k : 1.0;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
        double acc = 0.0;
        if (!(flags & 4))
            for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
                const long long i = row * k + j;
                acc += (double)x[s.contiguous ? i : ember_offset(i, s, ox)];
            }}
        const {s} m = ({s})(ember_block_sum(part, acc) / kf);
        acc = 0.0;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            const {s} d = x[s.contiguous ? i : ember_offset(i, s, ox)] - m;
            acc += (double)(d * d);
        }}
        const {s} rs = ({s})(1.0 / sqrt(ember_block_sum(part, acc) / kf + eps));
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            {s} v = (x[s.contiguous ? i : ember_offset(i, s, ox)] - m) * rs;
            if (flags & 1) v = v * w[w_off + j * w_st];
            if (flags & 2) v = v + b[b_off + j * b_st];
            y[i] = v;
        }}
        if (threadIdx.x == 0) {{ mean[row] = m; rstd[row] = rs; }}
    }}
}}
"#,
        name = FusedKernel::LayerNorm.name(t.dtype),
        s = t.storage,
        block = FUSED_BLOCK,
    )
}

/// One block per row: `sum(g)` and `sum(g * xhat)` with `g = gy * w`, then the input's gradient
/// `rstd * (g - sum(g) / k - xhat * sum(g * xhat) / k)` (RMS norm: without the `sum(g)` term).
fn layer_norm_backward(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ gy, const {s}* __restrict__ x, const {s}* __restrict__ mean, const {s}* __restrict__ rstd, const {s}* __restrict__ w, {s}* __restrict__ gx, ember_shape s, ember_operand og, ember_operand ox, long long m_off, long long m_st, long long r_off, long long r_st, long long w_off, long long w_st, int flags, long long rows, long long k) {{
    __shared__ double part[{block}];
    const double kf = k > 0 ? (double)k : 1.0;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
        const {s} m = mean[m_off + row * m_st], rs = rstd[r_off + row * r_st];
        double a = 0.0, c = 0.0;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            const {s} gv = gy[s.contiguous ? i : ember_offset(i, s, og)];
            const {s} g = (flags & 1) ? gv * w[w_off + j * w_st] : gv;
            const {s} xv = x[s.contiguous ? i : ember_offset(i, s, ox)];
            a += (double)g;
            c += (double)(g * ((xv - m) * rs));
        }}
        const double ta = ember_block_sum(part, a), tc = ember_block_sum(part, c);
        const {s} ma = (flags & 4) ? ({s})0 : ({s})(ta / kf), mc = ({s})(tc / kf);
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            const {s} gv = gy[s.contiguous ? i : ember_offset(i, s, og)];
            const {s} g = (flags & 1) ? gv * w[w_off + j * w_st] : gv;
            const {s} xv = x[s.contiguous ? i : ember_offset(i, s, ox)];
            gx[i] = rs * (g - ma - (xv - m) * rs * mc);
        }}
    }}
}}
"#,
        name = FusedKernel::LayerNormBackward.name(t.dtype),
        s = t.storage,
        block = FUSED_BLOCK,
    )
}

/// Row `t * b + r` of the gates `[T, B, 4H]` holds the step's pre-activations (input projections
/// plus the recurrent product) and receives the activations; `prev` is the time index of the step
/// before (`-1`: the initial cell state `c0`).
fn lstm_cell(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}({s}* __restrict__ gates, const {s}* __restrict__ c0, {s}* __restrict__ y, long long t, long long prev, long long b, long long h, long long plane) {{
    const long long total = b * h;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {{
        const long long r = e / h, k = e % h;
        const long long row = t * b + r;
        {s}* gr = gates + row * 4 * h;
        const {s} i = ember_sigmoid(gr[k]);
        const {s} f = ember_sigmoid(gr[h + k]);
        const {s} g = tanh(gr[2 * h + k]);
        const {s} o = ember_sigmoid(gr[3 * h + k]);
        gr[k] = i; gr[h + k] = f; gr[2 * h + k] = g; gr[3 * h + k] = o;
        const {s} c_prev = prev < 0 ? c0[r * h + k] : y[plane + (prev * b + r) * h + k];
        const {s} c = f * c_prev + i * g;
        y[plane + row * h + k] = c;
        y[row * h + k] = o * tanh(c);
    }}
}}
"#,
        name = FusedKernel::LstmCell.name(t.dtype),
        s = t.storage,
    )
}

/// The cell's backward at time `t`: the gradients reaching its hidden and cell state are `gy`'s
/// plus, with `carry`, those carried from the later step (`dh`, `dc` `[B, H]`); writes the gates'
/// pre-activation gradients into `dpre` and the previous cell state's gradient into `dc`.
fn lstm_cell_backward(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ gates, const {s}* __restrict__ y, const {s}* __restrict__ c0, const {s}* __restrict__ gy, {s}* __restrict__ dpre, const {s}* __restrict__ dh, {s}* __restrict__ dc, long long t, long long prev, long long b, long long h, long long plane, int carry) {{
    const long long total = b * h;
    const long long step = (long long)blockDim.x * gridDim.x;
    const {s} one = 1;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {{
        const long long r = e / h, k = e % h;
        const long long row = t * b + r;
        const {s}* gr = gates + row * 4 * h;
        const {s} i = gr[k], f = gr[h + k], g = gr[2 * h + k], o = gr[3 * h + k];
        const {s} c = y[plane + row * h + k];
        const {s} c_prev = prev < 0 ? c0[r * h + k] : y[plane + (prev * b + r) * h + k];
        const {s} dhk = gy[row * h + k] + (carry ? dh[e] : ({s})0);
        const {s} dck = gy[plane + row * h + k] + (carry ? dc[e] : ({s})0);
        const {s} tc = tanh(c);
        const {s} dct = dck + dhk * o * (one - tc * tc);
        {s}* dr = dpre + row * 4 * h;
        dr[3 * h + k] = dhk * tc * o * (one - o);
        dr[k] = dct * g * i * (one - i);
        dr[h + k] = dct * c_prev * f * (one - f);
        dr[2 * h + k] = dct * i * (one - g * g);
        dc[e] = dct * f;
    }}
}}
"#,
        name = FusedKernel::LstmCellBackward.name(t.dtype),
        s = t.storage,
    )
}

fn sgd_step(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}({s}* __restrict__ w, const {s}* __restrict__ g, {s}* __restrict__ buf, long long n, double lr_, double wd_, double mom_, double damp_, int flags) {{
    const {s} lr = ({s})lr_, wd = ({s})wd_, mom = ({s})mom_, damp = ({s})damp_, one = 1;
    const bool maximize = flags & 1, has_buf = flags & 2, first = flags & 4, nesterov = flags & 8;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {{
        const {s} wv = w[i];
        const {s} gv = (maximize ? -g[i] : g[i]) + wd * wv;
        if (has_buf) {{
            const {s} bv = first ? gv : buf[i] * mom + (one - damp) * gv;
            buf[i] = bv;
            const {s} d = nesterov ? gv + mom * bv : bv;
            w[i] = wv - lr * d;
        }} else {{
            w[i] = wv - lr * gv;
        }}
    }}
}}
"#,
        name = FusedKernel::SgdStep.name(t.dtype),
        s = t.storage,
    )
}

fn adam_step(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}({s}* __restrict__ w, const {s}* __restrict__ g, {s}* __restrict__ m, {s}* __restrict__ v, long long n, double step_size_, double bc2_sqrt_, double decay_, double l2_, double b1_, double b2_, double eps_, int maximize) {{
    const {s} step_size = ({s})step_size_, bc2_sqrt = ({s})bc2_sqrt_, decay = ({s})decay_, l2 = ({s})l2_;
    const {s} b1 = ({s})b1_, b2 = ({s})b2_, eps = ({s})eps_, one = 1;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {{
        const {s} wv = w[i] * decay;
        const {s} gv = (maximize ? -g[i] : g[i]) + l2 * wv;
        const {s} mv = m[i] + (gv - m[i]) * (one - b1);
        const {s} vv = v[i] * b2 + gv * gv * (one - b2);
        m[i] = mv;
        v[i] = vv;
        const {s} denom = sqrt(vv) / bc2_sqrt + eps;
        w[i] = wv - step_size * (mv / denom);
    }}
}}
"#,
        name = FusedKernel::AdamStep.name(t.dtype),
        s = t.storage,
    )
}

/// The fused module: every family for f32 and f64, with the window struct the pooling kernel takes.
pub fn module_source() -> (String, Vec<(FusedKernel, DType, String)>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str(super::window::WINDOW_STRUCT);
    src.push_str(BLOCK_SUM);
    let mut names = vec![];
    for t in CUDA_TYPES.iter().copied().filter(|t| fused_supported(t.dtype)) {
        for k in FusedKernel::ALL {
            src.push_str(&match k {
                FusedKernel::MaxPool2d => max_pool2d(t),
                FusedKernel::BatchNormStats => bn_stats(t),
                FusedKernel::BatchNormBackwardReduce => bn_backward_reduce(t),
                FusedKernel::ChannelAffine => channel_affine(t),
                FusedKernel::LayerNorm => layer_norm(t),
                FusedKernel::LayerNormBackward => layer_norm_backward(t),
                FusedKernel::LstmCell => lstm_cell(t),
                FusedKernel::LstmCellBackward => lstm_cell_backward(t),
                FusedKernel::SgdStep => sgd_step(t),
                FusedKernel::AdamStep => adam_step(t),
            });
            names.push((k, t.dtype, k.name(t.dtype)));
        }
    }
    (src, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_kernel_per_dtype() {
        let (src, names) = module_source();
        assert_eq!(names.len(), 20);
        for (_, _, n) in &names {
            assert!(src.contains(&format!("void {n}(")), "{n}");
        }
    }
}
