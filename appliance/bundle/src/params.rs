//! Everything `prepare` and `decide` need, as the trainer fits it and the
//! bundle carries it. The developer mode's loose TOML file has the same shape.

use cxr_core::limits::{MAX_LABELS, MAX_VIEWS};
use cxr_core::ood::{FeatureStats, OodGate, OodTerm};
use cxr_core::{ContentCuts, DecisionParams, InputGate};
use cxr_model::{GateSpec, VitSpec};
use cxr_preprocess::{Channels, InputSpec, TtaView};
use embassy_time::Duration;
use serde::{Deserialize, Serialize};

use crate::BundleError;

/// Mahalanobis statistics: mean `[D]` and lower Cholesky factor `[D * D]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStatsData {
    pub mean: Vec<f32>,
    pub cholesky_lower: Vec<f32>,
}

/// The OOD gate as the bundle carries it: the kept scores, standardised
/// and averaged, tripped above `max_combined`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodGateData {
    /// Kept scores; empty when none beat chance at fit time (no OOD gate).
    pub terms: Vec<OodTerm>,
    pub max_combined: f32,
    /// Share of in-distribution validation studies the cut-off passes
    /// (documentation of the fit; the gate reads only `max_combined`).
    pub coverage: f32,
}

impl OodGateData {
    /// No OOD gate.
    pub fn none() -> Self {
        OodGateData {
            terms: Vec::new(),
            max_combined: 0.0,
            coverage: 1.0,
        }
    }
}

/// The content gate as the bundle carries it: its shape, its own input
/// definition (the same `prepare`, another size) and its cut-offs. Its graph
/// and golden vectors are bundle members of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentGateData {
    pub spec: GateSpec,
    pub input: InputSpec,
    pub cuts: ContentCuts,
    /// Share of held-out frontal films the cuts accept (documentation of
    /// the fit; the gate reads only `cuts`).
    pub acceptance: f32,
}

impl ContentGateData {
    pub fn validate(&self) -> Result<(), BundleError> {
        self.spec
            .validate()
            .map_err(|e| invalid(format!("content gate spec: {e}")))?;
        self.input
            .validate()
            .map_err(|e| invalid(format!("content gate input spec: {e}")))?;
        if self.input.size as usize != self.spec.image_size || self.input.channels != Channels::One
        {
            return Err(invalid(format!(
                "content gate input {} px, {:?}: the gate takes one f32 channel of {} px",
                self.input.size, self.input.channels, self.spec.image_size
            )));
        }
        self.cuts
            .check_parameters()
            .map_err(|field| invalid(format!("{field} is out of range or not finite")))?;
        if !(self.acceptance > 0.0 && self.acceptance <= 1.0) {
            return Err(invalid("content_gate.acceptance must lie in (0, 1]".into()));
        }
        Ok(())
    }
}

/// The model spec, input definition and decision parameters of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    pub labels: Vec<String>,
    pub temperatures: Vec<f32>,
    /// Whether each label's temperature was fitted (its validation data had
    /// both classes); an uncalibrated label keeps temperature 1.
    pub calibrated: Vec<bool>,
    /// Per-label threshold on the calibrated probability, in (0, 1).
    pub thresholds: Vec<f32>,
    /// Per-label half-width of the Uncertain band around the threshold, in
    /// logit units (see `cxr_core::calibration::call`).
    pub bands: Vec<f32>,
    /// Time allowed per study, milliseconds.
    pub budget_ms: u64,
    pub model: VitSpec,
    pub input: InputSpec,
    /// Test-time views; the first must be the identity (its pooled feature feeds Mahalanobis).
    pub tta: Vec<TtaView>,
    pub ood: OodGateData,
    pub gate: InputGate,
    pub feature_stats: Option<FeatureStatsData>,
    /// Required in every locked bundle; absent only in developer mode's
    /// loose files (which then gate on tags alone).
    #[serde(default)]
    pub content_gate: Option<ContentGateData>,
}

/// Bounds of a test-time view.
pub const MAX_TTA_ROTATION_DEG: f32 = 30.0;
pub const MIN_TTA_SCALE: f32 = 0.5;
pub const MAX_TTA_SCALE: f32 = 2.0;

impl FeatureStatsData {
    /// Shapes match the model width, every value is finite, the factor is
    /// lower-triangular with a positive diagonal.
    pub fn validate(&self, width: usize) -> Result<(), BundleError> {
        let d = width;
        if self.mean.len() != d || self.cholesky_lower.len() != d * d {
            return Err(invalid(format!(
                "feature statistics do not match width {d}"
            )));
        }
        if let Some(i) = self.mean.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!("feature mean {i} is not finite")));
        }
        for (k, v) in self.cholesky_lower.iter().enumerate() {
            let (i, j) = (k / d, k % d);
            let ok = match j.cmp(&i) {
                std::cmp::Ordering::Less => v.is_finite(),
                std::cmp::Ordering::Equal => v.is_finite() && *v > 0.0,
                std::cmp::Ordering::Greater => *v == 0.0,
            };
            if !ok {
                return Err(invalid(format!(
                    "Cholesky factor entry ({i}, {j}) = {v}: the factor must be finite, lower-triangular, with a positive diagonal"
                )));
            }
        }
        Ok(())
    }
}

fn invalid(problem: String) -> BundleError {
    BundleError::InvalidParameters { problem }
}

impl ModelParams {
    /// Neutral parameters for a model: temperature 1 (uncalibrated),
    /// threshold 0.5 with a band of 0.2 logits, the identity view plus four
    /// small rotations/scalings, no OOD gate.
    pub fn neutral(model: VitSpec, labels: Vec<String>) -> Self {
        let n = labels.len();
        let view = |rotation_deg, scale| TtaView {
            rotation_deg,
            scale,
            hflip: false,
        };
        ModelParams {
            temperatures: vec![1.0; n],
            calibrated: vec![false; n],
            thresholds: vec![0.5; n],
            bands: vec![0.2; n],
            labels,
            budget_ms: 60_000,
            input: InputSpec {
                size: model.image_size as u32,
                channels: if model.in_channels == 3 {
                    Channels::Three
                } else {
                    Channels::One
                },
                ..InputSpec::default()
            },
            model,
            tta: vec![
                view(0.0, 1.0),
                view(-5.0, 1.0),
                view(5.0, 1.0),
                view(0.0, 0.95),
                view(0.0, 1.05),
            ],
            ood: OodGateData::none(),
            gate: InputGate::default(),
            feature_stats: None,
            content_gate: None,
        }
    }

    /// Parse the TOML form (developer mode, and `cxr-trainer lock`'s input).
    pub fn from_toml(text: &str) -> Result<Self, BundleError> {
        let p: ModelParams = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), BundleError> {
        self.model
            .validate()
            .map_err(|e| invalid(format!("model spec: {e}")))?;
        let n = self.labels.len();
        if n != self.model.labels {
            return Err(invalid(format!(
                "{n} label names for a model with {} labels",
                self.model.labels
            )));
        }
        if n == 0 || n > MAX_LABELS {
            return Err(invalid(format!(
                "{n} labels; the decision core takes 1 to {MAX_LABELS}"
            )));
        }
        if self.temperatures.len() != n
            || self.thresholds.len() != n
            || self.bands.len() != n
            || self.calibrated.len() != n
        {
            return Err(invalid(
                "need one temperature, calibration flag, threshold and band per label".into(),
            ));
        }
        if let Some(j) = (0..n).find(|&j| !self.calibrated[j] && self.temperatures[j] != 1.0) {
            return Err(invalid(format!(
                "label {} is marked uncalibrated but has temperature {}",
                self.labels[j], self.temperatures[j]
            )));
        }
        if !(self.ood.coverage > 0.0 && self.ood.coverage <= 1.0) {
            return Err(invalid("ood.coverage must lie in (0, 1]".into()));
        }
        if self.tta.is_empty() || self.tta.len() > MAX_VIEWS {
            return Err(invalid(format!("between 1 and {MAX_VIEWS} TTA views")));
        }
        if self.tta[0] != TtaView::IDENTITY {
            return Err(invalid("the first TTA view must be the identity".into()));
        }
        if self.input.size as usize != self.model.image_size {
            return Err(invalid(format!(
                "input size {} but model size {}",
                self.input.size, self.model.image_size
            )));
        }
        if self.input.channels.count() != self.model.in_channels {
            return Err(invalid("input channels differ from the model's".into()));
        }
        if let Some(stats) = &self.feature_stats {
            stats.validate(self.model.width)?;
        }
        self.validate_views()?;
        if self.budget_ms == 0 {
            return Err(invalid("budget_ms must be positive".into()));
        }
        // Every gate's numbers: NaN, infinities, a cut-off without its
        // statistics (each of which would switch a gate off).
        self.decision_params()
            .check()
            .map_err(|e| invalid(format!("{e} ({})", e.code())))?;
        self.input
            .validate()
            .map_err(|e| invalid(format!("input spec: {e}")))?;
        if let Some(gate) = &self.content_gate {
            gate.validate()?;
        }
        Ok(())
    }

    /// Test-time views are small rotations and scalings. A flip is refused:
    /// a mirrored chest (heart on the right) is not a view of the same film
    /// that the model was trained to read.
    fn validate_views(&self) -> Result<(), BundleError> {
        for (i, v) in self.tta.iter().enumerate() {
            if v.hflip {
                return Err(invalid(format!(
                    "TTA view {i} flips the image; flips are refused"
                )));
            }
            if !(v.rotation_deg.is_finite() && v.rotation_deg.abs() <= MAX_TTA_ROTATION_DEG) {
                return Err(invalid(format!(
                    "TTA view {i}: rotation {} is not within ±{MAX_TTA_ROTATION_DEG} degrees",
                    v.rotation_deg
                )));
            }
            if !(v.scale >= MIN_TTA_SCALE && v.scale <= MAX_TTA_SCALE) {
                return Err(invalid(format!(
                    "TTA view {i}: scale {} is not within [{MIN_TTA_SCALE}, {MAX_TTA_SCALE}]",
                    v.scale
                )));
            }
        }
        Ok(())
    }

    /// What the OOD gate enforces, in words.
    pub fn ood_gate_summary(&self) -> String {
        let params = self;
        if params.ood.terms.is_empty() {
            return "none (no score separated unusual studies from adult test films better than chance at fit time)".into();
        }
        let terms: Vec<String> = params
            .ood
            .terms
            .iter()
            .map(|t| {
                format!(
                    "{} (centre {:.4}, scale {:.4})",
                    t.kind.name(),
                    t.centre,
                    t.scale
                )
            })
            .collect();
        format!(
        "abstain when the mean of the standardised scores {} (each floored at 0) exceeds {:.4} (fitted to pass {:.1}% of in-distribution validation studies)",
        terms.join(", "),
        params.ood.max_combined,
        f64::from(params.ood.coverage) * 100.0
    )
    }

    /// What the tag-based input gate enforces, in words.
    pub fn input_gate_summary(&self) -> String {
        let params = self;
        let g = &params.gate;
        format!(
        "only studies whose tags show a frontal (PA/AP) chest radiograph reach the model; laterals, decubitus views, other body parts, CT/MR/US/NM and studies whose tags do not say are refused; age at least {} years{}; a study without an age {}",
        g.min_age_years,
        g.max_age_years
            .map(|m| format!(" and at most {m}"))
            .unwrap_or_default(),
        if g.allow_unknown_age { "passes" } else { "is refused" }
    )
    }

    /// The decision core's view of these parameters (borrowed, no copy).
    pub fn decision_params(&self) -> DecisionParams<'_> {
        DecisionParams {
            temperatures: &self.temperatures,
            thresholds: &self.thresholds,
            bands: &self.bands,
            ood: OodGate {
                terms: &self.ood.terms,
                max_combined: self.ood.max_combined,
            },
            feature_stats: self.feature_stats.as_ref().map(|s| FeatureStats {
                mean: &s.mean,
                cholesky_lower: &s.cholesky_lower,
            }),
            input_gate: self.gate,
            budget: Duration::from_millis(self.budget_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_params_round_trip_through_toml_and_postcard_and_validate() {
        let p = ModelParams::neutral(VitSpec::tiny(), (0..5).map(|i| format!("L{i}")).collect());
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(ModelParams::from_toml(&text).unwrap(), p);
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<ModelParams>(&bytes).unwrap(), p);
        let mut bad = p.clone();
        bad.thresholds.pop();
        assert_eq!(
            bad.validate().unwrap_err().code(),
            "BUNDLE_INVALID_PARAMETERS"
        );
        let mut bad = p;
        bad.temperatures[0] = 0.0;
        assert!(bad.validate().is_err());
    }

    fn armed() -> ModelParams {
        let spec = VitSpec::tiny();
        let mut p = ModelParams::neutral(spec, (0..spec.labels).map(|i| format!("L{i}")).collect());
        let d = spec.width;
        let mut factor = vec![0.0; d * d];
        for i in 0..d {
            factor[i * d + i] = 1.0;
        }
        p.feature_stats = Some(FeatureStatsData {
            mean: vec![0.0; d],
            cholesky_lower: factor,
        });
        let term = |kind| OodTerm {
            kind,
            centre: 1.0,
            scale: 2.0,
        };
        p.ood = OodGateData {
            terms: cxr_core::ood::OodScoreKind::ALL
                .iter()
                .map(|k| term(*k))
                .collect(),
            max_combined: 3.0,
            coverage: 0.975,
        };
        p.calibrated = vec![true; p.labels.len()];
        p.temperatures[0] = 1.3;
        p.gate.max_age_years = Some(110.0);
        p
    }

    /// Every float the parameters carry, as a mutable reference.
    fn floats(p: &mut ModelParams) -> Vec<&mut f32> {
        let mut out: Vec<&mut f32> = Vec::new();
        out.extend(p.temperatures.iter_mut());
        out.extend(p.thresholds.iter_mut());
        out.extend(p.bands.iter_mut());
        for v in &mut p.tta {
            out.push(&mut v.rotation_deg);
            out.push(&mut v.scale);
        }
        for t in &mut p.ood.terms {
            out.push(&mut t.centre);
            out.push(&mut t.scale);
        }
        out.push(&mut p.ood.max_combined);
        out.push(&mut p.ood.coverage);
        out.push(&mut p.gate.min_age_years);
        out.extend(p.gate.max_age_years.iter_mut());
        if let Some(s) = &mut p.feature_stats {
            out.extend(s.mean.iter_mut());
            out.extend(s.cholesky_lower.iter_mut());
        }
        out
    }

    #[test]
    fn a_non_finite_value_anywhere_is_refused() {
        let mut p = armed();
        p.validate().unwrap();
        let count = floats(&mut p).len();
        assert!(count > 1000, "{count}");
        // Bands come third in `floats`: +inf there is a label without an
        // operating point (always Uncertain), the one non-finite value allowed.
        let n = p.labels.len();
        let bands = 2 * n..3 * n;
        for i in 0..count {
            for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut bad = p.clone();
                *floats(&mut bad).remove(i) = poison;
                if bands.contains(&i) && poison == f32::INFINITY {
                    assert!(
                        bad.validate().is_ok(),
                        "no operating point for label {}",
                        i - 2 * n
                    );
                    continue;
                }
                assert_eq!(
                    bad.validate().map_err(|e| e.code()),
                    Err("BUNDLE_INVALID_PARAMETERS"),
                    "float {i} set to {poison} was accepted"
                );
            }
        }
    }

    #[test]
    fn gates_that_would_be_switched_off_are_refused() {
        let mut flip = armed();
        flip.tta[1].hflip = true;
        let mut no_stats = armed();
        no_stats.feature_stats = None;
        let mut uncalibrated = armed();
        uncalibrated.calibrated[0] = false;
        let mut zero_threshold = armed();
        zero_threshold.thresholds[1] = 0.0;
        let mut wide = armed();
        wide.bands[2] = 9.0;
        let mut singular = armed();
        singular.feature_stats.as_mut().unwrap().cholesky_lower[0] = 0.0;
        let mut upper = armed();
        upper.feature_stats.as_mut().unwrap().cholesky_lower[1] = 0.5;
        let mut zero_scale = armed();
        zero_scale.tta[3].scale = 0.0;
        let mut ages = armed();
        ages.gate.max_age_years = Some(10.0);
        let mut budget = armed();
        budget.budget_ms = 0;
        for (what, p) in [
            ("a flipped view", flip),
            ("a Mahalanobis term without statistics", no_stats),
            (
                "a fitted temperature on a label marked uncalibrated",
                uncalibrated,
            ),
            ("a threshold of 0", zero_threshold),
            ("a band wider than 8 logits", wide),
            ("a zero on the factor's diagonal", singular),
            ("a factor that is not lower-triangular", upper),
            ("a zero scale", zero_scale),
            ("a maximum age below the minimum", ages),
            ("a zero budget", budget),
        ] {
            assert!(p.validate().is_err(), "{what} was accepted");
        }
    }
}
