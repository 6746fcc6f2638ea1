/// Why a model could not be built, written or read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("model spec invalid: {reason}; fix: correct the spec (see VitSpec::validate)")]
    BadSpec { reason: String },
    #[error("weight {name} missing; fix: the checkpoint does not match the spec")]
    MissingWeight { name: String },
    #[error("weight {name} has shape {got:?}, expected {expected:?}; fix: the checkpoint does not match the spec")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("input has {got} values, expected {expected} ([C, S, S]); fix: prepare the image with the bundle's input spec")]
    InputShape { expected: usize, got: usize },
    #[error("ONNX file malformed at byte {offset}: {reason}; fix: re-export the model")]
    OnnxMalformed { offset: usize, reason: String },
    #[error("checkpoint malformed at byte {offset}: {reason}; fix: re-export the checkpoint as safetensors")]
    CheckpointMalformed { offset: usize, reason: String },
}

impl ModelError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::BadSpec { .. } => "MODEL_BAD_SPEC",
            ModelError::MissingWeight { .. } => "MODEL_MISSING_WEIGHT",
            ModelError::WeightShape { .. } => "MODEL_WEIGHT_SHAPE",
            ModelError::InputShape { .. } => "MODEL_INPUT_SHAPE",
            ModelError::OnnxMalformed { .. } => "MODEL_ONNX_MALFORMED",
            ModelError::CheckpointMalformed { .. } => "MODEL_CHECKPOINT_MALFORMED",
        }
    }
}
