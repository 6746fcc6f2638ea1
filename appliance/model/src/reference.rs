//! The plain f32 reference forward: written for clarity, not speed, and the
//! oracle every engine (tract, CUDA) is checked against.

use crate::{ModelError, Weights};

/// The outputs for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// `[labels]`
    pub logits: Vec<f32>,
    /// `[width]`: the final-normed CLS token, the head's input.
    pub features: Vec<f32>,
}

const LN_EPS: f32 = 1e-6;

/// `y[o] = b[o] + sum_i x[i] * w[o, i]` for each row of `x` (`[rows, n_in]`),
/// with `w` in PyTorch layout `[n_out, n_in]`.
fn linear(x: &[f32], rows: usize, w: &[f32], b: &[f32], n_in: usize, n_out: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * n_out];
    for r in 0..rows {
        let xr = &x[r * n_in..(r + 1) * n_in];
        for o in 0..n_out {
            let wo = &w[o * n_in..(o + 1) * n_in];
            let dot: f64 = xr
                .iter()
                .zip(wo)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            y[r * n_out + o] = dot as f32 + b[o];
        }
    }
    y
}

fn layer_norm(x: &[f32], rows: usize, d: usize, gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * d];
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let mean = xr.iter().map(|v| f64::from(*v)).sum::<f64>() / d as f64;
        let var = xr
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / d as f64;
        let inv = 1.0 / (var + f64::from(LN_EPS)).sqrt();
        for i in 0..d {
            y[r * d + i] = ((f64::from(xr[i]) - mean) * inv) as f32 * gamma[i] + beta[i];
        }
    }
    y
}

/// Exact GELU: `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2))
}

/// Run one image `[C, S, S]` (row-major) through the model.
pub fn forward(w: &Weights, image: &[f32]) -> Result<Outputs, ModelError> {
    let s = w.spec;
    let (c, size, p, d, g) = (s.in_channels, s.image_size, s.patch, s.width, s.grid());
    if image.len() != c * size * size {
        return Err(ModelError::InputShape {
            expected: c * size * size,
            got: image.len(),
        });
    }
    let t = s.tokens();
    // Patch embedding: a stride-p convolution, patches in row-major grid order.
    let (pw, pb) = (
        w.get("patch_embed.proj.weight")?,
        w.get("patch_embed.proj.bias")?,
    );
    let mut x = vec![0.0f32; t * d];
    x[..d].copy_from_slice(w.get("cls_token")?);
    for gy in 0..g {
        for gx in 0..g {
            let token = 1 + gy * g + gx;
            for o in 0..d {
                let mut acc = f64::from(pb[o]);
                for ch in 0..c {
                    for ky in 0..p {
                        for kx in 0..p {
                            let pixel =
                                image[ch * size * size + (gy * p + ky) * size + gx * p + kx];
                            acc +=
                                f64::from(pixel) * f64::from(pw[((o * c + ch) * p + ky) * p + kx]);
                        }
                    }
                }
                x[token * d + o] = acc as f32;
            }
        }
    }
    for (v, pe) in x.iter_mut().zip(w.get("pos_embed")?) {
        *v += pe;
    }
    let (heads, hd, hidden) = (s.heads, s.head_dim(), s.hidden());
    let scale = 1.0 / (hd as f64).sqrt();
    for i in 0..s.depth {
        let n = |name: &str| format!("blocks.{i}.{name}");
        // Attention.
        let h = layer_norm(
            &x,
            t,
            d,
            w.get(&n("norm1.weight"))?,
            w.get(&n("norm1.bias"))?,
        );
        let qkv = linear(
            &h,
            t,
            w.get(&n("attn.qkv.weight"))?,
            w.get(&n("attn.qkv.bias"))?,
            d,
            3 * d,
        );
        let mut attended = vec![0.0f32; t * d];
        for head in 0..heads {
            let at =
                |row: usize, which: usize, k: usize| qkv[row * 3 * d + which * d + head * hd + k];
            for q in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|k| {
                        (0..hd)
                            .map(|e| f64::from(at(q, 0, e)) * f64::from(at(k, 1, e)))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for e in 0..hd {
                    let v: f64 = (0..t)
                        .map(|k| exps[k] / total * f64::from(at(k, 2, e)))
                        .sum();
                    attended[q * d + head * hd + e] = v as f32;
                }
            }
        }
        let proj = linear(
            &attended,
            t,
            w.get(&n("attn.proj.weight"))?,
            w.get(&n("attn.proj.bias"))?,
            d,
            d,
        );
        x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        // MLP.
        let h = layer_norm(
            &x,
            t,
            d,
            w.get(&n("norm2.weight"))?,
            w.get(&n("norm2.bias"))?,
        );
        let mut hid = linear(
            &h,
            t,
            w.get(&n("mlp.fc1.weight"))?,
            w.get(&n("mlp.fc1.bias"))?,
            d,
            hidden,
        );
        hid.iter_mut().for_each(|v| *v = gelu(*v));
        let out = linear(
            &hid,
            t,
            w.get(&n("mlp.fc2.weight"))?,
            w.get(&n("mlp.fc2.bias"))?,
            hidden,
            d,
        );
        x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
    }
    let cls = layer_norm(&x[..d], 1, d, w.get("norm.weight")?, w.get("norm.bias")?);
    let logits = linear(
        &cls,
        1,
        w.get("head.weight")?,
        w.get("head.bias")?,
        d,
        s.labels,
    );
    Ok(Outputs {
        logits,
        features: cls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VitSpec;

    #[test]
    fn gelu_matches_known_values() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
    }

    #[test]
    fn forward_is_deterministic_shaped_and_input_dependent() {
        let spec = VitSpec::tiny();
        let w = Weights::random(&spec, 3).unwrap();
        let a: Vec<f32> = (0..32 * 32)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = a.iter().map(|v| -v).collect();
        let oa = forward(&w, &a).unwrap();
        assert_eq!(oa.logits.len(), 5);
        assert_eq!(oa.features.len(), 32);
        assert_eq!(oa, forward(&w, &a).unwrap());
        assert_ne!(oa.logits, forward(&w, &b).unwrap().logits);
        assert!(oa.logits.iter().chain(&oa.features).all(|v| v.is_finite()));
        assert_eq!(
            forward(&w, &a[1..]).unwrap_err().code(),
            "MODEL_INPUT_SHAPE"
        );
    }

    #[test]
    fn final_features_are_layer_normed() {
        let spec = VitSpec::tiny();
        let w = Weights::random(&spec, 4).unwrap();
        let img = vec![0.5f32; 32 * 32];
        let f = forward(&w, &img).unwrap().features;
        let mean = f.iter().sum::<f32>() / f.len() as f32;
        let var = f.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / f.len() as f32;
        // Variance is v / (v + eps) with eps = 1e-6: slightly under 1 when the
        // CLS token's own variance is small, as with 0.02-scale random weights.
        assert!(mean.abs() < 1e-4 && var < 1.0 && var > 0.99, "{mean} {var}");
    }
}
