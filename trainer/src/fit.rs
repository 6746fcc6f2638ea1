//! Post-hoc fitting: per-label temperatures (only where validation has both
//! classes), each label's operating point as deployed (threshold and
//! Uncertain band together, in logit space), Mahalanobis statistics with
//! shrinkage on training features, and one OOD gate over the scores that beat
//! chance, cut at a stated in-distribution coverage on validation. The scores
//! and calls come from `cxr-core`, the same functions the appliance uses.

use cxr_bundle::FeatureStatsData;
use serde::Serialize;

use crate::TrainerError;

fn nll(logits: &[f32], labels: &[f32], mask: &[f32], beta: f64) -> f64 {
    let mut s = 0.0;
    for ((z, y), m) in logits.iter().zip(labels).zip(mask) {
        if *m <= 0.0 {
            continue;
        }
        let a = beta * f64::from(*z);
        // -[y log σ(a) + (1-y) log(1-σ(a))] = softplus(a) - y a, stably.
        let softplus = if a > 0.0 {
            a + (-a).exp().ln_1p()
        } else {
            a.exp().ln_1p()
        };
        s += f64::from(*m) * (softplus - f64::from(*y) * a);
    }
    s
}

/// The temperature `T` in [0.05, 20] that minimises the masked negative
/// log-likelihood of `sigmoid(z / T)`. The NLL is convex in `1 / T`, so a
/// golden-section search on it finds the minimum. 1 when nothing is labelled.
pub fn fit_temperature(logits: &[f32], labels: &[f32], mask: &[f32]) -> f32 {
    if !mask.iter().any(|m| *m > 0.0) {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.05f64, 20.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - g * (hi - lo);
    let mut b = lo + g * (hi - lo);
    let (mut fa, mut fb) = (nll(logits, labels, mask, a), nll(logits, labels, mask, b));
    for _ in 0..100 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - g * (hi - lo);
            fa = nll(logits, labels, mask, a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + g * (hi - lo);
            fb = nll(logits, labels, mask, b);
        }
    }
    (1.0 / ((lo + hi) / 2.0)) as f32
}

/// One label's operating point: the threshold on the calibrated
/// probability and the Uncertain band (logit units) that ship together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub threshold: f32,
    pub band: f32,
    /// On the fitting data: sensitivity and specificity of the decided
    /// calls, and the share of labelled studies left Uncertain.
    pub sensitivity: f64,
    pub specificity: f64,
    pub uncertain: f64,
}

/// Band widths tried, logit units.
const BAND_GRID: [f32; 13] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 1.75, 2.0,
];

/// Fit threshold and band together for the rule that is deployed
/// (`cxr_core::calibration::call`): among thresholds at the calibrated
/// logits' midpoints and the bands of `BAND_GRID`, the pair whose decided
/// calls have the highest Youden J (sensitivity + specificity - 1), with at
/// most `max_uncertain` of the labelled studies Uncertain and at least one
/// decided study of each class; ties go to the narrower band. `None`
/// without both classes.
pub fn fit_operating_point(
    calibrated_logits: &[f32],
    labels: &[f32],
    mask: &[f32],
    max_uncertain: f64,
) -> Option<OperatingPoint> {
    let v = crate::eval::labelled(calibrated_logits, labels, mask);
    let pos = v.iter().filter(|(_, p)| *p).count();
    if pos == 0 || pos == v.len() || v.iter().any(|(q, _)| !q.is_finite()) {
        return None;
    }
    let mut qs: Vec<f32> = v.iter().map(|(q, _)| *q).collect();
    qs.sort_by(f32::total_cmp);
    qs.dedup();
    let centres: Vec<f32> = qs.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    let mut best: Option<(f64, OperatingPoint)> = None;
    for &band in &BAND_GRID {
        for &centre in &centres {
            let threshold = cxr_core::calibration::calibrated_probability(centre, 1.0);
            if !(threshold > 0.0 && threshold < 1.0) {
                continue;
            }
            let (mut tp, mut fn_, mut tn, mut fp, mut unsure) =
                (0usize, 0usize, 0usize, 0usize, 0usize);
            for (q, positive) in &v {
                match (cxr_core::calibration::call(*q, threshold, band), positive) {
                    (cxr_core::Call::Positive, true) => tp += 1,
                    (cxr_core::Call::Negative, true) => fn_ += 1,
                    (cxr_core::Call::Negative, false) => tn += 1,
                    (cxr_core::Call::Positive, false) => fp += 1,
                    (cxr_core::Call::Uncertain, _) => unsure += 1,
                }
            }
            let uncertain = unsure as f64 / v.len() as f64;
            if uncertain > max_uncertain || tp + fn_ == 0 || tn + fp == 0 {
                continue;
            }
            let point = OperatingPoint {
                threshold,
                band,
                sensitivity: tp as f64 / (tp + fn_) as f64,
                specificity: tn as f64 / (tn + fp) as f64,
                uncertain,
            };
            let j = point.sensitivity + point.specificity - 1.0;
            if best.is_none_or(|(b, _)| j > b + 1e-12) {
                best = Some((j, point));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Mean and Ledoit-Wolf shrunk covariance of pooled features `[n, d]`, as
/// the mean and lower Cholesky factor the appliance's Mahalanobis score takes.
/// Returns the shrinkage intensity too.
pub fn fit_feature_stats(
    features: &[f32],
    d: usize,
) -> Result<(FeatureStatsData, f64), TrainerError> {
    if d == 0 || !features.len().is_multiple_of(d) || features.len() / d < 2 {
        return Err(TrainerError::invalid(
            "feature statistics",
            format!("{} values for width {d}", features.len()),
            "pass at least two feature vectors of the model's width",
        ));
    }
    let n = features.len() / d;
    let mut mean = vec![0f64; d];
    for row in features.chunks(d) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += f64::from(*x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<Vec<f64>> = features
        .chunks(d)
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(x, m)| f64::from(*x) - m)
                .collect()
        })
        .collect();
    let mut s = vec![0f64; d * d];
    for x in &centred {
        for i in 0..d {
            for j in 0..=i {
                s[i * d + j] += x[i] * x[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..=i {
            s[i * d + j] /= n as f64;
            s[j * d + i] = s[i * d + j];
        }
    }
    // Ledoit & Wolf (2004): shrink towards mu I, mu = tr(S) / d.
    let mu = (0..d).map(|i| s[i * d + i]).sum::<f64>() / d as f64;
    let frob2 = |a: &[f64]| a.iter().map(|v| v * v).sum::<f64>();
    let mut diff = s.clone();
    for i in 0..d {
        diff[i * d + i] -= mu;
    }
    let d2 = frob2(&diff) / d as f64;
    let s_frob2 = frob2(&s);
    let mut b_bar2 = 0.0;
    for x in &centred {
        let norm2: f64 = x.iter().map(|v| v * v).sum();
        let mut xsx = 0.0;
        for i in 0..d {
            let row: f64 = (0..d).map(|j| s[i * d + j] * x[j]).sum();
            xsx += x[i] * row;
        }
        b_bar2 += (norm2 * norm2 - 2.0 * xsx + s_frob2) / d as f64;
    }
    b_bar2 /= (n * n) as f64;
    let shrinkage = if d2 > 0.0 {
        (b_bar2.min(d2) / d2).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let mut sigma: Vec<f64> = s.iter().map(|v| (1.0 - shrinkage) * v).collect();
    for i in 0..d {
        sigma[i * d + i] += shrinkage * mu + 1e-9 * mu.max(1e-12);
    }
    let l = cholesky(&sigma, d).ok_or_else(|| {
        TrainerError::invalid(
            "feature statistics",
            "the shrunk covariance is not positive definite".into(),
            "check the features for constant or non-finite values",
        )
    })?;
    Ok((
        FeatureStatsData {
            mean: mean.iter().map(|v| *v as f32).collect(),
            cholesky_lower: l.iter().map(|v| *v as f32).collect(),
        },
        shrinkage,
    ))
}

/// Lower Cholesky factor of a symmetric positive-definite `[d, d]` matrix.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

pub(crate) fn quantile(values: &[f32], q: f64) -> Option<f32> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64) as f32)
}

/// One label's calibration and operating point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelFit {
    pub label: String,
    /// Temperature fitted (validation had at least `MIN_CLASS_COUNT` of each
    /// class); else T = 1.
    pub calibrated: bool,
    pub temperature: f32,
    /// `None`: fewer than `MIN_CLASS_COUNT` validation studies of either
    /// class; the label ships with `NO_OPERATING_POINT`, always Uncertain.
    pub operating_point: Option<OperatingPoint>,
}

/// Fewest validation studies of each class a label needs for a fitted
/// operating point: with fewer, the threshold search fits noise (one or two
/// positives pick an extreme threshold), so the label stays Uncertain.
pub const MIN_CLASS_COUNT: usize = 10;

/// Fit temperatures and operating points on validation and write them into
/// `params`. `logits`, `labels`, `mask` are `[n, labels]` (TTA-merged
/// logits; mask 0 = not labelled).
pub fn fit_calibration(
    params: &mut cxr_bundle::ModelParams,
    logits: &[f32],
    labels: &[f32],
    mask: &[f32],
    max_uncertain: f64,
) -> Result<Vec<LabelFit>, TrainerError> {
    let k = params.labels.len();
    if k == 0
        || !logits.len().is_multiple_of(k)
        || labels.len() != logits.len()
        || mask.len() != logits.len()
    {
        return Err(TrainerError::invalid(
            "validation outputs",
            format!(
                "{} logits, {} labels, {} mask values for {k} labels",
                logits.len(),
                labels.len(),
                mask.len()
            ),
            "pass [n, labels] arrays of equal size",
        ));
    }
    let n = logits.len() / k;
    let column = |a: &[f32], j: usize| -> Vec<f32> { (0..n).map(|i| a[i * k + j]).collect() };
    let mut fits = Vec::with_capacity(k);
    for j in 0..k {
        let (z, y, m) = (column(logits, j), column(labels, j), column(mask, j));
        let labelled = crate::eval::labelled(&z, &y, &m);
        let pos = labelled.iter().filter(|(_, p)| *p).count();
        // Too few of either class and any fit is noise: a temperature fitted
        // on a handful of separable positives runs to its limit (the demo's
        // Hernia got 0.05), and a threshold search picks an extreme. Such a
        // label keeps T = 1, is marked uncalibrated, and has no operating
        // point: its call is always Uncertain.
        let enough = pos >= MIN_CLASS_COUNT && labelled.len() - pos >= MIN_CLASS_COUNT;
        let t = if enough {
            fit_temperature(&z, &y, &m)
        } else {
            1.0
        };
        let q: Vec<f32> = z.iter().map(|v| v / t).collect();
        let point = enough
            .then(|| fit_operating_point(&q, &y, &m, max_uncertain))
            .flatten();
        params.temperatures[j] = t;
        params.calibrated[j] = enough;
        match point {
            Some(p) => {
                params.thresholds[j] = p.threshold;
                params.bands[j] = p.band;
            }
            None => {
                params.thresholds[j] = 0.5;
                params.bands[j] = cxr_core::NO_OPERATING_POINT;
            }
        }
        fits.push(LabelFit {
            label: params.labels[j].clone(),
            calibrated: enough,
            temperature: t,
            operating_point: point,
        });
    }
    Ok(fits)
}

/// Model outputs of a set of studies: TTA-merged logits `[n, labels]` and
/// identity-view pooled features `[n, width]`.
#[derive(Debug, Clone, Copy)]
pub struct OutputsRef<'a> {
    pub logits: &'a [f32],
    pub features: &'a [f32],
}

/// One candidate OOD score at fit time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OodCandidate {
    pub kind: cxr_core::ood::OodScoreKind,
    /// Telling the unusual studies from adult test films (higher = better;
    /// 0.5 is chance), with a bootstrap 95% interval.
    pub auroc: Option<crate::eval::WithCi>,
    pub kept: bool,
    /// Why it was dropped, if it was.
    pub note: String,
}

/// What the OOD fit found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OodFit {
    pub candidates: Vec<OodCandidate>,
    pub shrinkage: Option<f64>,
    pub coverage: f64,
    pub max_combined: Option<f32>,
    pub unusual_studies: usize,
}

/// Oriented candidate scores (higher = more unusual) of every study.
fn candidate_scores(
    out: &OutputsRef<'_>,
    k: usize,
    width: usize,
    stats: Option<&cxr_core::ood::FeatureStats<'_>>,
) -> Vec<cxr_core::ood::OodScores> {
    out.logits
        .chunks(k)
        .zip(out.features.chunks(width))
        .map(|(z, f)| {
            cxr_core::ood::scores(z, f, stats, &[]).unwrap_or(cxr_core::ood::OodScores {
                low_joint_energy: f32::NAN,
                low_max_logit: f32::NAN,
                mahalanobis: None,
                combined: None,
            })
        })
        .collect()
}

/// Fit the OOD gate. Mahalanobis statistics come from `train` features,
/// each kept score's centre and scale and the cut-off from `validation`
/// (never the same images); a candidate is kept only if it tells `unusual`
/// studies from adult `test` films better than chance (the lower end of
/// its 95% interval, from resampling whole patients, above 0.5).
/// `patients` names each unusual study's patient, then each test study's.
#[allow(clippy::too_many_arguments)]
pub fn fit_ood(
    params: &mut cxr_bundle::ModelParams,
    train: OutputsRef<'_>,
    validation: OutputsRef<'_>,
    test: OutputsRef<'_>,
    unusual: OutputsRef<'_>,
    patients: &[String],
    coverage: f64,
    seed: u64,
) -> Result<OodFit, TrainerError> {
    use cxr_core::ood::{OodScoreKind, OodTerm};
    let (k, width) = (params.labels.len(), params.model.width);
    let studies = (unusual.logits.len() + test.logits.len()) / k.max(1);
    if patients.len() != studies {
        return Err(TrainerError::invalid(
            "OOD fit",
            format!(
                "{} patient names for {studies} unusual and test studies",
                patients.len()
            ),
            "name the patient of every unusual study, then of every test study",
        ));
    }
    let mut shrinkage = None;
    params.feature_stats = None;
    if !train.features.is_empty() {
        let (stats, s) = fit_feature_stats(train.features, width)?;
        params.feature_stats = Some(stats);
        shrinkage = Some(s);
    }
    let stats = params
        .feature_stats
        .as_ref()
        .map(|s| cxr_core::ood::FeatureStats {
            mean: &s.mean,
            cholesky_lower: &s.cholesky_lower,
        });
    let val = candidate_scores(&validation, k, width, stats.as_ref());
    let tst = candidate_scores(&test, k, width, stats.as_ref());
    let odd = candidate_scores(&unusual, k, width, stats.as_ref());
    let mut candidates = Vec::new();
    let mut terms = Vec::new();
    for kind in OodScoreKind::ALL {
        let get = |v: &[cxr_core::ood::OodScores]| -> Vec<f32> {
            v.iter().map(|s| s.get(kind).unwrap_or(f32::NAN)).collect()
        };
        let (v, t, o) = (get(&val), get(&tst), get(&odd));
        let scores: Vec<f32> = o.iter().chain(&t).copied().collect();
        let labels: Vec<f32> = o.iter().map(|_| 1.0).chain(t.iter().map(|_| 0.0)).collect();
        let mut index = std::collections::HashMap::new();
        let groups: Vec<usize> = patients
            .iter()
            .map(|p| {
                let next = index.len();
                *index.entry(p.as_str()).or_insert(next)
            })
            .collect();
        let auroc = crate::eval::bootstrap_by_patient(
            &scores,
            &labels,
            &vec![1.0; scores.len()],
            &groups,
            crate::eval::auroc,
            1000,
            seed,
        );
        let finite: Vec<f64> = v
            .iter()
            .filter(|x| x.is_finite())
            .map(|x| f64::from(*x))
            .collect();
        let centre = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        let scale = (finite.iter().map(|x| (x - centre).powi(2)).sum::<f64>()
            / finite.len().max(1) as f64)
            .sqrt();
        let (kept, note) = match auroc {
            _ if finite.len() < 2 || !(scale.is_finite() && scale > 0.0) => {
                (false, "not defined on validation".to_owned())
            }
            Some(a) if a.low > 0.5 => (true, String::new()),
            Some(a) => (
                false,
                format!(
                    "AUROC {:.3}, interval reaches {:.3}: not better than chance",
                    a.value, a.low
                ),
            ),
            None => (false, "no unusual studies to test it on".to_owned()),
        };
        if kept {
            terms.push(OodTerm {
                kind,
                centre: centre as f32,
                scale: scale as f32,
            });
        }
        candidates.push(OodCandidate {
            kind,
            auroc,
            kept,
            note,
        });
    }
    let combined: Vec<f32> = val
        .iter()
        .filter_map(|s| cxr_core::ood::combined(s, &terms))
        .collect();
    let max_combined = if terms.is_empty() {
        None
    } else {
        quantile(&combined, coverage)
    };
    params.ood = match max_combined {
        Some(max_combined) => cxr_bundle::OodGateData {
            terms,
            max_combined,
            coverage: coverage as f32,
        },
        None => cxr_bundle::OodGateData::none(),
    };
    if !params
        .ood
        .terms
        .iter()
        .any(|t| t.kind == OodScoreKind::Mahalanobis)
    {
        // Statistics no kept term reads stay out of the bundle.
        params.feature_stats = None;
    }
    params.validate().map_err(|e| {
        TrainerError::invalid(
            "fitted parameters",
            e.to_string(),
            "check the validation outputs",
        )
    })?;
    Ok(OodFit {
        candidates,
        shrinkage,
        coverage,
        max_combined,
        unusual_studies: odd.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::ood::{mahalanobis, FeatureStats};

    struct Lcg(u64);
    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    #[test]
    fn temperature_recovers_the_one_that_generated_the_labels() {
        let mut r = Lcg(3);
        for t0 in [0.5f64, 1.0, 2.5] {
            let n = 20_000;
            let logits: Vec<f32> = (0..n).map(|_| (r.normal() * 3.0) as f32).collect();
            let labels: Vec<f32> = logits
                .iter()
                .map(|z| f32::from(r.uniform() < 1.0 / (1.0 + (-f64::from(*z) / t0).exp())))
                .collect();
            let t = fit_temperature(&logits, &labels, &vec![1.0; n]);
            assert!(
                (f64::from(t) / t0 - 1.0).abs() < 0.08,
                "fitted {t} for {t0}"
            );
        }
        assert_eq!(fit_temperature(&[1.0], &[1.0], &[0.0]), 1.0);
    }

    #[test]
    fn the_operating_point_is_fitted_for_the_deployed_rule() {
        // Positives around +2, negatives around -2, an overlap in between.
        let q = [
            3.0, 2.5, 2.0, 1.5, 0.4, -0.2, -0.3, -1.5, -2.0, -2.5, -3.0, 0.1,
        ];
        let y = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let m = [1.0; 12];
        let tight = fit_operating_point(&q, &y, &m, 0.0).unwrap();
        assert_eq!(tight.band, 0.0);
        assert!(tight.uncertain == 0.0);
        let loose = fit_operating_point(&q, &y, &m, 0.5).unwrap();
        // Letting the overlap be Uncertain buys perfect decided calls.
        assert!(loose.band > 0.0 && loose.uncertain > 0.0 && loose.uncertain <= 0.5);
        assert_eq!((loose.sensitivity, loose.specificity), (1.0, 1.0));
        assert!(tight.sensitivity + tight.specificity < 2.0);
        // The fitted pair reproduces its own figures through the core's call.
        let calls: Vec<cxr_core::Call> = q
            .iter()
            .map(|v| cxr_core::calibration::call(*v, loose.threshold, loose.band))
            .collect();
        let unsure = calls
            .iter()
            .filter(|c| **c == cxr_core::Call::Uncertain)
            .count();
        assert!((unsure as f64 / 12.0 - loose.uncertain).abs() < 1e-9);
        // Negative stays reachable however low the threshold sits.
        let rare_q = [-6.0, -5.9, -5.8, -4.0, -6.2, -6.1];
        let rare_y = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let rare = fit_operating_point(&rare_q, &rare_y, &[1.0; 6], 0.3).unwrap();
        assert!(rare.threshold < 0.02 && rare.specificity == 1.0, "{rare:?}");
        assert_eq!(fit_operating_point(&q, &[0.0; 12], &m, 0.3), None);
    }

    #[test]
    fn mahalanobis_statistics_match_the_shrunk_covariance_and_the_core_score() {
        let (n, d) = (400, 6);
        let mut r = Lcg(9);
        let mut f = Vec::with_capacity(n * d);
        for _ in 0..n {
            let z: Vec<f64> = (0..d).map(|_| r.normal()).collect();
            // Correlated features with unequal scales.
            for i in 0..d {
                f.push((z[i] * (1.0 + i as f64) + 0.5 * z[(i + 1) % d] + 3.0) as f32);
            }
        }
        let (stats, shrinkage) = fit_feature_stats(&f, d).unwrap();
        assert!((0.0..0.5).contains(&shrinkage), "{shrinkage}");
        // Standard errors are up to 6 / sqrt(400) = 0.3.
        assert!(
            stats.mean.iter().all(|m| (m - 3.0).abs() < 1.0),
            "{:?}",
            stats.mean
        );
        let core = FeatureStats {
            mean: &stats.mean,
            cholesky_lower: &stats.cholesky_lower,
        };
        assert!(mahalanobis(&stats.mean, &core).unwrap() < 1e-5);
        // Mean squared distance of the fitting points is about d.
        let msd: f64 = f
            .chunks(d)
            .map(|x| f64::from(mahalanobis(x, &core).unwrap()).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!((msd / d as f64 - 1.0).abs() < 0.15, "{msd}");
        // Far points are far.
        let far: Vec<f32> = (0..d).map(|i| 3.0 + 10.0 * (1.0 + i as f32)).collect();
        assert!(mahalanobis(&far, &core).unwrap() > 5.0);
        assert!(fit_feature_stats(&f[..d], d).is_err());
    }

    #[test]
    fn quantiles_keep_the_requested_share() {
        let scores: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let c = quantile(&scores, 0.975).unwrap();
        let kept = scores.iter().filter(|s| **s <= c).count();
        assert!((974..=976).contains(&kept), "{kept}");
    }
}

#[cfg(test)]
mod fit_tests {
    use super::*;
    use cxr_bundle::ModelParams;
    use cxr_core::ood::OodScoreKind;
    use cxr_model::VitSpec;

    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f32 / (1u64 << 53) as f32
        }
    }

    fn spec() -> VitSpec {
        VitSpec {
            image_size: 32,
            labels: 3,
            ..VitSpec::tiny()
        }
    }

    #[test]
    fn one_class_labels_stay_uncalibrated_and_undecided() {
        let mut params = ModelParams::neutral(spec(), vec!["A".into(), "B".into(), "C".into()]);
        let (n, k) = (300, 3);
        let mut u = uniform(5);
        let (mut logits, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..n {
            for j in 0..k {
                // Label C never occurs (like the demo's Hernia).
                let y = if j == 2 { 0.0 } else { f32::from(u() < 0.3) };
                labels.push(y);
                logits.push(4.0 * (y - 0.5) + 6.0 * (u() - 0.5) - if j == 2 { 3.0 } else { 0.0 });
            }
        }
        let fits = fit_calibration(&mut params, &logits, &labels, &vec![1.0; n * k], 0.3).unwrap();
        assert!(fits[0].calibrated && fits[1].calibrated && !fits[2].calibrated);
        assert_eq!(params.temperatures[2], 1.0);
        assert_eq!(params.bands[2], cxr_core::NO_OPERATING_POINT);
        for fit in &fits[..2] {
            let p = fit.operating_point.unwrap();
            assert!(
                p.uncertain <= 0.3 && p.sensitivity > 0.6 && p.specificity > 0.6,
                "{p:?}"
            );
        }
        params.validate().unwrap();
    }

    #[test]
    fn the_ood_gate_keeps_only_scores_that_beat_chance_and_passes_the_stated_coverage() {
        let mut params = ModelParams::neutral(spec(), vec!["A".into(), "B".into(), "C".into()]);
        let (k, d) = (3, spec().width);
        let mut u = uniform(17);
        // In-distribution: features near 0, logits random. Unusual: features
        // shifted, logits drawn the same way (so logit scores are chance).
        let mut make = |n: usize, shift: f32| -> (Vec<f32>, Vec<f32>) {
            let logits = (0..n * k).map(|_| 4.0 * (u() - 0.5)).collect();
            let features = (0..n * d)
                .map(|i| u() + shift * f32::from(i % d < 8))
                .collect();
            (logits, features)
        };
        let (train_z, train_f) = make(400, 0.0);
        let (val_z, val_f) = make(400, 0.0);
        let (test_z, test_f) = make(300, 0.0);
        let (odd_z, odd_f) = make(60, 1.5);
        let r = |logits, features| OutputsRef { logits, features };
        let patients: Vec<String> = (0..360).map(|i| format!("p{}", i / 2)).collect();
        let fit = fit_ood(
            &mut params,
            r(&train_z, &train_f),
            r(&val_z, &val_f),
            r(&test_z, &test_f),
            r(&odd_z, &odd_f),
            &patients,
            0.975,
            1,
        )
        .unwrap();
        let kept: Vec<OodScoreKind> = fit
            .candidates
            .iter()
            .filter(|c| c.kept)
            .map(|c| c.kind)
            .collect();
        assert_eq!(kept, vec![OodScoreKind::Mahalanobis], "{fit:?}");
        assert!(params.feature_stats.is_some());
        // The cut-off passes about 97.5% of validation studies.
        let dp = params.decision_params();
        let passed = val_z
            .chunks(k)
            .zip(val_f.chunks(d))
            .filter(|(z, f)| {
                let s =
                    cxr_core::ood::scores(z, f, dp.feature_stats.as_ref(), dp.ood.terms).unwrap();
                !cxr_core::ood::trips(&s, &dp.ood)
            })
            .count();
        assert!((386..=394).contains(&passed), "{passed} of 400");
    }
}
