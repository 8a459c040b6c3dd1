//! The conformance runner: loads PyTorch's reference cases, runs each op through Ember on a chosen
//! device and compares outputs within the case's tolerance.
//!
//! Cases whose op Ember does not implement yet count as `unsupported`, never as passed. Gradients
//! (`grads`, `hvp`) are compared once autograd lands; until then only forward outputs are checked.

use crate::dispatch::call;
use ember::{io, DType, Device, Error, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One case of the manifest.
#[derive(Debug, Clone)]
pub struct Case {
    /// `op/nnn`.
    pub id: String,
    /// PyTorch op name.
    pub op: String,
    /// The safetensors file, relative to the conformance dir.
    pub file: String,
    /// Keyword arguments.
    pub args: serde_json::Map<String, Value>,
    /// Tensor inputs in positional order (`None` = passed as None).
    pub inputs: Vec<Option<String>>,
    /// Per-input views to apply.
    pub layout: serde_json::Map<String, Value>,
    /// Output names.
    pub outputs: Vec<String>,
    /// rtol, atol.
    pub tol: (f64, f64),
    /// Inputs that require a gradient.
    pub requires_grad: Vec<String>,
    /// Output name -> cotangent tensor name.
    pub cotangents: Vec<(String, String)>,
    /// Input name -> expected gradient tensor name.
    pub grads: Vec<(String, String)>,
    /// Input name -> (v tensor name, expected Hessian-vector product name).
    pub hvp: Vec<(String, String, String)>,
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every output matched.
    Passed,
    /// Some output differed, or the op failed on valid input.
    Failed(String),
    /// The op (or a feature it needs) is not implemented yet.
    Unsupported(String),
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Per case: id and outcome.
    pub results: Vec<(String, Outcome)>,
}

impl Summary {
    /// (passed, failed, unsupported).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, o) in &self.results {
            match o {
                Outcome::Passed => c.0 += 1,
                Outcome::Failed(_) => c.1 += 1,
                Outcome::Unsupported(_) => c.2 += 1,
            }
        }
        c
    }
    /// The closing line: `conformance: N passed, M failed, K unsupported`.
    pub fn line(&self) -> String {
        let (p, f, u) = self.counts();
        format!("conformance: {p} passed, {f} failed, {u} unsupported")
    }
}

/// The conformance directory: `$EMBER_CONFORMANCE_DIR`, else `../shared/conformance` beside the
/// workspace, else the copy vendored in `tests/conformance`.
pub fn default_dir() -> PathBuf {
    if let Ok(d) = std::env::var("EMBER_CONFORMANCE_DIR") {
        return PathBuf::from(d);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf();
    let shared = root.join("../shared/conformance");
    if shared.join("manifest.json").exists() {
        return shared;
    }
    root.join("tests/conformance")
}

/// Reads `manifest.json`.
pub fn load_manifest(dir: &Path) -> Result<Vec<Case>, Error> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::format("manifest.json", e.to_string()))?;
    let cases = v["cases"].as_array().ok_or_else(|| Error::format("manifest.json", "no cases array"))?;
    let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
    Ok(cases
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().unwrap_or("").to_string(),
            op: c["op"].as_str().unwrap_or("").to_string(),
            file: c["file"].as_str().unwrap_or("").to_string(),
            args: obj(&c["args"]),
            inputs: c["inputs"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            layout: obj(&c["layout"]),
            outputs: c["outputs"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            tol: (c["tol"]["rtol"].as_f64().unwrap_or(1e-5), c["tol"]["atol"].as_f64().unwrap_or(1e-8)),
            requires_grad: c["requires_grad"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            cotangents: pairs(&c["cotangents"]),
            grads: pairs(&c["grads"]),
            hvp: c["hvp"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v["v"].as_str().unwrap_or("").to_string(),
                                v["out"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

/// Applies one layout step (`permute`, `step`, `expand`).
fn apply_layout(t: Tensor, spec: &Value) -> Result<Tensor, Error> {
    if let Some(list) = spec.as_array() {
        return list.iter().try_fold(t, apply_layout);
    }
    let ints = |v: &Value| -> Vec<isize> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).map(|x| x as isize).collect()).unwrap_or_default()
    };
    if let Some(p) = spec.get("permute") {
        return t.permute(&ints(p));
    }
    if let Some(s) = spec.get("step") {
        let s = ints(s);
        return t.slice(s[0], None, None, s[1] as usize);
    }
    if let Some(e) = spec.get("expand") {
        return t.expand(&ints(e));
    }
    Err(Error::unsupported("conformance", format!("layout {spec}")))
}

/// Compares one output.
fn compare(name: &str, got: &Tensor, want: &Tensor, tol: (f64, f64)) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("{name}: shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("{name}: dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let (g, w) = (got.to_vec_f64().map_err(|e| e.to_string())?, want.to_vec_f64().map_err(|e| e.to_string())?);
    let exact = !want.dtype().is_float();
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut bad = 0;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact {
            a == b
        } else if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tol.1 + tol.0 * b.abs()
        };
        if !ok {
            bad += 1;
            if worst.is_none() {
                worst = Some((i, a, b));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, a, b)) => {
            Err(format!("{name}: {bad} of {} elements differ; first at {i}: got {a}, expected {b}", g.len()))
        }
    }
}

/// Loads every tensor of a group file once.
fn load_group(dir: &Path, file: &str, cache: &mut HashMap<String, HashMap<String, Tensor>>) -> Result<(), Error> {
    if !cache.contains_key(file) {
        let m: HashMap<String, Tensor> = io::load_safetensors(dir.join(file))?.into_iter().collect();
        cache.insert(file.to_string(), m);
    }
    Ok(())
}

/// Runs one case on `device`.
pub fn run_case(case: &Case, tensors: &HashMap<String, Tensor>, device: Device) -> Outcome {
    let get = |name: &str| -> Result<Tensor, Error> {
        let key = format!("{}/{name}", case.id);
        let t = tensors.get(&key).ok_or_else(|| Error::format(&case.file, format!("missing tensor {key}")))?;
        let t = t.to(device)?;
        match case.layout.get(name) {
            Some(spec) => apply_layout(t, spec),
            None => Ok(t),
        }
    };
    let mut inputs: Vec<(String, Option<Tensor>)> = vec![];
    for name in &case.inputs {
        match name {
            Some(n) => match get(n) {
                Ok(t) if case.requires_grad.contains(n) && t.dtype().is_float() => {
                    match t.detach().requires_grad_(true) {
                        Ok(t) => inputs.push((n.clone(), Some(t))),
                        Err(e) => return Outcome::Failed(format!("input {n}: {e}")),
                    }
                }
                Ok(t) => inputs.push((n.clone(), Some(t))),
                Err(e) => return Outcome::Failed(format!("loading input {n}: {e}")),
            },
            None => inputs.push((String::new(), None)),
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(case, &inputs)));
    let outs = match result {
        Ok(Ok(o)) => o,
        Ok(Err(Error::Unsupported { op, msg })) => return Outcome::Unsupported(format!("{op}: {msg}")),
        Ok(Err(e)) => return Outcome::Failed(format!("op failed: {e}")),
        Err(_) => return Outcome::Failed("op panicked".into()),
    };
    if outs.len() != case.outputs.len() {
        return Outcome::Failed(format!("returned {} outputs, expected {}", outs.len(), case.outputs.len()));
    }
    for (name, got) in case.outputs.iter().zip(&outs) {
        let want = match tensors.get(&format!("{}/{name}", case.id)) {
            Some(w) => w,
            None => return Outcome::Failed(format!("missing expected output {name}")),
        };
        if let Err(msg) = compare(name, got, want, case.tol) {
            return Outcome::Failed(msg);
        }
    }
    if case.grads.is_empty() {
        return Outcome::Passed;
    }
    match check_grads(case, tensors, &inputs, &outs, device) {
        Ok(()) => Outcome::Passed,
        Err(Check::Unsupported(m)) => Outcome::Unsupported(format!("backward: {m}")),
        Err(Check::Failed(m)) => Outcome::Failed(m),
    }
}

enum Check {
    Failed(String),
    Unsupported(String),
}

impl From<Error> for Check {
    fn from(e: Error) -> Check {
        match e {
            Error::Unsupported { op, msg } => Check::Unsupported(format!("{op}: {msg}")),
            e => Check::Failed(format!("backward failed: {e}")),
        }
    }
}

/// Compares d(sum_k sum(out_k * cot_k))/d(input) and, where given, Hessian-vector products.
fn check_grads(
    case: &Case,
    tensors: &HashMap<String, Tensor>,
    inputs: &[(String, Option<Tensor>)],
    outs: &[Tensor],
    device: Device,
) -> Result<(), Check> {
    let load = |name: &str| -> Result<Tensor, Check> {
        tensors
            .get(&format!("{}/{name}", case.id))
            .ok_or_else(|| Check::Failed(format!("missing tensor {name}")))
            .and_then(|t| t.to(device).map_err(Check::from))
    };
    let mut loss: Option<Tensor> = None;
    for (oname, cname) in &case.cotangents {
        let k = case
            .outputs
            .iter()
            .position(|o| o == oname)
            .ok_or_else(|| Check::Failed(format!("cotangent for unknown output {oname}")))?;
        let term = outs[k].mul(&load(cname)?)?.sum()?;
        loss = Some(match loss {
            None => term,
            Some(l) => l.add(&term)?,
        });
    }
    let loss = loss.ok_or_else(|| Check::Failed("case has grads but no cotangents".into()))?;
    let leaf = |name: &str| -> Result<Tensor, Check> {
        inputs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, t)| t.clone())
            .ok_or_else(|| Check::Failed(format!("no input {name}")))
    };
    let names: Vec<&String> = case.grads.iter().map(|(n, _)| n).collect();
    let leaves: Vec<Tensor> = names.iter().map(|n| leaf(n)).collect::<Result<_, _>>()?;
    if !loss.requires_grad() {
        return Err(Check::Unsupported("the output does not depend differentiably on the inputs in Ember".into()));
    }
    let want_hvp = !case.hvp.is_empty();
    let grads = ember::grad(&[loss], &leaves, None, want_hvp, want_hvp, true)?;
    for ((name, key), g) in case.grads.iter().zip(&grads) {
        let want = load(key)?;
        let got = match g {
            Some(g) => g.clone(),
            None => want.zeros_like()?,
        };
        compare(&format!("grad.{name}"), &got, &want, case.tol).map_err(Check::Failed)?;
    }
    if want_hvp {
        let mut s: Option<Tensor> = None;
        let mut hv_leaves = vec![];
        for (name, v, _) in &case.hvp {
            let i = names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| Check::Failed(format!("hvp input {name} has no grad")))?;
            let g = grads[i].clone().ok_or_else(|| Check::Failed(format!("no gradient for {name}")))?;
            let term = g.mul(&load(v)?)?.sum()?;
            s = Some(match s {
                None => term,
                Some(a) => a.add(&term)?,
            });
            hv_leaves.push(leaves[i].clone());
        }
        let s = s.expect("hvp is not empty");
        let hv = if s.requires_grad() {
            ember::grad(&[s], &hv_leaves, None, false, false, true)?
        } else {
            vec![None; hv_leaves.len()]
        };
        for ((name, _, key), h) in case.hvp.iter().zip(hv) {
            let want = load(key)?;
            let got = match h {
                Some(h) => h,
                None => want.zeros_like()?,
            };
            compare(&format!("hvp.{name}"), &got, &want, case.tol).map_err(Check::Failed)?;
        }
    }
    Ok(())
}

/// Runs every case of `dir` on `device`, printing one line per case unless `quiet`.
pub fn run_all(dir: &Path, device: Device, quiet: bool) -> Result<Summary, Error> {
    let cases = load_manifest(dir)?;
    let mut cache = HashMap::new();
    let mut summary = Summary::default();
    for case in &cases {
        let outcome = match load_group(dir, &case.file, &mut cache) {
            Ok(()) => run_case(case, &cache[&case.file], device),
            Err(e) => Outcome::Failed(format!("loading {}: {e}", case.file)),
        };
        if !quiet {
            match &outcome {
                Outcome::Passed => println!("PASS {}", case.id),
                Outcome::Failed(m) => println!("FAIL {}: {m}", case.id),
                Outcome::Unsupported(m) => println!("UNSUPPORTED {}: {m}", case.id),
            }
        }
        summary.results.push((case.id.clone(), outcome));
    }
    Ok(summary)
}

/// True for the dtype names cases use (`f32`, ...).
pub fn dtype_of(name: &str) -> Option<DType> {
    DType::from_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_rejects_wrong_values_shapes_and_dtypes() {
        let want = Tensor::from_vec(vec![1.0f64, f64::NAN, f64::INFINITY], &[3]).unwrap();
        let same = Tensor::from_vec(vec![1.0f64 + 1e-9, f64::NAN, f64::INFINITY], &[3]).unwrap();
        assert!(compare("out", &same, &want, (1e-6, 1e-8)).is_ok());
        let off = Tensor::from_vec(vec![1.1f64, f64::NAN, f64::INFINITY], &[3]).unwrap();
        assert!(compare("out", &off, &want, (1e-6, 1e-8)).is_err());
        let nan_vs_inf = Tensor::from_vec(vec![1.0f64, f64::NAN, f64::NAN], &[3]).unwrap();
        assert!(compare("out", &nan_vs_inf, &want, (1e-6, 1e-8)).is_err());
        assert!(compare("out", &want.reshape(&[1, 3]).unwrap(), &want, (1e-6, 1e-8)).is_err());
        assert!(compare("out", &want.to_dtype(DType::F32).unwrap(), &want, (1e-6, 1e-8)).is_err());
    }
}
