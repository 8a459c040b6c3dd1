//! The layers of `torch.nn`, each a struct with PyTorch's parameter names and default init.

mod activation;
mod attention;
mod builder;
mod container;
mod conv;
mod dropout;
mod embedding;
mod linear;
mod loss;
mod norm;
mod pool;
mod rnn;

pub use activation::*;
pub use attention::{
    Mask, MultiheadAttention, Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer, TransformerOptions, MULTI_HEAD_ATTENTION, TRANSFORMER_ENCODER_LAYER,
};
pub use builder::WithBias;
pub use container::{ModuleDict, ModuleList, Sequential};
pub use conv::{
    Conv1d, Conv2d, Conv3d, ConvBuilder, ConvNd, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, ConvTransposeNd,
};
pub use dropout::{Dropout, Dropout2d};
pub use embedding::{Embedding, EmbeddingBag};
pub use linear::{Bilinear, Flatten, Identity, Linear, Unflatten};
pub use loss::{BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss};
pub use norm::{BatchNorm, BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm, LayerNorm, RmsNorm};
pub use pool::{AdaptiveAvgPool, AdaptiveMaxPool2d, AvgPool, MaxPool, MaxPool2d, PixelShuffle, Upsample};
pub use rnn::{Lstm, Rnn, RnnCell, RnnMode, RnnOptions, RNN, RNN_CELL};
