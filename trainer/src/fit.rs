//! Post-hoc fitting on a validation split: per-label temperatures, per-class
//! thresholds, Mahalanobis statistics with shrinkage, and OOD cut-offs at a
//! chosen in-distribution true-positive rate. The scores come from
//! `cxr-core`, the same functions the appliance gates with.

use cxr_bundle::FeatureStatsData;
use serde::{Deserialize, Serialize};

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

/// How a class threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum ThresholdRule {
    /// The threshold with the highest F1.
    MaxF1,
    /// The highest threshold whose sensitivity reaches the target.
    Sensitivity { target: f32 },
}

/// A threshold on calibrated probabilities (a study is positive when
/// `p >= threshold`). `None` without labelled positives.
pub fn fit_threshold(
    probs: &[f32],
    labels: &[f32],
    mask: &[f32],
    rule: ThresholdRule,
) -> Option<f32> {
    let mut v = crate::eval::labelled(probs, labels, mask);
    let pos = v.iter().filter(|(_, p)| *p).count();
    if pos == 0 || v.iter().any(|(p, _)| !p.is_finite()) {
        return None;
    }
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<(f64, f32)> = None;
    let mut i = 0;
    while i < v.len() {
        let t = v[i].0;
        while i < v.len() && v[i].0 == t {
            if v[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        match rule {
            ThresholdRule::Sensitivity { target } => {
                if tp as f64 / pos as f64 >= f64::from(target) {
                    return Some(t);
                }
            }
            ThresholdRule::MaxF1 => {
                let f1 = 2.0 * tp as f64 / (2 * tp + fp + (pos - tp)) as f64;
                if best.is_none_or(|(b, _)| f1 > b) {
                    best = Some((f1, t));
                }
            }
        }
    }
    best.map(|(_, t)| t)
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

fn quantile(values: &[f32], q: f64) -> Option<f32> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64) as f32)
}

/// Cut-off for a score where in-distribution is high (energy, max-logit,
/// ODIN-T): `tpr` of the in-distribution scores lie at or above it.
pub fn cutoff_min(in_distribution: &[f32], tpr: f64) -> Option<f32> {
    quantile(in_distribution, 1.0 - tpr)
}

/// Cut-off for a score where in-distribution is low (Mahalanobis distance).
pub fn cutoff_max(in_distribution: &[f32], tpr: f64) -> Option<f32> {
    quantile(in_distribution, tpr)
}

/// What the fit found, for the model card and the evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    pub temperatures: Vec<f32>,
    pub thresholds: Vec<f32>,
    /// Labels without validation positives keep the previous threshold.
    pub thresholds_kept: Vec<String>,
    pub shrinkage: Option<f64>,
    pub tpr: f64,
    pub cutoffs: cxr_core::ood::OodCutoffs,
}

/// Fit everything `decide` needs on a validation split and write it into
/// `params`. `logits` `[n, labels]` are TTA-merged validation logits,
/// `labels`/`mask` `[n, labels]` the targets (mask 0 = not labelled),
/// `features` `[n, width]` the pooled features (empty: no Mahalanobis).
pub fn fit_params(
    params: &mut cxr_bundle::ModelParams,
    logits: &[f32],
    labels: &[f32],
    mask: &[f32],
    features: &[f32],
    rule: ThresholdRule,
    tpr: f64,
) -> Result<FitReport, TrainerError> {
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
    let mut kept = Vec::new();
    for j in 0..k {
        let (z, y, m) = (column(logits, j), column(labels, j), column(mask, j));
        let t = fit_temperature(&z, &y, &m);
        params.temperatures[j] = t;
        let p: Vec<f32> = z
            .iter()
            .map(|v| cxr_core::calibration::calibrated_probability(*v, t))
            .collect();
        match fit_threshold(&p, &y, &m, rule) {
            Some(th) => params.thresholds[j] = th,
            None => kept.push(params.labels[j].clone()),
        }
    }
    let rows: Vec<&[f32]> = logits.chunks(k).collect();
    let energy: Vec<f32> = rows
        .iter()
        .map(|r| cxr_core::ood::joint_energy(r))
        .collect();
    let maxl: Vec<f32> = rows.iter().map(|r| cxr_core::ood::max_logit(r)).collect();
    let odin: Vec<f32> = rows
        .iter()
        .map(|r| cxr_core::ood::odin_t(r, params.odin_temperature))
        .collect();
    let mut shrinkage = None;
    let mut max_mahalanobis = None;
    if !features.is_empty() {
        let d = params.model.width;
        let (stats, s) = fit_feature_stats(features, d)?;
        let core = cxr_core::ood::FeatureStats {
            mean: &stats.mean,
            cholesky_lower: &stats.cholesky_lower,
        };
        let dist: Vec<f32> = features
            .chunks(d)
            .map(|x| cxr_core::ood::mahalanobis(x, &core).unwrap_or(f32::INFINITY))
            .collect();
        max_mahalanobis = cutoff_max(&dist, tpr);
        params.feature_stats = Some(stats);
        shrinkage = Some(s);
    }
    params.ood = cxr_core::ood::OodCutoffs {
        min_joint_energy: cutoff_min(&energy, tpr),
        min_max_logit: cutoff_min(&maxl, tpr),
        min_odin_t: cutoff_min(&odin, tpr),
        max_mahalanobis,
    };
    params.validate().map_err(|e| {
        TrainerError::invalid(
            "fitted parameters",
            e.to_string(),
            "check the validation outputs",
        )
    })?;
    Ok(FitReport {
        temperatures: params.temperatures.clone(),
        thresholds: params.thresholds.clone(),
        thresholds_kept: kept,
        shrinkage,
        tpr,
        cutoffs: params.ood,
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
    fn thresholds_by_f1_and_by_sensitivity() {
        let p = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1];
        let l = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let m = [1.0; 8];
        // F1 at 0.6: tp 3, fp 1, fn 1 -> 0.75; at 0.3: tp 4, fp 2 -> 0.8 (the best).
        assert_eq!(fit_threshold(&p, &l, &m, ThresholdRule::MaxF1), Some(0.3));
        // Without the late positive, 0.6 wins (0.857 against 0.75 at 0.3's rank).
        let l2 = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(fit_threshold(&p, &l2, &m, ThresholdRule::MaxF1), Some(0.6));
        assert_eq!(
            fit_threshold(&p, &l, &m, ThresholdRule::Sensitivity { target: 0.5 }),
            Some(0.8)
        );
        assert_eq!(
            fit_threshold(&p, &l, &m, ThresholdRule::Sensitivity { target: 1.0 }),
            Some(0.3)
        );
        assert_eq!(fit_threshold(&p, &[0.0; 8], &m, ThresholdRule::MaxF1), None);
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
    fn cutoffs_keep_the_requested_share_of_in_distribution() {
        let scores: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let c = cutoff_min(&scores, 0.95).unwrap();
        let kept = scores.iter().filter(|s| **s >= c).count();
        assert!((949..=951).contains(&kept), "{kept}");
        let c = cutoff_max(&scores, 0.95).unwrap();
        let kept = scores.iter().filter(|s| **s <= c).count();
        assert!((949..=951).contains(&kept), "{kept}");
    }
}

#[cfg(test)]
mod fit_params_tests {
    use super::*;
    use cxr_bundle::ModelParams;
    use cxr_model::VitSpec;

    #[test]
    fn fitted_gates_pass_about_the_requested_share_of_validation_studies() {
        let spec = VitSpec {
            image_size: 32,
            labels: 3,
            ..VitSpec::tiny()
        };
        let mut params = ModelParams::neutral(spec, vec!["A".into(), "B".into(), "C".into()]);
        let (n, k, d) = (600, 3, spec.width);
        let mut state = 17u64;
        let mut u = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n * k {
            let y = f32::from(u() < 0.3);
            labels.push(y);
            logits.push(4.0 * (y - 0.5) + 8.0 * (u() - 0.5));
        }
        let features: Vec<f32> = (0..n * d).map(|i| u() + (i % d) as f32 * 0.01).collect();
        let mask = vec![1.0; n * k];
        let report = fit_params(
            &mut params,
            &logits,
            &labels,
            &mask,
            &features,
            ThresholdRule::MaxF1,
            0.95,
        )
        .unwrap();
        assert!(report.thresholds_kept.is_empty());
        assert!(report.shrinkage.is_some());
        let dp = params.decision_params();
        let passed = (0..n)
            .filter(|i| {
                let z = &logits[i * k..(i + 1) * k];
                let x = &features[i * d..(i + 1) * d];
                let s = cxr_core::ood::scores(z, x, dp.odin_temperature, dp.feature_stats.as_ref())
                    .unwrap();
                !cxr_core::ood::gate(&s, &dp.ood_cutoffs).any()
            })
            .count();
        // Four gates at 95% each: between 80% (independent) and 95% (nested).
        assert!(
            (n * 78 / 100..=n * 96 / 100).contains(&passed),
            "{passed} of {n}"
        );
        assert!(params.temperatures.iter().all(|t| *t > 0.05 && *t < 20.0));
    }
}
