//! The define-by-run graph: nodes recorded as ops run, grad mode, and the backward engine.
//!
//! Every differentiable primitive calls [`record`] with a backward closure written in Tensor ops, so
//! running backward with `create_graph` records the backward pass itself (higher-order gradients).
//! The engine walks the graph iteratively in dependency order (each node runs once, after all its
//! gradients arrived), so graph depth is limited by memory, not by the stack.
//!
//! Three modules with one job each: [`grad_mode`] (recording on or off), [`node`] (what an op
//! records), [`engine`] (running backward).

mod engine;
mod grad_mode;
mod node;

pub(crate) use engine::{run, Sink};
pub use grad_mode::{enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled, GradModeGuard};
pub(crate) use node::{
    edge_of, new_node, record, record_free, record_saving, record_view, Edge, Grads, Hook, PostAccumulateHook, Region,
};
pub use node::{live_nodes, Node};
