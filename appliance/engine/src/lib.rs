//! `cxr-engine`: the [`Engine`] trait, the tract CPU engine ([`TractVit`]),
//! the OpenVINO CPU engine for reduced precision (feature `openvino`), and
//! engine selection with its reasons. It must not know CUDA details: the
//! CUDA engine implements the same trait in `cxr-cuda`, and the reference
//! forward in `cxr-model` is the oracle for both.

mod ensemble;
mod error;
#[cfg(feature = "openvino")]
mod openvino_cpu;
mod select;
mod selftest;
mod tract_gate;
mod tract_vit;

pub use ensemble::EnsembleEngine;
pub use error::EngineError;
#[cfg(feature = "openvino")]
pub use openvino_cpu::{CpuPrecision, OpenVinoCpu, OpenVinoVit};
pub use select::{
    load_content_gate, select_engine, select_for_bundle, Accelerator, EnginePreference, Selection,
};
pub use selftest::{self_test, SelfTestReport};
pub use tract_gate::TractGate;
pub use tract_vit::TractVit;

/// What an engine takes and gives, for checks against the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineShape {
    pub channels: usize,
    pub image_size: usize,
    pub labels: usize,
    pub features: usize,
}

impl EngineShape {
    /// What a model of `spec` takes and gives.
    pub fn of(spec: &cxr_model::VitSpec) -> Self {
        EngineShape {
            channels: spec.in_channels,
            image_size: spec.image_size,
            labels: spec.labels,
            features: spec.width,
        }
    }
}

/// The outputs of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    pub batch: usize,
    /// `[batch, labels]`, row-major.
    pub logits: Vec<f32>,
    /// `[batch, features]`, row-major: the pooled (final-normed CLS) feature.
    pub features: Vec<f32>,
}

/// A classifier engine: batched ViT inference.
pub trait Engine: Send + Sync {
    /// A short name for logs and the audit record (e.g. `tract`).
    fn name(&self) -> &'static str;
    fn shape(&self) -> EngineShape;
    /// Whether the engine computes in bf16/fp16 (its golden tolerance is
    /// then the bundle's reduced-precision one).
    fn reduced_precision(&self) -> bool {
        false
    }

    /// The arithmetic the engine runs in (`f32`, `bf16`, `f16`), for every
    /// output line (reduced-precision engines also carry it in their name,
    /// which the audit record keeps). No default: an engine must say.
    fn precision(&self) -> &'static str;

    /// What happened while the engine started that belongs in the log and
    /// the audit record (e.g. a kernel cache entry that failed its
    /// authentication and was rebuilt).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Run `batch` images, `[batch, C, S, S]` row-major.
    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError>;

    /// The largest batch worth sending at once: callers split bigger batches
    /// (e.g. the TTA views of one study) into chunks of this size.
    fn preferred_batch(&self) -> usize {
        usize::MAX
    }

    /// [`Engine::infer`] in chunks of [`Engine::preferred_batch`], outputs concatenated.
    fn infer_chunked(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let chunk = self.preferred_batch().clamp(1, batch.max(1));
        if chunk >= batch {
            return self.infer(images, batch);
        }
        let per_image = images.len() / batch.max(1);
        let mut out = EngineOutput {
            batch,
            logits: Vec::new(),
            features: Vec::new(),
        };
        for start in (0..batch).step_by(chunk) {
            let n = chunk.min(batch - start);
            let part = self.infer(&images[start * per_image..(start + n) * per_image], n)?;
            out.logits.extend(part.logits);
            out.features.extend(part.features);
        }
        Ok(out)
    }
}
