//! What an uncertain or missing label becomes in the loss.

use serde::{Deserialize, Serialize};

use super::LabelValue;

/// Per-label handling of CheXpert's uncertain (-1) labels (Irvin et al. 2019).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum UncertaintyPolicy {
    /// Uncertain counts as positive.
    UOnes,
    /// Uncertain counts as negative.
    UZeros,
    /// Uncertain is left out of the loss (mask 0).
    Ignore,
    /// Label-smoothing regularisation: uncertain becomes a soft target drawn
    /// uniformly from `[low, high]` (fixed per sample by the caller's draw).
    Lsr { low: f32, high: f32 },
}

/// A soft target and its loss weight (0 masks the label out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub value: f32,
    pub mask: f32,
}

impl UncertaintyPolicy {
    /// The target for one label value. `draw` in `[0, 1)` places an LSR
    /// target inside its range; `missing_is_negative` follows the source's
    /// convention for blanks (CheXpert and MIMIC: negative; otherwise masked).
    pub fn target(self, value: LabelValue, draw: f32, missing_is_negative: bool) -> Target {
        let t = |value, mask| Target { value, mask };
        match value {
            LabelValue::Positive => t(1.0, 1.0),
            LabelValue::Negative => t(0.0, 1.0),
            LabelValue::Missing if missing_is_negative => t(0.0, 1.0),
            LabelValue::Missing => t(0.0, 0.0),
            LabelValue::Uncertain => match self {
                UncertaintyPolicy::UOnes => t(1.0, 1.0),
                UncertaintyPolicy::UZeros => t(0.0, 1.0),
                UncertaintyPolicy::Ignore => t(0.0, 0.0),
                UncertaintyPolicy::Lsr { low, high } => {
                    t(low + (high - low) * draw.clamp(0.0, 1.0), 1.0)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_maps_uncertain_as_published() {
        let u = LabelValue::Uncertain;
        assert_eq!(
            UncertaintyPolicy::UOnes.target(u, 0.3, true),
            Target {
                value: 1.0,
                mask: 1.0
            }
        );
        assert_eq!(
            UncertaintyPolicy::UZeros.target(u, 0.3, true),
            Target {
                value: 0.0,
                mask: 1.0
            }
        );
        assert_eq!(UncertaintyPolicy::Ignore.target(u, 0.3, true).mask, 0.0);
        let lsr = UncertaintyPolicy::Lsr {
            low: 0.55,
            high: 0.85,
        };
        assert!((lsr.target(u, 0.5, true).value - 0.7).abs() < 1e-6);
        assert_eq!(lsr.target(LabelValue::Positive, 0.5, true).value, 1.0);
        assert_eq!(lsr.target(LabelValue::Missing, 0.5, false).mask, 0.0);
        assert_eq!(
            lsr.target(LabelValue::Missing, 0.5, true),
            Target {
                value: 0.0,
                mask: 1.0
            }
        );
    }
}
