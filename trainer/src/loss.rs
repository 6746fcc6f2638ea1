//! Multi-label losses with soft targets, masks for ignored labels and
//! optional per-class positive weights (burn's BCE takes integer targets
//! only, hence these). All reduce to the mean over unmasked entries.
//!
//! Shapes: logits, targets and mask `[B, labels]`; `pos_weight` `[labels]`.

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "loss")]
pub enum LossKind {
    Bce,
    /// Lin et al. 2017: BCE scaled by `(1 - p_t)^gamma`.
    Focal {
        gamma: f32,
    },
    /// Ridnik et al. 2021: asymmetric focusing, negatives' probability
    /// shifted down by `clip` (hard thresholding of easy negatives).
    Asl {
        gamma_pos: f32,
        gamma_neg: f32,
        clip: f32,
    },
}

/// `-log sigmoid(z)` and `-log(1 - sigmoid(z))`, stably.
fn neg_log_sigmoids<B: Backend>(z: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    // log(1 + e^-|z|) + max(-z, 0)  and  log(1 + e^-|z|) + max(z, 0)
    let soft = z.clone().abs().neg().exp().log1p();
    let pos = soft.clone() + z.clone().neg().clamp_min(0.0);
    let neg = soft + z.clamp_min(0.0);
    (pos, neg)
}

/// The masked mean loss.
pub fn multilabel_loss<B: Backend>(
    kind: LossKind,
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    pos_weight: Option<Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let (nl_p, nl_n) = neg_log_sigmoids(logits.clone());
    let ones = targets.ones_like();
    let (mut pos_term, mut neg_term) = (
        targets.clone() * nl_p,
        (ones.clone() - targets.clone()) * nl_n,
    );
    match kind {
        LossKind::Bce => {}
        LossKind::Focal { gamma } => {
            let p = sigmoid(logits);
            let pt = p.clone() * targets.clone() + (ones.clone() - p) * (ones - targets);
            let w = (pt.ones_like() - pt).powf_scalar(gamma);
            pos_term = pos_term * w.clone();
            neg_term = neg_term * w;
        }
        LossKind::Asl {
            gamma_pos,
            gamma_neg,
            clip,
        } => {
            let p = sigmoid(logits);
            pos_term = pos_term * (p.ones_like() - p.clone()).powf_scalar(gamma_pos);
            // Shifted probability for negatives: p_m = max(p - clip, 0).
            let pm = (p - clip).clamp_min(0.0);
            let nl_nm = (pm.ones_like() - pm.clone()).clamp_min(1e-8).log().neg();
            neg_term = (ones - targets) * nl_nm * pm.powf_scalar(gamma_neg);
        }
    }
    if let Some(w) = pos_weight {
        pos_term = pos_term * w.unsqueeze::<2>();
    }
    let total = mask.clone().sum().clamp_min(1.0);
    ((pos_term + neg_term) * mask).sum() / total
}

/// Per-class positive weights for the loss (rare findings up-weighted).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
pub enum PosWeight {
    #[default]
    None,
    /// `negatives / positives` of each label in the training split, capped
    /// at `max` (and at least 1).
    Balanced { max: f32 },
    /// Stated per label name; unnamed labels weigh 1.
    PerLabel {
        values: std::collections::BTreeMap<String, f32>,
    },
}

impl PosWeight {
    /// The weights for `labels`, from training targets and masks
    /// (`[n, labels]` row-major); `None` when there are none to apply.
    pub fn resolve(
        &self,
        labels: &[String],
        targets: &[f32],
        mask: &[f32],
    ) -> Result<Option<Vec<f32>>, crate::TrainerError> {
        let bad = |what: String| {
            crate::TrainerError::invalid(
                "pos_weight",
                what,
                "name labels of the data; weights must be finite and positive",
            )
        };
        match self {
            PosWeight::None => Ok(None),
            PosWeight::Balanced { max } => {
                if !(max.is_finite() && *max >= 1.0) {
                    return Err(bad(format!("max {max} (must be >= 1)")));
                }
                let k = labels.len().max(1);
                let mut w = Vec::with_capacity(k);
                for j in 0..labels.len() {
                    let (mut pos, mut neg) = (0.0f64, 0.0f64);
                    for (t, m) in targets
                        .iter()
                        .skip(j)
                        .step_by(k)
                        .zip(mask.iter().skip(j).step_by(k))
                    {
                        pos += f64::from(t * m);
                        neg += f64::from((1.0 - t) * m);
                    }
                    let r = if pos > 0.0 {
                        neg / pos
                    } else {
                        f64::from(*max)
                    };
                    w.push((r as f32).clamp(1.0, *max));
                }
                Ok(Some(w))
            }
            PosWeight::PerLabel { values } => {
                if let Some(name) = values.keys().find(|n| !labels.contains(n)) {
                    return Err(bad(format!("unknown label `{name}`")));
                }
                if let Some((n, v)) = values.iter().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
                    return Err(bad(format!("`{n}` = {v}")));
                }
                Ok(Some(
                    labels
                        .iter()
                        .map(|l| values.get(l).copied().unwrap_or(1.0))
                        .collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    type B = NdArray<f32>;

    fn t2(v: &[f32], rows: usize) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(v.to_vec(), [rows, v.len() / rows]),
            &Default::default(),
        )
    }

    fn scalar(t: Tensor<B, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    fn bce(z: f32, y: f32) -> f32 {
        let p = 1.0 / (1.0 + (-z).exp());
        -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
    }

    #[test]
    fn bce_matches_the_formula_with_soft_targets_masks_and_weights() {
        let (z, y) = ([2.0, -1.0, 0.5, 30.0], [1.0, 0.0, 0.7, 0.0]);
        let got = scalar(multilabel_loss(
            LossKind::Bce,
            t2(&z, 2),
            t2(&y, 2),
            t2(&[1.0; 4], 2),
            None,
        ));
        let want: f32 = z
            .iter()
            .zip(&y)
            .map(|(z, y)| if *z > 20.0 { *z } else { bce(*z, *y) })
            .sum::<f32>()
            / 4.0;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        // A masked entry changes nothing, whatever its value.
        let m = [1.0, 1.0, 1.0, 0.0];
        let a = scalar(multilabel_loss(
            LossKind::Bce,
            t2(&z, 2),
            t2(&y, 2),
            t2(&m, 2),
            None,
        ));
        let b = scalar(multilabel_loss(
            LossKind::Bce,
            t2(&[2.0, -1.0, 0.5, -30.0], 2),
            t2(&y, 2),
            t2(&m, 2),
            None,
        ));
        assert!((a - b).abs() < 1e-6);
        // Positive weights scale the positive part only.
        let w =
            Tensor::<B, 1>::from_data(TensorData::new(vec![3.0f32, 3.0], [2]), &Default::default());
        let one = scalar(multilabel_loss(
            LossKind::Bce,
            t2(&[2.0], 1),
            t2(&[1.0], 1),
            t2(&[1.0], 1),
            None,
        ));
        let r = scalar(multilabel_loss(
            LossKind::Bce,
            t2(&[2.0, 0.0], 1),
            t2(&[1.0, 0.0], 1),
            t2(&[1.0, 0.0], 1),
            Some(w),
        ));
        assert!((r - 3.0 * one).abs() < 1e-5);
    }

    #[test]
    fn focal_and_asl_down_weight_easy_examples() {
        let easy = t2(&[4.0], 1);
        let y = t2(&[1.0], 1);
        let m = t2(&[1.0], 1);
        let plain = scalar(multilabel_loss(
            LossKind::Bce,
            easy.clone(),
            y.clone(),
            m.clone(),
            None,
        ));
        let focal = scalar(multilabel_loss(
            LossKind::Focal { gamma: 2.0 },
            easy.clone(),
            y.clone(),
            m.clone(),
            None,
        ));
        let p = 1.0 / (1.0 + (-4.0f32).exp());
        assert!((focal - plain * (1.0 - p).powi(2)).abs() < 1e-6);
        // ASL: an easy negative below the clip costs nothing.
        let asl = LossKind::Asl {
            gamma_pos: 0.0,
            gamma_neg: 4.0,
            clip: 0.05,
        };
        let zero = scalar(multilabel_loss(
            asl,
            t2(&[-4.0], 1),
            t2(&[0.0], 1),
            m.clone(),
            None,
        ));
        assert!(zero.abs() < 1e-7, "{zero}");
        let hard = scalar(multilabel_loss(asl, t2(&[2.0], 1), t2(&[0.0], 1), m, None));
        assert!(hard > 0.0);
    }

    #[test]
    fn balanced_pos_weight_is_the_capped_negative_ratio() {
        let labels = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        // a: 1 positive, 3 negatives; b: 2 and 2; c: none positive.
        let t = [1., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0.];
        let m = [1.0; 12];
        let w = PosWeight::Balanced { max: 10.0 }
            .resolve(&labels, &t, &m)
            .unwrap()
            .unwrap();
        assert_eq!(w, vec![3.0, 1.0, 10.0]);
        // Masked entries do not count.
        let mut m2 = m;
        m2[3] = 0.0;
        let w = PosWeight::Balanced { max: 10.0 }
            .resolve(&labels, &t, &m2)
            .unwrap()
            .unwrap();
        assert_eq!(w[0], 2.0);
        let named = PosWeight::PerLabel {
            values: [("b".to_owned(), 4.0)].into_iter().collect(),
        };
        assert_eq!(
            named.resolve(&labels, &t, &m).unwrap().unwrap(),
            vec![1.0, 4.0, 1.0]
        );
        let unknown = PosWeight::PerLabel {
            values: [("Cardiomegally".to_owned(), 4.0)].into_iter().collect(),
        };
        assert!(unknown.resolve(&labels, &t, &m).is_err());
        assert!(PosWeight::Balanced { max: 0.5 }
            .resolve(&labels, &t, &m)
            .is_err());
        assert_eq!(PosWeight::None.resolve(&labels, &t, &m).unwrap(), None);
    }
}
