"""Ember's own PyTorch-computed case set: edge cases for every op of the op table and the edge-case
classes of issue 15 (NaN propagation, gradients at zeros, overflow-safe backward formulas, reductions
over empty dims, f64 constants), plus reference cases for table rows the shared set lacks.

Same format as ../shared/conformance (see its FORMAT.md), with one addition: `"expect_error": true`
marks a case where PyTorch raises, and Ember must return an error (not a wrong value, not a crash).

Regenerate (needs torch and safetensors):  python tests/edge_cases/gen.py
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = []
TENSORS = {}
COUNT = {}

TOL = {"f64": {"rtol": 1e-9, "atol": 1e-12}, "f32": {"rtol": 2e-5, "atol": 1e-6}}
DT = {"f64": torch.float64, "f32": torch.float32, "i64": torch.int64}


def case(op, fn, inputs, args=None, grad=False, dtype="f64", tol=None, note="", expect_error=False):
    """Runs fn(*inputs) in PyTorch and records a case; grads use a cotangent of ones-times-a-ramp."""
    k = COUNT.get(op, 0)
    COUNT[op] = k + 1
    cid = f"{op}/{k:03d}"
    names = [f"in{i}" if t is not None else None for i, t in enumerate(inputs)]
    xs = [t.clone().requires_grad_(grad and t.is_floating_point()) if t is not None else None for t in inputs]
    c = {"id": cid, "op": op, "file": "cases/edge.safetensors", "args": args or {}, "inputs": names,
         "requires_grad": [], "outputs": [], "cotangents": {}, "grads": {}, "dtype": dtype,
         "tol": tol or TOL.get(dtype, TOL["f64"]), "note": note}
    for n, t in zip(names, xs):
        if n is not None:
            TENSORS[f"{cid}/{n}"] = t.detach().clone().contiguous()
    if expect_error:
        try:
            fn(*xs)
        except Exception:
            c["expect_error"] = True
            CASES.append(c)
            return
        raise SystemExit(f"{cid}: expected PyTorch to raise")
    out = fn(*xs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    loss = 0
    for i, o in enumerate(outs):
        name = f"out{i}"
        c["outputs"].append(name)
        TENSORS[f"{cid}/{name}"] = o.detach().clone().contiguous()
        if grad and o.is_floating_point():
            cot = torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).reshape(o.shape) if o.numel() else torch.zeros_like(o)
            TENSORS[f"{cid}/cot.{name}"] = cot
            c["cotangents"][name] = f"cot.{name}"
            loss = loss + (o * cot).sum()
    if grad:
        wants = [(n, x) for n, x in zip(names, xs) if x is not None and x.requires_grad]
        gs = torch.autograd.grad(loss, [x for _, x in wants], allow_unused=True)
        for (n, x), g in zip(wants, gs):
            c["requires_grad"].append(n)
            TENSORS[f"{cid}/grad.{n}"] = (g if g is not None else torch.zeros_like(x)).detach().clone()
            c["grads"][n] = f"grad.{n}"
    CASES.append(c)


# ---- every unary row at special values (forward), and at finite edge points (gradients)
UNARY = {
    "neg": torch.neg, "abs": torch.abs, "sign": torch.sign, "square": torch.square, "exp": torch.exp,
    "exp2": torch.exp2, "expm1": torch.expm1, "log": torch.log, "log2": torch.log2, "log10": torch.log10,
    "log1p": torch.log1p, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin, "acos": torch.acos,
    "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh, "asinh": torch.asinh,
    "acosh": torch.acosh, "atanh": torch.atanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
    "silu": F.silu, "erf": torch.erf, "erfc": torch.erfc, "erfinv": torch.erfinv, "lgamma": torch.lgamma,
    "digamma": torch.digamma, "trigamma": lambda x: torch.special.polygamma(1, x), "floor": torch.floor,
    "ceil": torch.ceil, "round": torch.round, "trunc": torch.trunc, "frac": torch.frac,
    "sinc": torch.sinc,
    "isnan": torch.isnan, "isinf": torch.isinf, "isfinite": torch.isfinite, "logical_not": torch.logical_not,
}
PREDICATES = {"isnan", "isinf", "isfinite", "logical_not"}
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 0.5, -0.5, 1.0, -1.0,
           2.5, -2.5, 3.0, -3.0, 20.0, -20.0, 88.5, -88.5, 700.0, -700.0]
FINITE = [0.0, -0.0, 1e-8, -1e-8, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.5, -2.5, 3.0, -3.0, 30.0, -30.0]
# At the poles of trigamma (and so of digamma's gradient), x = 0, -1, -2, ..., PyTorch returns the
# rounding noise of its reflection formula (pi / sin(pi x))^2, e.g. 6.6e32 at -1 and 13.0 at -1e30;
# Ember returns the pole's value, inf. Those points are left out of these two rows' cases.
def off_poles(name, values):
    if name not in ("trigamma", "digamma"):
        return values
    return [v for v in values if not (v < 0 and math.isfinite(v) and v == math.floor(v))]


for name, fn in UNARY.items():
    for dt in ("f64", "f32"):
        vals = off_poles(name, SPECIAL) if name == "trigamma" else SPECIAL
        case(name, fn, [torch.tensor(vals, dtype=DT[dt])], dtype=dt, note="special values")
    if name not in PREDICATES:
        case(name, fn, [torch.tensor(off_poles(name, FINITE), dtype=torch.float64)], grad=True,
             note="gradients at edge points")
for approx in ("none", "tanh"):
    f = (lambda a: (lambda x: F.gelu(x, approximate=a)))(approx)
    case("gelu", f, [torch.tensor(SPECIAL, dtype=torch.float64)], args={"approximate": approx}, note="special values")
    case("gelu", f, [torch.tensor(FINITE, dtype=torch.float64)], args={"approximate": approx}, grad=True,
         note="gradients at edge points")
# integer-closed rows keep integer dtypes, wrapping like PyTorch
INTS = [0, 1, -1, 7, -7, 2**62, -(2**63), 2**63 - 1]
for name in ("neg", "abs", "sign", "square", "relu", "floor", "ceil", "round", "trunc"):
    case(name, UNARY[name], [torch.tensor(INTS, dtype=torch.int64)], dtype="i64", note="integers")

# ---- every binary row on a grid of special values (forward), and gradients at ties and zeros
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum, "fmax": torch.fmax, "fmin": torch.fmin,
    "atan2": torch.atan2, "remainder": torch.remainder, "fmod": torch.fmod, "copysign": torch.copysign,
    "hypot": torch.hypot, "floor_divide": torch.floor_divide,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}
GRID = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.5, 1e30]
ga = torch.tensor([a for a in GRID for _ in GRID], dtype=torch.float64)
gb = torch.tensor([b for _ in GRID for b in GRID], dtype=torch.float64)
FG = [0.0, 1.0, -1.0, 2.5, -2.5, 0.5]
fa = torch.tensor([a for a in FG for _ in FG], dtype=torch.float64)
fb = torch.tensor([b for _ in FG for b in FG], dtype=torch.float64)
NO_GRAD = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"}
for name, fn in BINARY.items():
    for dt in ("f64", "f32"):
        case(name, fn, [ga.to(DT[dt]), gb.to(DT[dt])], dtype=dt, note="grid of special values")
    if name not in NO_GRAD and name not in ("remainder", "fmod", "floor_divide"):
        # remainder/fmod/floor_divide jump where a/b is an integer, which this grid hits
        case(name, fn, [fa, fb], grad=True, note="gradients at ties, zeros and signs")
# remainder and fmod away from their jumps (a / b not an integer); PyTorch defines no derivative for
# floor_divide (its backward raises), so it has no gradient case

ja = torch.tensor([2.3, -2.3, 0.7, -0.7, 5.5, -5.5], dtype=torch.float64)
jb = torch.tensor([1.5, 1.5, -0.4, -0.4, 2.0, -2.0], dtype=torch.float64)
for name in ("remainder", "fmod"):
    case(name, BINARY[name], [ja, jb], grad=True, note="gradients away from the jumps")
ia = torch.tensor([a for a in INTS for _ in INTS[:5]], dtype=torch.int64)
ib = torch.tensor([b for _ in INTS for b in INTS[:5]], dtype=torch.int64)
ib_nz = torch.where(ib == 0, torch.full_like(ib, 3), ib)
for name in ("add", "sub", "mul", "maximum", "minimum", "fmax", "fmin", "remainder", "fmod", "floor_divide",
             "eq", "lt", "logical_and"):
    case(name, BINARY[name], [ia, ib_nz], dtype="i64", note="integers, wrapping")
case("pow", torch.pow, [ia, ib.abs().clamp(max=5)], dtype="i64", note="integer powers, wrapping")
for name in ("remainder", "fmod", "floor_divide"):
    case(name, BINARY[name], [ia, ib], dtype="i64", expect_error=True, note="integer division by zero")

# ---- NaN propagation in reductions and their dim variants
xn = torch.tensor([[1.0, math.nan, 3.0, -2.0], [4.0, 5.0, -1.0, 0.5], [math.nan, 2.0, math.nan, 7.0]],
                  dtype=torch.float64)
case("max", lambda x: torch.max(x), [xn], grad=False, note="NaN propagates")
case("min", lambda x: torch.min(x), [xn], note="NaN propagates")
for d in (0, 1):
    case("max", lambda x, d=d: torch.max(x, dim=d), [xn], args={"dim": d}, note="NaN wins, with its index")
    case("min", lambda x, d=d: torch.min(x, dim=d), [xn], args={"dim": d}, note="NaN wins, with its index")
    case("amax", lambda x, d=d: torch.amax(x, dim=d), [xn], args={"dim": [d], "keepdim": False}, note="NaN propagates")
    case("amin", lambda x, d=d: torch.amin(x, dim=d), [xn], args={"dim": [d], "keepdim": False}, note="NaN propagates")
    case("argmax", lambda x, d=d: torch.argmax(x, dim=d), [xn], args={"dim": d}, note="index of the NaN")
    case("argmin", lambda x, d=d: torch.argmin(x, dim=d), [xn], args={"dim": d}, note="index of the NaN")
    case("logsumexp", lambda x, d=d: torch.logsumexp(x, dim=d), [xn], args={"dim": d}, note="NaN propagates")
    case("cummax", lambda x, d=d: torch.cummax(x, dim=d), [xn], args={"dim": d}, note="NaN sticks")
    case("cummin", lambda x, d=d: torch.cummin(x, dim=d), [xn], args={"dim": d}, note="NaN sticks")
case("argmax", lambda x: torch.argmax(x), [xn], note="flat index of the first NaN")
case("argmin", lambda x: torch.argmin(x), [xn], note="flat index of the first NaN")
case("sort", lambda x: torch.sort(x, dim=-1), [xn], args={"dim": -1}, note="NaN sorts last")
case("sort", lambda x: torch.sort(x, dim=-1, descending=True), [xn], args={"dim": -1, "descending": True},
     note="NaN sorts first when descending")
case("topk", lambda x: torch.topk(x, 2, dim=-1), [xn], args={"k": 2, "dim": -1}, note="NaN is the largest")
case("median", lambda x: torch.median(x, dim=1), [xn], args={"dim": 1}, note="NaN propagates")
case("median", lambda x: torch.median(x), [xn], note="NaN propagates")
case("softmax", lambda x: torch.softmax(x, dim=1), [xn], args={"dim": 1}, note="NaN row")
case("var", lambda x: torch.var(x, dim=1), [xn], args={"dim": 1}, note="NaN propagates")
case("clamp", lambda x: torch.clamp(x, min=0.0, max=4.0), [xn], args={"min": 0.0, "max": 4.0}, note="NaN passes")
xf = torch.tensor([[1.0, 2.0, 3.0, -2.0], [4.0, 5.0, -1.0, 0.5]], dtype=torch.float64)
for d in (0, 1):
    case("max", lambda x, d=d: torch.max(x, dim=d), [xf], args={"dim": d}, grad=True, note="finite, gradients")
    case("amax", lambda x, d=d: torch.amax(x, dim=d), [torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64)],
         args={"dim": [d], "keepdim": False}, grad=True, note="ties share the gradient")

# ---- prod's gradient with zeros in a slice
for vals, note in (([2.0, 0.0, 3.0, 4.0], "one zero"), ([0.0, 5.0, 0.0, 3.0], "two zeros"),
                   ([1.5, -2.0, 3.0, 0.5], "no zero")):
    case("prod", torch.prod, [torch.tensor(vals, dtype=torch.float64)], grad=True, note=note)
xz = torch.tensor([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0], [0.0, 1.0, -2.0]], dtype=torch.float64)
case("prod", lambda x: torch.prod(x, dim=1), [xz], args={"dim": 1}, grad=True, note="rows with 0, 1, 2 zeros")
case("prod", lambda x: torch.prod(x, dim=0), [xz], args={"dim": 0}, grad=True, note="columns with zeros")
case("cumprod", lambda x: torch.cumprod(x, dim=1), [xz], args={"dim": 1}, grad=True, note="zeros in the scan")

# ---- overflow-safe backward formulas at large |x|
BIG = torch.tensor([-1000.0, -100.0, -40.0, -20.5, 0.0, 20.5, 40.0, 100.0, 1000.0], dtype=torch.float64)
for dt in ("f64", "f32"):
    x = BIG.to(DT[dt])
    case("softplus", F.softplus, [x], grad=True, dtype=dt, note="large |x|")
    case("softplus", lambda x: F.softplus(x, beta=2.0, threshold=5.0), [x], args={"beta": 2.0, "threshold": 5.0},
         grad=True, dtype=dt, note="large |x|, beta 2")
    case("logsigmoid", F.logsigmoid, [x], grad=True, dtype=dt, note="large |x|")
    case("sigmoid", torch.sigmoid, [x], grad=True, dtype=dt, note="large |x|")
    case("tanh", torch.tanh, [x], grad=True, dtype=dt, note="large |x|")
    case("silu", F.silu, [x], grad=True, dtype=dt, note="large |x|")
    case("mish", F.mish, [x], grad=True, dtype=dt, note="large |x|")
    case("elu", F.elu, [x], grad=True, dtype=dt, note="large |x|")
    case("selu", F.selu, [x], grad=True, dtype=dt, note="large |x|")
    # PyTorch's celu backward rounds 1/alpha to f32 (derivatives.yaml: `1.0/alpha.toFloat()`), so its f64
    # gradient is off by ~1e-7 relative; Ember's is exact: the gradient cases allow for that
    case("celu", lambda x: F.celu(x, alpha=0.7), [x], args={"alpha": 0.7}, grad=True, dtype=dt,
         tol={"rtol": 1e-6, "atol": 1e-12} if dt == "f64" else None, note="large |x| (PyTorch's f32 1/alpha)")
    case("gelu", F.gelu, [x], args={"approximate": "none"}, grad=True, dtype=dt, note="large |x|")
    case("gelu", lambda x: F.gelu(x, approximate="tanh"), [x], args={"approximate": "tanh"}, grad=True, dtype=dt,
         note="large |x|")
    case("log_softmax", lambda x: torch.log_softmax(x, dim=0), [x], args={"dim": 0}, grad=True, dtype=dt,
         note="large spread")
    case("logsumexp", lambda x: torch.logsumexp(x, dim=0), [x], args={"dim": 0}, grad=True, dtype=dt,
         note="large spread")
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=DT[dt])
    case("binary_cross_entropy_with_logits", lambda x, t: F.binary_cross_entropy_with_logits(x, t), [x, t],
         args={"reduction": "mean"}, grad=True, dtype=dt, note="large logits")
case("logsumexp", lambda x: torch.logsumexp(x, dim=0),
     [torch.tensor([-math.inf, -math.inf], dtype=torch.float64)], args={"dim": 0}, note="all -inf gives -inf")
case("logsumexp", lambda x: torch.logsumexp(x, dim=0),
     [torch.tensor([math.inf, 1.0], dtype=torch.float64)], args={"dim": 0}, note="inf gives inf")
case("xlogy", torch.xlogy, [torch.tensor([0.0, 0.0, 1.0, 2.0], dtype=torch.float64),
                            torch.tensor([0.0, 3.0, 0.0, math.inf], dtype=torch.float64)], note="x = 0 gives 0")

# ---- reductions over empty dims
e = torch.zeros(3, 0, dtype=torch.float64)
case("sum", lambda x: torch.sum(x, dim=1), [e], args={"dim": 1}, grad=True, note="empty dim gives 0")
case("prod", lambda x: torch.prod(x, dim=1), [e], args={"dim": 1}, grad=True, note="empty dim gives 1")
case("logsumexp", lambda x: torch.logsumexp(x, dim=1), [e], args={"dim": 1}, note="empty dim gives -inf")
case("mean", lambda x: torch.mean(x, dim=1), [e], args={"dim": [1], "keepdim": False}, note="empty dim gives NaN")
case("sum", torch.sum, [torch.zeros(0, 4, dtype=torch.float64)], note="empty tensor gives 0")
case("cumsum", lambda x: torch.cumsum(x, dim=1), [e], args={"dim": 1}, note="empty scan")
case("amax", lambda x: torch.amax(x, dim=1), [e], args={"dim": [1], "keepdim": False}, expect_error=True,
     note="amax over an empty dim raises")
case("max", lambda x: torch.max(x, dim=1), [e], args={"dim": 1}, expect_error=True, note="max over an empty dim raises")
case("argmax", lambda x: torch.argmax(x, dim=1), [e], args={"dim": 1}, expect_error=True,
     note="argmax over an empty dim raises")
case("max", torch.max, [torch.zeros(0, dtype=torch.float64)], expect_error=True, note="max of an empty tensor raises")
case("amax", lambda x: torch.amax(x, dim=0), [torch.zeros(0, 3, dtype=torch.float64)], args={"dim": [0], "keepdim": False},
     expect_error=True, note="amax over an empty dim raises")
case("sum", lambda x: torch.sum(x, dim=0), [torch.zeros(0, 3, dtype=torch.float64)], args={"dim": 0}, grad=True,
     note="sum over an empty leading dim")

# ---- activations with parameters in f64: no f32-rounded constants
torch.manual_seed(0)
xr = torch.randn(64, dtype=torch.float64) * 3
F64 = {"rtol": 1e-13, "atol": 1e-15}
for name, fn, args in [
    ("elu", lambda x: F.elu(x, alpha=1.7), {"alpha": 1.7}),
    ("selu", F.selu, {}),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), {"negative_slope": 0.1}),
    ("softplus", lambda x: F.softplus(x, beta=0.3, threshold=7.0), {"beta": 0.3, "threshold": 7.0}),
    ("hardtanh", lambda x: F.hardtanh(x, -0.7, 1.3), {"min_val": -0.7, "max_val": 1.3}),
    ("gelu", F.gelu, {"approximate": "none"}),
    ("gelu", lambda x: F.gelu(x, approximate="tanh"), {"approximate": "tanh"}),
    ("silu", F.silu, {}),
    ("mish", F.mish, {}),
    ("sigmoid", torch.sigmoid, {}),
    ("hardswish", F.hardswish, {}),
    ("hardsigmoid", F.hardsigmoid, {}),
    ("logsigmoid", F.logsigmoid, {}),
    ("softsign", F.softsign, {}),
]:
    case(name, fn, [xr], args=args, grad=True, tol=F64, note="f64 precision of constants")
case("celu", lambda x: F.celu(x, alpha=0.3), [xr], args={"alpha": 0.3}, tol=F64, note="f64 precision of constants")
case("celu", lambda x: F.celu(x, alpha=0.3), [xr], args={"alpha": 0.3}, grad=True, tol={"rtol": 1e-6, "atol": 1e-15},
     note="gradient: PyTorch rounds 1/alpha to f32 in celu's backward, Ember does not")

os.makedirs(os.path.join(HERE, "cases"), exist_ok=True)
save_file(TENSORS, os.path.join(HERE, "cases", "edge.safetensors"))
with open(os.path.join(HERE, "manifest.json"), "w") as f:
    json.dump({"format": 1, "generator": "tests/edge_cases/gen.py", "torch": torch.__version__, "cases": CASES}, f,
              indent=1)
print(f"{len(CASES)} cases, {len(TENSORS)} tensors")
