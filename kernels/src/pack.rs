//! Weights as the device wants them: GEMM matrices (and the biases fused
//! into GEMM epilogues) in the 16-bit precision, everything else f32. The
//! patch kernel `[D, C, P, P]` is used as the `[D, C*P*P]` matrix it is in
//! memory, matching the (channel, ky, kx) order of [`crate::plan::Step::Im2col`].

use std::collections::BTreeMap;

use cxr_model::Weights;

use crate::plan::{Plan, Precision, Step};

/// Packed weights: 16-bit bits or f32 values by canonical name.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    pub precision: Precision,
    pub half: BTreeMap<String, Vec<u16>>,
    pub full: BTreeMap<String, Vec<f32>>,
}

impl PackedWeights {
    /// Pack for `plan`: the names its GEMMs read (matrix and bias) go to
    /// 16 bits; every other tensor stays f32.
    pub fn pack(weights: &Weights, plan: &Plan, precision: Precision) -> PackedWeights {
        let mut in_gemm = std::collections::BTreeSet::new();
        for s in &plan.steps {
            if let Step::Gemm(g) = s {
                in_gemm.insert(g.weight.clone());
                if let Some(b) = &g.bias {
                    in_gemm.insert(b.clone());
                }
            }
        }
        let (mut half, mut full) = (BTreeMap::new(), BTreeMap::new());
        for (name, _, data) in weights.iter() {
            if in_gemm.contains(name) {
                half.insert(
                    name.to_owned(),
                    data.iter().map(|v| precision.to_bits(*v)).collect(),
                );
            } else {
                full.insert(name.to_owned(), data.to_vec());
            }
        }
        PackedWeights {
            precision,
            half,
            full,
        }
    }

    /// A tensor as f32 (16-bit ones decoded), for the emulator.
    pub fn values(&self, name: &str) -> Option<Vec<f32>> {
        self.full.get(name).cloned().or_else(|| {
            self.half
                .get(name)
                .map(|b| b.iter().map(|x| self.precision.from_bits(*x)).collect())
        })
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.half.values().map(|v| v.len() * 2).sum::<usize>()
            + self.full.values().map(|v| v.len() * 4).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use cxr_model::VitSpec;

    use super::*;

    #[test]
    fn gemm_operands_are_16_bit_and_the_rest_f32() {
        let spec = VitSpec::tiny();
        let w = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::new(spec, 1);
        let p = PackedWeights::pack(&w, &plan, Precision::Bf16);
        for name in [
            "patch_embed.proj.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.0.mlp.fc2.bias",
        ] {
            assert!(p.half.contains_key(name), "{name}");
        }
        for name in [
            "patch_embed.proj.bias",
            "pos_embed",
            "cls_token",
            "blocks.0.norm1.weight",
            "blocks.0.mlp.fc1.bias",
            "head.weight",
        ] {
            assert!(p.full.contains_key(name), "{name}");
        }
        let qkv = p.values("blocks.0.attn.qkv.weight").unwrap_or_default();
        let orig = w.get("blocks.0.attn.qkv.weight").unwrap_or_default();
        assert_eq!(qkv.len(), orig.len());
        assert!(qkv
            .iter()
            .zip(orig)
            .all(|(a, b)| *a == Precision::Bf16.round(*b)));
        assert!(p.bytes() < w.iter().map(|(_, _, d)| d.len() * 4).sum::<usize>());
    }
}
