//! Per-label temperature scaling and thresholded calls.

use serde::{Deserialize, Serialize};

use crate::math::sigmoid;

/// A calibrated probability: `sigmoid(z / temperature)`. Temperatures are
/// fitted by the trainer on validation data and come from the bundle; above 1
/// they soften overconfident logits towards 0.5.
pub fn calibrated_probability(logit: f32, temperature: f32) -> f32 {
    sigmoid(logit / temperature)
}

/// One label's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Call {
    Negative,
    Uncertain,
    Positive,
}

/// Threshold a probability with an uncertainty band of half-width `band`
/// around the label's threshold: at or above `threshold + band` is Positive,
/// below `threshold - band` is Negative, in between is Uncertain.
pub fn call(probability: f32, threshold: f32, band: f32) -> Call {
    if probability >= threshold + band {
        Call::Positive
    } else if probability < threshold - band {
        Call::Negative
    } else {
        Call::Uncertain
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn band_edges() {
        assert_eq!(call(0.60, 0.5, 0.1), Call::Positive);
        assert_eq!(call(0.55, 0.5, 0.1), Call::Uncertain);
        assert_eq!(call(0.40, 0.5, 0.1), Call::Uncertain);
        assert_eq!(call(0.39, 0.5, 0.1), Call::Negative);
        assert_eq!(call(0.5, 0.5, 0.0), Call::Positive);
    }

    proptest! {
        #[test]
        fn probabilities_move_towards_one_half_as_temperature_rises(z in -30.0f32..30.0, t in 0.1f32..10.0, dt in 0.01f32..10.0) {
            let cold = calibrated_probability(z, t);
            let warm = calibrated_probability(z, t + dt);
            prop_assert!((warm - 0.5).abs() <= (cold - 0.5).abs() + 1e-6);
            prop_assert!((0.0..=1.0).contains(&warm));
        }

        #[test]
        fn a_threshold_is_monotone(p in 0.0f32..1.0, q in 0.0f32..1.0, t in 0.0f32..1.0, band in 0.0f32..0.2) {
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            prop_assert!(call(lo, t, band) <= call(hi, t, band));
        }
    }
}
