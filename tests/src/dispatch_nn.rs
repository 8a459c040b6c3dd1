//! Conformance dispatch for the `nn.functional` ops (convolution, pooling, normalisation, ...).

use ember::{Error, Tensor};
use serde_json::{Map, Value};

/// `None` when the op is not an nn op Ember knows.
pub(crate) fn call_nn(op: &str, _args: &Map<String, Value>, _pos: &[Option<&Tensor>]) -> Option<Result<Vec<Tensor>, Error>> {
    let _ = op;
    None
}
