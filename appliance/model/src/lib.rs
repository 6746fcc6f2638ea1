//! `cxr-model`: the ViT family in one place.
//!
//! It owns the model [`VitSpec`] and presets, the canonical (timm) weight
//! names and shapes ([`names`]), deterministic random initialisation, the
//! plain f32 [`reference`] forward that is the oracle for every engine, and
//! the ONNX writer and reader ([`onnx`]), and the content gate ([`gate`]):
//! its spec, reference forward and graph. It must not know burn, tract or CUDA.

mod error;
pub mod gate;
pub mod labels;
pub mod names;
pub mod onnx;
mod pos_embed;
pub mod reference;
mod safetensors;
mod spec;
mod weights;

pub use error::ModelError;
pub use gate::{GateSpec, GateWeights};
pub use pos_embed::resample_pos_embed;
pub use safetensors::{
    read_safetensors, safetensors_metadata, weights_from_checkpoint, write_safetensors,
};
pub use spec::VitSpec;
pub use weights::Weights;
