//! Training-time augmentation, within anatomy-safe ranges. Geometry goes
//! through `cxr_preprocess::tta_view` (the same resampling the appliance's
//! test-time views use); intensity changes act on the normalised input.
//!
//! Documented defaults (a chest film is never mirrored: laterality matters):
//! rotation ±7°, scale 0.93–1.07, contrast ×0.9–1.1, brightness ±0.1,
//! Gaussian noise σ 0.02 (normalised units), no flips; mixup and CutMix off
//! unless configured.

use cxr_preprocess::{tta_view, ModelInput, TtaView};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::TrainerError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    pub max_rotation_deg: f32,
    pub min_scale: f32,
    pub max_scale: f32,
    pub contrast: f32,
    pub brightness: f32,
    pub noise_std: f32,
    pub hflip: bool,
    pub mixup_prob: f32,
    pub mixup_alpha: f32,
    pub cutmix_prob: f32,
    pub cutmix_alpha: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_rotation_deg: 7.0,
            min_scale: 0.93,
            max_scale: 1.07,
            contrast: 0.1,
            brightness: 0.1,
            noise_std: 0.02,
            hflip: false,
            mixup_prob: 0.0,
            mixup_alpha: 0.4,
            cutmix_prob: 0.0,
            cutmix_alpha: 1.0,
        }
    }
}

impl AugmentConfig {
    /// Refuse ranges outside what is anatomically safe for chest films.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |p: String| {
            Err(TrainerError::invalid("augmentation", p, "stay within rotation ≤ 15°, scale 0.8–1.2, contrast ≤ 0.3, brightness ≤ 0.3, noise ≤ 0.1, probabilities in [0, 1]"))
        };
        if !(0.0..=15.0).contains(&self.max_rotation_deg) {
            return bad(format!("rotation {}°", self.max_rotation_deg));
        }
        if !(0.8..=1.0).contains(&self.min_scale) || !(1.0..=1.2).contains(&self.max_scale) {
            return bad(format!("scale {}–{}", self.min_scale, self.max_scale));
        }
        if !(0.0..=0.3).contains(&self.contrast)
            || !(0.0..=0.3).contains(&self.brightness)
            || !(0.0..=0.1).contains(&self.noise_std)
        {
            return bad("intensity ranges".into());
        }
        let p = |v: f32| (0.0..=1.0).contains(&v);
        if !p(self.mixup_prob)
            || !p(self.cutmix_prob)
            || self.mixup_alpha <= 0.0
            || self.cutmix_alpha <= 0.0
        {
            return bad("mixup/CutMix probabilities or alphas".into());
        }
        Ok(())
    }

    /// One augmented copy of a prepared input.
    pub fn apply(&self, input: &ModelInput, rng: &mut Rng) -> ModelInput {
        let view = TtaView {
            rotation_deg: rng.range(
                -f64::from(self.max_rotation_deg),
                f64::from(self.max_rotation_deg),
            ) as f32,
            scale: rng.range(f64::from(self.min_scale), f64::from(self.max_scale)) as f32,
            hflip: self.hflip && rng.uniform() < 0.5,
        };
        let mut out = tta_view(input, &view);
        let contrast = rng.range(
            1.0 - f64::from(self.contrast),
            1.0 + f64::from(self.contrast),
        ) as f32;
        let brightness = rng.range(-f64::from(self.brightness), f64::from(self.brightness)) as f32;
        for v in &mut out.data {
            *v = *v * contrast + brightness + self.noise_std * rng.normal() as f32;
        }
        out
    }

    /// Mixup or CutMix across a batch, in place: images `[B, C, S, S]`,
    /// targets and masks `[B, L]`. Each sample is mixed with a partner from
    /// a seeded permutation; a label masked in either is masked in the mix.
    pub fn mix_batch(
        &self,
        images: &mut [f32],
        targets: &mut [f32],
        mask: &mut [f32],
        batch: usize,
        size: usize,
        rng: &mut Rng,
    ) {
        if batch < 2 {
            return;
        }
        let per = images.len() / batch;
        let labels = targets.len() / batch;
        let channels = per / (size * size);
        let (orig_i, orig_t, orig_m) = (images.to_vec(), targets.to_vec(), mask.to_vec());
        let partner = rng.permutation(batch);
        for (b, &o) in partner.iter().enumerate() {
            let r = rng.uniform() as f32;
            let lam = if r < self.mixup_prob {
                let lam = rng.beta_sym(f64::from(self.mixup_alpha)) as f32;
                for k in 0..per {
                    images[b * per + k] =
                        lam * orig_i[b * per + k] + (1.0 - lam) * orig_i[o * per + k];
                }
                lam
            } else if r < self.mixup_prob + self.cutmix_prob {
                let lam = rng.beta_sym(f64::from(self.cutmix_alpha));
                let side = ((1.0 - lam).sqrt() * size as f64) as usize;
                let (cy, cx) = (rng.below(size), rng.below(size));
                let (y0, y1) = (cy.saturating_sub(side / 2), (cy + side / 2).min(size));
                let (x0, x1) = (cx.saturating_sub(side / 2), (cx + side / 2).min(size));
                for c in 0..channels {
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let k = c * size * size + y * size + x;
                            images[b * per + k] = orig_i[o * per + k];
                        }
                    }
                }
                // The label weight is the area actually kept.
                1.0 - ((y1 - y0) * (x1 - x0)) as f32 / (size * size) as f32
            } else {
                continue;
            };
            for l in 0..labels {
                let (i, j) = (b * labels + l, o * labels + l);
                targets[i] = lam * orig_t[i] + (1.0 - lam) * orig_t[j];
                mask[i] = orig_m[i].min(orig_m[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(size: usize) -> ModelInput {
        ModelInput {
            channels: 1,
            height: size,
            width: size,
            data: (0..size * size)
                .map(|i| (i % size) as f32 / size as f32)
                .collect(),
            spec: cxr_preprocess::InputSpec {
                size: size as u32,
                ..cxr_preprocess::InputSpec::default()
            },
        }
    }

    #[test]
    fn defaults_are_safe_and_outlandish_ranges_are_refused() {
        AugmentConfig::default().validate().unwrap();
        let flips = AugmentConfig {
            max_rotation_deg: 45.0,
            ..AugmentConfig::default()
        };
        assert!(flips.validate().is_err());
        let x = input(32);
        let a = AugmentConfig::default().apply(&x, &mut Rng::new(1));
        let b = AugmentConfig::default().apply(&x, &mut Rng::new(1));
        assert_eq!(a.data, b.data, "fixed by the seed");
        assert_ne!(a.data, x.data);
        // Small changes only: the mean moves by at most the brightness and contrast.
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&a.data) - mean(&x.data)).abs() < 0.25);
    }

    #[test]
    fn mixing_keeps_targets_in_range_and_masks_conservative() {
        let cfg = AugmentConfig {
            mixup_prob: 0.5,
            cutmix_prob: 0.5,
            ..AugmentConfig::default()
        };
        let (b, size, l) = (8, 16, 3);
        let mut images: Vec<f32> = (0..b * size * size)
            .map(|i| (i / (size * size)) as f32)
            .collect();
        let mut targets: Vec<f32> = (0..b * l).map(|i| f32::from(i % 2 == 0)).collect();
        let mut mask = vec![1.0; b * l];
        mask[4] = 0.0;
        cfg.mix_batch(
            &mut images,
            &mut targets,
            &mut mask,
            b,
            size,
            &mut Rng::new(5),
        );
        assert!(targets.iter().all(|t| (0.0..=1.0).contains(t)));
        assert!(mask.iter().filter(|m| **m == 0.0).count() >= 1);
        assert!(images.iter().all(|v| (0.0..8.0).contains(v)));
        // Something was mixed: images took pixels of their partners, and
        // targets of partners with other labels became fractional.
        let changed = images
            .chunks(size * size)
            .enumerate()
            .filter(|(i, px)| px.iter().any(|v| *v != *i as f32))
            .count();
        assert!(changed >= b / 2, "only {changed} of {b} images were mixed");
        assert!(
            targets.iter().any(|t| *t > 0.0 && *t < 1.0),
            "no target was mixed: {targets:?}"
        );
    }
}
