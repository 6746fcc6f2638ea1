//! An ensemble as one engine: every member runs the same images, each
//! member's logits are calibrated with its own temperatures and their
//! probabilities averaged (`cxr_core::ensemble::combine_members`), and the
//! pooled features are averaged. The study path and the decision core see
//! one engine whose logits are the ensemble's; the bundle's parameters (its
//! temperatures, thresholds, bands and OOD statistics) were fitted on
//! exactly these outputs.

use cxr_core::ensemble::{combine_members, MAX_ENSEMBLE_MEMBERS};

use crate::{Engine, EngineError, EngineOutput, EngineShape};

/// Every member of an ensemble, each already through its own golden self-test.
pub struct EnsembleEngine {
    members: Vec<Box<dyn Engine>>,
    /// `[members, labels]`, each member's own calibration.
    temperatures: Vec<f32>,
    shape: EngineShape,
}

impl std::fmt::Debug for EnsembleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsembleEngine")
            .field("members", &self.members.len())
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

fn refuse(reason: String) -> EngineError {
    EngineError::Load {
        engine: "ensemble",
        reason,
    }
}

impl EnsembleEngine {
    /// `temperatures[k]` calibrates member `k`. Refuses fewer than 2 or more
    /// than the most members, members of different shapes, and temperature
    /// lists that do not match the labels.
    pub fn new(
        members: Vec<Box<dyn Engine>>,
        temperatures: &[&[f32]],
    ) -> Result<Self, EngineError> {
        let k = members.len();
        if !(2..=MAX_ENSEMBLE_MEMBERS).contains(&k) || temperatures.len() != k {
            return Err(refuse(format!(
                "{k} member engine(s) and {} calibration(s): an ensemble has 2 to {MAX_ENSEMBLE_MEMBERS}, one calibration each",
                temperatures.len()
            )));
        }
        let shape = members[0].shape();
        if let Some(i) = members.iter().position(|m| m.shape() != shape) {
            return Err(refuse(format!(
                "member {} takes or gives {:?}, member 1 {shape:?}",
                i + 1,
                members[i].shape()
            )));
        }
        if let Some(i) = temperatures.iter().position(|t| t.len() != shape.labels) {
            return Err(refuse(format!(
                "member {} has {} temperatures for {} labels",
                i + 1,
                temperatures[i].len(),
                shape.labels
            )));
        }
        Ok(EnsembleEngine {
            members,
            temperatures: temperatures.concat(),
            shape,
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Engine for EnsembleEngine {
    fn name(&self) -> &'static str {
        "ensemble"
    }

    fn shape(&self) -> EngineShape {
        self.shape
    }

    fn reduced_precision(&self) -> bool {
        self.members.iter().any(|m| m.reduced_precision())
    }

    fn precision(&self) -> &'static str {
        let first = self.members[0].precision();
        if self.members.iter().all(|m| m.precision() == first) {
            first
        } else {
            "mixed"
        }
    }

    /// Each member's engine and notes, and the cost: one forward pass per
    /// member per image.
    fn notes(&self) -> Vec<String> {
        let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
        let mut notes = vec![format!(
            "ensemble of {} models on [{}]: {} forward passes per view",
            self.members.len(),
            names.join(", "),
            self.members.len()
        )];
        for (i, m) in self.members.iter().enumerate() {
            notes.extend(
                m.notes()
                    .into_iter()
                    .map(|n| format!("model {}: {n}", i + 1)),
            );
        }
        notes
    }

    fn preferred_batch(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.preferred_batch())
            .min()
            .unwrap_or(1)
    }

    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let (labels, width) = (self.shape.labels, self.shape.features);
        let mut member_logits = Vec::with_capacity(self.members.len() * batch * labels);
        let mut features = vec![0.0f32; batch * width];
        for (i, member) in self.members.iter().enumerate() {
            let out = member.infer(images, batch)?;
            if out.logits.len() != batch * labels || out.features.len() != batch * width {
                return Err(EngineError::Run {
                    engine: "ensemble",
                    reason: format!(
                        "model {} gave {} logits and {} feature values for {batch} images of {labels} labels and width {width}",
                        i + 1,
                        out.logits.len(),
                        out.features.len()
                    ),
                });
            }
            member_logits.extend_from_slice(&out.logits);
            features
                .iter_mut()
                .zip(&out.features)
                .for_each(|(sum, f)| *sum += f);
        }
        let k = self.members.len() as f32;
        features.iter_mut().for_each(|f| *f /= k);
        let mut logits = vec![0.0f32; batch * labels];
        combine_members(
            &member_logits,
            self.members.len(),
            &self.temperatures,
            &mut logits,
        )
        .map_err(|e| EngineError::Run {
            engine: "ensemble",
            reason: format!("combining the members: {e}"),
        })?;
        Ok(EngineOutput {
            batch,
            logits,
            features,
        })
    }
}
