//! Developer mode: the model spec and decision parameters as a TOML file.
//! The signed bundle (a later issue) replaces this file; the audit log will
//! mark inferences made this way as developer mode.

use anyhow::{ensure, Context};
use cxr_core::limits::{MAX_LABELS, MAX_VIEWS};
use cxr_core::ood::OodCutoffs;
use cxr_core::InputGate;
use cxr_model::VitSpec;
use cxr_preprocess::{Channels, InputSpec, TtaView};
use serde::{Deserialize, Serialize};

/// Mahalanobis statistics: mean `[D]` and lower Cholesky factor `[D * D]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureStatsFile {
    pub mean: Vec<f32>,
    pub cholesky_lower: Vec<f32>,
}

/// Everything `classify` needs besides the ONNX file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyParams {
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
    pub feature_stats: Option<FeatureStatsFile>,
}

impl ClassifyParams {
    /// Neutral parameters for a model: temperature 1, threshold 0.5, the
    /// identity view plus four small rotations/scalings, OOD gates off.
    pub fn neutral(model: VitSpec, labels: Vec<String>) -> Self {
        let n = labels.len();
        let view = |rotation_deg, scale| TtaView {
            rotation_deg,
            scale,
            hflip: false,
        };
        ClassifyParams {
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

    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let params: ClassifyParams =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        params.validate()?;
        Ok(params)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.model.validate()?;
        let n = self.labels.len();
        ensure!(
            n == self.model.labels,
            "{n} label names for a model with {} labels",
            self.model.labels
        );
        ensure!(
            n <= MAX_LABELS,
            "{n} labels, the decision core takes at most {MAX_LABELS}"
        );
        ensure!(
            self.temperatures.len() == n && self.thresholds.len() == n,
            "need one temperature and one threshold per label"
        );
        ensure!(
            !self.tta.is_empty() && self.tta.len() <= MAX_VIEWS,
            "between 1 and {MAX_VIEWS} TTA views"
        );
        ensure!(
            self.tta[0] == TtaView::IDENTITY,
            "the first TTA view must be the identity"
        );
        ensure!(
            self.input.size as usize == self.model.image_size,
            "input size {} but model size {}",
            self.input.size,
            self.model.image_size
        );
        ensure!(
            self.input.channels.count() == self.model.in_channels,
            "input channels differ from the model's"
        );
        if let Some(stats) = &self.feature_stats {
            let d = self.model.width;
            ensure!(
                stats.mean.len() == d && stats.cholesky_lower.len() == d * d,
                "feature statistics do not match width {d}"
            );
        }
        self.input.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_params_round_trip_through_toml_and_validate() {
        let p = ClassifyParams::neutral(VitSpec::tiny(), (0..5).map(|i| format!("L{i}")).collect());
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        let back: ClassifyParams = toml::from_str(&text).unwrap();
        back.validate().unwrap();
        assert_eq!(back.tta, p.tta);
        let mut bad = p.clone();
        bad.thresholds.pop();
        assert!(bad.validate().is_err());
    }
}
