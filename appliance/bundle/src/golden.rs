//! Golden vectors: a few model inputs with the logits and pooled features the
//! reference forward gave for them when the bundle was locked. The install
//! self-test runs them through this board's engine.

use cxr_model::VitSpec;
use serde::{Deserialize, Serialize};

use crate::BundleError;

/// One golden input, `image` `[C, S, S]`, `logits` `[labels]`, `features` `[width]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenCase {
    pub name: String,
    pub image: Vec<f32>,
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenSet {
    pub cases: Vec<GoldenCase>,
}

/// How close an engine must come to the golden outputs (relative L2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GoldenTolerance {
    /// For f32 engines (tract matches the reference to about 1e-5).
    pub f32_rel_l2: f32,
    /// For bf16/fp16 engines.
    pub reduced_rel_l2: f32,
}

impl Default for GoldenTolerance {
    fn default() -> Self {
        GoldenTolerance {
            f32_rel_l2: 1e-4,
            reduced_rel_l2: 1e-2,
        }
    }
}

/// The loosest tolerances a bundle may state: an f32 engine matches the
/// reference to about 1e-5, bf16 to about 1e-2.
pub const MAX_F32_REL_L2: f32 = 1e-3;
pub const MAX_REDUCED_REL_L2: f32 = 5e-2;

impl GoldenTolerance {
    /// Positive, finite and no looser than the bounds above: an unbounded
    /// tolerance would let any engine pass the self-test.
    pub fn validate(&self) -> Result<(), crate::BundleError> {
        let ok = |v: f32, max: f32| v > 0.0 && v <= max;
        if ok(self.f32_rel_l2, MAX_F32_REL_L2) && ok(self.reduced_rel_l2, MAX_REDUCED_REL_L2) {
            return Ok(());
        }
        Err(crate::BundleError::InvalidParameters {
            problem: format!(
                "golden tolerances f32 {} and reduced {} must lie in (0, {MAX_F32_REL_L2}] and (0, {MAX_REDUCED_REL_L2}]",
                self.f32_rel_l2, self.reduced_rel_l2
            ),
        })
    }
}

/// Relative L2 distance `|a - b| / max(|b|, tiny)`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += f64::from(x - y).powi(2);
        den += f64::from(*y).powi(2);
    }
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    (num.sqrt() / den.sqrt().max(1e-12)) as f32
}

impl GoldenSet {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode and check every case against the model's shapes.
    pub fn decode(bytes: &[u8], spec: &VitSpec) -> Result<Self, BundleError> {
        let pixels = spec.in_channels * spec.image_size * spec.image_size;
        Self::decode_shaped(bytes, pixels, spec.labels, spec.width)
    }

    /// Decode and check every case against the content gate's shapes
    /// (four logits, one distance).
    pub fn decode_gate(bytes: &[u8], spec: &cxr_model::GateSpec) -> Result<Self, BundleError> {
        Self::decode_shaped(bytes, spec.image_size * spec.image_size, 4, 1)
    }

    fn decode_shaped(
        bytes: &[u8],
        pixels: usize,
        labels: usize,
        width: usize,
    ) -> Result<Self, BundleError> {
        let set: GoldenSet = postcard::from_bytes(bytes).map_err(|e| BundleError::Golden {
            problem: format!("cannot decode: {e}"),
        })?;
        if set.cases.is_empty() {
            return Err(BundleError::Golden {
                problem: "no golden cases".into(),
            });
        }
        for c in &set.cases {
            let ok = c.image.len() == pixels
                && c.logits.len() == labels
                && c.features.len() == width
                && c.image
                    .iter()
                    .chain(&c.logits)
                    .chain(&c.features)
                    .all(|v| v.is_finite());
            if !ok {
                return Err(BundleError::Golden {
                    problem: format!(
                        "case `{}` does not match the model's shapes or is not finite",
                        c.name
                    ),
                });
            }
        }
        Ok(set)
    }
}

/// Deterministic golden inputs for a model, `[C, S, S]` each: a smooth
/// chest-like intensity field (bright mediastinum, darker lungs) plus seeded
/// noise, in normalised units. Their outputs come from the reference forward.
#[cfg(feature = "sign")]
pub fn compute(
    weights: &cxr_model::Weights,
    count: usize,
    seed: u64,
) -> Result<GoldenSet, BundleError> {
    let spec = weights.spec;
    let mut noise = noise_source(seed);
    let mut cases = Vec::with_capacity(count);
    for k in 0..count {
        let grey = synthetic_chest(spec.image_size, k, &mut noise);
        let image: Vec<f32> = (0..spec.in_channels)
            .flat_map(|_| grey.iter().copied())
            .collect();
        let out =
            cxr_model::reference::forward(weights, &image).map_err(|e| BundleError::Golden {
                problem: format!("reference forward failed: {e}"),
            })?;
        cases.push(GoldenCase {
            name: format!("synthetic-{k}"),
            image,
            logits: out.logits,
            features: out.features,
        });
    }
    Ok(GoldenSet { cases })
}

#[cfg(feature = "sign")]
fn noise_source(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// A smooth chest-like field `[S, S]` (bright mediastinum, darker lungs)
/// plus noise that grows with `k`, in normalised units.
#[cfg(feature = "sign")]
fn synthetic_chest(s: usize, k: usize, noise: &mut impl FnMut() -> f32) -> Vec<f32> {
    let mut grey = vec![0f32; s * s];
    for y in 0..s {
        for x in 0..s {
            let u = x as f32 / s as f32 - 0.5;
            let v = y as f32 / s as f32 - 0.5;
            let lungs = (-((u.abs() - 0.2).powi(2) + v.powi(2)) * 12.0).exp();
            let spine = (-(u * u) * 80.0).exp();
            grey[y * s + x] =
                1.2 * spine - 1.0 * lungs + 0.3 * v + 0.4 * noise() * (1.0 + k as f32);
        }
    }
    grey
}

/// Golden inputs for the content gate, `[S, S]` each, and its reference
/// outputs (logits, and the distance as the one "feature").
#[cfg(feature = "sign")]
pub fn compute_gate(
    weights: &cxr_model::GateWeights,
    count: usize,
    seed: u64,
) -> Result<GoldenSet, BundleError> {
    let mut noise = noise_source(seed ^ 0x6A7E);
    (0..count)
        .map(|k| {
            let image = synthetic_chest(weights.spec.image_size, k, &mut noise);
            let out = weights.forward(&image).map_err(|e| BundleError::Golden {
                problem: format!("content gate reference forward failed: {e}"),
            })?;
            Ok(GoldenCase {
                name: format!("gate-synthetic-{k}"),
                image,
                logits: out.logits,
                features: vec![out.distance],
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|cases| GoldenSet { cases })
}
