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

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReliabilityBin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
    /// Mean predicted probability in the bin.
    pub predicted: f64,
    /// Share of positives in the bin.
    pub observed: f64,
}

/// The non-empty bins of `bins` equal-width probability bins (entries with
/// `mask == 0` or a non-finite probability are left out).
pub fn reliability(
    probs: &[f32],
    labels: &[f32],
    mask: &[f32],
    bins: usize,
) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut acc = vec![0f64; bins];
    for ((p, l), m) in probs.iter().zip(labels).zip(mask) {
        if *m <= 0.0 || !p.is_finite() {
            continue;
        }
        let b = ((f64::from(*p).clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += f64::from(*p);
        acc[b] += f64::from(*l >= 0.5);
    }
    (0..bins)
        .filter(|b| count[*b] > 0)
        .map(|b| ReliabilityBin {
            low: b as f64 / bins as f64,
            high: (b + 1) as f64 / bins as f64,
            count: count[b],
            predicted: conf[b] / count[b] as f64,
            observed: acc[b] / count[b] as f64,
        })
        .collect()
}

/// Expected calibration error over `bins` equal-width probability bins.
pub fn ece(probs: &[f32], labels: &[f32], mask: &[f32], bins: usize) -> Option<f64> {
    ece_of_bins(&reliability(probs, labels, mask, bins))
}

/// Expected calibration error of reliability bins already made.
pub fn ece_of_bins(bins: &[ReliabilityBin]) -> Option<f64> {
    let n: usize = bins.iter().map(|b| b.count).sum();
    (n > 0).then(|| {
        bins.iter()
            .map(|b| b.count as f64 / n as f64 * (b.observed - b.predicted).abs())
            .sum()
    })
}

/// The ROC curve as `(false-positive rate, true-positive rate)` points from
/// (0, 0) to (1, 1), tied scores taken in one step. `None` when either
/// class is absent or a score is NaN.
pub fn roc_points(scores: &[f32], labels: &[f32], mask: &[f32]) -> Option<Vec<(f64, f64)>> {
    let mut v = labelled(scores, labels, mask);
    let pos = v.iter().filter(|(_, p)| *p).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 || v.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        points.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
        i = j;
    }
    Some(points)
}

/// The coverage-risk curve of a selective rule: entries ordered by
/// `confidence`, most confident first; at each prefix, coverage is its
/// share of `total` (entries never scored count as not covered) and risk is
/// its share of wrong answers. Ties are taken in one step.
pub fn coverage_risk(confidence: &[f64], correct: &[bool], total: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = confidence
        .iter()
        .copied()
        .zip(correct.iter().copied())
        .filter(|(c, _)| !c.is_nan())
        .collect();
    let total = total.max(v.len()).max(1);
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut wrong, mut i) = (0usize, 0usize);
    let mut points = Vec::new();
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            wrong += usize::from(!v[j].1);
            j += 1;
        }
        points.push((j as f64 / total as f64, wrong as f64 / j as f64));
        i = j;
    }
    points
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

/// Draw `resamples` bootstrap samples of whole patients (`groups[i]` is
/// sample i's patient index) and collect `statistic` of each sample's
/// indices where it is defined, sorted.
fn resample_patients(
    groups: &[usize],
    resamples: usize,
    seed: u64,
    mut statistic: impl FnMut(&[usize]) -> Option<f64>,
) -> Vec<f64> {
    let patients = groups.iter().copied().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); patients];
    for (i, g) in groups.iter().enumerate() {
        members[*g].push(i);
    }
    let mut rng = Mix(seed);
    let mut values = Vec::with_capacity(resamples);
    let mut drawn = Vec::new();
    for _ in 0..resamples {
        drawn.clear();
        for _ in 0..patients {
            let p = (rng.next() % patients as u64) as usize;
            drawn.extend_from_slice(&members[p]);
        }
        if let Some(v) = statistic(&drawn) {
            values.push(v);
        }
    }
    values.sort_by(f64::total_cmp);
    values
}

fn with_interval(value: f64, values: &[f64]) -> WithCi {
    if values.is_empty() {
        return WithCi {
            value,
            low: f64::NAN,
            high: f64::NAN,
            resamples: 0,
        };
    }
    WithCi {
        value,
        low: percentile(values, 0.025),
        high: percentile(values, 0.975),
        resamples: values.len(),
    }
}

fn pick<T: Copy>(v: &[T], indices: &[usize]) -> Vec<T> {
    indices.iter().map(|&i| v[i]).collect()
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
    let values = resample_patients(groups, resamples, seed, |d| {
        metric(&pick(scores, d), &pick(labels, d), &pick(mask, d))
    });
    Some(with_interval(value, &values))
}

/// A subgroup's `metric` minus the whole set's, with the 95% interval of
/// that difference: both are computed on the same draws of whole patients,
/// so the interval accounts for the group being part of the whole.
/// `None` when either is undefined on the whole set.
pub fn bootstrap_gap(
    scores: &[f32],
    labels: &[f32],
    groups: &[usize],
    in_group: &[bool],
    metric: Metric,
    resamples: usize,
    seed: u64,
) -> Option<WithCi> {
    let all = vec![1.0f32; scores.len()];
    let member: Vec<f32> = in_group.iter().map(|g| f32::from(u8::from(*g))).collect();
    let gap =
        |s: &[f32], l: &[f32], a: &[f32], m: &[f32]| Some(metric(s, l, m)? - metric(s, l, a)?);
    let value = gap(scores, labels, &all, &member)?;
    let values = resample_patients(groups, resamples, seed, |d| {
        let (s, l) = (pick(scores, d), pick(labels, d));
        gap(&s, &l, &vec![1.0; d.len()], &pick(&member, d))
    });
    Some(with_interval(value, &values))
}

/// Macro AUROC over the labels where it is defined (with its count).
pub fn macro_auroc(logits: &[f32], targets: &[f32], mask: &[f32], labels: usize) -> (f64, usize) {
    macro_metric(auroc, logits, targets, mask, labels)
}

/// Macro AUPRC over the labels where it is defined (with its count).
pub fn macro_auprc(logits: &[f32], targets: &[f32], mask: &[f32], labels: usize) -> (f64, usize) {
    macro_metric(auprc, logits, targets, mask, labels)
}

fn macro_metric(
    metric: Metric,
    logits: &[f32],
    targets: &[f32],
    mask: &[f32],
    labels: usize,
) -> (f64, usize) {
    let n = logits.len() / labels.max(1);
    let col = |a: &[f32], j: usize| -> Vec<f32> { (0..n).map(|i| a[i * labels + j]).collect() };
    let values: Vec<f64> = (0..labels)
        .filter_map(|j| metric(&col(logits, j), &col(targets, j), &col(mask, j)))
        .collect();
    if values.is_empty() {
        return (f64::NAN, 0);
    }
    (
        values.iter().sum::<f64>() / values.len() as f64,
        values.len(),
    )
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

    #[test]
    fn roc_points_walk_from_origin_to_corner_and_merge_ties() {
        let l = [0.0, 0.0, 1.0, 1.0];
        let p = roc_points(&[0.1, 0.4, 0.35, 0.8], &l, &[1.0; 4]).unwrap();
        assert_eq!(
            p,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // One tie of everything: a single diagonal step.
        let p = roc_points(&[0.5; 4], &l, &[1.0; 4]).unwrap();
        assert_eq!(p, vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!(roc_points(&[0.5, 0.6], &[1.0, 1.0], &[1.0; 2]).is_none());
    }

    #[test]
    fn reliability_bins_hold_counts_means_and_observed_rates() {
        let r = reliability(
            &[0.05, 0.15, 0.12, 0.95],
            &[0.0, 1.0, 0.0, 1.0],
            &[1.0; 4],
            10,
        );
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].count, r[1].observed), (2, 0.5));
        assert!((r[1].predicted - 0.135).abs() < 1e-6, "{:?}", r[1]);
        assert_eq!((r[2].low, r[2].high), (0.9, 1.0));
        assert!(reliability(&[f32::NAN], &[1.0], &[1.0], 10).is_empty());
    }

    #[test]
    fn coverage_risk_counts_unscored_entries_as_not_covered() {
        // Most confident right, then wrong, then right; 2 more never scored.
        let c = coverage_risk(&[3.0, 2.0, 1.0], &[true, false, true], 5);
        assert_eq!(c, vec![(0.2, 0.0), (0.4, 0.5), (0.6, 1.0 / 3.0)]);
    }

    #[test]
    fn a_gap_interval_excludes_zero_only_for_a_real_gap() {
        // Two groups of 100 patients: one ranked perfectly, one at random.
        let n = 200;
        let labels: Vec<f32> = (0..n).map(|i| f32::from(i % 2 == 0)).collect();
        let scores: Vec<f32> = (0..n)
            .map(|i| {
                if i < 100 {
                    labels[i] * 0.5 + (i % 7) as f32 * 0.01
                } else {
                    ((i * 37) % 101) as f32 / 101.0
                }
            })
            .collect();
        let groups: Vec<usize> = (0..n).collect();
        let good: Vec<bool> = (0..n).map(|i| i < 100).collect();
        let g = bootstrap_gap(&scores, &labels, &groups, &good, auroc, 300, 3).unwrap();
        assert!(g.value > 0.1 && g.low > 0.0, "{g:?}");
        let bad: Vec<bool> = good.iter().map(|g| !g).collect();
        let g = bootstrap_gap(&scores, &labels, &groups, &bad, auroc, 300, 3).unwrap();
        assert!(g.value < -0.1 && g.high < 0.0, "{g:?}");
        // A group drawn across both halves has no real gap.
        let mixed: Vec<bool> = (0..n).map(|i| i % 4 < 2).collect();
        let g = bootstrap_gap(&scores, &labels, &groups, &mixed, auroc, 300, 3).unwrap();
        assert!(g.low < 0.0 && g.high > 0.0, "{g:?}");
    }
}
