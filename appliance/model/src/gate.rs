//! The content gate: a small model that says what an image looks like
//! (frontal chest radiograph, lateral chest radiograph, other radiograph, not
//! a radiograph) without trusting its DICOM tags, plus a one-class distance
//! to the frontal chest films it was fitted on.
//!
//! Input `[N, 1, S, S]` (the gate's own `prepare` output). Inside:
//! - a `T x T` thumbnail (average pool by `pool`, `T = S / pool`);
//! - its principal components in the frontal films' eigen-space (whitened)
//!   and the residual outside that space ("distance in and from feature
//!   space": frontal films sit close, anything else does not);
//! - its left-right asymmetry (a frontal film is nearly mirror-symmetric, a
//!   lateral film is not);
//! - a coarse `G x G` layout (black corners of a CT slice, a page of text).
//!
//! A two-layer MLP on those features gives the four class logits. Outputs:
//! `logits [N, 4]` and `distance [N, 1]` (mean of the whitened squared
//! components and the scaled residual, about 1 for a typical frontal film).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The classes, in logit order.
pub const CONTENT_CLASSES: [&str; 4] = [
    "frontal_chest",
    "lateral_chest",
    "other_radiograph",
    "not_radiograph",
];

/// Guards the logarithms of non-negative features.
pub const LOG_EPS: f32 = 1e-3;

/// The gate's shape. Serialized into the bundle manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSpec {
    /// Side of the square input, pixels.
    pub image_size: usize,
    /// Average-pool factor from the input to the thumbnail.
    pub pool: usize,
    /// Principal components kept.
    pub components: usize,
    /// Side of the coarse layout grid.
    pub coarse: usize,
    /// Hidden units of the head.
    pub hidden: usize,
}

impl Default for GateSpec {
    /// 64 px input, 32 px thumbnail, 32 components, 8 x 8 layout, 32 hidden units.
    fn default() -> Self {
        GateSpec {
            image_size: 64,
            pool: 2,
            components: 32,
            coarse: 8,
            hidden: 32,
        }
    }
}

impl GateSpec {
    /// Side of the thumbnail.
    pub fn thumb(&self) -> usize {
        self.image_size / self.pool.max(1)
    }

    /// Pixels of the thumbnail.
    pub fn thumb_pixels(&self) -> usize {
        self.thumb() * self.thumb()
    }

    /// Length of the head's input vector.
    pub fn features(&self) -> usize {
        self.components + 2 + self.coarse * self.coarse
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::BadSpec { reason });
        if !(16..=256).contains(&self.image_size) || self.pool == 0 {
            return bad(format!(
                "gate input {} px, pool {}: the input must be 16..=256 px and the pool at least 1",
                self.image_size, self.pool
            ));
        }
        let t = self.thumb();
        if !self.image_size.is_multiple_of(self.pool)
            || self.coarse == 0
            || !t.is_multiple_of(self.coarse)
        {
            return bad(format!(
                "gate input {} px, pool {}, layout grid {}: each must divide the one before",
                self.image_size, self.pool, self.coarse
            ));
        }
        if self.components == 0 || self.components >= self.thumb_pixels() {
            return bad(format!(
                "{} principal components for a {t} x {t} thumbnail",
                self.components
            ));
        }
        if !(1..=1024).contains(&self.hidden) {
            return bad(format!("{} hidden units (1..=1024)", self.hidden));
        }
        Ok(())
    }

    /// Every parameter's name and shape.
    pub fn parameters(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (p, k, f, h) = (
            self.thumb_pixels(),
            self.components,
            self.features(),
            self.hidden,
        );
        vec![
            ("pca.mean", vec![p]),
            ("pca.basis", vec![k, p]),
            ("pca.inv_sd", vec![k]),
            ("pca.inv_residual", vec![1]),
            ("feat.mean", vec![f]),
            ("feat.inv_sd", vec![f]),
            ("fc1.weight", vec![h, f]),
            ("fc1.bias", vec![h]),
            ("fc2.weight", vec![CONTENT_CLASSES.len(), h]),
            ("fc2.bias", vec![CONTENT_CLASSES.len()]),
        ]
    }
}

/// The gate's parameters by name, checked against its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct GateWeights {
    pub spec: GateSpec,
    tensors: BTreeMap<String, Vec<f32>>,
}

/// What the gate computes for one image before its head.
#[derive(Debug, Clone, PartialEq)]
pub struct GateFeatures {
    /// The head's input, `[features]`, before standardisation.
    pub raw: Vec<f32>,
    /// The one-class distance to the frontal films.
    pub distance: f32,
}

/// The gate's outputs for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutputs {
    /// `[4]`, in [`CONTENT_CLASSES`] order.
    pub logits: Vec<f32>,
    pub distance: f32,
}

impl GateWeights {
    /// Weights from named tensors: every parameter present with its shape and
    /// finite. Other tensors (the graph's own constants) are ignored.
    pub fn from_tensors(
        spec: &GateSpec,
        mut named: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, ModelError> {
        spec.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in spec.parameters() {
            let (got, data) = named
                .remove(name)
                .ok_or_else(|| ModelError::MissingWeight { name: name.into() })?;
            if got != shape || data.len() != shape.iter().product::<usize>() {
                return Err(ModelError::WeightShape {
                    name: name.into(),
                    expected: shape,
                    got,
                });
            }
            if data.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::BadSpec {
                    reason: format!("gate weight {name} is not finite"),
                });
            }
            tensors.insert(name.to_owned(), data);
        }
        Ok(GateWeights {
            spec: *spec,
            tensors,
        })
    }

    /// Weights from plain vectors in [`GateSpec::parameters`] order.
    pub fn from_parts(spec: &GateSpec, parts: Vec<Vec<f32>>) -> Result<Self, ModelError> {
        let named = spec
            .parameters()
            .into_iter()
            .zip(parts)
            .map(|((n, shape), d)| (n.to_owned(), (shape, d)))
            .collect();
        Self::from_tensors(spec, named)
    }

    /// A deterministic random gate for tests of engines against the
    /// reference: an orthonormal random basis and random non-trivial means,
    /// scales and head, so that every operation of the graph shows.
    pub fn random(spec: &GateSpec, seed: u64) -> Result<Self, ModelError> {
        Self::random_parts(spec, seed).and_then(|parts| Self::from_parts(spec, parts))
    }

    /// A random gate whose head ignores its input: the frontal logit is
    /// `frontal_margin`, the others 0, for every image. For tests of
    /// everything around the gate.
    pub fn accepting(spec: &GateSpec, seed: u64, frontal_margin: f32) -> Result<Self, ModelError> {
        let mut parts = Self::random_parts(spec, seed)?;
        parts[8].iter_mut().for_each(|w| *w = 0.0);
        parts[9] = vec![frontal_margin, 0.0, 0.0, 0.0];
        Self::from_parts(spec, parts)
    }

    fn random_parts(spec: &GateSpec, seed: u64) -> Result<Vec<Vec<f32>>, ModelError> {
        spec.validate()?;
        let mut state = seed ^ 0xD1B5_4A32_D192_ED03;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let (p, k, f, h) = (
            spec.thumb_pixels(),
            spec.components,
            spec.features(),
            spec.hidden,
        );
        let mut basis: Vec<f32> = (0..k * p).map(|_| next()).collect();
        orthonormalise_rows(&mut basis, k, p);
        let classes = CONTENT_CLASSES.len();
        Ok(vec![
            (0..p).map(|_| 0.2 * next()).collect(),
            basis,
            (0..k).map(|_| 0.5 + next().abs()).collect(),
            vec![0.8 + next().abs()],
            (0..f).map(|_| 0.3 * next()).collect(),
            (0..f).map(|_| 0.7 + next().abs()).collect(),
            (0..h * f).map(|_| 0.3 * next()).collect(),
            (0..h).map(|_| 0.1 * next()).collect(),
            (0..classes * h).map(|_| 0.3 * next()).collect(),
            (0..classes).map(|_| 0.1 * next()).collect(),
        ])
    }

    /// A parameter's data by name (empty if the name is not a parameter).
    pub fn get(&self, name: &str) -> &[f32] {
        self.tensors.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every tensor in [`GateSpec::parameters`] order: `(name, shape, data)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Vec<usize>, &[f32])> + '_ {
        self.spec
            .parameters()
            .into_iter()
            .map(move |(n, shape)| (n, shape, self.get(n)))
    }

    /// The features of one image `[S, S]`.
    pub fn features(&self, image: &[f32]) -> Result<GateFeatures, ModelError> {
        let s = &self.spec;
        if image.len() != s.image_size * s.image_size {
            return Err(ModelError::InputShape {
                expected: s.image_size * s.image_size,
                got: image.len(),
            });
        }
        let t = s.thumb();
        let thumb = average_pool(image, s.image_size, s.pool);
        let (coefficients, residual) = project(
            &thumb,
            self.get("pca.mean"),
            self.get("pca.basis"),
            s.components,
        );
        let inv_sd = self.get("pca.inv_sd");
        let whitened: Vec<f32> = coefficients
            .iter()
            .zip(inv_sd)
            .map(|(c, w)| c * w)
            .collect();
        let scaled_residual = residual * self.get("pca.inv_residual")[0];
        let mean_sq = whitened.iter().map(|w| w * w).sum::<f32>() / s.components as f32;
        let mut raw = whitened;
        raw.push((scaled_residual + LOG_EPS).ln());
        raw.push((asymmetry(&thumb, t) + LOG_EPS).ln());
        raw.extend(average_pool(&thumb, t, t / s.coarse));
        Ok(GateFeatures {
            raw,
            distance: 0.5 * (mean_sq + scaled_residual),
        })
    }

    /// The head on raw features: standardise, hidden layer (ReLU), logits.
    pub fn head(&self, raw: &[f32]) -> Vec<f32> {
        let s = &self.spec;
        let standard: Vec<f32> = raw
            .iter()
            .zip(self.get("feat.mean"))
            .zip(self.get("feat.inv_sd"))
            .map(|((x, m), w)| (x - m) * w)
            .collect();
        let hidden: Vec<f32> = dense(
            &standard,
            self.get("fc1.weight"),
            self.get("fc1.bias"),
            s.features(),
        )
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
        dense(
            &hidden,
            self.get("fc2.weight"),
            self.get("fc2.bias"),
            s.hidden,
        )
    }

    /// The reference forward of one image `[S, S]`: the oracle for engines.
    pub fn forward(&self, image: &[f32]) -> Result<GateOutputs, ModelError> {
        let f = self.features(image)?;
        Ok(GateOutputs {
            logits: self.head(&f.raw),
            distance: f.distance,
        })
    }
}

/// `y = W x + b`, `W` `[out, n_in]` row-major.
fn dense(x: &[f32], w: &[f32], b: &[f32], n_in: usize) -> Vec<f32> {
    b.iter()
        .enumerate()
        .map(|(o, bias)| {
            let row = &w[o * n_in..(o + 1) * n_in];
            let dot: f64 = row
                .iter()
                .zip(x)
                .map(|(a, v)| f64::from(*a) * f64::from(*v))
                .sum();
            dot as f32 + bias
        })
        .collect()
}

/// Mean over `factor x factor` blocks of a `side x side` image.
pub fn average_pool(image: &[f32], side: usize, factor: usize) -> Vec<f32> {
    let out = side / factor;
    let mut pooled = vec![0f32; out * out];
    let norm = 1.0 / (factor * factor) as f32;
    for (i, cell) in pooled.iter_mut().enumerate() {
        let (oy, ox) = (i / out, i % out);
        let mut sum = 0f32;
        for y in oy * factor..(oy + 1) * factor {
            sum += image[y * side + ox * factor..y * side + (ox + 1) * factor]
                .iter()
                .sum::<f32>();
        }
        *cell = sum * norm;
    }
    pooled
}

/// Mean squared difference between a `side x side` image and its mirror image.
pub fn asymmetry(image: &[f32], side: usize) -> f32 {
    let mut sum = 0f32;
    for y in 0..side {
        let row = &image[y * side..(y + 1) * side];
        for x in 0..side {
            let d = row[x] - row[side - 1 - x];
            sum += d * d;
        }
    }
    sum / (side * side) as f32
}

/// Coefficients of `x - mean` on the `k` orthonormal rows of `basis`, and the
/// mean squared residual outside their span.
pub fn project(x: &[f32], mean: &[f32], basis: &[f32], k: usize) -> (Vec<f32>, f32) {
    let p = x.len();
    let centred: Vec<f32> = x.iter().zip(mean).map(|(a, m)| a - m).collect();
    let coefficients: Vec<f32> = (0..k)
        .map(|i| {
            basis[i * p..(i + 1) * p]
                .iter()
                .zip(&centred)
                .map(|(b, c)| f64::from(*b) * f64::from(*c))
                .sum::<f64>() as f32
        })
        .collect();
    let mut residual = 0f64;
    for (j, c) in centred.iter().enumerate() {
        let recon: f32 = (0..k).map(|i| coefficients[i] * basis[i * p + j]).sum();
        residual += f64::from(c - recon).powi(2);
    }
    (coefficients, (residual / p as f64) as f32)
}

/// Gram-Schmidt on the rows of a `[k, p]` matrix (in place).
pub fn orthonormalise_rows(m: &mut [f32], k: usize, p: usize) {
    for i in 0..k {
        for j in 0..i {
            let dot: f64 = (0..p)
                .map(|c| f64::from(m[i * p + c]) * f64::from(m[j * p + c]))
                .sum();
            for c in 0..p {
                m[i * p + c] -= dot as f32 * m[j * p + c];
            }
        }
        let norm = (0..p)
            .map(|c| f64::from(m[i * p + c]).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for c in 0..p {
            m[i * p + c] = (f64::from(m[i * p + c]) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symmetric_image_has_no_asymmetry_and_a_flipped_one_the_same() {
        let side = 8;
        let sym: Vec<f32> = (0..side * side)
            .map(|i| ((i % side) as f32 - 3.5).abs())
            .collect();
        assert_eq!(asymmetry(&sym, side), 0.0);
        let ramp: Vec<f32> = (0..side * side).map(|i| (i % side) as f32).collect();
        assert!(asymmetry(&ramp, side) > 10.0);
    }

    #[test]
    fn the_basis_reconstructs_what_lies_in_its_span() {
        let spec = GateSpec::default();
        let w = GateWeights::random(&spec, 3).unwrap();
        let p = spec.thumb_pixels();
        let basis = w.get("pca.basis");
        let x: Vec<f32> = (0..p).map(|j| 2.0 * basis[j] - basis[p + j]).collect();
        let (c, residual) = project(&x, &vec![0.0; p], basis, spec.components);
        assert!(
            (c[0] - 2.0).abs() < 1e-4 && (c[1] + 1.0).abs() < 1e-4,
            "{c:?}"
        );
        assert!(residual < 1e-8, "{residual}");
        let off: Vec<f32> = (0..p)
            .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(project(&off, &vec![0.0; p], basis, spec.components).1 > 0.5);
    }

    #[test]
    fn shapes_and_non_finite_weights_are_refused() {
        let spec = GateSpec::default();
        assert!(GateSpec { coarse: 5, ..spec }.validate().is_err());
        assert!(GateSpec {
            components: 1024,
            ..spec
        }
        .validate()
        .is_err());
        let w = GateWeights::accepting(&spec, 1, 5.0).unwrap();
        let mut parts: Vec<Vec<f32>> = w.iter().map(|(_, _, d)| d.to_vec()).collect();
        parts[2][0] = f32::NAN;
        assert!(GateWeights::from_parts(&spec, parts).is_err());
        assert!(w.forward(&[0.0; 10]).is_err());
        let out = w.forward(&vec![0.3; 64 * 64]).unwrap();
        assert_eq!(out.logits.len(), 4);
        assert_eq!(
            out.logits,
            vec![5.0, 0.0, 0.0, 0.0],
            "the head ignores the image"
        );
    }
}
