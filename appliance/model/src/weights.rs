use std::collections::BTreeMap;

use crate::names::parameters;
use crate::{ModelError, VitSpec};

/// A model's parameters by canonical name: `(shape, row-major f32 data)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub spec: VitSpec,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// splitmix64: a small, well-mixed deterministic generator for test weights.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal truncated to [-2, 2] (timm's trunc_normal_ bounds in std units).
    fn truncated_normal(&mut self) -> f32 {
        loop {
            let (u, v) = (self.uniform(), self.uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            if z.abs() <= 2.0 {
                return z as f32;
            }
        }
    }
}

impl Weights {
    /// Random weights as timm initialises a ViT: truncated normal (std 0.02)
    /// for matrices and embeddings, zero biases, LayerNorm weights 1.
    /// The same seed always gives the same weights.
    pub fn random(spec: &VitSpec, seed: u64) -> Result<Self, ModelError> {
        spec.validate()?;
        let mut rng = SplitMix(seed);
        let mut tensors = BTreeMap::new();
        for (name, shape) in parameters(spec) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("norm") {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * rng.truncated_normal()).collect()
            };
            tensors.insert(name, (shape, data));
        }
        Ok(Weights {
            spec: *spec,
            tensors,
        })
    }

    /// Weights from named tensors, checked against the spec: every canonical
    /// name present with its exact shape, nothing else.
    pub fn from_tensors(
        spec: &VitSpec,
        mut named: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, ModelError> {
        spec.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in parameters(spec) {
            let (got, data) = named
                .remove(&name)
                .ok_or_else(|| ModelError::MissingWeight { name: name.clone() })?;
            if got != shape || data.len() != shape.iter().product::<usize>() {
                return Err(ModelError::WeightShape {
                    name,
                    expected: shape,
                    got,
                });
            }
            tensors.insert(name, (got, data));
        }
        Ok(Weights {
            spec: *spec,
            tensors,
        })
    }

    /// A tensor's data by canonical name.
    pub fn get(&self, name: &str) -> Result<&[f32], ModelError> {
        self.tensors
            .get(name)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_owned(),
            })
    }

    /// Every tensor, in canonical (sorted) order: `(name, shape, data)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[usize], &[f32])> {
        self.tensors
            .iter()
            .map(|(n, (s, d))| (n.as_str(), s.as_slice(), d.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_are_deterministic_and_timm_like() {
        let spec = VitSpec::tiny();
        let a = Weights::random(&spec, 7).unwrap();
        assert_eq!(a, Weights::random(&spec, 7).unwrap());
        assert_ne!(a, Weights::random(&spec, 8).unwrap());
        let qkv = a.get("blocks.0.attn.qkv.weight").unwrap();
        let std = (qkv.iter().map(|v| v * v).sum::<f32>() / qkv.len() as f32).sqrt();
        assert!((0.015..0.025).contains(&std), "{std}");
        assert!(qkv.iter().all(|v| v.abs() <= 0.04));
        assert!(a.get("norm.weight").unwrap().iter().all(|v| *v == 1.0));
        assert!(a.get("head.bias").unwrap().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn from_tensors_checks_names_and_shapes() {
        let spec = VitSpec::tiny();
        let w = Weights::random(&spec, 1).unwrap();
        let named: BTreeMap<_, _> = w
            .iter()
            .map(|(n, s, d)| (n.to_owned(), (s.to_vec(), d.to_vec())))
            .collect();
        assert_eq!(Weights::from_tensors(&spec, named.clone()).unwrap(), w);
        let mut missing = named.clone();
        missing.remove("head.weight");
        assert_eq!(
            Weights::from_tensors(&spec, missing).unwrap_err().code(),
            "MODEL_MISSING_WEIGHT"
        );
        let mut transposed = named;
        let (shape, data) = transposed.remove("head.weight").unwrap();
        transposed.insert("head.weight".into(), (vec![shape[1], shape[0]], data));
        assert_eq!(
            Weights::from_tensors(&spec, transposed).unwrap_err().code(),
            "MODEL_WEIGHT_SHAPE"
        );
    }
}
