//! Choosing the engine, and saying why: the reasons go to the log and the
//! audit record.

use cxr_model::VitSpec;

use cxr_bundle::VerifiedBundle;

use crate::{self_test, Engine, EngineError, SelfTestReport, TractVit};

/// What the operator or board configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePreference {
    /// The fastest engine that is present and passes its checks.
    Auto,
    /// The tract CPU engine only.
    Tract,
}

/// The chosen engine and the reasons it was chosen.
pub struct Selection {
    pub engine: Box<dyn Engine>,
    pub reasons: Vec<String>,
}

impl std::fmt::Debug for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selection")
            .field("engine", &self.engine.name())
            .field("reasons", &self.reasons)
            .finish()
    }
}

/// Pick an engine for this model. Today only tract is built in; the CUDA
/// engine joins here (tried first under `Auto`, its fallback reason recorded).
pub fn select_engine(
    onnx: &[u8],
    spec: VitSpec,
    preference: EnginePreference,
    threads: usize,
) -> Result<Selection, EngineError> {
    let mut reasons = Vec::new();
    match preference {
        EnginePreference::Tract => reasons.push("tract requested".to_owned()),
        EnginePreference::Auto => {
            reasons.push("auto: no CUDA engine in this build; using tract (CPU)".to_owned())
        }
    }
    let engine = TractVit::load(onnx, spec, threads)?;
    reasons.push(format!("tract loaded with {} thread(s)", engine.threads()));
    Ok(Selection {
        engine: Box::new(engine),
        reasons,
    })
}

/// Choose and load the engine for a verified bundle, then run its golden
/// vectors through it: an engine that fails its self-test is never used.
/// (When the CUDA engine lands it is tried first under `Auto`, and a failed
/// self-test falls back to tract with the reason recorded.)
pub fn select_for_bundle(
    bundle: &VerifiedBundle,
    preference: EnginePreference,
    threads: usize,
) -> Result<(Selection, SelfTestReport), EngineError> {
    let m = bundle.manifest();
    let mut selection = select_engine(bundle.onnx(), m.params.model, preference, threads)?;
    let report = self_test(
        selection.engine.as_ref(),
        bundle.golden(),
        &m.golden_tolerance,
    )?;
    selection.reasons.push(report.summary());
    Ok((selection, report))
}
