//! The kernels behind `torch.nn.functional`, as `Tensor` methods, one op family per file, each with
//! its [`OpDescriptor`]s: convolution (`conv`, `conv_fused`), pooling, linear layers, norms
//! (`norm`, `batch_norm`), resampling (`sample`), pixel and channel shuffles, embedding bags and
//! the LSTM sequence kernel (`recurrent`).

mod batch_norm;
mod conv;
mod conv_fused;
mod conv_half;
mod descriptor;
mod embedding_bag;
mod linear;
mod norm;
mod pool;
mod recurrent;
mod sample;
mod shuffle;

pub use conv::{conv_output_shape, conv_transpose_output_shape, ConvOptions, ConvPadding};
pub use descriptor::{OpBackward, OpDescriptor};
pub use pool::{pool_output_shape, PoolOptions};
pub use sample::InterpMode;

/// The descriptors of the non-elementwise ops this crate implements.
pub const OPS: &[OpDescriptor] = &[
    conv::CONV,
    conv::CONV_TRANSPOSE,
    conv::UNFOLD,
    conv::FOLD,
    pool::MAX_POOL,
    pool::AVG_POOL,
    pool::LP_POOL,
    pool::ADAPTIVE_AVG_POOL,
    pool::ADAPTIVE_MAX_POOL,
    linear::LINEAR,
    linear::BILINEAR,
    norm::LAYER_NORM,
    norm::RMS_NORM,
    norm::GROUP_NORM,
    norm::INSTANCE_NORM,
    norm::LOCAL_RESPONSE_NORM,
    norm::NORMALIZE,
    norm::COSINE_SIMILARITY,
    norm::PAIRWISE_DISTANCE,
    batch_norm::BATCH_NORM,
    sample::INTERPOLATE,
    sample::GRID_SAMPLE,
    sample::AFFINE_GRID,
    shuffle::PIXEL_SHUFFLE,
    shuffle::PIXEL_UNSHUFFLE,
    shuffle::CHANNEL_SHUFFLE,
    embedding_bag::EMBEDDING_BAG,
    recurrent::LSTM_SEQUENCE,
];
