//! Robust intensity scaling: clip to percentiles of the content, map to `[0, 1]`.

use crate::IntensityNorm;

/// The `q`-th percentile (0..=100) of `values`, linearly interpolated between ranks.
pub(crate) fn percentile(values: &[f32], q: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let rank = f64::from(q / 100.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = (rank - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Clip `values` to the spec's percentiles and scale to `[0, 1]` in place.
/// A flat image (no spread between the percentiles) becomes all zeros.
pub(crate) fn scale_to_unit(values: &mut [f32], norm: &IntensityNorm) {
    if values.is_empty() {
        return;
    }
    let lo = percentile(values, norm.low_percentile);
    let hi = percentile(values, norm.high_percentile);
    let span = hi - lo;
    if span.partial_cmp(&f32::EPSILON.mul_add(hi.abs().max(1.0), 0.0))
        != Some(std::cmp::Ordering::Greater)
    {
        values.fill(0.0);
        return;
    }
    for v in values.iter_mut() {
        *v = ((*v - lo) / span).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 12.5), 1.5);
    }

    #[test]
    fn scaling_clips_outliers() {
        let norm = IntensityNorm {
            low_percentile: 0.0,
            high_percentile: 75.0,
            mean: 0.0,
            std: 1.0,
        };
        let mut v = [0.0, 1.0, 2.0, 100.0, 3.0];
        // 75th percentile of [0,1,2,3,100] is rank 3 -> 3.0.
        scale_to_unit(&mut v, &norm);
        assert_eq!(v, [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]);
        let mut flat = [5.0; 4];
        scale_to_unit(&mut flat, &norm);
        assert_eq!(flat, [0.0; 4]);
    }
}
