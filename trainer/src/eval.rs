//! Evaluation metrics: AUROC, AUPRC, ECE and Brier, per label and macro, with
//! bootstrap confidence intervals that resample patients (images of one
//! patient are not independent).

/// `(score, is_positive)` for the entries with `mask > 0`.
pub(crate) fn labelled(scores: &[f32], labels: &[f32], mask: &[f32]) -> Vec<(f32, bool)> {
    scores
        .iter()
        .zip(labels)
        .zip(mask)
        .filter(|(_, m)| **m > 0.0)
        .map(|((s, l), _)| (*s, *l >= 0.5))
        .collect()
}

/// Area under the ROC curve (Mann-Whitney U, ties counted half). `None`
/// when either class is absent. Entries with `mask == 0` are left out.
pub fn auroc(scores: &[f32], labels: &[f32], mask: &[f32]) -> Option<f64> {
    let mut v = labelled(scores, labels, mask);
    let pos = v.iter().filter(|(_, p)| *p).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 || v.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positive ranks, ties given their average rank.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        rank_sum += avg * v[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Area under the precision-recall curve as average precision (the mean of
/// the precision at each positive, ties broken pessimistically). `None`
/// without positives.
pub fn auprc(scores: &[f32], labels: &[f32], mask: &[f32]) -> Option<f64> {
    let mut v = labelled(scores, labels, mask);
    let pos = v.iter().filter(|(_, p)| *p).count();
    if pos == 0 || v.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    // Descending score; within a tie, negatives first (pessimistic).
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut tp = 0usize;
    let mut ap = 0.0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let tp_here = v[i..j].iter().filter(|(_, p)| *p).count();
        tp += tp_here;
        // Every positive in a tie group gets the precision at the group's end.
        ap += tp_here as f64 * tp as f64 / j as f64;
        i = j;
    }
    Some(ap / pos as f64)
}

/// Expected calibration error over `bins` equal-width probability bins.
pub fn ece(probs: &[f32], labels: &[f32], mask: &[f32], bins: usize) -> Option<f64> {
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut acc = vec![0f64; bins];
    let mut n = 0usize;
    for ((p, l), m) in probs.iter().zip(labels).zip(mask) {
        if *m <= 0.0 || !p.is_finite() {
            continue;
        }
        let b = ((*p as f64 * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += *p as f64;
        acc[b] += f64::from(*l >= 0.5);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    Some(
        (0..bins)
            .filter(|b| count[*b] > 0)
            .map(|b| (count[b] as f64 / n as f64) * ((acc[b] - conf[b]) / count[b] as f64).abs())
            .sum(),
    )
}

/// Mean squared error of the probabilities.
pub fn brier(probs: &[f32], labels: &[f32], mask: &[f32]) -> Option<f64> {
    let v: Vec<f64> = probs
        .iter()
        .zip(labels)
        .zip(mask)
        .filter(|(_, m)| **m > 0.0)
        .map(|((p, l), _)| (f64::from(*p) - f64::from(*l)).powi(2))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A metric of `(scores, labels, mask)`.
pub type Metric = fn(&[f32], &[f32], &[f32]) -> Option<f64>;

/// A metric with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WithCi {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    /// Resamples in which the metric was defined.
    pub resamples: usize,
}

/// Deterministic splitmix64 for resampling.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// `metric` on the whole set, and its 2.5/97.5 percentiles over `resamples`
/// bootstrap draws of whole patients (`groups[i]` is sample i's patient
/// index). `None` when the metric is undefined on the whole set.
pub fn bootstrap_by_patient(
    scores: &[f32],
    labels: &[f32],
    mask: &[f32],
    groups: &[usize],
    metric: Metric,
    resamples: usize,
    seed: u64,
) -> Option<WithCi> {
    let value = metric(scores, labels, mask)?;
    let patients = groups.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); patients];
    for (i, g) in groups.iter().enumerate() {
        members[*g].push(i);
    }
    let mut rng = Mix(seed);
    let mut values = Vec::with_capacity(resamples);
    let (mut s, mut l, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..resamples {
        s.clear();
        l.clear();
        m.clear();
        for _ in 0..patients {
            let p = (rng.next() % patients as u64) as usize;
            for &i in &members[p] {
                s.push(scores[i]);
                l.push(labels[i]);
                m.push(mask[i]);
            }
        }
        if let Some(v) = metric(&s, &l, &m) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return Some(WithCi {
            value,
            low: f64::NAN,
            high: f64::NAN,
            resamples: 0,
        });
    }
    values.sort_by(f64::total_cmp);
    Some(WithCi {
        value,
        low: percentile(&values, 0.025),
        high: percentile(&values, 0.975),
        resamples: values.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONES: [f32; 6] = [1.0; 6];

    #[test]
    fn auroc_matches_hand_counts_and_handles_ties() {
        // Perfect, inverted, and one tie between a positive and a negative.
        let l = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert_eq!(auroc(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &l, &ONES), Some(1.0));
        assert_eq!(auroc(&[0.6, 0.5, 0.4, 0.3, 0.2, 0.1], &l, &ONES), Some(0.0));
        // pairs: 9; wrong: 0; ties: (0.3 neg, 0.3 pos) -> 8.5 / 9
        let a = auroc(&[0.1, 0.2, 0.3, 0.3, 0.5, 0.6], &l, &ONES).unwrap();
        assert!((a - 8.5 / 9.0).abs() < 1e-12, "{a}");
        assert_eq!(auroc(&[0.1; 6], &l, &ONES), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2], &[1.0, 1.0], &[1.0, 1.0]), None);
        // Masked entries do not count.
        assert_eq!(
            auroc(
                &[0.9, 0.1, 0.2, 0.8],
                &[0.0, 0.0, 1.0, 1.0],
                &[0.0, 1.0, 1.0, 1.0]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn average_precision_matches_a_worked_example() {
        // Ranked: P(0.9) N(0.8) P(0.7) N(0.6) -> AP = (1/1 + 2/3) / 2
        let ap = auprc(&[0.9, 0.8, 0.7, 0.6], &[1.0, 0.0, 1.0, 0.0], &[1.0; 4]).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{ap}");
        // All tied: precision is the prevalence.
        let ap = auprc(&[0.5; 4], &[1.0, 0.0, 1.0, 0.0], &[1.0; 4]).unwrap();
        assert!((ap - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ece_and_brier_of_perfect_and_overconfident_predictions() {
        let l = [1.0, 0.0, 1.0, 0.0];
        assert_eq!(ece(&[1.0, 0.0, 1.0, 0.0], &l, &[1.0; 4], 15), Some(0.0));
        assert_eq!(brier(&[1.0, 0.0, 1.0, 0.0], &l, &[1.0; 4]), Some(0.0));
        // Always 0.9 on a 50% set: ECE 0.4, Brier (0.01 + 0.81) / 2.
        let e = ece(&[0.9; 4], &l, &[1.0; 4], 15).unwrap();
        assert!((e - 0.4).abs() < 1e-6, "{e}");
        let b = brier(&[0.9; 4], &l, &[1.0; 4]).unwrap();
        assert!((b - 0.41).abs() < 1e-6, "{b}");
    }

    #[test]
    fn patient_bootstrap_brackets_the_value_and_is_deterministic() {
        let n = 200;
        let scores: Vec<f32> = (0..n).map(|i| ((i * 37) % 100) as f32 / 100.0).collect();
        let labels: Vec<f32> = scores
            .iter()
            .enumerate()
            .map(|(i, s)| f32::from(*s + (i % 7) as f32 * 0.05 > 0.6))
            .collect();
        let groups: Vec<usize> = (0..n).map(|i| i / 3).collect();
        let mask = vec![1.0; n];
        let a = bootstrap_by_patient(&scores, &labels, &mask, &groups, auroc, 300, 1).unwrap();
        let b = bootstrap_by_patient(&scores, &labels, &mask, &groups, auroc, 300, 1).unwrap();
        assert_eq!(a, b);
        assert!(a.low <= a.value && a.value <= a.high, "{a:?}");
        assert!(a.high - a.low > 0.0 && a.high - a.low < 0.3, "{a:?}");
        assert_eq!(a.resamples, 300);
    }
}
