//! The CUDA backend on a real device: every elementwise kernel, fill, cast and strided copy
//! against the CPU backend. Without a CUDA driver or GPU (CI) the device tests print that they were
//! skipped and why; the no-device behaviour (clear errors, no panics) is tested instead.

use ember_ops_cpu::CpuBackend;
use ember_ops_cuda::kernels::dtype::CUDA_TYPES;
use ember_ops_cuda::kernels::elementwise::{binary_supported, unary_supported};
use ember_ops_cuda::{device_count, driver_present, is_available, CudaBackend};
use ember_storage::{Backend, BinaryOp, DType, HostData, Layout, Scalar, UnaryOp};

#[test]
fn without_a_driver_or_device_every_entry_point_is_a_clear_error() {
    if is_available() {
        println!("a CUDA device is present: the device tests below run instead");
        return;
    }
    assert_eq!(device_count(), 0);
    let e = CudaBackend::new(0).unwrap_err().to_string();
    if driver_present() {
        assert!(e.contains("cuda:0 does not exist"), "{e}");
    } else {
        assert!(e.contains("CUDA driver not found"), "{e}");
    }
}

fn skip() -> bool {
    if !is_available() {
        println!("SKIPPED: no CUDA device (driver present: {})", driver_present());
        return true;
    }
    false
}

fn sample(dtype: DType, n: usize) -> HostData {
    let f: Vec<f64> = (0..n).map(|i| ((i * 37 % 71) as f64 - 35.0) / 10.0).collect();
    let cpu = CpuBackend::new();
    let b = cpu.upload(HostData::F64(f)).unwrap();
    let l = Layout::contiguous(&[n]);
    cpu.download((&cpu.cast((&b, &l), dtype).unwrap(), &l)).unwrap()
}

fn assert_close(got: &HostData, want: &HostData, what: &str) {
    let cpu = CpuBackend::new();
    let l = Layout::contiguous(&[got.len()]);
    let as_f64 = |d: &HostData| match cpu
        .download((&cpu.cast((&cpu.upload(d.clone()).unwrap(), &l), DType::F64).unwrap(), &l))
        .unwrap()
    {
        HostData::F64(v) => v,
        _ => unreachable!(),
    };
    let tol = match want.dtype() {
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        DType::F32 => 1e-5,
        DType::F64 => 1e-12,
        _ => 0.0,
    };
    for (i, (g, w)) in as_f64(got).iter().zip(as_f64(want)).enumerate() {
        assert!((g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * (1.0 + w.abs()), "{what} [{i}]: {g} vs CPU {w}");
    }
}

#[test]
fn on_a_gpu_elementwise_ops_fill_cast_and_copy_match_the_cpu_backend() {
    if skip() {
        return;
    }
    let (cpu, gpu) = (CpuBackend::new(), CudaBackend::new(0).unwrap());
    let t = Layout::contiguous(&[7, 5]).transpose(0, 1).unwrap();
    let col = Layout::contiguous(&[5, 1]).expand(&[5, 7]).unwrap();
    let dense = Layout::contiguous(&[5, 7]);
    let mut checked = 0;
    for ct in CUDA_TYPES {
        let (a, b) = (sample(ct.dtype, 35), sample(ct.dtype, 5));
        let (ca, cb) = (cpu.upload(a.clone()).unwrap(), cpu.upload(b.clone()).unwrap());
        let (ga, gb) = (gpu.upload(a.clone()).unwrap(), gpu.upload(b.clone()).unwrap());
        for &op in UnaryOp::ALL.iter().filter(|&&op| unary_supported(op, ct.dtype)) {
            let want = cpu.unary(op, (&ca, &t)).and_then(|r| cpu.download((&r, &dense)));
            let got = gpu.unary(op, (&ga, &t)).and_then(|r| gpu.download((&r, &dense))).unwrap();
            assert_close(&got, &want.unwrap(), &format!("{} {}", op.name(), ct.suffix));
            checked += 1;
        }
        for &op in BinaryOp::ALL.iter().filter(|&&op| binary_supported(op, ct.dtype)) {
            let Ok(want) = cpu.binary(op, (&ca, &t), (&cb, &col)).and_then(|r| cpu.download((&r, &dense))) else {
                continue; // e.g. integer division by zero: the CUDA backend must refuse too
            };
            let got = gpu.binary(op, (&ga, &t), (&gb, &col)).and_then(|r| gpu.download((&r, &dense))).unwrap();
            assert_close(&got, &want, &format!("{} {}", op.name(), ct.suffix));
            checked += 1;
        }
        for to in CUDA_TYPES {
            let want = cpu.download((&cpu.cast((&ca, &t), to.dtype).unwrap(), &dense)).unwrap();
            let got = gpu.download((&gpu.cast((&ga, &t), to.dtype).unwrap(), &dense)).unwrap();
            assert_close(&got, &want, &format!("cast {} to {}", ct.suffix, to.suffix));
        }
        let filled = gpu.full(Scalar::F(2.5), ct.dtype, 9).unwrap();
        let want = cpu.download((&cpu.full(Scalar::F(2.5), ct.dtype, 9).unwrap(), &Layout::contiguous(&[9]))).unwrap();
        assert_close(&gpu.download((&filled, &Layout::contiguous(&[9]))).unwrap(), &want, "full");
        for op in ember_ops_cuda::kernels::reduce::REDUCE_OPS {
            let dims: &[usize] = &[0]; // [5, 7] -> 7 results, one dim as argmax needs
            let want = cpu.reduce(op, (&ca, &t), dims).and_then(|r| cpu.download((&r, &Layout::contiguous(&[7]))));
            let got = gpu.reduce(op, (&ga, &t), dims).and_then(|r| gpu.download((&r, &Layout::contiguous(&[7]))));
            assert_close(&got.unwrap(), &want.unwrap(), &format!("reduce {op:?} {}", ct.suffix));
        }
        if ct.dtype.is_float() {
            for (dim, log) in [(0, false), (1, false), (1, true)] {
                let want = cpu.softmax((&ca, &t), dim, log).and_then(|r| cpu.download((&r, &dense))).unwrap();
                let got = gpu.softmax((&ga, &t), dim, log).and_then(|r| gpu.download((&r, &dense))).unwrap();
                assert_close(&got, &want, &format!("softmax dim {dim} log {log} {}", ct.suffix));
            }
        }
        let cond = cpu.binary(BinaryOp::Gt, (&ca, &t), (&ca, &Layout::contiguous(&[5, 7]))).unwrap();
        let cond = cpu.download((&cond, &dense)).unwrap();
        let (cc, gc) = (cpu.upload(cond.clone()).unwrap(), gpu.upload(cond).unwrap());
        let want = cpu.where_cond((&cc, &dense), (&ca, &t), (&cb, &col)).and_then(|r| cpu.download((&r, &dense)));
        let got = gpu.where_cond((&gc, &dense), (&ga, &t), (&gb, &col)).and_then(|r| gpu.download((&r, &dense)));
        assert_close(&got.unwrap(), &want.unwrap(), &format!("where {}", ct.suffix));
        if ct.dtype.is_float() {
            // [5, 7] (transposed view) x [7, 5] (dense), and a batch with a broadcast operand
            let (cm, gm) = (cpu.upload(sample(ct.dtype, 35)).unwrap(), gpu.upload(sample(ct.dtype, 35)).unwrap());
            let l75 = Layout::contiguous(&[7, 5]);
            let want =
                cpu.matmul((&ca, &t), (&cm, &l75)).and_then(|r| cpu.download((&r, &Layout::contiguous(&[5, 5]))));
            let got = gpu.matmul((&ga, &t), (&gm, &l75)).and_then(|r| gpu.download((&r, &Layout::contiguous(&[5, 5]))));
            assert_close(&got.unwrap(), &want.unwrap(), &format!("matmul {}", ct.suffix));
            let bt = Layout::contiguous(&[1, 5, 7]).expand(&[3, 5, 7]).unwrap();
            let b3 = Layout::contiguous(&[3, 7, 5]).narrow(0, 0, 3).unwrap();
            let (c3, g3) = (cpu.upload(sample(ct.dtype, 105)).unwrap(), gpu.upload(sample(ct.dtype, 105)).unwrap());
            let out = Layout::contiguous(&[3, 5, 5]);
            let want = cpu.matmul((&ca, &bt), (&c3, &b3)).and_then(|r| cpu.download((&r, &out)));
            let got = gpu.matmul((&ga, &bt), (&g3, &b3)).and_then(|r| gpu.download((&r, &out)));
            assert_close(&got.unwrap(), &want.unwrap(), &format!("batched matmul {}", ct.suffix));
        }
        let dst = gpu.full(Scalar::I(0), ct.dtype, 35).unwrap();
        gpu.assign((&dst, &t), (&ga, &t)).unwrap();
        assert_close(&gpu.download((&dst, &Layout::contiguous(&[35]))).unwrap(), &a, "copy_");
    }
    println!("{checked} elementwise kernels matched the CPU backend on {}", gpu.arch());
}

/// Indexing (with an out-of-range index as an error, after which the device still works), scans,
/// sort, the RNG (uniform bits identical to the CPU's) and im2col/col2im on the device.
#[test]
fn on_a_gpu_indexing_scans_sort_rng_and_windows_match_the_cpu_backend() {
    use ember_storage::{IndexOp, RngKey, RngOp, ScanOp, WindowGeometry};
    if skip() {
        return;
    }
    let (cpu, gpu) = (CpuBackend::new(), CudaBackend::new(0).unwrap());
    let t = Layout::contiguous(&[7, 5]).transpose(0, 1).unwrap();
    let dense = Layout::contiguous(&[5, 7]);
    for ct in CUDA_TYPES {
        let a = sample(ct.dtype, 35);
        let (ca, ga) = (cpu.upload(a.clone()).unwrap(), gpu.upload(a).unwrap());
        let idx = HostData::I64(vec![4, 0, 4, 2, 1, 3, 0, 2, 1, 4]);
        let (ci, gi) = (cpu.upload(idx.clone()).unwrap(), gpu.upload(idx).unwrap());
        let il = Layout::contiguous(&[2, 5]).transpose(0, 1).unwrap(); // [5, 2]
        let src = sample(ct.dtype, 10);
        let (cs, gs) = (cpu.upload(src.clone()).unwrap(), gpu.upload(src).unwrap());
        let sl = Layout::contiguous(&[5, 2]);
        for op in [IndexOp::Gather { dim: 1 }, IndexOp::ScatterAdd { dim: 1 }, IndexOp::Scatter { dim: 1 }] {
            let with_src = !matches!(op, IndexOp::Gather { .. });
            let out = if with_src { dense.clone() } else { Layout::contiguous(&[5, 2]) };
            let want = cpu.index(op, (&ca, &t), (&ci, &il), with_src.then_some((&cs, &sl)));
            let got = gpu.index(op, (&ga, &t), (&gi, &il), with_src.then_some((&gs, &sl)));
            if matches!(op, IndexOp::Scatter { .. }) {
                continue; // repeated indices: which write wins is unspecified on a GPU
            }
            let (want, got) =
                (cpu.download((&want.unwrap(), &out)).unwrap(), gpu.download((&got.unwrap(), &out)).unwrap());
            assert_close(&got, &want, &format!("{op:?} {}", ct.suffix));
        }
        let bad = gpu.upload(HostData::I64(vec![0, 9])).unwrap();
        let e = gpu.index(IndexOp::IndexSelect { dim: 0 }, (&ga, &t), (&bad, &Layout::contiguous(&[2])), None);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("index_select") && e.contains("index 9 is out of bounds"), "{e}");
        for op in [ScanOp::Cumsum, ScanOp::Cummax] {
            let (wv, _) = cpu.scan(op, (&ca, &t), 1).unwrap();
            let (gv, _) = gpu.scan(op, (&ga, &t), 1).unwrap();
            assert_close(
                &gpu.download((&gv, &dense)).unwrap(),
                &cpu.download((&wv, &dense)).unwrap(),
                &format!("{op:?}"),
            );
        }
        let (wv, wi) = cpu.sort((&ca, &t), 1, true, true).unwrap();
        let (gv, gi2) = gpu.sort((&ga, &t), 1, true, true).unwrap();
        assert_close(&gpu.download((&gv, &dense)).unwrap(), &cpu.download((&wv, &dense)).unwrap(), "sort");
        assert_eq!(gpu.download((&gi2, &dense)).unwrap(), cpu.download((&wi, &dense)).unwrap(), "sort indices");
        if ct.dtype.is_float() {
            let key = RngKey { seed: 5, offset: 3 };
            let op = RngOp::Uniform { low: 0.0, high: 1.0 };
            let l = Layout::contiguous(&[4096]);
            let want = cpu.download((&cpu.random(op, ct.dtype, 4096, key).unwrap(), &l)).unwrap();
            assert_eq!(gpu.download((&gpu.random(op, ct.dtype, 4096, key).unwrap(), &l)).unwrap(), want, "rng");
            let g = WindowGeometry {
                batch: 1,
                channels: 5,
                input: vec![7],
                kernel: vec![3],
                stride: vec![2],
                padding: vec![1],
                dilation: vec![1],
            };
            let cols = Layout::contiguous(&[1, 15, 4]);
            let x3 = t.unsqueeze(0).unwrap();
            let want = cpu.download((&cpu.im2col((&ca, &x3), &g, 0.0).unwrap(), &cols)).unwrap();
            let got = gpu.download((&gpu.im2col((&ga, &x3), &g, 0.0).unwrap(), &cols)).unwrap();
            assert_close(&got, &want, "im2col");
            let (cc, gc) = (cpu.upload(want.clone()).unwrap(), gpu.upload(want).unwrap());
            let back = Layout::contiguous(&[1, 5, 7]);
            let want = cpu.download((&cpu.col2im((&cc, &cols), &g).unwrap(), &back)).unwrap();
            let got = gpu.download((&gpu.col2im((&gc, &cols), &g).unwrap(), &back)).unwrap();
            assert_close(&got, &want, "col2im");
        }
    }
    // the context survived the index error: a fresh op still runs
    let l = Layout::contiguous(&[3]);
    assert_eq!(gpu.download((&gpu.full(Scalar::I(7), DType::I64, 3).unwrap(), &l)).unwrap(), HostData::I64(vec![7; 3]));
}

/// Every fused kernel on the device against the CPU backend's: pooling, batch norm, layer/RMS norm, convolution
/// and its backward, LSTM sequences both ways, SGD and Adam steps (f32 and f64).
#[test]
fn on_a_gpu_the_fused_kernels_match_the_cpu_backends() {
    use ember_storage::{AdamStep, SgdStep, WindowGeometry};
    if skip() {
        return;
    }
    let (cpu, gpu) = (CpuBackend::new(), CudaBackend::new(0).unwrap());
    let (fc, fg) = (cpu.fused().unwrap(), gpu.fused().expect("the CUDA backend offers fused kernels"));
    let d = |b: &ember_storage::Buffer, be: &dyn Backend, shape: &[usize]| {
        be.download((b, &Layout::contiguous(shape))).unwrap()
    };
    for dtype in [DType::F32, DType::F64] {
        let up = |n: usize, seed: usize| {
            let h = sample(dtype, n + seed);
            let h = match h {
                HostData::F32(v) => HostData::F32(v[seed..].to_vec()),
                HostData::F64(v) => HostData::F64(v[seed..].to_vec()),
                _ => unreachable!(),
            };
            (cpu.upload(h.clone()).unwrap(), gpu.upload(h).unwrap())
        };
        let geom = WindowGeometry {
            batch: 2,
            channels: 3,
            input: vec![9, 8],
            kernel: vec![3, 3],
            stride: vec![2, 2],
            padding: vec![1, 1],
            dilation: vec![1, 1],
        };
        let xl = Layout::contiguous(&[2, 3, 9, 8]);
        let (xc, xg) = up(432, 0);
        let (vc, ic) = fc.max_pool2d((&xc, &xl), &geom).unwrap();
        let (vg, ig) = fg.max_pool2d((&xg, &xl), &geom).unwrap();
        assert_close(&d(&vg, &gpu, &[2, 3, 5, 4]), &d(&vc, &cpu, &[2, 3, 5, 4]), "max_pool2d");
        assert_close(&d(&ig, &gpu, &[2, 3, 5, 4]), &d(&ic, &cpu, &[2, 3, 5, 4]), "max_pool2d indices");
        let (mc, sc) = fc.batch_norm_stats((&xc, &xl)).unwrap();
        let (mg, sg) = fg.batch_norm_stats((&xg, &xl)).unwrap();
        assert_close(&d(&mg, &gpu, &[3]), &d(&mc, &cpu, &[3]), "batch_norm_stats mean");
        assert_close(&d(&sg, &gpu, &[3]), &d(&sc, &cpu, &[3]), "batch_norm_stats var");
        for rms in [false, true] {
            let rl = Layout::contiguous(&[48, 9]);
            let (nc, ng) = up(9, 8);
            let kl = Layout::contiguous(&[9]);
            let (yc, mc, rc) = fc.layer_norm((&xc, &rl), Some((&nc, &kl)), Some((&nc, &kl)), 1e-5, rms).unwrap();
            let (yg, mg, rg) = fg.layer_norm((&xg, &rl), Some((&ng, &kl)), Some((&ng, &kl)), 1e-5, rms).unwrap();
            assert_close(&d(&yg, &gpu, &[432]), &d(&yc, &cpu, &[432]), "layer_norm");
            let sl = Layout::contiguous(&[48]);
            let gxc =
                fc.layer_norm_backward((&xc, &rl), (&xc, &rl), (&mc, &sl), (&rc, &sl), Some((&nc, &kl)), rms).unwrap();
            let gxg =
                fg.layer_norm_backward((&xg, &rl), (&xg, &rl), (&mg, &sl), (&rg, &sl), Some((&ng, &kl)), rms).unwrap();
            assert_close(&d(&gxg, &gpu, &[432]), &d(&gxc, &cpu, &[432]), "layer_norm_backward");
        }
        let wl = Layout::contiguous(&[4, 27]);
        let (wc, wg) = up(108, 3);
        let yc = fc.conv2d((&xc, &xl), (&wc, &wl), &geom).unwrap();
        let yg = fg.conv2d((&xg, &xl), (&wg, &wl), &geom).unwrap();
        assert_close(&d(&yg, &gpu, &[2, 4, 20]), &d(&yc, &cpu, &[2, 4, 20]), "conv2d");
        let gl = Layout::contiguous(&[2, 4, 20]);
        let (gc, gg) = up(160, 5);
        let (gxc, gwc) = fc.conv2d_backward((&xc, &xl), (&wc, &wl), (&gc, &gl), &geom, (true, true)).unwrap();
        let (gxg, gwg) = fg.conv2d_backward((&xg, &xl), (&wg, &wl), (&gg, &gl), &geom, (true, true)).unwrap();
        assert_close(&d(&gxg.unwrap(), &gpu, &[432]), &d(&gxc.unwrap(), &cpu, &[432]), "conv2d input gradient");
        assert_close(&d(&gwg.unwrap(), &gpu, &[108]), &d(&gwc.unwrap(), &cpu, &[108]), "conv2d weight gradient");
        let (t, b, h) = (5, 3, 8);
        let (l3, l2, lw, ly) = (
            Layout::contiguous(&[t, b, 4 * h]),
            Layout::contiguous(&[b, h]),
            Layout::contiguous(&[4 * h, h]),
            Layout::contiguous(&[2, t, b, h]),
        );
        let ((gic, gig), (h0c, h0g), (c0c, c0g), (whc, whg), (dyc, dyg)) =
            (up(t * b * 4 * h, 1), up(b * h, 2), up(b * h, 4), up(4 * h * h, 6), up(2 * t * b * h, 7));
        for reverse in [false, true] {
            let (yc, gc) = fc.lstm_sequence((&gic, &l3), (&h0c, &l2), (&c0c, &l2), (&whc, &lw), reverse).unwrap();
            let (yg, gg) = fg.lstm_sequence((&gig, &l3), (&h0g, &l2), (&c0g, &l2), (&whg, &lw), reverse).unwrap();
            assert_close(&d(&yg, &gpu, &[2 * t * b * h]), &d(&yc, &cpu, &[2 * t * b * h]), "lstm_sequence states");
            let (dc, dhc, dcc) = fc
                .lstm_sequence_backward((&gc, &l3), (&yc, &ly), (&c0c, &l2), (&whc, &lw), (&dyc, &ly), reverse)
                .unwrap();
            let (dg, dhg, dcg) = fg
                .lstm_sequence_backward((&gg, &l3), (&yg, &ly), (&c0g, &l2), (&whg, &lw), (&dyg, &ly), reverse)
                .unwrap();
            assert_close(&d(&dg, &gpu, &[t * b * 4 * h]), &d(&dc, &cpu, &[t * b * 4 * h]), "lstm gates gradient");
            assert_close(&d(&dhg, &gpu, &[b * h]), &d(&dhc, &cpu, &[b * h]), "lstm h0 gradient");
            assert_close(&d(&dcg, &gpu, &[b * h]), &d(&dcc, &cpu, &[b * h]), "lstm c0 gradient");
        }
        let n = 1000;
        let nl = Layout::contiguous(&[n]);
        let ((pc, pg), (qc, qg), (mc, mg), (vc, vg)) = (up(n, 1), up(n, 2), up(n, 3), up(n, 0));
        let (vc, vg) = {
            let abs = |be: &dyn Backend, v: &ember_storage::Buffer| be.unary(UnaryOp::Abs, (v, &nl)).unwrap();
            (abs(&cpu, &vc), abs(&gpu, &vg))
        };
        let sgd = SgdStep {
            lr: 0.1,
            weight_decay: 0.01,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            maximize: false,
            first: false,
        };
        fc.sgd_step((&pc, &nl), (&qc, &nl), Some((&mc, &nl)), &sgd).unwrap();
        fg.sgd_step((&pg, &nl), (&qg, &nl), Some((&mg, &nl)), &sgd).unwrap();
        let adam = AdamStep {
            lr: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            maximize: false,
            step: 3,
        };
        fc.adam_step((&pc, &nl), (&qc, &nl), (&mc, &nl), (&vc, &nl), &adam).unwrap();
        fg.adam_step((&pg, &nl), (&qg, &nl), (&mg, &nl), (&vg, &nl), &adam).unwrap();
        assert_close(&d(&pg, &gpu, &[n]), &d(&pc, &cpu, &[n]), "sgd + adam parameter");
        assert_close(&d(&vg, &gpu, &[n]), &d(&vc, &cpu, &[n]), "adam exp_avg_sq");
    }
    println!("every fused kernel matched the CPU backend on {}", gpu.arch());
}

/// Uploads staged through the pinned slots (several in a row, so slots are reused while earlier
/// copies may be in flight, and one that grows a slot) arrive intact, as do direct ones.
#[test]
fn on_a_gpu_uploads_through_pinned_memory_arrive_intact() {
    use ember_ops_cuda::staging::{PINNED_MAX, PINNED_MIN};
    if skip() {
        return;
    }
    let gpu = CudaBackend::new(0).unwrap();
    let sizes = [PINNED_MIN / 8 - 1, PINNED_MIN / 4, 3 << 18, 3 << 18, 1 << 20, 5 << 20, PINNED_MAX / 4 + 1];
    let mut bufs = vec![];
    for (k, &n) in sizes.iter().enumerate() {
        let data: Vec<f32> = (0..n).map(|i| (i as f32) * 0.5 + k as f32).collect();
        bufs.push((gpu.upload(HostData::F32(data.clone())).unwrap(), data));
    }
    for (b, data) in &bufs {
        let got = gpu.download((b, &Layout::contiguous(&[data.len()]))).unwrap();
        assert!(got == HostData::F32(data.clone()), "an upload of {} f32 arrived changed", data.len());
    }
}

/// On a GPU, a fused program (one generated kernel) gives the bits of its steps run one by one
/// with the eager kernels, over broadcast and transposed inputs, f32 and f64.
#[test]
fn on_a_gpu_a_fused_program_gives_the_eager_kernels_bits() {
    use ember_storage::{ElementwiseProgram, Step};
    if skip() {
        return;
    }
    let be = CudaBackend::new(0).unwrap();
    let (r, c) = (33, 1029);
    let shape = [r, c];
    let dense = Layout::contiguous(&shape);
    let row = Layout::contiguous(&[c]).expand(&shape).unwrap();
    let transposed = Layout::contiguous(&[c, r]).transpose(0, 1).unwrap();
    for dtype in [DType::F32, DType::F64] {
        let x = be.upload(sample(dtype, r * c)).unwrap();
        let w = be.upload(sample(dtype, c)).unwrap();
        let xt = be.upload(sample(dtype, r * c)).unwrap();
        let inputs = [(&x, &dense), (&w, &row), (&xt, &transposed)];
        let steps = vec![
            Step::Input(0),
            Step::Input(1),
            Step::Binary(BinaryOp::Mul, 0, 1),
            Step::Binary(BinaryOp::Add, 2, 0),
            Step::Unary(UnaryOp::Tanh, 3),
            Step::Input(2),
            Step::Binary(BinaryOp::Mul, 4, 5),
            Step::Binary(BinaryOp::Add, 6, 2),
        ];
        let program = ElementwiseProgram { dtype, shape: shape.to_vec(), steps, outputs: vec![7, 3] };
        let fused = be.fused().unwrap().elementwise(&program, &inputs).unwrap();
        let eager = program.run_stepwise(&be, &inputs).unwrap();
        for (j, e) in eager.iter().enumerate() {
            let got = be.download((&fused[j], &dense)).unwrap();
            let want = be.download((e, &dense)).unwrap();
            assert!(got == want, "{dtype} output {j}: the fused kernel's bits differ from the eager kernels'");
        }
    }
}
