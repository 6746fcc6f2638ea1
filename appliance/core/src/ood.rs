//! Out-of-distribution scores on one study, and the gate that combines them.
//!
//! - **JointEnergy** (multi-label energy): `sum_l log(1 + exp(z_l))`. Higher
//!   means more in-distribution; the gate trips when it falls below its cut-off.
//! - **Max-logit**: `max_l z_l`; trips below its cut-off.
//! - **ODIN-T**: `max_l sigmoid(z_l / T)` with the ODIN temperature `T`. This is
//!   ODIN *without* its input perturbation: the perturbation needs the gradient
//!   of the score with respect to the input, and the edge engines compute no
//!   gradients. Trips below its cut-off.
//! - **Mahalanobis**: the distance of the pooled feature to the training mean
//!   under the fitted covariance, from a stored mean and lower Cholesky factor.
//!   Trips above its cut-off.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_FEATURES;
use crate::math::{sigmoid, softplus};
use crate::CoreError;

/// The scores of one study.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OodScores {
    pub joint_energy: f32,
    pub max_logit: f32,
    pub odin_t: f32,
    /// `None` when the bundle carries no feature statistics.
    pub mahalanobis: Option<f32>,
}

/// Cut-offs; `None` disables that score's gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OodCutoffs {
    pub min_joint_energy: Option<f32>,
    pub min_max_logit: Option<f32>,
    pub min_odin_t: Option<f32>,
    pub max_mahalanobis: Option<f32>,
}

/// Which gates tripped. The study is out of distribution if any did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OodGates {
    pub joint_energy: bool,
    pub max_logit: bool,
    pub odin_t: bool,
    pub mahalanobis: bool,
}

impl OodGates {
    pub fn any(&self) -> bool {
        self.joint_energy || self.max_logit || self.odin_t || self.mahalanobis
    }
}

/// Feature statistics for Mahalanobis: mean `[D]` and the lower Cholesky
/// factor `L` of the covariance, `[D, D]` row-major (`Sigma = L L^T`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureStats<'a> {
    pub mean: &'a [f32],
    pub cholesky_lower: &'a [f32],
}

pub fn joint_energy(logits: &[f32]) -> f32 {
    logits.iter().map(|z| softplus(*z)).sum()
}

pub fn max_logit(logits: &[f32]) -> f32 {
    logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

pub fn odin_t(logits: &[f32], temperature: f32) -> f32 {
    logits
        .iter()
        .map(|z| sigmoid(z / temperature))
        .fold(0.0, f32::max)
}

/// `sqrt((x - mean)^T Sigma^-1 (x - mean))`, by forward substitution
/// `L y = x - mean`, so the distance is `|y|`. No allocation: the scratch
/// vector lives on the stack.
pub fn mahalanobis(x: &[f32], stats: &FeatureStats<'_>) -> Result<f32, CoreError> {
    let d = x.len();
    if d == 0 || d > MAX_FEATURES || stats.mean.len() != d || stats.cholesky_lower.len() != d * d {
        return Err(CoreError::FeatureShape {
            features: d,
            mean: stats.mean.len(),
            factor: stats.cholesky_lower.len(),
        });
    }
    let l = stats.cholesky_lower;
    let mut y: Vec<f32, MAX_FEATURES> = Vec::new();
    let mut sum = 0.0f64;
    for i in 0..d {
        let mut acc = f64::from(x[i] - stats.mean[i]);
        for (j, yj) in y.iter().enumerate() {
            acc -= f64::from(l[i * d + j]) * f64::from(*yj);
        }
        let diag = l[i * d + i];
        if !(diag.is_finite() && diag > 0.0) {
            return Err(CoreError::SingularCovariance { index: i });
        }
        let yi = (acc / f64::from(diag)) as f32;
        sum += f64::from(yi) * f64::from(yi);
        // Capacity: d <= MAX_FEATURES was checked above.
        let _ = y.push(yi);
    }
    Ok(libm::sqrt(sum) as f32)
}

/// All scores of one study. `features` may be empty when `stats` is `None`.
pub fn scores(
    logits: &[f32],
    features: &[f32],
    odin_temperature: f32,
    stats: Option<&FeatureStats<'_>>,
) -> Result<OodScores, CoreError> {
    Ok(OodScores {
        joint_energy: joint_energy(logits),
        max_logit: max_logit(logits),
        odin_t: odin_t(logits, odin_temperature),
        mahalanobis: stats.map(|s| mahalanobis(features, s)).transpose()?,
    })
}

/// Compare every score with its cut-off.
pub fn gate(scores: &OodScores, cutoffs: &OodCutoffs) -> OodGates {
    // NaN trips every gate: fail closed.
    let below = |v: f32, cut: Option<f32>| cut.is_some_and(|c| v.is_nan() || v < c);
    OodGates {
        joint_energy: below(scores.joint_energy, cutoffs.min_joint_energy),
        max_logit: below(scores.max_logit, cutoffs.min_max_logit),
        odin_t: below(scores.odin_t, cutoffs.min_odin_t),
        mahalanobis: match (scores.mahalanobis, cutoffs.max_mahalanobis) {
            (Some(d), Some(c)) => d.is_nan() || d > c,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec as StdVec;

    use super::*;
    use proptest::prelude::*;

    /// Naive reference: build Sigma = L L^T, invert it by Gauss-Jordan, and
    /// evaluate the quadratic form directly.
    fn naive(x: &[f32], mean: &[f32], l: &[f32]) -> f64 {
        let d = x.len();
        let mut sigma = std::vec![0.0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                sigma[i * d + j] = (0..d)
                    .map(|k| f64::from(l[i * d + k]) * f64::from(l[j * d + k]))
                    .sum();
            }
        }
        let mut inv = std::vec![0.0f64; d * d];
        for i in 0..d {
            inv[i * d + i] = 1.0;
        }
        for c in 0..d {
            let p = sigma[c * d + c];
            for k in 0..d {
                sigma[c * d + k] /= p;
                inv[c * d + k] /= p;
            }
            for r in 0..d {
                if r != c {
                    let f = sigma[r * d + c];
                    for k in 0..d {
                        sigma[r * d + k] -= f * sigma[c * d + k];
                        inv[r * d + k] -= f * inv[c * d + k];
                    }
                }
            }
        }
        let diff: StdVec<f64> = x.iter().zip(mean).map(|(a, b)| f64::from(a - b)).collect();
        let q: f64 = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| diff[i] * inv[i * d + j] * diff[j])
                    .sum::<f64>()
            })
            .sum();
        q.sqrt()
    }

    fn lower_factor(d: usize) -> impl Strategy<Value = StdVec<f32>> {
        prop::collection::vec(-0.5f32..0.5, d * d).prop_map(move |mut v| {
            for i in 0..d {
                for j in 0..d {
                    if j > i {
                        v[i * d + j] = 0.0;
                    } else if j == i {
                        v[i * d + j] = 0.5 + v[i * d + j].abs() * 2.0;
                    }
                }
            }
            v
        })
    }

    proptest! {
        #[test]
        fn mahalanobis_equals_the_naive_formula(
            (x, mean, l) in (1usize..7).prop_flat_map(|d| (
                prop::collection::vec(-3.0f32..3.0, d),
                prop::collection::vec(-3.0f32..3.0, d),
                lower_factor(d),
            ))
        ) {
            let fast = mahalanobis(&x, &FeatureStats { mean: &mean, cholesky_lower: &l }).unwrap();
            let slow = naive(&x, &mean, &l);
            prop_assert!((f64::from(fast) - slow).abs() <= 1e-3 * slow.max(1.0), "{} vs {}", fast, slow);
        }
    }

    #[test]
    fn identity_covariance_is_euclidean_and_shapes_are_checked() {
        let l = [1.0, 0.0, 0.0, 1.0];
        let stats = FeatureStats {
            mean: &[1.0, 1.0],
            cholesky_lower: &l,
        };
        assert_eq!(mahalanobis(&[4.0, 5.0], &stats).unwrap(), 5.0);
        assert!(mahalanobis(&[1.0], &stats).is_err());
        let singular = [0.0, 0.0, 0.0, 1.0];
        let stats = FeatureStats {
            mean: &[0.0, 0.0],
            cholesky_lower: &singular,
        };
        assert_eq!(
            mahalanobis(&[1.0, 1.0], &stats),
            Err(CoreError::SingularCovariance { index: 0 })
        );
    }

    #[test]
    fn energy_and_gates() {
        let logits = [0.0, 0.0];
        assert!((joint_energy(&logits) - 2.0 * core::f32::consts::LN_2).abs() < 1e-6);
        let s = scores(&[-8.0, -9.0], &[], 1.0, None).unwrap();
        let cut = OodCutoffs {
            min_joint_energy: Some(0.01),
            min_max_logit: None,
            min_odin_t: None,
            max_mahalanobis: Some(1.0),
        };
        let g = gate(&s, &cut);
        assert!(g.joint_energy && !g.max_logit && !g.mahalanobis && g.any());
        let none = OodCutoffs {
            min_joint_energy: None,
            min_max_logit: None,
            min_odin_t: None,
            max_mahalanobis: None,
        };
        assert!(!gate(&s, &none).any());
        // A NaN score trips its gate (fail closed).
        let nan = OodScores {
            joint_energy: f32::NAN,
            ..s
        };
        assert!(gate(&nan, &cut).joint_energy);
    }
}
