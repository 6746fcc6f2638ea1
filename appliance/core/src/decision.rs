//! From the engine's logits to a gated, calibrated decision. No allocation:
//! every buffer is a fixed-capacity `heapless::Vec`, and the bundle's
//! parameters are borrowed.

use embassy_time::{Duration, Instant};
use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::calibration::{calibrated_probability, call, Call};
use crate::limits::MAX_LABELS;
use crate::ood::{self, FeatureStats, OodGate, OodScoreKind, OodScores};
use crate::tta::merge_views;
use crate::{Abstention, AbstentionReason, ContentVerdict, CoreError, InputClass, InputGate};

/// The widest fitted Uncertain band a bundle may carry, in logit units
/// either side of the threshold (8 spans probabilities from 0.0003 to
/// 0.9997 around 0.5).
pub const MAX_BAND_LOGIT: f32 = 8.0;

/// The band of a label that has no operating point (too little evidence to
/// fit one): infinitely wide, so its call is always Uncertain.
pub const NO_OPERATING_POINT: f32 = f32::INFINITY;

/// A band is either fitted (finite, in `[0, MAX_BAND_LOGIT]`) or
/// [`NO_OPERATING_POINT`]; NaN and negative values are neither.
pub fn band_is_valid(band: f32) -> bool {
    (0.0..=MAX_BAND_LOGIT).contains(&band) || (band.is_infinite() && band.is_sign_positive())
}

/// Everything `decide` needs from the verified bundle.
#[derive(Debug, Clone, Copy)]
pub struct DecisionParams<'a> {
    /// Per-label temperature, `[labels]`, each > 0.
    pub temperatures: &'a [f32],
    /// Per-label threshold on the calibrated probability, `[labels]`, in (0, 1).
    pub thresholds: &'a [f32],
    /// Per-label half-width of the Uncertain band around each threshold, in
    /// logit units, `[labels]`, in `[0, MAX_BAND_LOGIT]`, or
    /// [`NO_OPERATING_POINT`] (always Uncertain).
    pub bands: &'a [f32],
    /// The OOD gate (its kept scores and cut-off).
    pub ood: OodGate<'a>,
    /// Mahalanobis statistics; `None` when the bundle keeps no such term.
    pub feature_stats: Option<FeatureStats<'a>>,
    pub input_gate: InputGate,
    /// Time allowed from the study's arrival to its decision.
    pub budget: Duration,
}

/// What the core knows about the study itself (from ingest, no identifiers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudyFacts {
    /// What the tags say.
    pub input_class: InputClass,
    /// What the content gate says (`None` only without a gate: developer mode).
    pub content: Option<ContentVerdict>,
    pub age_years: Option<f32>,
    /// When the study arrived (the deadline counts from here).
    pub received: Instant,
}

/// One label's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelOutcome {
    /// Calibrated probability of the TTA-merged logit.
    pub probability: f32,
    /// Spread (standard deviation) of the logit across TTA views.
    pub spread: f32,
    /// `None` whenever the study abstained.
    pub call: Option<Call>,
}

/// The result of every gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GateResults {
    /// Why the input gate refused the study, if it did.
    pub input: Option<AbstentionReason>,
    /// The OOD gate tripped.
    pub ood: bool,
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

impl DecisionParams<'_> {
    /// Refuse parameters that could switch a gate off or make a call
    /// meaningless: NaN or infinite values, out-of-range thresholds and
    /// bands, an OOD term without its statistics. Every comparison is
    /// written so that NaN fails it.
    pub fn check(&self) -> Result<(), CoreError> {
        let labels = self.temperatures.len();
        if self.thresholds.len() != labels || self.bands.len() != labels || labels == 0 {
            return Err(CoreError::ParamsMismatch {
                labels,
                temperatures: self.temperatures.len(),
                thresholds: self.thresholds.len(),
            });
        }
        if let Some(index) = self
            .temperatures
            .iter()
            .position(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(CoreError::BadTemperature { label: index });
        }
        let bad = |name, index| Err(CoreError::InvalidParameter { name, index });
        if let Some(i) = self.thresholds.iter().position(|t| !(*t > 0.0 && *t < 1.0)) {
            return bad("threshold", Some(i));
        }
        if let Some(i) = self.bands.iter().position(|b| !band_is_valid(*b)) {
            return bad("band", Some(i));
        }
        self.check_ood()?;
        self.input_gate
            .check_parameters()
            .map_err(|name| CoreError::InvalidParameter { name, index: None })
    }

    fn check_ood(&self) -> Result<(), CoreError> {
        let bad = |name, index| Err(CoreError::InvalidParameter { name, index });
        if self.ood.terms.is_empty() {
            return Ok(());
        }
        if !self.ood.max_combined.is_finite() {
            return bad("ood.max_combined", None);
        }
        for (i, t) in self.ood.terms.iter().enumerate() {
            if !(t.centre.is_finite() && t.scale.is_finite() && t.scale > 0.0) {
                return bad("ood.term", Some(i));
            }
            if self.ood.terms[..i].iter().any(|u| u.kind == t.kind) {
                return bad("ood.term (repeated)", Some(i));
            }
            if t.kind == OodScoreKind::Mahalanobis && self.feature_stats.is_none() {
                return bad("ood.term (Mahalanobis without feature statistics)", Some(i));
            }
        }
        Ok(())
    }
}

impl Decision {
    /// Every gate passed and every label's call is Uncertain: the model
    /// decided nothing, though it may show its numbers.
    pub fn is_undecided(&self) -> bool {
        self.abstention.is_none()
            && !self.labels.is_empty()
            && self.labels.iter().all(|l| l.call == Some(Call::Uncertain))
    }

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
        .check(facts.input_class, facts.content.as_ref(), facts.age_years)
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
/// Gates, in order: input, deadline, OOD. Either of the last two abstains,
/// and an abstained decision carries no calls.
pub fn decide(
    view_logits: &[f32],
    views: usize,
    features: &[f32],
    facts: &StudyFacts,
    params: &DecisionParams<'_>,
    now: Instant,
) -> Result<Decision, CoreError> {
    params.check()?;
    let labels = params.temperatures.len();
    if let Some(refused) = gate_input(facts, params) {
        return Ok(refused);
    }
    let merged = merge_views(view_logits, views, labels)?;
    let scores = ood::scores(
        &merged.mean,
        features,
        params.feature_stats.as_ref(),
        params.ood.terms,
    )?;
    let elapsed = now
        .checked_duration_since(facts.received)
        .unwrap_or(Duration::from_ticks(0));
    let gates = GateResults {
        input: None,
        ood: ood::trips(&scores, &params.ood),
        deadline: elapsed > params.budget,
    };
    let reason = if gates.deadline {
        Some(AbstentionReason::Timeout)
    } else if gates.ood {
        Some(AbstentionReason::OutOfDistribution)
    } else {
        None
    };
    let mut outcomes = Vec::new();
    for l in 0..labels {
        let t = params.temperatures[l];
        let calibrated_logit = merged.mean[l] / t;
        let label_call = reason
            .is_none()
            .then(|| call(calibrated_logit, params.thresholds[l], params.bands[l]));
        // Capacity: merge_views refused more than MAX_LABELS labels.
        let _ = outcomes.push(LabelOutcome {
            probability: calibrated_probability(merged.mean[l], t),
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
    use crate::ood::OodTerm;
    use proptest::prelude::*;

    const BANDS: [f32; 16] = [0.2; 16];

    fn params<'a>(temperatures: &'a [f32], thresholds: &'a [f32]) -> DecisionParams<'a> {
        DecisionParams {
            temperatures,
            thresholds,
            bands: &BANDS[..temperatures.len()],
            ood: OodGate {
                terms: &[],
                max_combined: 0.0,
            },
            feature_stats: None,
            input_gate: InputGate::default(),
            budget: Duration::from_secs(10),
        }
    }

    fn adult(at: u64) -> StudyFacts {
        StudyFacts {
            input_class: InputClass::FrontalChest,
            content: None,
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
    fn a_label_without_an_operating_point_is_always_uncertain() {
        let mut p = params(&[1.0, 1.0], &[0.5, 0.5]);
        let bands = [0.2, NO_OPERATING_POINT];
        p.bands = &bands;
        for z in [-1e30f32, -50.0, 50.0, 1e30] {
            let d = decide(&[z, z], 1, &[], &adult(0), &p, Instant::from_secs(1)).unwrap();
            assert_eq!(d.labels[1].call, Some(Call::Uncertain), "{z}");
            assert_ne!(d.labels[0].call, Some(Call::Uncertain), "{z}");
        }
        let minus = [0.2, f32::NEG_INFINITY];
        p.bands = &minus;
        assert!(decide(&[0.0, 0.0], 1, &[], &adult(0), &p, Instant::from_secs(1)).is_err());
    }

    #[test]
    fn negative_is_reachable_below_a_tiny_threshold() {
        // The demo's Nodule threshold was 0.004: an absolute band of 0.05
        // around it could never say Negative.
        let p = params(&[1.0], &[0.004]);
        let d = decide(&[-9.0], 1, &[], &adult(0), &p, Instant::from_secs(1)).unwrap();
        assert_eq!(d.labels[0].call, Some(Call::Negative));
    }

    #[test]
    fn deadline_and_ood_abstain() {
        let p = params(&[1.0], &[0.5]);
        let late = decide(&[1.0], 1, &[], &adult(0), &p, Instant::from_secs(11)).unwrap();
        assert_eq!(
            late.abstention.map(|a| a.reason),
            Some(AbstentionReason::Timeout)
        );
        let terms = [OodTerm {
            kind: OodScoreKind::LowMaxLogit,
            centre: 0.0,
            scale: 1.0,
        }];
        let mut strict = p;
        strict.ood = OodGate {
            terms: &terms,
            max_combined: -5.0,
        };
        let ood = decide(&[1.0], 1, &[], &adult(0), &strict, Instant::from_secs(1)).unwrap();
        assert_eq!(
            ood.abstention.map(|a| a.reason),
            Some(AbstentionReason::OutOfDistribution)
        );
        assert!(ood.gates.ood);
        for d in [late, ood] {
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
        for threshold in [0.0, 1.0] {
            let p = params(&[1.0], core::slice::from_ref(&threshold));
            assert_eq!(
                decide(&[0.0], 1, &[], &adult(0), &p, Instant::from_secs(0))
                    .unwrap_err()
                    .code(),
                "CORE_INVALID_PARAMETER"
            );
        }
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

    /// Valid parameters with every gate armed, two labels, features of width 2.
    struct Armed {
        temperatures: [f32; 2],
        thresholds: [f32; 2],
        bands: [f32; 2],
        terms: [OodTerm; 3],
        scalars: [f32; 3],
        mean: [f32; 2],
        factor: [f32; 4],
    }

    impl Armed {
        fn new() -> Self {
            let term = |kind, centre| OodTerm {
                kind,
                centre,
                scale: 1.0,
            };
            Armed {
                temperatures: [1.0, 1.5],
                thresholds: [0.4, 0.6],
                bands: [0.3, 0.5],
                terms: [
                    term(OodScoreKind::LowJointEnergy, 0.0),
                    term(OodScoreKind::LowMaxLogit, 0.0),
                    term(OodScoreKind::Mahalanobis, 0.0),
                ],
                // cut-off, min age, max age
                scalars: [50.0, 18.0, 120.0],
                mean: [0.0, 0.0],
                factor: [1.0, 0.0, 0.5, 1.0],
            }
        }

        fn params(&self) -> DecisionParams<'_> {
            DecisionParams {
                temperatures: &self.temperatures,
                thresholds: &self.thresholds,
                bands: &self.bands,
                ood: OodGate {
                    terms: &self.terms,
                    max_combined: self.scalars[0],
                },
                feature_stats: Some(FeatureStats {
                    mean: &self.mean,
                    cholesky_lower: &self.factor,
                }),
                input_gate: InputGate {
                    min_age_years: self.scalars[1],
                    max_age_years: Some(self.scalars[2]),
                    allow_unknown_age: true,
                },
                budget: Duration::from_secs(10),
            }
        }

        /// Every float the decision reads, by index.
        fn slots() -> usize {
            2 + 2 + 2 + 3 * 2 + 3 + 2 + 3
        }

        fn poison(&mut self, slot: usize) {
            let nan = f32::NAN;
            match slot {
                0..=1 => self.temperatures[slot] = nan,
                2..=3 => self.thresholds[slot - 2] = nan,
                4..=5 => self.bands[slot - 4] = nan,
                6..=11 => {
                    let t = &mut self.terms[(slot - 6) / 2];
                    if slot.is_multiple_of(2) {
                        t.centre = nan;
                    } else {
                        t.scale = nan;
                    }
                }
                12..=14 => self.scalars[slot - 12] = nan,
                15..=16 => self.mean[slot - 15] = nan,
                // The lower triangle of the factor (the upper one is never read).
                _ => self.factor[[0, 2, 3][slot - 17]] = nan,
            }
        }
    }

    #[test]
    fn armed_parameters_decide_when_nothing_is_poisoned() {
        let armed = Armed::new();
        let d = decide(
            &[2.0, -3.0, 2.5, -3.5],
            2,
            &[0.1, 0.2],
            &adult(0),
            &armed.params(),
            Instant::from_secs(1),
        )
        .unwrap();
        assert_eq!(d.abstention, None);
        assert!(d.labels.iter().all(|l| l.call.is_some()));
    }

    proptest! {
        /// Any NaN in the parameters, the logits or the features ends in
        /// an abstention or an error, never in calls.
        #[test]
        fn a_nan_anywhere_never_yields_a_decision(slot in 0usize..(Armed::slots() + 4 + 2)) {
            let mut armed = Armed::new();
            let mut logits = [2.0f32, -3.0, 2.5, -3.5];
            let mut features = [0.1f32, 0.2];
            let params_slots = Armed::slots();
            if slot < params_slots {
                armed.poison(slot);
            } else if slot < params_slots + 4 {
                logits[slot - params_slots] = f32::NAN;
            } else {
                features[slot - params_slots - 4] = f32::NAN;
            }
            let result = decide(&logits, 2, &features, &adult(0), &armed.params(), Instant::from_secs(1));
            match result {
                Err(_) => {}
                Ok(d) => {
                    prop_assert!(d.abstention.is_some(), "slot {} decided: {:?}", slot, d);
                    prop_assert!(d.labels.iter().all(|l| l.call.is_none()));
                }
            }
        }
    }

    #[test]
    fn all_uncertain_is_undecided() {
        let p = params(&[1.0, 1.0], &[0.5, 0.5]);
        let d = decide(&[0.0, 0.01], 1, &[], &adult(0), &p, Instant::from_secs(1)).unwrap();
        assert!(d.is_undecided());
        let d = decide(&[0.0, 5.0], 1, &[], &adult(0), &p, Instant::from_secs(1)).unwrap();
        assert!(!d.is_undecided());
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
            cut in prop::option::of(-5.0f32..5.0),
        ) {
            let labels = logits.len() / 2;
            prop_assume!(labels > 0);
            let views = 2;
            let temps = std::vec![1.5f32; labels];
            let thresholds = std::vec![0.5f32; labels];
            let terms = [OodTerm { kind: OodScoreKind::LowJointEnergy, centre: 0.0, scale: 1.0 }];
            let mut p = params(&temps, &thresholds);
            if let Some(max_combined) = cut {
                p.ood = OodGate { terms: &terms, max_combined };
            }
            let facts = StudyFacts { input_class: class, content: None, age_years: age, received: Instant::from_secs(0) };
            let d = decide(&logits[..views * labels], views, &[], &facts, &p, Instant::from_secs(elapsed)).unwrap();
            match d.abstention {
                Some(_) => prop_assert!(d.labels.iter().all(|l| l.call.is_none())),
                None => {
                    prop_assert!(class.may_be_classified());
                    prop_assert!(d.labels.iter().all(|l| l.call.is_some()));
                    prop_assert!(!d.gates.ood && !d.gates.deadline);
                }
            }
        }
    }
}
