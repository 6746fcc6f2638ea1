//! The content gate on tract: a small graph, run single-threaded on the CPU
//! on every board (it costs a fraction of a millisecond per image, so a
//! board with a GPU keeps its GPU for the classifier).

use std::sync::Arc;

use cxr_model::GateSpec;
use tract_onnx::prelude::*;

use crate::tract_vit::{optimised_plan, output};
use crate::{Engine, EngineError, EngineOutput, EngineShape};

const NAME: &str = "tract-gate";

/// The content gate through tract. As an [`Engine`] its "logits" are the
/// four content-class logits and its "features" the one-class distance,
/// so the bundle's gate golden vectors go through the same self-test.
pub struct TractGate {
    plan: Arc<TypedRunnableModel>,
    spec: GateSpec,
}

impl std::fmt::Debug for TractGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractGate")
            .field("spec", &self.spec)
            .finish()
    }
}

fn load_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load {
        engine: NAME,
        reason: format!("{e:#}"),
    }
}

fn run_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Run {
        engine: NAME,
        reason: format!("{e:#}"),
    }
}

impl TractGate {
    /// Load and optimise a gate graph written for `spec`.
    pub fn load(onnx: &[u8], spec: GateSpec) -> Result<Self, EngineError> {
        spec.validate().map_err(load_error)?;
        let plan = optimised_plan(onnx, 1, spec.image_size, NAME)?;
        Ok(TractGate { plan, spec })
    }

    pub fn spec(&self) -> &GateSpec {
        &self.spec
    }
}

impl Engine for TractGate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn precision(&self) -> &'static str {
        "f32"
    }

    fn shape(&self) -> EngineShape {
        EngineShape {
            channels: 1,
            image_size: self.spec.image_size,
            labels: cxr_model::gate::CONTENT_CLASSES.len(),
            features: 1,
        }
    }

    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let s = self.spec.image_size;
        let expected = batch * s * s;
        if batch == 0 || images.len() != expected {
            return Err(EngineError::InputShape {
                batch,
                expected,
                got: images.len(),
            });
        }
        let input = Tensor::from_shape(&[batch, 1, s, s], images).map_err(run_error)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(run_error)?;
        if outputs.len() != 2 {
            return Err(EngineError::OutputShape {
                expected: vec![2],
                got: vec![outputs.len()],
            });
        }
        Ok(EngineOutput {
            batch,
            logits: output(&outputs[0], batch, 4, NAME)?,
            features: output(&outputs[1], batch, 1, NAME)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use cxr_model::{GateSpec, GateWeights};

    use super::*;

    /// The reference forward is the oracle: tract must agree to ~1e-5.
    #[test]
    fn tract_runs_the_gate_as_the_reference_does() {
        let spec = GateSpec::default();
        let weights = GateWeights::random(&spec, 7).unwrap();
        let onnx = cxr_model::onnx::write_gate(&weights).unwrap();
        let read = cxr_model::onnx::read_gate(&onnx, &spec).unwrap();
        assert_eq!(read, weights, "the ONNX file carries the weights exactly");
        let engine = TractGate::load(&onnx, spec).unwrap();
        let s = spec.image_size;
        let images: Vec<f32> = (0..2 * s * s)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) + (i % s) as f32 / s as f32)
            .collect();
        let out = engine.infer(&images, 2).unwrap();
        for b in 0..2 {
            let r = weights
                .forward(&images[b * s * s..(b + 1) * s * s])
                .unwrap();
            let logits = &out.logits[b * 4..(b + 1) * 4];
            let rel = cxr_bundle::rel_l2(logits, &r.logits);
            assert!(rel < 1e-5, "image {b}: logits rel L2 {rel:e}");
            let d = out.features[b];
            assert!(
                (d - r.distance).abs() <= 1e-5 * r.distance.abs().max(1.0),
                "{d} vs {}",
                r.distance
            );
        }
    }
}
