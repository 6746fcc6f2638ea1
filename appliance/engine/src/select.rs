//! Choosing the engine, and saying why: the reasons go to the log and the
//! audit record.
//!
//! Under `Auto`, each accelerator the build carries (the CUDA engine, in
//! `cxr-cuda`) is tried first: it must load on this machine and pass the
//! bundle's golden self-test at its reduced-precision tolerance. Whatever
//! stops it (no driver, no device, a compile error, a failed self-test) is
//! recorded, and tract (CPU) runs instead. This crate knows no CUDA: an
//! accelerator is anything that implements [`Accelerator`].

use cxr_model::VitSpec;

use cxr_bundle::{BundleModel, VerifiedBundle};

use crate::{self_test, Engine, EngineError, EnsembleEngine, SelfTestReport, TractGate, TractVit};

/// What the operator or board configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePreference {
    /// The fastest engine that is present and passes its checks.
    Auto,
    /// The tract CPU engine only.
    Tract,
}

/// An engine the build carries besides tract, tried first under `Auto`.
pub trait Accelerator: Send + Sync {
    /// A short name for the reasons (e.g. `cuda`).
    fn name(&self) -> &'static str;
    /// Load the bundle's model, or say why this machine cannot (the text
    /// becomes the recorded fallback reason).
    fn load(&self, onnx: &[u8], spec: VitSpec) -> Result<Box<dyn Engine>, String>;
}

/// The chosen engine and the reasons it was chosen.
pub struct Selection {
    pub engine: Box<dyn Engine>,
    /// The bundle's content gate, self-tested (`None` in developer mode only).
    pub content_gate: Option<TractGate>,
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

/// The tract engine for a model without golden vectors (developer mode):
/// accelerators are not tried, since nothing could check them.
pub fn select_engine(
    onnx: &[u8],
    spec: VitSpec,
    preference: EnginePreference,
    threads: usize,
) -> Result<Selection, EngineError> {
    let mut reasons = vec![match preference {
        EnginePreference::Tract => "tract requested".to_owned(),
        EnginePreference::Auto => {
            "auto without a bundle: tract (CPU) only; accelerators need the bundle's golden self-test"
                .to_owned()
        }
    }];
    let engine = TractVit::load(onnx, spec, threads)?;
    reasons.push(format!("tract loaded with {} thread(s)", engine.threads()));
    reasons.push("no content gate: developer mode gates on tags alone".to_owned());
    Ok(Selection {
        engine: Box::new(engine),
        content_gate: None,
        reasons,
    })
}

/// Choose and load the engine for a verified bundle, then run its golden
/// vectors through it: an engine that fails its self-test is never used.
/// An ensemble bundle gets one engine per model, each chosen and
/// self-tested against its own golden vectors, run together as an
/// [`EnsembleEngine`]; the report returned is the member with the worst
/// logits.
pub fn select_for_bundle(
    bundle: &VerifiedBundle,
    preference: EnginePreference,
    threads: usize,
    accelerators: &[&dyn Accelerator],
) -> Result<(Selection, SelfTestReport), EngineError> {
    // The gate first: without it nothing is classified, whatever the engine.
    let (gate, gate_report) = load_content_gate(bundle)?;
    let models = bundle.models();
    let mut reasons = Vec::new();
    let mut engines = Vec::with_capacity(models.len());
    let mut worst: Option<SelfTestReport> = None;
    for model in &models {
        let mut said = Vec::new();
        let (engine, report) =
            select_for_model(bundle, model, preference, threads, accelerators, &mut said)?;
        if models.len() > 1 {
            let k = models.len();
            said = said
                .into_iter()
                .map(|r| format!("model {}/{k}: {r}", model.index + 1))
                .collect();
        }
        reasons.extend(said);
        engines.push(engine);
        if worst
            .as_ref()
            .is_none_or(|w| report.worst_logits > w.worst_logits)
        {
            worst = Some(report);
        }
    }
    let engine: Box<dyn Engine> = match engines.len() {
        1 => engines.remove(0),
        _ => {
            let calibrations: Vec<&[f32]> = models
                .iter()
                .map(|m| m.calibration.map_or(&[][..], |c| &c.temperatures[..]))
                .collect();
            let ensemble = EnsembleEngine::new(engines, &calibrations)?;
            reasons.extend(ensemble.notes().into_iter().take(1));
            Box::new(ensemble)
        }
    };
    reasons.push(format!("content gate: {}", gate_report.summary()));
    let report = worst.ok_or_else(|| EngineError::Load {
        engine: "bundle",
        reason: "the bundle has no model".into(),
    })?;
    Ok((
        Selection {
            engine,
            content_gate: Some(gate),
            reasons,
        },
        report,
    ))
}

/// One model of the bundle: the first accelerator that loads it and
/// passes its golden self-test under `Auto`, else tract.
fn select_for_model(
    bundle: &VerifiedBundle,
    model: &BundleModel<'_>,
    preference: EnginePreference,
    threads: usize,
    accelerators: &[&dyn Accelerator],
    reasons: &mut Vec<String>,
) -> Result<(Box<dyn Engine>, SelfTestReport), EngineError> {
    let m = bundle.manifest();
    let views = m.params.tta.len();
    match preference {
        EnginePreference::Tract => reasons.push("tract requested".to_owned()),
        EnginePreference::Auto if accelerators.is_empty() => {
            reasons.push("auto: this build has no GPU engine; using tract (CPU)".to_owned())
        }
        EnginePreference::Auto => {
            for acc in accelerators {
                let engine = match acc.load(model.onnx, m.params.model) {
                    Ok(e) => e,
                    Err(why) => {
                        reasons.push(format!("{}: not used: {why}", acc.name()));
                        continue;
                    }
                };
                match self_test(engine.as_ref(), model.golden, &m.golden_tolerance, views) {
                    Ok(report) => {
                        reasons.push(format!("auto: {} selected", engine.name()));
                        reasons.extend(engine.notes());
                        reasons.push(report.summary());
                        return Ok((engine, report));
                    }
                    Err(e) => reasons.push(format!(
                        "{}: loaded but not used, its golden self-test failed: {e}",
                        acc.name()
                    )),
                }
            }
            reasons.push("auto: falling back to tract (CPU)".to_owned());
        }
    }
    let tract = TractVit::load(model.onnx, m.params.model, threads)?;
    reasons.push(format!("tract loaded with {} thread(s)", tract.threads()));
    let engine: Box<dyn Engine> = Box::new(tract);
    let report = self_test(engine.as_ref(), model.golden, &m.golden_tolerance, views)?;
    reasons.push(report.summary());
    Ok((engine, report))
}

/// The bundle's content gate on tract, through its own golden vectors at
/// the f32 tolerance: a gate that does not reproduce them is never used,
/// and then nothing is classified.
pub fn load_content_gate(
    bundle: &VerifiedBundle,
) -> Result<(TractGate, SelfTestReport), EngineError> {
    let gate = TractGate::load(bundle.content_gate_onnx(), bundle.content_gate().spec)?;
    let report = self_test(
        &gate,
        bundle.content_golden(),
        &bundle.manifest().golden_tolerance,
        1,
    )?;
    Ok((gate, report))
}
