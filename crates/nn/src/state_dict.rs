//! Loading state_dicts into modules (strict or not, every problem reported at once) and
//! safetensors checkpoints of a module (atomic writes).

use crate::module::{state_dict_of, Traverse};
use ember_autograd::{io, no_grad, Error, Result, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// What a non-strict load left out (PyTorch's `_IncompatibleKeys`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Keys of the module that the state_dict lacks.
    pub missing_keys: Vec<String>,
    /// Keys of the state_dict that the module lacks.
    pub unexpected_keys: Vec<String>,
}

/// Copies `state` into the module's parameters and buffers in place (so optimizers holding the
/// parameters keep working), casting dtypes as PyTorch does.
///
/// Shape mismatches are always an error. With `strict`, missing and unexpected keys are errors too;
/// all problems are listed in one message. Without `strict`, they are returned in the report.
pub fn load_state_dict(module: &dyn Traverse, state: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
    let given: HashMap<&str, &Tensor> = state.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let own = state_dict_of(module);
    let own_keys: BTreeSet<&str> = own.iter().map(|(k, _)| k.as_str()).collect();
    let mut report = LoadReport::default();
    let mut mismatched = vec![];
    for (k, t) in &own {
        match given.get(k.as_str()) {
            None => report.missing_keys.push(k.clone()),
            Some(src) if src.shape() != t.shape() => mismatched.push(format!(
                "size mismatch for {k}: copying a param with shape {:?} from checkpoint, the shape in current model is {:?}",
                src.shape(),
                t.shape()
            )),
            Some(_) => {}
        }
    }
    report.unexpected_keys =
        state.iter().filter(|(k, _)| !own_keys.contains(k.as_str())).map(|(k, _)| k.clone()).collect();
    let mut problems = mismatched;
    if strict {
        if !report.missing_keys.is_empty() {
            problems.push(format!("missing key(s) in state_dict: {}", report.missing_keys.join(", ")));
        }
        if !report.unexpected_keys.is_empty() {
            problems.push(format!("unexpected key(s) in state_dict: {}", report.unexpected_keys.join(", ")));
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid("load_state_dict", problems.join("; ")));
    }
    no_grad(|| -> Result<()> {
        for (k, t) in &own {
            if let Some(src) = given.get(k.as_str()) {
                t.copy_(&src.to(t.device())?.to_dtype(t.dtype())?)?;
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// Writes the module's state_dict as a safetensors file (temp file + fsync + rename, so a crash
/// never leaves a half-written checkpoint in place of the previous one). PyTorch's
/// `safetensors.torch.load_file` reads it back under the same keys.
pub fn save(module: &dyn Traverse, path: impl AsRef<Path>) -> Result<()> {
    let sd = state_dict_of(module);
    let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(k, t)| (k.as_str(), t)).collect();
    io::save_safetensors(path, &refs)
}

/// Loads a safetensors checkpoint (ours, or one exported from PyTorch with
/// `safetensors.torch.save_file(model.state_dict(), path)`) into the module.
pub fn load(module: &dyn Traverse, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
    let state = io::load_safetensors(path)?;
    load_state_dict(module, &state, strict)
}
