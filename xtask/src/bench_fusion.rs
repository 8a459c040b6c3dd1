//! W14: chains of primitive ops as a user writes them, eager and lazy (fused), timed like
//! `torch_ref.py --only W14` (`mode: "eager"`) and `--compile` (`mode: "compile"`; ours is `"lazy"`).

use crate::bench::{bench, emit, realise};
use ember::{Device, Tensor};
use serde_json::json;

/// GELU (tanh form) out of primitive ops, as torch_ref.py writes it: 10 elementwise ops.
fn gelu_tanh_composed(x: &Tensor) -> ember::Result<Tensor> {
    let cube = x.mul(0.044715)?.mul(x)?.mul(x)?;
    let inner = x.add(&cube)?.mul(0.797_884_560_802_865_4)?.tanh()?.add(1.0)?;
    x.mul(0.5)?.mul(&inner)
}

/// Layer norm over the last dim out of primitive ops (mean, var, normalise, affine).
fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor) -> ember::Result<Tensor> {
    let mu = x.mean_dim([-1], true)?;
    let d = x.sub(&mu)?;
    let var = d.mul(&d)?.mean_dim([-1], true)?;
    d.mul(&var.add(1e-5)?.rsqrt()?)?.mul(w)?.add(b)
}

/// Runs the three W14 cases on `base`'s eager device and on its lazy device.
pub(crate) fn run(base: Device, threads: usize, reps: usize) {
    let n = 1usize << 24;
    let ng = 1usize << 22;
    let (rows, cols) = (4096usize, 1024usize);
    let host = |shape: &[usize]| Tensor::randn(shape).expect("randn");
    let (x, xs, w, b, xg) = (host(&[n]), host(&[rows, cols]), host(&[cols]), host(&[cols]), host(&[ng]));
    for (mode, dev) in [("eager", base.eager()), ("lazy", base.eager().lazy())] {
        let on = |t: &Tensor| t.to(dev).expect("to device");
        let (x, xs, w, b) = (on(&x), on(&xs), on(&w), on(&b));
        let xg = on(&xg).detach().requires_grad_(true).expect("leaf");
        let t = bench(reps, || realise(gelu_tanh_composed(&x).expect("gelu")));
        emit(
            "W14",
            threads,
            json!({"case": "gelu_tanh composed", "n": n, "mode": mode}),
            gbps(n, &t),
            "GB/s",
            &t,
            None,
        );
        let t = bench(reps, || realise(layer_norm_composed(&xs, &w, &b).expect("layer norm")));
        let params = json!({"case": "layer_norm composed", "shape": [rows, cols], "mode": mode});
        emit("W14", threads, params, gbps(rows * cols, &t), "GB/s", &t, None);
        let t = bench(reps, || {
            xg.set_grad(None);
            gelu_tanh_composed(&xg).and_then(|y| y.sum()).and_then(|s| s.backward()).expect("fwd+bwd");
            realise(xg.grad().expect("grad"));
        });
        let params = json!({"case": "gelu_tanh composed fwd+bwd", "n": ng, "mode": mode});
        emit("W14", threads, params, gbps(ng, &t), "GB/s", &t, None);
    }
}

/// GB/s at 8 bytes per element (one read, one write: what a perfectly fused kernel moves).
fn gbps(elements: usize, t: &crate::bench::Timing) -> f64 {
    8.0 * elements as f64 / t.median_s / 1e9
}
