//! Out-of-distribution scores on one study, and the one gate that combines
//! the scores a bundle keeps.
//!
//! Candidate scores, each oriented so that **higher means more unusual**:
//! - **Low JointEnergy**: `-sum_l log(1 + exp(z_l))`.
//! - **Low max-logit**: `-max_l z_l`.
//! - **Mahalanobis**: the distance of the pooled feature to the training mean
//!   under the fitted covariance, from a stored mean and lower Cholesky factor.
//!
//! The logit scores reward confident *positive* findings, which is backwards
//! for a multi-label model whose normal films have all-low logits: a bundle
//! keeps a score only if, at fit time, it told held-out unusual studies from
//! adult test films better than chance. (ODIN without its input
//! perturbation is a monotone transform of max-logit, so it is not a
//! separate score.) The kept scores are standardised with their
//! in-distribution centre and scale and averaged into one combined score,
//! which trips the gate above one cut-off fitted at a stated
//! in-distribution coverage.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_FEATURES;
use crate::math::{at_most, softplus};
use crate::CoreError;

/// The candidate scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OodScoreKind {
    LowJointEnergy,
    LowMaxLogit,
    Mahalanobis,
}

impl OodScoreKind {
    pub const ALL: [OodScoreKind; 3] = [
        OodScoreKind::LowJointEnergy,
        OodScoreKind::LowMaxLogit,
        OodScoreKind::Mahalanobis,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            OodScoreKind::LowJointEnergy => "low_joint_energy",
            OodScoreKind::LowMaxLogit => "low_max_logit",
            OodScoreKind::Mahalanobis => "mahalanobis",
        }
    }
}

/// One kept score: `(score - centre) / scale` enters the combined score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OodTerm {
    pub kind: OodScoreKind,
    /// Mean of the score on in-distribution validation studies.
    pub centre: f32,
    /// Standard deviation there; > 0.
    pub scale: f32,
}

/// The gate: the mean of the kept terms, tripped above `max_combined`. No
/// terms means the bundle ships no OOD gate (no score beat chance), which
/// its model card says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OodGate<'a> {
    pub terms: &'a [OodTerm],
    pub max_combined: f32,
}

/// The scores of one study, each oriented higher = more unusual.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OodScores {
    pub low_joint_energy: f32,
    pub low_max_logit: f32,
    /// `None` when the bundle carries no feature statistics.
    pub mahalanobis: Option<f32>,
    /// The combined score of the kept terms; `None` without a gate.
    pub combined: Option<f32>,
}

impl OodScores {
    pub fn get(&self, kind: OodScoreKind) -> Option<f32> {
        match kind {
            OodScoreKind::LowJointEnergy => Some(self.low_joint_energy),
            OodScoreKind::LowMaxLogit => Some(self.low_max_logit),
            OodScoreKind::Mahalanobis => self.mahalanobis,
        }
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

/// The combined score of `terms` over `scores`: the mean of the
/// standardised terms, each floored at 0 so that a score saying "more
/// typical than usual" (a confident finding lowers the logit scores) cannot
/// cancel another that says "unusual". NaN when a term's score is missing or
/// not finite, so that the gate trips.
pub fn combined(scores: &OodScores, terms: &[OodTerm]) -> Option<f32> {
    if terms.is_empty() {
        return None;
    }
    let mut sum = 0.0f32;
    for t in terms {
        let z = (scores.get(t.kind).unwrap_or(f32::NAN) - t.centre) / t.scale;
        if z.is_nan() {
            // `f32::max` would swallow the NaN: keep it.
            return Some(f32::NAN);
        }
        sum += z.max(0.0);
    }
    Some(sum / terms.len() as f32)
}

/// All scores of one study. `features` may be empty when `stats` is `None`.
pub fn scores(
    logits: &[f32],
    features: &[f32],
    stats: Option<&FeatureStats<'_>>,
    terms: &[OodTerm],
) -> Result<OodScores, CoreError> {
    let mut s = OodScores {
        low_joint_energy: -joint_energy(logits),
        low_max_logit: -max_logit(logits),
        mahalanobis: stats.map(|st| mahalanobis(features, st)).transpose()?,
        combined: None,
    };
    s.combined = combined(&s, terms);
    Ok(s)
}

/// Whether the gate trips: the combined score above the cut-off, or not a
/// number (a missing or NaN score, a NaN cut-off): `at_most` is false for
/// either.
pub fn trips(scores: &OodScores, gate: &OodGate<'_>) -> bool {
    match scores.combined {
        Some(c) => !at_most(c, gate.max_combined),
        None => !gate.terms.is_empty(),
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
    fn scores_combine_into_one_gate_that_fails_closed() {
        let logits = [0.0, 0.0];
        assert!((joint_energy(&logits) - 2.0 * core::f32::consts::LN_2).abs() < 1e-6);
        let terms = [
            OodTerm {
                kind: OodScoreKind::LowJointEnergy,
                centre: -1.0,
                scale: 0.5,
            },
            OodTerm {
                kind: OodScoreKind::LowMaxLogit,
                centre: 2.0,
                scale: 1.0,
            },
        ];
        let s = scores(&[-3.0, -4.0], &[], None, &terms).unwrap();
        assert_eq!(s.low_max_logit, 3.0);
        let energy = -(softplus(-3.0) + softplus(-4.0));
        // Low energy here is -0.067: 1.87 scales above its centre.
        let expected = ((energy + 1.0) / 0.5 + (3.0 - 2.0) / 1.0) / 2.0;
        assert!((s.combined.unwrap() - expected).abs() < 1e-6);
        let gate = OodGate {
            terms: &terms,
            max_combined: expected + 0.01,
        };
        assert!(!trips(&s, &gate));
        assert!(trips(
            &s,
            &OodGate {
                max_combined: expected - 0.01,
                ..gate
            }
        ));
        // A NaN cut-off, a NaN score and a kept score the study lacks all trip.
        assert!(trips(
            &s,
            &OodGate {
                max_combined: f32::NAN,
                ..gate
            }
        ));
        let nan = OodScores {
            combined: Some(f32::NAN),
            ..s
        };
        assert!(trips(&nan, &gate));
        let mahalanobis = [OodTerm {
            kind: OodScoreKind::Mahalanobis,
            centre: 0.0,
            scale: 1.0,
        }];
        let without = scores(&[-3.0], &[], None, &mahalanobis).unwrap();
        assert!(trips(
            &without,
            &OodGate {
                terms: &mahalanobis,
                max_combined: 100.0
            }
        ));
        // A very typical term cannot cancel an unusual one: it counts as 0.
        let typical = scores(&[9.0, -4.0], &[], None, &terms).unwrap();
        let energy_z = ((-(softplus(9.0) + softplus(-4.0)) + 1.0) / 0.5).max(0.0);
        assert_eq!(energy_z, 0.0);
        let max_z: f32 = -9.0 - 2.0;
        assert!(max_z < 0.0);
        assert_eq!(typical.combined, Some(0.0));
        // No kept term: no gate, and nothing to combine.
        let none = scores(&[-3.0], &[], None, &[]).unwrap();
        assert_eq!(none.combined, None);
        assert!(!trips(
            &none,
            &OodGate {
                terms: &[],
                max_combined: 0.0
            }
        ));
    }
}
