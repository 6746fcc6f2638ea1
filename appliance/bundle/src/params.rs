//! Everything `prepare` and `decide` need, as the trainer fits it and the
//! bundle carries it. The developer mode's loose TOML file has the same shape.

use cxr_core::limits::{MAX_LABELS, MAX_VIEWS};
use cxr_core::ood::{FeatureStats, OodCutoffs};
use cxr_core::{DecisionParams, InputGate};
use cxr_model::VitSpec;
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

/// The model spec, input definition and decision parameters of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    pub labels: Vec<String>,
    pub temperatures: Vec<f32>,
    pub thresholds: Vec<f32>,
    pub uncertainty_band: f32,
    pub max_tta_spread: Option<f32>,
    pub odin_temperature: f32,
    /// Time allowed per study, milliseconds.
    pub budget_ms: u64,
    pub model: VitSpec,
    pub input: InputSpec,
    /// Test-time views; the first must be the identity (its pooled feature feeds Mahalanobis).
    pub tta: Vec<TtaView>,
    pub ood: OodCutoffs,
    pub gate: InputGate,
    pub feature_stats: Option<FeatureStatsData>,
}

fn invalid(problem: String) -> BundleError {
    BundleError::InvalidParameters { problem }
}

impl ModelParams {
    /// Neutral parameters for a model: temperature 1, threshold 0.5, the
    /// identity view plus four small rotations/scalings, OOD gates off.
    pub fn neutral(model: VitSpec, labels: Vec<String>) -> Self {
        let n = labels.len();
        let view = |rotation_deg, scale| TtaView {
            rotation_deg,
            scale,
            hflip: false,
        };
        ModelParams {
            temperatures: vec![1.0; n],
            thresholds: vec![0.5; n],
            labels,
            uncertainty_band: 0.05,
            max_tta_spread: None,
            odin_temperature: 1000.0,
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
            ood: OodCutoffs {
                min_joint_energy: None,
                min_max_logit: None,
                min_odin_t: None,
                max_mahalanobis: None,
            },
            gate: InputGate::default(),
            feature_stats: None,
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
        if self.temperatures.len() != n || self.thresholds.len() != n {
            return Err(invalid(
                "need one temperature and one threshold per label".into(),
            ));
        }
        if self
            .temperatures
            .iter()
            .any(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(invalid("temperatures must be finite and positive".into()));
        }
        if self.thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) {
            return Err(invalid("thresholds must lie in [0, 1]".into()));
        }
        if !(0.0..0.5).contains(&self.uncertainty_band) {
            return Err(invalid("uncertainty_band must lie in [0, 0.5)".into()));
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
            let d = self.model.width;
            if stats.mean.len() != d || stats.cholesky_lower.len() != d * d {
                return Err(invalid(format!(
                    "feature statistics do not match width {d}"
                )));
            }
        }
        self.input
            .validate()
            .map_err(|e| invalid(format!("input spec: {e}")))?;
        Ok(())
    }

    /// The decision core's view of these parameters (borrowed, no copy).
    pub fn decision_params(&self) -> DecisionParams<'_> {
        DecisionParams {
            temperatures: &self.temperatures,
            thresholds: &self.thresholds,
            uncertainty_band: self.uncertainty_band,
            max_tta_spread: self.max_tta_spread,
            odin_temperature: self.odin_temperature,
            ood_cutoffs: self.ood,
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
}
