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

/// The log-odds of a probability in (0, 1).
pub fn logit(p: f32) -> f32 {
    libm::logf(p / (1.0 - p))
}

/// One label's call from its calibrated logit `z / T`, the threshold on the
/// calibrated probability (in (0, 1)) and the half-width `band` of the
/// Uncertain zone in logit units around `logit(threshold)`: at or above
/// `logit(t) + band` is Positive, below `logit(t) - band` is Negative, in
/// between Uncertain. In logit space both sides stay reachable for every
/// threshold, however close to 0 or 1 (a band in probability units around a
/// threshold of 0.004 could never say Negative). Band 0 is the bare
/// threshold `p >= t`. A NaN anywhere is Uncertain.
pub fn call(calibrated_logit: f32, threshold: f32, band: f32) -> Call {
    let centre = logit(threshold);
    if calibrated_logit >= centre + band {
        Call::Positive
    } else if calibrated_logit < centre - band {
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
    fn band_edges_in_logit_space() {
        assert_eq!(call(0.6, 0.5, 0.5), Call::Positive);
        assert_eq!(call(0.4, 0.5, 0.5), Call::Uncertain);
        assert_eq!(call(-0.5, 0.5, 0.5), Call::Uncertain);
        assert_eq!(call(-0.6, 0.5, 0.5), Call::Negative);
        assert_eq!(call(0.0, 0.5, 0.0), Call::Positive);
        assert_eq!(call(f32::NAN, 0.5, 0.5), Call::Uncertain);
        // A threshold of 0.004 (logit -5.52) keeps Negative reachable.
        assert_eq!(call(-7.0, 0.004, 1.0), Call::Negative);
        assert_eq!(call(-4.0, 0.004, 1.0), Call::Positive);
        assert_eq!(call(-5.0, 0.004, 1.0), Call::Uncertain);
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
        fn a_threshold_is_monotone(p in -20.0f32..20.0, q in -20.0f32..20.0, t in 0.001f32..0.999, band in 0.0f32..3.0) {
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            prop_assert!(call(lo, t, band) <= call(hi, t, band));
        }

        #[test]
        fn both_sides_are_reachable_for_every_threshold(t in 0.0001f32..0.9999, band in 0.0f32..8.0) {
            prop_assert_eq!(call(logit(t) - band - 1.0, t, band), Call::Negative);
            prop_assert_eq!(call(logit(t) + band + 1.0, t, band), Call::Positive);
        }

        #[test]
        fn band_zero_is_the_bare_threshold(z in -10.0f32..10.0, t in 0.01f32..0.99) {
            let p = calibrated_probability(z, 1.0);
            prop_assume!((p - t).abs() > 1e-4);
            prop_assert_eq!(call(z, t, 0.0) == Call::Positive, p >= t);
        }
    }
}
