//! Conformance dispatch for the `nn.functional` ops (convolution, pooling, normalisation, sampling ...).

use ember::{ConvOptions, ConvPadding, Error, InterpMode, PoolOptions, Tensor};
use serde_json::{Map, Value};

type R<T> = Result<T, Error>;

/// An int or a list of ints, expanded to `d` entries.
fn tuple(args: &Map<String, Value>, k: &str, d: usize, default: usize) -> Vec<usize> {
    match args.get(k) {
        Some(Value::Number(n)) => vec![n.as_u64().unwrap_or(default as u64) as usize; d],
        Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().unwrap_or(default as u64) as usize).collect(),
        _ => vec![default; d],
    }
}

fn f(args: &Map<String, Value>, k: &str, d: f64) -> f64 {
    args.get(k).and_then(|v| v.as_f64()).unwrap_or(d)
}
fn b(args: &Map<String, Value>, k: &str, d: bool) -> bool {
    args.get(k).and_then(|v| v.as_bool()).unwrap_or(d)
}
fn i(args: &Map<String, Value>, k: &str, d: i64) -> i64 {
    args.get(k).and_then(|v| v.as_i64()).unwrap_or(d)
}

fn pool_opts(args: &Map<String, Value>, d: usize) -> PoolOptions {
    let kernel = tuple(args, "kernel_size", d, 1);
    let mut o = PoolOptions::new(&kernel);
    if args.get("stride").is_some_and(|v| !v.is_null()) {
        o.stride = tuple(args, "stride", d, 1);
    }
    o.padding = tuple(args, "padding", d, 0);
    o.dilation = tuple(args, "dilation", d, 1);
    o.ceil_mode = b(args, "ceil_mode", false);
    o.count_include_pad = b(args, "count_include_pad", true);
    o.divisor_override = args.get("divisor_override").and_then(|v| v.as_u64()).map(|v| v as usize);
    o
}

/// `None` when the op is not an nn op Ember knows.
pub(crate) fn call_nn(op: &str, a: &Map<String, Value>, pos: &[Option<&Tensor>]) -> Option<R<Vec<Tensor>>> {
    let p = |k: usize| -> R<&Tensor> {
        pos.get(k).copied().flatten().ok_or_else(|| Error::invalid(op, format!("missing input {k}")))
    };
    let opt = |k: usize| pos.get(k).copied().flatten();
    let one = |t: R<Tensor>| Some(t.map(|t| vec![t]));
    let two = |t: R<(Tensor, Tensor)>| Some(t.map(|(a, b)| vec![a, b]));
    let dims_of =
        |name: &str| -> usize { name.chars().rev().nth(1).and_then(|c| c.to_digit(10)).unwrap_or(2) as usize };
    match op {
        "linear" => one(p(0).and_then(|x| x.linear(p(1)?, opt(2)))),
        "bilinear" => one(p(0).and_then(|x| x.bilinear(p(1)?, p(2)?, opt(3)))),
        "conv1d" | "conv2d" | "conv3d" | "conv_transpose1d" | "conv_transpose2d" | "conv_transpose3d" => {
            let d = dims_of(op);
            let mut o = ConvOptions::new(d);
            o.stride = tuple(a, "stride", d, 1);
            o.dilation = tuple(a, "dilation", d, 1);
            o.groups = i(a, "groups", 1) as usize;
            o.output_padding = tuple(a, "output_padding", d, 0);
            o.padding = match a.get("padding").and_then(|v| v.as_str()) {
                Some("same") => ConvPadding::Same,
                Some("valid") => ConvPadding::Valid,
                _ => ConvPadding::Explicit(tuple(a, "padding", d, 0)),
            };
            one(p(0).and_then(|x| {
                if op.starts_with("conv_transpose") {
                    x.conv_transpose(p(1)?, opt(2), &o)
                } else {
                    x.conv(p(1)?, opt(2), &o)
                }
            }))
        }
        "unfold" => one(p(0).and_then(|x| {
            x.im2col(
                &tuple(a, "kernel_size", 2, 1),
                &tuple(a, "stride", 2, 1),
                &tuple(a, "padding", 2, 0),
                &tuple(a, "dilation", 2, 1),
                0.0,
            )
        })),
        "fold" => one(p(0).and_then(|x| {
            x.col2im(
                &tuple(a, "output_size", 2, 1),
                &tuple(a, "kernel_size", 2, 1),
                &tuple(a, "stride", 2, 1),
                &tuple(a, "padding", 2, 0),
                &tuple(a, "dilation", 2, 1),
            )
        })),
        "max_pool1d" | "max_pool2d" | "max_pool3d" => {
            let o = pool_opts(a, dims_of(op));
            let r = p(0).and_then(|x| x.max_pool(&o));
            if b(a, "return_indices", false) {
                two(r)
            } else {
                one(r.map(|r| r.0))
            }
        }
        "avg_pool1d" | "avg_pool2d" | "avg_pool3d" => one(p(0).and_then(|x| x.avg_pool(&pool_opts(a, dims_of(op))))),
        "lp_pool1d" | "lp_pool2d" => {
            one(p(0).and_then(|x| x.lp_pool(f(a, "norm_type", 2.0), &pool_opts(a, dims_of(op)))))
        }
        "adaptive_avg_pool1d" | "adaptive_avg_pool2d" => {
            one(p(0).and_then(|x| x.adaptive_avg_pool(&tuple(a, "output_size", dims_of(op), 1))))
        }
        "adaptive_max_pool2d" => {
            let r = p(0).and_then(|x| x.adaptive_max_pool2d(&tuple(a, "output_size", 2, 1)));
            if b(a, "return_indices", false) {
                two(r)
            } else {
                one(r.map(|r| r.0))
            }
        }
        "pixel_shuffle" => one(p(0).and_then(|x| x.pixel_shuffle(i(a, "upscale_factor", 1) as usize))),
        "pixel_unshuffle" => one(p(0).and_then(|x| x.pixel_unshuffle(i(a, "downscale_factor", 1) as usize))),
        "channel_shuffle" => one(p(0).and_then(|x| x.channel_shuffle(i(a, "groups", 1) as usize))),
        "embedding" => one(p(1).and_then(|w| w.embedding_padded(p(0)?, a.get("padding_idx").and_then(|v| v.as_i64())))),
        "embedding_bag" => one(p(1).and_then(|w| {
            w.embedding_bag(p(0)?, opt(2), a.get("mode").and_then(|v| v.as_str()).unwrap_or("mean"), opt(3))
        })),
        "layer_norm" => {
            let shape = tuple(a, "normalized_shape", 1, 1);
            one(p(0).and_then(|x| x.layer_norm(&shape, opt(1), opt(2), f(a, "eps", 1e-5))))
        }
        "rms_norm" => {
            let shape = tuple(a, "normalized_shape", 1, 1);
            one(p(0).and_then(|x| x.rms_norm(&shape, opt(1), a.get("eps").and_then(|v| v.as_f64()))))
        }
        "group_norm" => {
            one(p(0).and_then(|x| x.group_norm(i(a, "num_groups", 1) as usize, opt(1), opt(2), f(a, "eps", 1e-5))))
        }
        "instance_norm" => {
            if opt(1).is_some() || opt(2).is_some() {
                return Some(Err(Error::unsupported("instance_norm", "running statistics")));
            }
            one(p(0).and_then(|x| x.instance_norm(opt(3), opt(4), f(a, "eps", 1e-5))))
        }
        "batch_norm" => {
            let (rm, rv) = (opt(1), opt(2));
            let training = b(a, "training", false);
            let r = p(0)
                .and_then(|x| x.batch_norm(rm, rv, opt(3), opt(4), training, f(a, "momentum", 0.1), f(a, "eps", 1e-5)));
            Some(r.map(|out| {
                let mut v = vec![out];
                if training {
                    v.extend(rm.cloned());
                    v.extend(rv.cloned());
                }
                v
            }))
        }
        "local_response_norm" => one(p(0).and_then(|x| {
            x.local_response_norm(i(a, "size", 1) as usize, f(a, "alpha", 1e-4), f(a, "beta", 0.75), f(a, "k", 1.0))
        })),
        "normalize" => one(p(0).and_then(|x| x.normalize(f(a, "p", 2.0), i(a, "dim", 1) as isize, f(a, "eps", 1e-12)))),
        "cosine_similarity" => {
            one(p(0).and_then(|x| x.cosine_similarity(p(1)?, i(a, "dim", 1) as isize, f(a, "eps", 1e-8))))
        }
        "pairwise_distance" => {
            one(p(0)
                .and_then(|x| x.pairwise_distance(p(1)?, f(a, "p", 2.0), f(a, "eps", 1e-6), b(a, "keepdim", false))))
        }
        "interpolate" => {
            let mode = match InterpMode::parse(a.get("mode").and_then(|v| v.as_str()).unwrap_or("nearest")) {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let x = match p(0) {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            let d = x.ndim().saturating_sub(2);
            let size = a.get("size").filter(|v| !v.is_null()).map(|_| tuple(a, "size", d, 1));
            let scale: Option<Vec<f64>> = match a.get("scale_factor") {
                Some(Value::Number(n)) => Some(vec![n.as_f64().unwrap_or(1.0); d]),
                Some(Value::Array(v)) => Some(v.iter().filter_map(|x| x.as_f64()).collect()),
                _ => None,
            };
            one(x.interpolate(size.as_deref(), scale.as_deref(), mode, b(a, "align_corners", false)))
        }
        "grid_sample" => {
            if a.get("mode").and_then(|v| v.as_str()).is_some_and(|m| m != "bilinear")
                || a.get("padding_mode").and_then(|v| v.as_str()).is_some_and(|m| m != "zeros")
            {
                return Some(Err(Error::unsupported("grid_sample", "only bilinear mode with zeros padding")));
            }
            one(p(0).and_then(|x| x.grid_sample(p(1)?, b(a, "align_corners", false))))
        }
        "affine_grid" => one(p(0).and_then(|t| t.affine_grid(&tuple(a, "size", 4, 1), b(a, "align_corners", false)))),
        _ => None,
    }
}
