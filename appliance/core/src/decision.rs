//! From the engine's logits to a gated, calibrated decision. No allocation:
//! every buffer is a fixed-capacity `heapless::Vec`, and the bundle's
//! parameters are borrowed.

use embassy_time::{Duration, Instant};
use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::calibration::{calibrated_probability, call, Call};
use crate::limits::MAX_LABELS;
use crate::ood::{self, FeatureStats, OodCutoffs, OodGates, OodScores};
use crate::tta::merge_views;
use crate::{Abstention, AbstentionReason, CoreError, InputClass, InputGate};

/// Everything `decide` needs from the verified bundle.
#[derive(Debug, Clone, Copy)]
pub struct DecisionParams<'a> {
    /// Per-label temperature, `[labels]`, each > 0.
    pub temperatures: &'a [f32],
    /// Per-label threshold on the calibrated probability, `[labels]`.
    pub thresholds: &'a [f32],
    /// Half-width of the Uncertain band around each threshold.
    pub uncertainty_band: f32,
    /// Abstain when any label's spread across TTA views (in logits) exceeds this.
    pub max_tta_spread: Option<f32>,
    /// Temperature of the ODIN-T score.
    pub odin_temperature: f32,
    pub ood_cutoffs: OodCutoffs,
    /// Mahalanobis statistics; `None` disables that score.
    pub feature_stats: Option<FeatureStats<'a>>,
    pub input_gate: InputGate,
    /// Time allowed from the study's arrival to its decision.
    pub budget: Duration,
}

/// What the core knows about the study itself (from ingest, no identifiers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudyFacts {
    pub input_class: InputClass,
    pub age_years: Option<f32>,
    /// When the study arrived (the deadline counts from here).
    pub received: Instant,
}

/// One label's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelOutcome {
    /// Calibrated probability of the TTA-merged logit.
    pub probability: f32,
    /// Spread of the logit across TTA views.
    pub spread: f32,
    /// `None` whenever the study abstained.
    pub call: Option<Call>,
}

/// The result of every gate.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GateResults {
    /// Why the input gate refused the study, if it did.
    pub input: Option<AbstentionReason>,
    pub ood: OodGates,
    pub uncertainty: bool,
    pub deadline: bool,
}

/// A study's decision. `labels` is empty when the study never reached the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub labels: Vec<LabelOutcome, MAX_LABELS>,
    pub ood: Option<OodScores>,
    pub gates: GateResults,
    pub abstention: Option<Abstention>,
}

impl Decision {
    fn abstained_before_inference(reason: AbstentionReason, gates: GateResults) -> Decision {
        Decision {
            labels: Vec::new(),
            ood: None,
            gates,
            abstention: Some(Abstention { reason }),
        }
    }
}

/// Before inference: a study the input gate refuses abstains without running
/// the model. `None` means: go on and infer.
pub fn gate_input(facts: &StudyFacts, params: &DecisionParams<'_>) -> Option<Decision> {
    let reason = params
        .input_gate
        .check(facts.input_class, facts.age_years)
        .err()?;
    Some(Decision::abstained_before_inference(
        reason,
        GateResults {
            input: Some(reason),
            ..GateResults::default()
        },
    ))
}

/// Decide on one study.
///
/// - `view_logits`: `[views, labels]`, row-major, from the engine;
/// - `features`: `[D]`, the pooled feature of the un-augmented view (may be
///   empty when the bundle has no feature statistics);
/// - `now`: the injected clock's reading, for the deadline.
///
/// Gates, in order: input, deadline, OOD, TTA uncertainty. Any of them
/// abstains, and an abstained decision carries no calls.
pub fn decide(
    view_logits: &[f32],
    views: usize,
    features: &[f32],
    facts: &StudyFacts,
    params: &DecisionParams<'_>,
    now: Instant,
) -> Result<Decision, CoreError> {
    let labels = params.temperatures.len();
    if params.thresholds.len() != labels || labels == 0 {
        return Err(CoreError::ParamsMismatch {
            labels,
            temperatures: params.temperatures.len(),
            thresholds: params.thresholds.len(),
        });
    }
    if let Some(index) = params
        .temperatures
        .iter()
        .position(|t| !(t.is_finite() && *t > 0.0))
    {
        return Err(CoreError::BadTemperature { label: index });
    }
    if let Some(refused) = gate_input(facts, params) {
        return Ok(refused);
    }
    let merged = merge_views(view_logits, views, labels)?;
    let scores = ood::scores(
        &merged.mean,
        features,
        params.odin_temperature,
        params.feature_stats.as_ref(),
    )?;
    let elapsed = now
        .checked_duration_since(facts.received)
        .unwrap_or(Duration::from_ticks(0));
    let gates = GateResults {
        input: None,
        ood: ood::gate(&scores, &params.ood_cutoffs),
        uncertainty: params
            .max_tta_spread
            .is_some_and(|max| merged.spread.iter().any(|s| s.is_nan() || *s > max)),
        deadline: elapsed > params.budget,
    };
    let reason = if gates.deadline {
        Some(AbstentionReason::Timeout)
    } else if gates.ood.any() {
        Some(AbstentionReason::OutOfDistribution)
    } else if gates.uncertainty {
        Some(AbstentionReason::HighUncertainty)
    } else {
        None
    };
    let mut outcomes = Vec::new();
    for l in 0..labels {
        let probability = calibrated_probability(merged.mean[l], params.temperatures[l]);
        let label_call = reason
            .is_none()
            .then(|| call(probability, params.thresholds[l], params.uncertainty_band));
        // Capacity: merge_views refused more than MAX_LABELS labels.
        let _ = outcomes.push(LabelOutcome {
            probability,
            spread: merged.spread[l],
            call: label_call,
        });
    }
    Ok(Decision {
        labels: outcomes,
        ood: Some(scores),
        gates,
        abstention: reason.map(|reason| Abstention { reason }),
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;

    const NO_OOD: OodCutoffs = OodCutoffs {
        min_joint_energy: None,
        min_max_logit: None,
        min_odin_t: None,
        max_mahalanobis: None,
    };

    fn params<'a>(temperatures: &'a [f32], thresholds: &'a [f32]) -> DecisionParams<'a> {
        DecisionParams {
            temperatures,
            thresholds,
            uncertainty_band: 0.05,
            max_tta_spread: Some(2.0),
            odin_temperature: 1000.0,
            ood_cutoffs: NO_OOD,
            feature_stats: None,
            input_gate: InputGate::default(),
            budget: Duration::from_secs(10),
        }
    }

    fn adult(at: u64) -> StudyFacts {
        StudyFacts {
            input_class: InputClass::FrontalChest,
            age_years: Some(50.0),
            received: Instant::from_secs(at),
        }
    }

    #[test]
    fn calls_follow_calibrated_probabilities() {
        let p = params(&[1.0, 2.0], &[0.5, 0.5]);
        // Two views; label 0 mean logit 2 (p = 0.88), label 1 mean -4 at T=2 (p = 0.12).
        let d = decide(
            &[1.0, -4.0, 3.0, -4.0],
            2,
            &[],
            &adult(0),
            &p,
            Instant::from_secs(1),
        )
        .unwrap();
        assert_eq!(d.abstention, None);
        assert_eq!(d.labels[0].call, Some(Call::Positive));
        assert_eq!(d.labels[1].call, Some(Call::Negative));
        assert!((d.labels[1].probability - calibrated_probability(-4.0, 2.0)).abs() < 1e-7);
        assert_eq!(d.labels[0].spread, 1.0);
    }

    #[test]
    fn deadline_ood_and_spread_abstain() {
        let p = params(&[1.0], &[0.5]);
        let late = decide(&[1.0], 1, &[], &adult(0), &p, Instant::from_secs(11)).unwrap();
        assert_eq!(
            late.abstention.map(|a| a.reason),
            Some(AbstentionReason::Timeout)
        );
        let mut strict = p;
        strict.ood_cutoffs.min_max_logit = Some(5.0);
        let ood = decide(&[1.0], 1, &[], &adult(0), &strict, Instant::from_secs(1)).unwrap();
        assert_eq!(
            ood.abstention.map(|a| a.reason),
            Some(AbstentionReason::OutOfDistribution)
        );
        let spread = decide(&[-3.0, 3.0], 2, &[], &adult(0), &p, Instant::from_secs(1)).unwrap();
        assert_eq!(
            spread.abstention.map(|a| a.reason),
            Some(AbstentionReason::HighUncertainty)
        );
        for d in [late, ood, spread] {
            assert!(d.labels.iter().all(|l| l.call.is_none()));
        }
    }

    #[test]
    fn refused_input_never_reaches_the_model() {
        let p = params(&[1.0], &[0.5]);
        let child = StudyFacts {
            age_years: Some(6.0),
            ..adult(0)
        };
        let d = decide(&[9.0], 1, &[], &child, &p, Instant::from_secs(1)).unwrap();
        assert_eq!(
            d.abstention.map(|a| a.reason),
            Some(AbstentionReason::Paediatric)
        );
        assert!(d.labels.is_empty() && d.ood.is_none());
        assert_eq!(gate_input(&child, &p), Some(d));
    }

    #[test]
    fn bundle_faults_are_errors() {
        let p = params(&[1.0, 1.0], &[0.5]);
        assert_eq!(
            decide(&[0.0, 0.0], 1, &[], &adult(0), &p, Instant::from_secs(0))
                .unwrap_err()
                .code(),
            "CORE_PARAMS_MISMATCH"
        );
        let p = params(&[0.0], &[0.5]);
        assert_eq!(
            decide(&[0.0], 1, &[], &adult(0), &p, Instant::from_secs(0)),
            Err(CoreError::BadTemperature { label: 0 })
        );
        let p = params(&[1.0], &[0.5]);
        assert!(decide(
            &[0.0, 1.0, 2.0],
            2,
            &[],
            &adult(0),
            &p,
            Instant::from_secs(0)
        )
        .is_err());
    }

    fn classes() -> impl Strategy<Value = InputClass> {
        prop::sample::select(InputClass::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn a_gate_never_lets_an_abstained_study_carry_calls(
            logits in prop::collection::vec(-20.0f32..20.0, 1..=16),
            class in classes(),
            age in prop::option::of(0.0f32..100.0),
            elapsed in 0u64..20,
            min_energy in prop::option::of(0.0f32..20.0),
            max_spread in prop::option::of(0.0f32..5.0),
        ) {
            let labels = logits.len() / 2;
            prop_assume!(labels > 0);
            let views = 2;
            let temps = std::vec![1.5f32; labels];
            let thresholds = std::vec![0.5f32; labels];
            let mut p = params(&temps, &thresholds);
            p.ood_cutoffs.min_joint_energy = min_energy;
            p.max_tta_spread = max_spread;
            let facts = StudyFacts { input_class: class, age_years: age, received: Instant::from_secs(0) };
            let d = decide(&logits[..views * labels], views, &[], &facts, &p, Instant::from_secs(elapsed)).unwrap();
            match d.abstention {
                Some(_) => prop_assert!(d.labels.iter().all(|l| l.call.is_none())),
                None => {
                    prop_assert!(class.may_be_classified());
                    prop_assert!(d.labels.iter().all(|l| l.call.is_some()));
                    prop_assert!(!d.gates.ood.any() && !d.gates.deadline && !d.gates.uncertainty);
                }
            }
        }
    }
}
