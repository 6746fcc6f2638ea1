//! ONNX export and import, with no dependency on burn or on an ONNX library:
//! a small protobuf encoder/decoder ([`proto`]) and the ViT graph ([`write`]).
//!
//! The graph: input `image` `[N, C, S, S]` (N symbolic), outputs `logits`
//! `[N, L]` and `features` `[N, D]` (the final-normed CLS token). Opset 17.
//! Initializers carry the canonical timm names and shapes, so any engine can
//! load the weights from the same file ([`read_weights`]).

mod gate_writer;
mod proto;
mod reader;
mod writer;

pub use gate_writer::write_gate;
pub use reader::{read_gate, read_initializers, read_weights};
pub use writer::write;

/// The opset the writer targets (LayerNormalization is in 17).
pub const OPSET: i64 = 17;
