/// Why an engine could not load a model or run it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the model could not be loaded by {engine}: {reason}; fix: re-export the model, or check the bundle's input spec")]
    Load {
        engine: &'static str,
        reason: String,
    },
    #[error("{engine} inference failed: {reason}; fix: run the install self-test; the model and engine disagree")]
    Run {
        engine: &'static str,
        reason: String,
    },
    #[error("input has {got} values for a batch of {batch}, expected {expected}; fix: prepare images with the bundle's input spec")]
    InputShape {
        batch: usize,
        expected: usize,
        got: usize,
    },
    #[error("self-test failed on {engine}: {problem}; fix: keep the current model; this bundle does not run correctly on this board's engine")]
    SelfTest {
        engine: &'static str,
        problem: String,
    },
    #[error("model outputs have shape {got:?}, expected {expected:?}; fix: the ONNX graph does not match the spec")]
    OutputShape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

impl EngineError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Load { .. } => "ENGINE_LOAD",
            EngineError::Run { .. } => "ENGINE_RUN",
            EngineError::InputShape { .. } => "ENGINE_INPUT_SHAPE",
            EngineError::OutputShape { .. } => "ENGINE_OUTPUT_SHAPE",
            EngineError::SelfTest { .. } => "ENGINE_SELF_TEST",
        }
    }
}
