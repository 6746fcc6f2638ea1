//! Merging the logits of the test-time views of one study.

use heapless::Vec;

use crate::limits::MAX_LABELS;
use crate::CoreError;

/// Per-label mean logit over the views, and the per-label spread (population
/// standard deviation across views) as an uncertainty signal.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedLogits {
    pub mean: Vec<f32, MAX_LABELS>,
    pub spread: Vec<f32, MAX_LABELS>,
}

/// Merge `logits`, shape `[views, labels]`, row-major.
pub fn merge_views(logits: &[f32], views: usize, labels: usize) -> Result<MergedLogits, CoreError> {
    if views == 0 || labels == 0 || labels > MAX_LABELS || logits.len() != views * labels {
        return Err(CoreError::Shape {
            expected_labels: labels,
            got_values: logits.len(),
            views,
        });
    }
    if logits.iter().any(|z| !z.is_finite()) {
        return Err(CoreError::NonFinite);
    }
    let mut mean = Vec::new();
    let mut spread = Vec::new();
    let n = views as f32;
    for l in 0..labels {
        let column = (0..views).map(|v| logits[v * labels + l]);
        let m = column.clone().sum::<f32>() / n;
        let var = column.map(|z| (z - m) * (z - m)).sum::<f32>() / n;
        // Capacity was checked above (labels <= MAX_LABELS).
        let _ = mean.push(m);
        let _ = spread.push(libm::sqrtf(var));
    }
    Ok(MergedLogits { mean, spread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_spread_per_label() {
        // Two views, two labels: label 0 sees 1 and 3, label 1 sees -2 twice.
        let m = merge_views(&[1.0, -2.0, 3.0, -2.0], 2, 2).unwrap();
        assert_eq!(m.mean.as_slice(), &[2.0, -2.0]);
        assert_eq!(m.spread.as_slice(), &[1.0, 0.0]);
    }

    #[test]
    fn shapes_and_values_are_checked() {
        assert!(merge_views(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(merge_views(&[], 0, 2).is_err());
        assert_eq!(
            merge_views(&[f32::NAN, 0.0], 1, 2),
            Err(CoreError::NonFinite)
        );
    }
}
