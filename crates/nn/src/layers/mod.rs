//! The layers of `torch.nn`, each a struct with PyTorch's parameter names and default init.

mod activation;
mod attention;
mod container;
mod conv;
mod dropout;
mod embedding;
mod linear;
mod norm;
mod pool;
mod rnn;

pub use activation::*;
pub use attention::{
    Mask, MultiheadAttention, Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer, TransformerOptions, MULTI_HEAD_ATTENTION, TRANSFORMER_ENCODER_LAYER,
};
pub use container::{ModuleDict, ModuleList, Sequential};
pub use conv::{Conv, Conv2d, ConvTranspose};
pub use dropout::{Dropout, Dropout2d};
pub use embedding::{Embedding, EmbeddingBag};
pub use linear::{Bilinear, Flatten, Identity, Linear, Unflatten};
pub use norm::{BatchNorm, BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm, LayerNorm, RmsNorm};
pub use pool::{AdaptiveAvgPool, AdaptiveMaxPool2d, AvgPool, MaxPool, MaxPool2d, PixelShuffle, Upsample};
pub use rnn::{Lstm, Rnn, RnnCell, RnnMode, RnnOptions, RNN, RNN_CELL};
