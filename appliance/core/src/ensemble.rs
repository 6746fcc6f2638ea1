//! Combining the members of an ensemble: each member's logit is calibrated
//! with its own temperature, the calibrated probabilities are averaged, and
//! the mean probability goes back to a logit. That logit is what `decide`
//! then treats as the model's output: it merges the TTA views, applies the
//! ensemble's own temperature (the ensemble is recalibrated as a whole),
//! and gates and calls as for one model.

use crate::math::softplus;
use crate::CoreError;

/// Most members an ensemble may have.
pub const MAX_ENSEMBLE_MEMBERS: usize = 5;

/// `log(mean_k exp(x_k))` over a non-empty, finite slice.
fn log_mean_exp(x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|v| libm::expf(v - m)).sum();
    m + libm::logf(sum) - libm::logf(x.len() as f32)
}

/// The logit of the mean of `sigmoid(a_k)`, computed in log space so that
/// it stays finite for every finite `a_k`: `log(mean σ(a)) − log(mean σ(−a))`
/// with `log σ(a) = −softplus(−a)`. A mean probability of exactly 0 or 1 in
/// f32 would otherwise become an infinite logit.
fn logit_of_mean_probability(calibrated: &[f32]) -> f32 {
    let mut log_p = [0.0f32; MAX_ENSEMBLE_MEMBERS];
    let mut log_q = [0.0f32; MAX_ENSEMBLE_MEMBERS];
    for (k, a) in calibrated.iter().enumerate() {
        log_p[k] = -softplus(-a);
        log_q[k] = -softplus(*a);
    }
    let k = calibrated.len();
    log_mean_exp(&log_p[..k]) - log_mean_exp(&log_q[..k])
}

/// Combine `members` outputs into one.
///
/// - `member_logits`: `[members, rows, labels]`, row-major (each member's
///   raw logits for the same `rows` images);
/// - `temperatures`: `[members, labels]`, each member's own calibration;
/// - `out`: `[rows, labels]`, the logit of the mean calibrated probability.
///
/// Refuses a wrong shape, more than [`MAX_ENSEMBLE_MEMBERS`] members, a
/// temperature that is not positive and finite, and any non-finite logit,
/// given or produced.
pub fn combine_members(
    member_logits: &[f32],
    members: usize,
    temperatures: &[f32],
    out: &mut [f32],
) -> Result<(), CoreError> {
    let values = out.len();
    let labels = temperatures.len().checked_div(members).unwrap_or(0);
    if members == 0
        || members > MAX_ENSEMBLE_MEMBERS
        || labels == 0
        || temperatures.len() != members * labels
        || member_logits.len() != members * values
        || !values.is_multiple_of(labels)
    {
        return Err(CoreError::Shape {
            expected_labels: labels,
            got_values: member_logits.len(),
            views: members,
        });
    }
    if let Some(i) = temperatures
        .iter()
        .position(|t| !(t.is_finite() && *t > 0.0))
    {
        return Err(CoreError::BadTemperature { label: i % labels });
    }
    if member_logits.iter().any(|z| !z.is_finite()) {
        return Err(CoreError::NonFinite);
    }
    let mut calibrated = [0.0f32; MAX_ENSEMBLE_MEMBERS];
    for (i, slot) in out.iter_mut().enumerate() {
        let label = i % labels;
        for (k, a) in calibrated[..members].iter_mut().enumerate() {
            *a = member_logits[k * values + i] / temperatures[k * labels + label];
        }
        *slot = logit_of_mean_probability(&calibrated[..members]);
        // A temperature so small that z / T overflows gives an infinite or
        // NaN mean: refused here rather than passed on as a logit.
        if !slot.is_finite() {
            return Err(CoreError::NonFinite);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::math::sigmoid;
    use proptest::prelude::*;

    #[test]
    fn one_member_is_its_calibrated_logit() {
        let mut out = [0.0; 2];
        combine_members(&[3.0, -1.0], 1, &[2.0, 0.5], &mut out).unwrap();
        assert!((out[0] - 1.5).abs() < 1e-5, "{out:?}");
        assert!((out[1] + 2.0).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn probabilities_are_averaged_not_logits() {
        // Logits 0 and 4: mean logit 2 (p 0.881), mean probability
        // (0.5 + 0.982) / 2 = 0.741 (logit 1.051).
        let mut out = [0.0; 1];
        combine_members(&[0.0, 4.0], 2, &[1.0, 1.0], &mut out).unwrap();
        let p = (0.5 + sigmoid(4.0)) / 2.0;
        assert!((out[0] - libm::logf(p / (1.0 - p))).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn members_calibrate_with_their_own_temperatures() {
        // Two rows of one label; member 2's temperature 2 halves its logits.
        let mut out = [0.0; 2];
        combine_members(&[1.0, -1.0, 2.0, -2.0], 2, &[1.0, 2.0], &mut out).unwrap();
        assert!((out[0] - 1.0).abs() < 1e-5 && (out[1] + 1.0).abs() < 1e-5);
    }

    #[test]
    fn extreme_members_stay_finite() {
        let mut out = [0.0; 1];
        combine_members(&[80.0, 90.0, 100.0], 3, &[1.0, 1.0, 1.0], &mut out).unwrap();
        assert!(out[0].is_finite() && out[0] > 75.0, "{out:?}");
        combine_members(&[-200.0, 200.0], 2, &[1.0, 1.0], &mut out).unwrap();
        assert!(out[0].abs() < 1e-3, "{out:?}");
    }

    #[test]
    fn bad_shapes_temperatures_and_logits_are_refused() {
        let mut out = [0.0; 2];
        assert!(combine_members(&[1.0, 2.0, 3.0], 2, &[1.0, 1.0], &mut out).is_err());
        assert!(combine_members(&[], 0, &[], &mut out).is_err());
        let six = [0.0; 12];
        assert!(combine_members(&six, 6, &[1.0; 6], &mut out).is_err());
        assert_eq!(
            combine_members(&[1.0, 2.0, 3.0, 4.0], 2, &[1.0, f32::NAN], &mut out),
            Err(CoreError::BadTemperature { label: 0 })
        );
        assert_eq!(
            combine_members(&[1.0, 2.0, 3.0, f32::NAN], 2, &[1.0, 1.0], &mut out),
            Err(CoreError::NonFinite)
        );
        // A tiny temperature overflows z / T on both members.
        let mut one = [0.0; 1];
        assert_eq!(
            combine_members(&[5.0, 5.0], 2, &[1e-38, 1e-38], &mut one),
            Err(CoreError::NonFinite)
        );
    }

    proptest! {
        #[test]
        fn the_mean_probability_lies_between_the_members(a in -30.0f32..30.0, b in -30.0f32..30.0, c in -30.0f32..30.0) {
            let mut out = [0.0; 1];
            combine_members(&[a, b, c], 3, &[1.0, 1.0, 1.0], &mut out).unwrap();
            let lo = a.min(b).min(c);
            let hi = a.max(b).max(c);
            prop_assert!(out[0] >= lo - 1e-3 && out[0] <= hi + 1e-3, "{} not in [{lo}, {hi}]", out[0]);
            let p = (sigmoid(a) + sigmoid(b) + sigmoid(c)) / 3.0;
            prop_assert!((sigmoid(out[0]) - p).abs() < 1e-5);
        }
    }
}
