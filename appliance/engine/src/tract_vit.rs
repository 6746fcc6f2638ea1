//! The tract CPU engine: the ONNX graph, optimised once for a symbolic batch,
//! run under its own thread pool.

use std::io::Cursor;
use std::sync::Arc;

use cxr_model::VitSpec;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

use crate::{Engine, EngineError, EngineOutput, EngineShape};

const NAME: &str = "tract";

/// ViT inference through tract, with a thread count from configuration.
pub struct TractVit {
    plan: Arc<TypedRunnableModel>,
    spec: VitSpec,
    executor: Executor,
    threads: usize,
}

impl std::fmt::Debug for TractVit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractVit")
            .field("spec", &self.spec)
            .field("threads", &self.threads)
            .finish()
    }
}

fn load_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load {
        engine: NAME,
        reason: format!("{e:#}"),
    }
}

/// An ONNX graph optimised for input `[N, channels, side, side]` (N
/// symbolic), ready to run: the one way both tract engines load a graph.
pub(crate) fn optimised_plan(
    onnx: &[u8],
    channels: usize,
    side: usize,
    engine: &'static str,
) -> Result<Arc<TypedRunnableModel>, EngineError> {
    let load_error = |e: &dyn std::fmt::Display| EngineError::Load {
        engine,
        reason: format!("{e:#}"),
    };
    let model = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(onnx))
        .map_err(|e| load_error(&e))?;
    let batch = model.sym("N");
    let (c, s) = (channels as i64, side as i64);
    model
        .with_input_fact(0, f32::fact(dims!(batch, c, s, s)).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| load_error(&e))
}

impl TractVit {
    /// Load and optimise an ONNX model written for `spec`. `threads` is the
    /// size of this engine's own matrix-multiply pool (1 = single-threaded).
    pub fn load(onnx: &[u8], spec: VitSpec, threads: usize) -> Result<Self, EngineError> {
        spec.validate().map_err(load_error)?;
        let plan = optimised_plan(onnx, spec.in_channels, spec.image_size, NAME)?;
        let threads = threads.max(1);
        let executor = if threads == 1 {
            Executor::SingleThread
        } else {
            Executor::multithread(threads)
        };
        Ok(TractVit {
            plan,
            spec,
            executor,
            threads,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

pub(crate) fn output(
    values: &TValue,
    batch: usize,
    width: usize,
    engine: &'static str,
) -> Result<Vec<f32>, EngineError> {
    let view = values
        .to_plain_array_view::<f32>()
        .map_err(|e| EngineError::Run {
            engine,
            reason: format!("{e:#}"),
        })?;
    if view.shape() != [batch, width] {
        return Err(EngineError::OutputShape {
            expected: vec![batch, width],
            got: view.shape().to_vec(),
        });
    }
    Ok(view.iter().copied().collect())
}

impl Engine for TractVit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn precision(&self) -> &'static str {
        "f32"
    }

    fn shape(&self) -> EngineShape {
        EngineShape::of(&self.spec)
    }

    /// Measured (benches/README.md, 2 cores): at 512 px (1025 tokens) five
    /// views one at a time beat one batch of five by 13% on 1 thread and 22%
    /// on 2 (the batched attention no longer fits the caches); at 224 px the
    /// batch is 2-5% faster. So: one image at a time from 1025 tokens up.
    fn preferred_batch(&self) -> usize {
        if self.spec.tokens() >= 1025 {
            1
        } else {
            usize::MAX
        }
    }

    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let (c, s) = (self.spec.in_channels, self.spec.image_size);
        let expected = batch * c * s * s;
        if batch == 0 || images.len() != expected {
            return Err(EngineError::InputShape {
                batch,
                expected,
                got: images.len(),
            });
        }
        let input =
            Tensor::from_shape(&[batch, c, s, s], images).map_err(|e| EngineError::Run {
                engine: NAME,
                reason: format!("{e:#}"),
            })?;
        let outputs =
            multithread_tract_scope(self.executor.clone(), || self.plan.run(tvec!(input.into())))
                .map_err(|e| EngineError::Run {
                engine: NAME,
                reason: format!("{e:#}"),
            })?;
        if outputs.len() != 2 {
            return Err(EngineError::OutputShape {
                expected: vec![2],
                got: vec![outputs.len()],
            });
        }
        Ok(EngineOutput {
            batch,
            logits: output(&outputs[0], batch, self.spec.labels, NAME)?,
            features: output(&outputs[1], batch, self.spec.width, NAME)?,
        })
    }
}
