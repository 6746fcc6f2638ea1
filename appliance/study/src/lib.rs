//! `cxr-study`: the one path a study takes from a normalised `Radiograph`
//! to a `Decision`, whoever asks (the `classify` command, the trainer's
//! evaluation, later the service): the content gate, the input gate, the
//! model input and its TTA views, the engine, and `cxr_core::decide`. It owns
//! no I/O: reading the file, printing, and the audit record stay with the
//! caller. It must not know DICOM parsing, HTTP or CUDA.

use std::time::Instant as StdInstant;

use cxr_bundle::ModelParams;
use cxr_core::{
    combine, decide, gate_input, Combined, ContentVerdict, Decision, DecisionParams, InputClass,
    StudyFacts,
};
use cxr_engine::{Engine, Selection};
use cxr_preprocess::{prepare, tta_view, ModelInput};
use cxr_radiograph::Radiograph;
use embassy_time::Instant;

/// Why a study got no decision past ingest: a stable code and a message
/// that ends with a fix hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StudyFault {
    pub code: &'static str,
    pub message: String,
}

fn fault(code: &'static str, message: String) -> StudyFault {
    StudyFault { code, message }
}

/// Milliseconds spent in each stage after ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageMs {
    pub content_gate: f64,
    pub preprocess: f64,
    pub inference: f64,
    pub decision: f64,
}

/// What a study produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyOutput {
    pub facts: StudyFacts,
    pub decision: Decision,
    /// Views run through the engine (0 when a gate stopped the study first).
    pub views: usize,
    pub ms: StageMs,
    /// The classifier's input, exactly as the engine saw it (the identity
    /// view); `None` when a gate stopped the study before it was prepared.
    pub input: Option<ModelInput>,
}

/// The one rule for "a frontal chest view", for `classify` (per file) and
/// the service (per study) alike: the tags and the content gate's verdict
/// combined as the input gate combines them. A film without view tags that
/// the content gate calls frontal is one; a film tagged frontal that does
/// not look like one is not.
pub fn is_frontal_chest(facts: &StudyFacts) -> bool {
    combine(facts.input_class, facts.content.as_ref()) == Combined::Class(InputClass::FrontalChest)
}

/// The model, its parameters and gates, ready for studies.
pub struct StudyPath<'a> {
    pub selection: &'a Selection,
    pub params: &'a ModelParams,
    pub decision_params: DecisionParams<'a>,
    /// A verified bundle always carries a content gate: without it loaded,
    /// its studies fail rather than fall back to the tags alone.
    pub gate_required: bool,
}

impl std::fmt::Debug for StudyPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyPath")
            .field("selection", self.selection)
            .field("gate_required", &self.gate_required)
            .finish_non_exhaustive()
    }
}

/// The bundle's decision parameters with the board's tightening applied:
/// a board that requires an age (`require_age`, its `gate.require_age`)
/// refuses studies without one that the bundle lets pass, never the other
/// way round.
pub fn tightened(mut params: DecisionParams<'_>, require_age: bool) -> DecisionParams<'_> {
    params.input_gate.allow_unknown_age &= !require_age;
    params
}

fn ms(since: StdInstant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl StudyPath<'_> {
    /// One study from its radiograph: `received` is when it arrived (the
    /// deadline counts from there), `now` the injected clock.
    pub fn run(
        &self,
        radiograph: &Radiograph,
        received: Instant,
        now: &dyn Fn() -> Instant,
    ) -> Result<StudyOutput, StudyFault> {
        let t = StdInstant::now();
        let content = self.judge_content(radiograph)?;
        let mut stage = StageMs {
            content_gate: ms(t),
            ..StageMs::default()
        };
        let a = &radiograph.acquisition;
        let facts = StudyFacts {
            input_class: a.input_class,
            content,
            age_years: a.age_years,
            received,
        };
        if let Some(decision) = gate_input(&facts, &self.decision_params) {
            return Ok(StudyOutput {
                facts,
                decision,
                views: 0,
                ms: stage,
                input: None,
            });
        }
        let t = StdInstant::now();
        let input = prepare(radiograph, &self.params.input)
            .map_err(|e| fault(e.code(), format!("preparing the model input: {e}")))?;
        let mut batch = Vec::with_capacity(input.data.len() * self.params.tta.len());
        for view in &self.params.tta {
            batch.extend_from_slice(&tta_view(&input, view).data);
        }
        stage.preprocess = ms(t);
        let t = StdInstant::now();
        let views = self.params.tta.len();
        let out = self
            .selection
            .engine
            .infer_chunked(&batch, views)
            .map_err(|e| fault(e.code(), format!("running the engine: {e}")))?;
        stage.inference = ms(t);
        let t = StdInstant::now();
        // The identity view (the first) feeds Mahalanobis.
        let features = out.features.get(..self.params.model.width).unwrap_or(&[]);
        let decision = decide(
            &out.logits,
            views,
            features,
            &facts,
            &self.decision_params,
            now(),
        )
        .map_err(|e| fault(e.code(), format!("deciding: {e}")))?;
        stage.decision = ms(t);
        Ok(StudyOutput {
            facts,
            decision,
            views,
            ms: stage,
            input: Some(input),
        })
    }

    /// The fewest pixels on the short side that every input this study
    /// prepares (the classifier's and the content gate's, each resized down
    /// by `prepare`) can be made from: a decoder may stop there.
    pub fn decode_short_side(&self) -> u32 {
        let gate = self
            .params
            .content_gate
            .as_ref()
            .map_or(0, |g| g.input.size);
        self.params.input.size.max(gate)
    }

    /// The content gate's verdict on the image (`None` without a gate, in
    /// developer mode). The gate prepares its own input with the same
    /// `prepare` as the classifier, at its own size.
    pub fn judge_content(
        &self,
        radiograph: &Radiograph,
    ) -> Result<Option<ContentVerdict>, StudyFault> {
        let (Some(gate), Some(data)) = (&self.selection.content_gate, &self.params.content_gate)
        else {
            return match (&self.selection.content_gate, self.gate_required) {
                (None, false) => Ok(None),
                _ => Err(fault(
                    "CONTENT_GATE_UNAVAILABLE",
                    "the bundle's content gate is not loaded or has no cut-offs, so nothing is classified (fix: re-install or re-lock the bundle)".into(),
                )),
            };
        };
        let input = prepare(radiograph, &data.input)
            .map_err(|e| fault(e.code(), format!("preparing the content gate's input: {e}")))?;
        let out = gate
            .infer(&input.data, 1)
            .map_err(|e| fault(e.code(), format!("running the content gate: {e}")))?;
        let logits: [f32; 4] = out
            .logits
            .get(..4)
            .and_then(|l| l.try_into().ok())
            .ok_or_else(|| {
                fault(
                    "CONTENT_GATE_OUTPUT",
                    format!(
                        "the content gate gave {} logits, not 4 (fix: re-lock the bundle with `cxr-trainer fit-gate` output)",
                        out.logits.len()
                    ),
                )
            })?;
        let distance = out.features.first().copied().unwrap_or(f32::NAN);
        Ok(Some(data.cuts.judge(&logits, distance)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::ContentClass;

    fn facts(tags: InputClass, content: Option<ContentClass>) -> StudyFacts {
        StudyFacts {
            input_class: tags,
            content: content.map(|class| ContentVerdict {
                class,
                score: 0.9,
                frontal_probability: 0.9,
                distance: 1.0,
            }),
            age_years: Some(40.0),
            received: Instant::from_secs(0),
        }
    }

    #[test]
    fn frontal_comes_from_the_tags_and_the_content_together() {
        assert!(
            is_frontal_chest(&facts(
                InputClass::Unknown,
                Some(ContentClass::FrontalChest)
            )),
            "no view tags, frontal content"
        );
        assert!(is_frontal_chest(&facts(
            InputClass::FrontalChest,
            Some(ContentClass::FrontalChest)
        )));
        assert!(
            !is_frontal_chest(&facts(
                InputClass::FrontalChest,
                Some(ContentClass::NotRadiograph)
            )),
            "a mismatch is not frontal"
        );
        assert!(!is_frontal_chest(&facts(
            InputClass::LateralChest,
            Some(ContentClass::FrontalChest)
        )));
        assert!(
            !is_frontal_chest(&facts(InputClass::Unknown, None)),
            "no tags and no gate"
        );
    }
}
