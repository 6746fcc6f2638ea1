//! Fuzz the model-file parsers (ONNX initializers, the content gate's weights, safetensors): model files
//! arrive on USB sticks, so any bytes must give Ok or a typed Err.
#![no_main]

use cxr_model::onnx::{read_gate, read_initializers};
use cxr_model::GateSpec;
use cxr_model::read_safetensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for result in [read_initializers(data), read_safetensors(data)] {
        match result {
            Ok(tensors) => assert!(tensors.values().all(|(shape, values)| shape.iter().product::<usize>() == values.len())),
            Err(e) => assert!(e.code().starts_with("MODEL_")),
        }
    }
    // The content gate's weights from the same bytes: checked shapes, or a typed Err.
    if let Err(e) = read_gate(data, &GateSpec::default()) {
        assert!(e.code().starts_with("MODEL_"));
    }
});
