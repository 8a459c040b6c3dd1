//! Maps a conformance case (PyTorch op name, keyword args, tensor inputs) onto Ember's API.

use crate::conformance::Case;
use ember::{BinaryOp, DType, Device, Error, PadMode, SliceItem, Tensor, UnaryOp};
use serde_json::Value;

type R<T> = Result<T, Error>;

/// Keyword arguments with PyTorch's conventions ("inf" strings, ints or lists for dims, null = None).
pub(crate) struct Args<'a>(pub(crate) &'a serde_json::Map<String, Value>);

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::String(s) => match s.as_str() {
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            "nan" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

impl<'a> Args<'a> {
    pub(crate) fn has(&self, k: &str) -> bool {
        self.0.get(k).is_some_and(|v| !v.is_null())
    }
    pub(crate) fn f(&self, k: &str, d: f64) -> f64 {
        self.0.get(k).and_then(num).unwrap_or(d)
    }
    pub(crate) fn of(&self, k: &str) -> Option<f64> {
        self.0.get(k).and_then(num)
    }
    pub(crate) fn i(&self, k: &str, d: i64) -> i64 {
        self.0.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))).unwrap_or(d)
    }
    pub(crate) fn b(&self, k: &str, d: bool) -> bool {
        self.0.get(k).and_then(|v| v.as_bool()).unwrap_or(d)
    }
    pub(crate) fn s(&self, k: &str) -> Option<&'a str> {
        self.0.get(k).and_then(|v| v.as_str())
    }
    /// An int or a list of ints.
    pub(crate) fn ints(&self, k: &str) -> Option<Vec<i64>> {
        match self.0.get(k)? {
            Value::Number(n) => Some(vec![n.as_i64()?]),
            Value::Array(a) => a.iter().map(|x| x.as_i64()).collect(),
            _ => None,
        }
    }
    pub(crate) fn dims(&self, k: &str) -> Vec<isize> {
        self.ints(k).unwrap_or_default().into_iter().map(|x| x as isize).collect()
    }
    pub(crate) fn dtype(&self, d: DType) -> DType {
        self.s("dtype").and_then(DType::from_name).unwrap_or(d)
    }
}

fn unsupported(op: &str) -> Error {
    Error::unsupported(op, "no Ember implementation yet")
}

/// Runs the case's op on its inputs and returns the outputs flattened in order.
pub(crate) fn call(case: &Case, inputs: &[(String, Option<Tensor>)]) -> R<Vec<Tensor>> {
    if let Some(inner) = case.op.strip_prefix("autocast.") {
        // the op inside `torch.autocast("cpu", dtype=args.dtype)`; the dtype is not the op's argument
        let mut c = case.clone();
        c.op = inner.to_string();
        let dtype = c.args.remove("dtype").and_then(|v| v.as_str().and_then(crate::conformance::dtype_of));
        let dtype = dtype.ok_or_else(|| Error::invalid(&case.op, "autocast cases need args.dtype"))?;
        return ember::autocast(dtype, || call(&c, inputs));
    }
    let a = Args(&case.args);
    let pos: Vec<Option<&Tensor>> = inputs.iter().map(|(_, t)| t.as_ref()).collect();
    let named = |n: &str| inputs.iter().find(|(k, _)| k == n).and_then(|(_, t)| t.as_ref());
    let p = |i: usize| -> R<&Tensor> {
        pos.get(i).copied().flatten().ok_or_else(|| Error::invalid(&case.op, format!("missing input {i}")))
    };
    let x = || p(0);
    let one = |t: R<Tensor>| t.map(|t| vec![t]);
    let two = |t: R<(Tensor, Tensor)>| t.map(|(a, b)| vec![a, b]);
    // A second operand: a tensor input, or a scalar in args.
    let other = |key: &str| -> R<Tensor> {
        match pos.get(1).copied().flatten() {
            Some(t) => Ok(t.clone()),
            None => {
                let v = a.of(key).ok_or_else(|| Error::invalid(&case.op, format!("missing {key}")))?;
                let x = p(0)?;
                let dt = if x.dtype().is_float() || v.fract() != 0.0 { x.dtype() } else { DType::I64 };
                Tensor::full_with(ember::SCALAR, v, dt, x.device())
            }
        }
    };
    let scalar_or =
        |key: &str| -> R<Option<f64>> { Ok(if pos.get(1).copied().flatten().is_some() { None } else { a.of(key) }) };
    let op = case.op.as_str();
    match op {
        // ---- unary and binary rows of the op table: see the generic arm at the end
        "round" => {
            let d = a.i("decimals", 0);
            let t = x()?;
            if d == 0 {
                one(t.round())
            } else {
                let s = 10f64.powi(d as i32);
                one(t.mul(s)?.round()?.div(s))
            }
        }
        "logit" => one(x()?.logit(a.of("eps"))),
        "nan_to_num" => one(x()?.nan_to_num(a.f("nan", 0.0), a.of("posinf"), a.of("neginf"))),
        "clamp" => match (named("min"), named("max")) {
            (None, None) => one(x()?.clamp(a.of("min"), a.of("max"))),
            (lo, hi) => one(x()?.clamp_tensor(lo, hi)),
        },
        // ---- activations
        "relu6" => one(x()?.relu6()),
        "elu" => one(x()?.elu(a.f("alpha", 1.0))),
        "celu" => one(x()?.celu(a.f("alpha", 1.0))),
        "selu" => one(x()?.selu()),
        "gelu" => one(x()?.gelu(a.s("approximate").unwrap_or("none"))),
        "mish" => one(x()?.mish()),
        "leaky_relu" => one(x()?.leaky_relu(a.f("negative_slope", 0.01))),
        "hardtanh" => one(x()?.hardtanh(a.f("min_val", -1.0), a.f("max_val", 1.0))),
        "hardsigmoid" => one(x()?.hardsigmoid()),
        "hardswish" => one(x()?.hardswish()),
        "softplus" => one(x()?.softplus(a.f("beta", 1.0), a.f("threshold", 20.0))),
        "softsign" => one(x()?.softsign()),
        "softshrink" => one(x()?.softshrink(a.f("lambd", 0.5))),
        "hardshrink" => one(x()?.hardshrink(a.f("lambd", 0.5))),
        "tanhshrink" => one(x()?.tanhshrink()),
        "threshold" => one(x()?.threshold(a.f("threshold", 0.0), a.f("value", 0.0))),
        "logsigmoid" => one(x()?.logsigmoid()),
        "glu" => one(x()?.glu(a.i("dim", -1) as isize)),
        "prelu" => one(x()?.prelu(p(1)?)),
        "softmax" => one(x()?.softmax(a.i("dim", -1) as isize)),
        "log_softmax" => one(x()?.log_softmax(a.i("dim", -1) as isize)),
        "softmin" => one(x()?.softmin(a.i("dim", -1) as isize)),
        // ---- binary
        "add" | "sub" => {
            let o = other("other")?;
            let alpha = a.f("alpha", 1.0);
            let o = if alpha == 1.0 { o } else { o.mul(alpha)? };
            one(if op == "add" { x()?.add(&o) } else { x()?.sub(&o) })
        }
        "mul" => one(x()?.mul(&other("other")?)),
        "div" => {
            let q = x()?.div(&other("other")?)?;
            one(match a.s("rounding_mode") {
                Some("floor") => x()?.floor_divide(&other("other")?),
                Some("trunc") => q.trunc(),
                _ => Ok(q),
            })
        }
        "pow" => one(match scalar_or("exponent")? {
            Some(e) => x()?.pow(e),
            None => x()?.pow(p(1)?),
        }),
        "xlogy" => one(x()?.xlogy(&other("other")?)),
        "lerp" => one(match named("weight") {
            Some(w) => x()?.lerp(p(1)?, w),
            None => x()?.lerp(p(1)?, a.f("weight", 0.5)),
        }),
        "addcmul" => one(x()?.addcmul(p(1)?, p(2)?, a.f("value", 1.0))),
        "addcdiv" => one(x()?.addcdiv(p(1)?, p(2)?, a.f("value", 1.0))),
        "where" => {
            let c = p(0)?;
            one(match (pos.get(2).copied().flatten(), a.of("other")) {
                (Some(o), _) => Tensor::where_cond(c, p(1)?, o),
                (None, Some(v)) => Tensor::where_cond(c, p(1)?, v),
                _ => Err(Error::invalid("where", "missing other")),
            })
        }
        // ---- reductions
        "sum" | "mean" | "amax" | "amin" | "logsumexp" | "all" | "any" | "count_nonzero" => {
            let t = x()?;
            let dims = a.dims("dim");
            let k = a.b("keepdim", false);
            one(match op {
                "sum" => t.sum_dim(&dims, k),
                "mean" => t.mean_dim(&dims, k),
                "amax" => t.amax(&dims, k),
                "amin" => t.amin(&dims, k),
                "logsumexp" => t.logsumexp(&dims, k),
                "all" => t.all_dim(&dims, k),
                "any" => t.any_dim(&dims, k),
                _ => t.count_nonzero(&dims),
            })
        }
        "prod" => {
            one(if a.has("dim") { x()?.prod_dim(a.i("dim", 0) as isize, a.b("keepdim", false)) } else { x()?.prod() })
        }
        "max" | "min" => {
            let t = x()?;
            if a.has("dim") {
                let (d, k) = (a.i("dim", 0) as isize, a.b("keepdim", false));
                two(if op == "max" { t.max_dim(d, k) } else { t.min_dim(d, k) })
            } else {
                one(if op == "max" { t.max() } else { t.min() })
            }
        }
        "argmax" | "argmin" => {
            let d = if a.has("dim") { Some(a.i("dim", 0) as isize) } else { None };
            one(if op == "argmax" {
                x()?.argmax(d, a.b("keepdim", false))
            } else {
                x()?.argmin(d, a.b("keepdim", false))
            })
        }
        "var" | "std" | "var_mean" | "std_mean" => {
            let t = x()?;
            let corr = if a.has("correction") {
                a.f("correction", 1.0)
            } else if a.0.get("unbiased").and_then(|v| v.as_bool()) == Some(false) {
                0.0
            } else {
                1.0
            };
            let (dims, k) = (a.dims("dim"), a.b("keepdim", false));
            match op {
                "var" => one(t.var_dim(&dims, corr, k)),
                "std" => one(t.std_dim(&dims, corr, k)),
                "var_mean" => two(t.var_mean(&dims, corr, k)),
                _ => two(t.std_mean(&dims, corr, k)),
            }
        }
        "norm" => one(x()?.norm(a.f("p", 2.0), a.dims("dim"), a.b("keepdim", false))),
        "linalg.vector_norm" => one(x()?.vector_norm(a.f("ord", 2.0), a.dims("dim"), a.b("keepdim", false))),
        "median" => {
            if a.has("dim") {
                two(x()?.median_dim(a.i("dim", 0) as isize, a.b("keepdim", false)))
            } else {
                one(x()?.median())
            }
        }
        "kthvalue" => two(x()?.kthvalue(a.i("k", 1) as usize, a.i("dim", -1) as isize, a.b("keepdim", false))),
        "cumsum" => one(x()?.cumsum(a.i("dim", 0) as isize)),
        "cumprod" => one(x()?.cumprod(a.i("dim", 0) as isize)),
        "cummax" => two(x()?.cummax(a.i("dim", 0) as isize)),
        "cummin" => two(x()?.cummin(a.i("dim", 0) as isize)),
        "sort" => two(x()?.sort(a.i("dim", -1) as isize, a.b("descending", false))),
        "argsort" => one(x()?.argsort(a.i("dim", -1) as isize, a.b("descending", false))),
        "topk" => two(x()?.topk_with(a.i("k", 1) as usize, a.i("dim", -1) as isize, a.b("largest", true))),
        // ---- shape
        "reshape" => one(x()?.reshape(a.dims("shape"))),
        "permute" => one(x()?.permute(a.dims("dims"))),
        "transpose" => one(x()?.transpose(a.i("dim0", 0) as isize, a.i("dim1", 1) as isize)),
        "squeeze" => one(if a.has("dim") { x()?.squeeze_dims(a.dims("dim")) } else { x()?.squeeze() }),
        "unsqueeze" => one(x()?.unsqueeze(a.i("dim", 0) as isize)),
        "flatten" => one(x()?.flatten(a.i("start_dim", 0) as isize, a.i("end_dim", -1) as isize)),
        "expand" => one(x()?.expand(a.dims("size"))),
        "repeat" => one(x()?.repeat(&a.dims("repeats").iter().map(|&r| r as usize).collect::<Vec<_>>())),
        "tile" => one(x()?.tile(&a.dims("dims").iter().map(|&r| r as usize).collect::<Vec<_>>())),
        "cat" | "stack" => {
            let ts: Vec<Tensor> = pos.iter().flatten().map(|t| (*t).clone()).collect();
            one(if op == "cat" {
                Tensor::cat(&ts, a.i("dim", 0) as isize)
            } else {
                Tensor::stack(&ts, a.i("dim", 0) as isize)
            })
        }
        "split" => {
            let d = a.i("dim", 0) as isize;
            match a.0.get("split_size_or_sections") {
                Some(Value::Array(s)) => {
                    x()?.split_sizes(&s.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect::<Vec<_>>(), d)
                }
                _ => x()?.split(a.i("split_size_or_sections", 1) as usize, d),
            }
        }
        "chunk" => x()?.chunk(a.i("chunks", 1) as usize, a.i("dim", 0) as isize),
        "unbind" => x()?.unbind(a.i("dim", 0) as isize),
        "flip" => one(x()?.flip(a.dims("dims"))),
        "roll" => one(x()?.roll(a.dims("shifts"), a.dims("dims"))),
        "narrow" => one(x()?.narrow(a.i("dim", 0) as isize, a.i("start", 0) as isize, a.i("length", 0) as usize)),
        "movedim" => one(x()?.movedim(a.dims("source"), a.dims("destination"))),
        "diagonal" => one(x()?.diagonal(a.i("offset", 0) as isize, a.i("dim1", 0) as isize, a.i("dim2", 1) as isize)),
        "diag" => one(x()?.diag(a.i("diagonal", 0) as isize)),
        "tril" => one(x()?.tril(a.i("diagonal", 0))),
        "triu" => one(x()?.triu(a.i("diagonal", 0))),
        "getitem" => {
            let items: Vec<SliceItem> =
                a.0.get("index")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(slice_item)
                    .collect::<R<_>>()?;
            one(x()?.i(&items))
        }
        "gather" => one(x()?.gather(a.i("dim", 0) as isize, p(1)?)),
        "scatter" => one(match pos.get(2).copied().flatten() {
            Some(src) => x()?.scatter(a.i("dim", 0) as isize, p(1)?, src),
            None => x()?.scatter_value(a.i("dim", 0) as isize, p(1)?, a.f("value", 0.0)),
        }),
        "scatter_add" => one(x()?.scatter_add(a.i("dim", 0) as isize, p(1)?, p(2)?)),
        "index_select" => one(x()?.index_select(a.i("dim", 0) as isize, p(1)?)),
        "index_add" => one(x()?.index_add(a.i("dim", 0) as isize, p(1)?, p(2)?, a.f("alpha", 1.0))),
        "masked_fill" => one(x()?.masked_fill(p(1)?, a.f("value", 0.0))),
        "take_along_dim" => {
            one(x()?.take_along_dim(p(1)?, if a.has("dim") { Some(a.i("dim", 0) as isize) } else { None }))
        }
        "one_hot" => one(x()?.one_hot(a.i("num_classes", -1))),
        "pad" => one(x()?.pad(a.dims("pad"), PadMode::parse(a.s("mode").unwrap_or("constant"))?, a.f("value", 0.0))),
        // ---- creation
        "arange" => one(Tensor::arange_with(
            a.f("start", 0.0),
            a.f("end", 0.0),
            a.f("step", 1.0),
            a.dtype(DType::I64),
            Device::Cpu,
        )),
        "linspace" => one(Tensor::linspace_with(
            a.f("start", 0.0),
            a.f("end", 0.0),
            a.i("steps", 0) as usize,
            a.dtype(DType::F32),
            Device::Cpu,
        )),
        "logspace" => one(Tensor::logspace_with(
            a.f("start", 0.0),
            a.f("end", 0.0),
            a.i("steps", 0) as usize,
            a.f("base", 10.0),
            a.dtype(DType::F32),
            Device::Cpu,
        )),
        "eye" => {
            let n = a.i("n", 0) as usize;
            one(Tensor::eye_with(n, a.i("m", n as i64) as usize, a.dtype(DType::F32), Device::Cpu))
        }
        "full" => {
            let size: Vec<usize> = a.dims("size").iter().map(|&s| s as usize).collect();
            one(Tensor::full_with(&size, a.f("fill_value", 0.0), a.dtype(DType::F32), Device::Cpu))
        }
        "tril_indices" => one(Tensor::tril_indices(a.i("row", 0) as usize, a.i("col", 0) as usize, a.i("offset", 0))),
        "triu_indices" => one(Tensor::triu_indices(a.i("row", 0) as usize, a.i("col", 0) as usize, a.i("offset", 0))),
        // ---- linear algebra
        "matmul" => one(x()?.matmul(p(1)?)),
        "mm" => one(x()?.mm(p(1)?)),
        "bmm" => one(x()?.bmm(p(1)?)),
        "addmm" => one(x()?.addmm(p(1)?, p(2)?, a.f("beta", 1.0), a.f("alpha", 1.0))),
        "baddbmm" => one(x()?.baddbmm(p(1)?, p(2)?, a.f("beta", 1.0), a.f("alpha", 1.0))),
        "dot" => one(x()?.dot(p(1)?)),
        "outer" => one(x()?.outer(p(1)?)),
        "einsum" => {
            let ts: Vec<Tensor> = pos.iter().flatten().map(|t| (*t).clone()).collect();
            one(Tensor::einsum(a.s("equation").unwrap_or(""), &ts))
        }
        "tensordot" => one(match a.0.get("dims") {
            Some(Value::Array(d)) if d.len() == 2 && d[0].is_array() => {
                let l = |v: &Value| {
                    v.as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_i64()).map(|x| x as isize).collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                x()?.tensordot(p(1)?, l(&d[0]), l(&d[1]))
            }
            _ => x()?.tensordot_n(p(1)?, a.i("dims", 2) as usize),
        }),
        "trace" => one(x()?.trace()),
        "kron" => one(x()?.kron(p(1)?)),
        "cross" => one(x()?.cross(p(1)?, a.i("dim", -1) as isize)),
        "cdist" => one(x()?.cdist(p(1)?, a.f("p", 2.0))),
        "linalg.inv" => one(x()?.linalg_inv()),
        "linalg.det" => one(x()?.linalg_det()),
        "linalg.solve" => one(x()?.linalg_solve(p(1)?)),
        "linalg.cholesky" => one(x()?.linalg_cholesky()),
        "linalg.svdvals" => one(x()?.linalg_svdvals()),
        "linalg.eigvalsh" => {
            one(if a.s("UPLO") == Some("U") { x()?.mt()?.linalg_eigvalsh() } else { x()?.linalg_eigvalsh() })
        }
        "linalg.qr" => {
            let (q, r) = x()?.linalg_qr()?;
            // sign-normalise so the factorisation is unique (FORMAT.md)
            let s = r.diagonal(0, -2, -1)?.ge(0.0)?.to_dtype(r.dtype())?.mul(2.0)?.sub(1.0)?;
            Ok(vec![q.mul(&s.unsqueeze(-2)?)?, r.mul(&s.unsqueeze(-1)?)?])
        }
        // every other row of the op table, by its PyTorch name
        name if UnaryOp::from_name(name).is_some_and(UnaryOp::has_method) => {
            one(x()?.unary(UnaryOp::from_name(name).expect("checked")))
        }
        name if BinaryOp::from_name(name).is_some_and(BinaryOp::has_method) => {
            one(x()?.binary(BinaryOp::from_name(name).expect("checked"), &other("other")?))
        }
        _ => crate::dispatch_nn::call_nn(op, &a_map(case), &pos)
            .or_else(|| crate::dispatch_train::call_train(op, &case.args, inputs))
            .unwrap_or_else(|| Err(unsupported(op))),
    }
}

fn a_map(case: &Case) -> serde_json::Map<String, Value> {
    case.args.clone()
}

fn slice_item(v: &Value) -> R<SliceItem> {
    Ok(match v {
        Value::Null => SliceItem::NewAxis,
        Value::String(s) if s == "..." => SliceItem::Ellipsis,
        Value::Number(n) => SliceItem::Index(n.as_i64().unwrap_or(0) as isize),
        Value::Array(a) if a.len() == 3 => {
            let g = |i: usize| a[i].as_i64().map(|x| x as isize);
            SliceItem::Slice(g(0), g(1), g(2).unwrap_or(1) as usize)
        }
        other => return Err(Error::invalid("getitem", format!("bad index item {other}"))),
    })
}
