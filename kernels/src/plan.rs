//! The ViT forward as a list of kernel and GEMM steps over named buffers:
//! one plan, run by the CUDA engine on the device and by the CPU emulator
//! ([`crate::emulate`]) here, so the decomposition (order, layouts, which
//! buffer feeds which) is tested against the reference without a GPU.
//!
//! Per block: `x += delta; h = LN1(x)` (fused), `qkv = h Wqkv^T + b`,
//! `a = attention(qkv)`, `delta = a Wproj^T + b`, `x += delta; h = LN2(x)`,
//! `u = gelu(h Wfc1^T + b)`, `delta = u Wfc2^T + b`. The residual stream
//! stays f32; GEMM inputs and outputs are f16/bf16 with f32 accumulation.

use cxr_model::VitSpec;

/// The 16-bit element type of activations and matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    F16,
    Bf16,
}

impl Precision {
    /// The suffix of this flavour's kernel names.
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// `x` rounded to this precision (round to nearest even).
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F16 => half::f16::from_f32(x).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }

    pub fn to_bits(self, x: f32) -> u16 {
        match self {
            Precision::F16 => half::f16::from_f32(x).to_bits(),
            Precision::Bf16 => half::bf16::from_f32(x).to_bits(),
        }
    }

    pub fn from_bits(self, b: u16) -> f32 {
        match self {
            Precision::F16 => half::f16::from_bits(b).to_f32(),
            Precision::Bf16 => half::bf16::from_bits(b).to_f32(),
        }
    }
}

/// Working buffers. f32: `Image`, `Resid`, `Features`; the rest are 16-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// `[B, C, S, S]`
    Image,
    /// `[B * G^2, C * P^2]`
    Patches,
    /// `[B * G^2, D]`
    PatchOut,
    /// `[B * T, D]`, the residual stream.
    Resid,
    /// `[B * T, D]`, LayerNorm output (GEMM input).
    Normed,
    /// `[B * T, 3D]`
    Qkv,
    /// `[B * T, D]`
    Attended,
    /// `[B * T, D]`, a block branch's output, added to the stream next.
    Delta,
    /// `[B * T, 4D]`
    Hidden,
    /// `[B, D]`, final-normed CLS.
    Features,
}

impl Buffer {
    pub const ALL: [Buffer; 10] = [
        Buffer::Image,
        Buffer::Patches,
        Buffer::PatchOut,
        Buffer::Resid,
        Buffer::Normed,
        Buffer::Qkv,
        Buffer::Attended,
        Buffer::Delta,
        Buffer::Hidden,
        Buffer::Features,
    ];

    pub fn is_f32(self) -> bool {
        matches!(self, Buffer::Image | Buffer::Resid | Buffer::Features)
    }
}

/// `output[m, n] = sum_k input[m, k] * weight[n, k] (+ bias[n])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gemm {
    pub input: Buffer,
    pub weight: String,
    pub bias: Option<String>,
    pub output: Buffer,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Im2col,
    Gemm(Gemm),
    /// Resid = [cls; patch_out + patch bias] + pos.
    Assemble,
    /// For rows `r = i * row_stride` (`i < rows`): `Resid[r] += Delta[r]`
    /// when `add_delta`, then `output[i] = LN(Resid[r])`.
    ResidualNorm {
        add_delta: bool,
        gamma: String,
        beta: String,
        output: Buffer,
        rows: usize,
        row_stride: usize,
    },
    /// Qkv -> Attended.
    Attention,
    /// `Hidden = gelu(Hidden + bias)`.
    BiasGelu {
        bias: String,
    },
}

pub const LN_EPS: f32 = 1e-6;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub spec: VitSpec,
    pub batch: usize,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn new(spec: VitSpec, batch: usize) -> Plan {
        let (d, h) = (spec.width, spec.hidden());
        let rows = batch * spec.tokens();
        let gemm = |input, weight: String, bias: Option<String>, output, n, k| {
            Step::Gemm(Gemm {
                input,
                weight,
                bias,
                output,
                m: rows,
                n,
                k,
            })
        };
        let mut steps = vec![
            Step::Im2col,
            Step::Gemm(Gemm {
                input: Buffer::Patches,
                weight: "patch_embed.proj.weight".into(),
                bias: None,
                output: Buffer::PatchOut,
                m: batch * spec.grid() * spec.grid(),
                n: d,
                k: spec.in_channels * spec.patch * spec.patch,
            }),
            Step::Assemble,
        ];
        for i in 0..spec.depth {
            let n = |x: &str| format!("blocks.{i}.{x}");
            let norm = |which: &str, add_delta| Step::ResidualNorm {
                add_delta,
                gamma: n(&format!("{which}.weight")),
                beta: n(&format!("{which}.bias")),
                output: Buffer::Normed,
                rows,
                row_stride: 1,
            };
            steps.extend([
                norm("norm1", i > 0),
                gemm(
                    Buffer::Normed,
                    n("attn.qkv.weight"),
                    Some(n("attn.qkv.bias")),
                    Buffer::Qkv,
                    3 * d,
                    d,
                ),
                Step::Attention,
                gemm(
                    Buffer::Attended,
                    n("attn.proj.weight"),
                    Some(n("attn.proj.bias")),
                    Buffer::Delta,
                    d,
                    d,
                ),
                norm("norm2", true),
                gemm(
                    Buffer::Normed,
                    n("mlp.fc1.weight"),
                    None,
                    Buffer::Hidden,
                    h,
                    d,
                ),
                Step::BiasGelu {
                    bias: n("mlp.fc1.bias"),
                },
                gemm(
                    Buffer::Hidden,
                    n("mlp.fc2.weight"),
                    Some(n("mlp.fc2.bias")),
                    Buffer::Delta,
                    d,
                    h,
                ),
            ]);
        }
        // The last branch joins the stream, and only the CLS rows are normed.
        steps.push(Step::ResidualNorm {
            add_delta: spec.depth > 0,
            gamma: "norm.weight".into(),
            beta: "norm.bias".into(),
            output: Buffer::Features,
            rows: batch,
            row_stride: spec.tokens(),
        });
        Plan { spec, batch, steps }
    }

    /// Elements in a buffer.
    pub fn len(&self, b: Buffer) -> usize {
        let s = self.spec;
        let rows = self.batch * s.tokens();
        let patches = self.batch * s.grid() * s.grid();
        match b {
            Buffer::Image => self.batch * s.in_channels * s.image_size * s.image_size,
            Buffer::Patches => patches * s.in_channels * s.patch * s.patch,
            Buffer::PatchOut => patches * s.width,
            Buffer::Resid | Buffer::Normed | Buffer::Attended | Buffer::Delta => rows * s.width,
            Buffer::Qkv => rows * 3 * s.width,
            Buffer::Hidden => rows * s.hidden(),
            Buffer::Features => self.batch * s.width,
        }
    }

    /// Device memory for the working buffers, in bytes.
    pub fn working_bytes(&self) -> usize {
        Buffer::ALL
            .iter()
            .map(|b| self.len(*b) * if b.is_f32() { 4 } else { 2 })
            .sum()
    }

    /// Multiply-accumulates of the GEMMs and the attention (QK^T and PV).
    pub fn macs(&self) -> u64 {
        let s = self.spec;
        let gemms: u64 = self
            .steps
            .iter()
            .map(|st| match st {
                Step::Gemm(g) => (g.m * g.n * g.k) as u64,
                _ => 0,
            })
            .sum();
        let t = s.tokens() as u64;
        let attention = 2 * self.batch as u64 * s.depth as u64 * t * t * s.width as u64;
        gemms + attention
    }
}

/// Logits `[B, labels]` from features `[B, D]`: the head stays on the host
/// in f32 (14 x 768 MACs per image; the features go back anyway for the
/// Mahalanobis gate).
pub fn head(features: &[f32], weight: &[f32], bias: &[f32], width: usize) -> Vec<f32> {
    let labels = bias.len();
    features
        .chunks(width)
        .flat_map(|f| {
            (0..labels).map(move |j| {
                let row = &weight[j * width..(j + 1) * width];
                bias[j] + f.iter().zip(row).map(|(a, b)| a * b).sum::<f32>()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_b16_plan_has_the_expected_shape_and_cost() {
        let p = Plan::new(VitSpec::vit_b16(512, 14), 5);
        // 3 stem steps, 8 per block, 1 final norm.
        assert_eq!(p.steps.len(), 3 + 8 * 12 + 1);
        assert_eq!(p.len(Buffer::Qkv), 5 * 1025 * 3 * 768);
        // About 106 GMAC (213 GFLOP) per image at 512.
        let per_image = p.macs() as f64 / 5.0;
        assert!(
            (per_image / 1e9 - 106.5).abs() < 2.0,
            "{per_image:.3e} MAC per image"
        );
        let first_norm = p.steps.iter().find_map(|s| match s {
            Step::ResidualNorm { add_delta, .. } => Some(*add_delta),
            _ => None,
        });
        assert_eq!(first_norm, Some(false), "block 0 has no branch to add yet");
        assert!(matches!(
            p.steps.last(),
            Some(Step::ResidualNorm {
                rows: 5,
                row_stride: 1025,
                output: Buffer::Features,
                ..
            })
        ));
        // Working set at batch 5, 512: well within an Orin's memory.
        assert!(p.working_bytes() < 200 << 20, "{}", p.working_bytes());
    }

    #[test]
    fn precisions_round_as_ieee_and_bfloat() {
        assert_eq!(Precision::F16.round(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 1.0 / 64.0), 1.0 + 1.0 / 64.0);
        for x in [0.0f32, -2.5, 3.140625] {
            for p in [Precision::F16, Precision::Bf16] {
                assert_eq!(p.from_bits(p.to_bits(x)), p.round(x));
            }
        }
    }
}
