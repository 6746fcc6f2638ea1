//! The plan run on the CPU, each step written the way its kernel computes
//! it (f32 arithmetic, 16-bit buffers rounded where the device rounds them).
//! Two uses: without rounding it must equal the `cxr-model` reference (the
//! plan is right); with rounding it predicts the device's error, and each
//! step function is the CPU reference its kernel is checked against on the
//! GPU machine (`benches/gpu/check.sh`).

use std::collections::BTreeMap;

use crate::pack::PackedWeights;
use crate::plan::{Buffer, Gemm, Plan, Precision, Step, LN_EPS};
use crate::CudaError;

/// `[B, C, S, S]` -> `[B * G^2, C * P^2]`, (channel, ky, kx) order.
pub fn im2col(image: &[f32], batch: usize, channels: usize, size: usize, patch: usize) -> Vec<f32> {
    let g = size / patch;
    let cols = channels * patch * patch;
    let mut out = vec![0.0; batch * g * g * cols];
    for (i, v) in out.iter_mut().enumerate() {
        let (col, row) = (i % cols, i / cols);
        let (kx, ky, ch) = (col % patch, (col / patch) % patch, col / (patch * patch));
        let (gx, gy, b) = (row % g, (row / g) % g, row / (g * g));
        *v = image[((b * channels + ch) * size + gy * patch + ky) * size + gx * patch + kx];
    }
    out
}

/// `out[m, n] = sum_k x[m, k] w[n, k] + bias[n]`, f32 accumulation.
pub fn gemm(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        for c in 0..n {
            let wr = &w[c * k..(c + 1) * k];
            let acc: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
            out[r * n + c] = acc + bias.map_or(0.0, |b| b[c]);
        }
    }
    out
}

/// The residual stream from patch outputs, CLS and position embeddings.
pub fn assemble(
    patch_out: &[f32],
    patch_bias: &[f32],
    cls: &[f32],
    pos: &[f32],
    batch: usize,
    tokens: usize,
    width: usize,
) -> Vec<f32> {
    let mut resid = vec![0.0; batch * tokens * width];
    for (i, v) in resid.iter_mut().enumerate() {
        let (c, t, b) = (i % width, (i / width) % tokens, i / (width * tokens));
        let x = if t == 0 {
            cls[c]
        } else {
            patch_out[(b * (tokens - 1) + t - 1) * width + c] + patch_bias[c]
        };
        *v = x + pos[t * width + c];
    }
    resid
}

/// `resid[r] += delta[r]` (if given) then LayerNorm of the selected rows.
#[allow(clippy::too_many_arguments)]
pub fn residual_norm(
    resid: &mut [f32],
    delta: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    row_stride: usize,
    width: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * width];
    for i in 0..rows {
        let r = i * row_stride;
        let row = &mut resid[r * width..(r + 1) * width];
        if let Some(d) = delta {
            for (x, dx) in row.iter_mut().zip(&d[r * width..(r + 1) * width]) {
                *x += dx;
            }
        }
        let mean = row.iter().sum::<f32>() / width as f32;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / width as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for c in 0..width {
            out[i * width + c] = (row[c] - mean) * inv * gamma[c] + beta[c];
        }
    }
    out
}

/// Softmax attention over `qkv [B, T, 3, H, hd]` -> `[B, T, H, hd]`. With
/// `round`, the probabilities are rounded before `P V` (as the kernel
/// feeds them to the tensor cores) and normalised by the rounded sum.
pub fn attention(
    qkv: &[f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    round: Option<Precision>,
) -> Vec<f32> {
    let d = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0.0; batch * tokens * d];
    let at = |b: usize, t: usize, which: usize, h: usize| {
        let base = ((b * tokens + t) * 3 + which) * d + h * head_dim;
        &qkv[base..base + head_dim]
    };
    let mut scores = vec![0.0f32; tokens];
    for b in 0..batch {
        for h in 0..heads {
            for q in 0..tokens {
                let qv = at(b, q, 0, h);
                for (k, s) in scores.iter_mut().enumerate() {
                    *s = qv
                        .iter()
                        .zip(at(b, k, 1, h))
                        .map(|(x, y)| x * y)
                        .sum::<f32>()
                        * scale;
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0;
                for s in scores.iter_mut() {
                    let e = (*s - max).exp();
                    *s = round.map_or(e, |p| p.round(e));
                    total += *s;
                }
                let o = &mut out[(b * tokens + q) * d + h * head_dim..][..head_dim];
                for (k, p) in scores.iter().enumerate() {
                    for (oe, ve) in o.iter_mut().zip(at(b, k, 2, h)) {
                        *oe += p * ve;
                    }
                }
                for oe in o.iter_mut() {
                    *oe /= total;
                }
            }
        }
    }
    out
}

pub fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    let cols = bias.len();
    for (i, v) in x.iter_mut().enumerate() {
        *v = cxr_model::reference::gelu(*v + bias[i % cols]);
    }
}

/// Run `plan` on `images` (`[B, C, S, S]`): features `[B, D]`. `round`:
/// emulate the device's 16-bit buffers; `None`: all f32.
pub fn run(
    plan: &Plan,
    weights: &PackedWeights,
    images: &[f32],
    round: Option<Precision>,
) -> Result<Vec<f32>, CudaError> {
    let s = plan.spec;
    if images.len() != plan.len(Buffer::Image) {
        return Err(CudaError::Shape {
            what: "images".into(),
            expected: plan.len(Buffer::Image),
            got: images.len(),
        });
    }
    let w = |name: &str| {
        weights
            .values(name)
            .ok_or_else(|| CudaError::MissingWeight {
                name: name.to_owned(),
            })
    };
    let mut buf: BTreeMap<Buffer, Vec<f32>> = BTreeMap::new();
    buf.insert(Buffer::Image, images.to_vec());
    let store = |buf: &mut BTreeMap<Buffer, Vec<f32>>, b: Buffer, mut v: Vec<f32>| {
        if let (Some(p), false) = (round, b.is_f32()) {
            v.iter_mut().for_each(|x| *x = p.round(*x));
        }
        buf.insert(b, v);
    };
    let get = |buf: &BTreeMap<Buffer, Vec<f32>>, b: Buffer| -> Result<Vec<f32>, CudaError> {
        buf.get(&b).cloned().ok_or(CudaError::Plan {
            problem: format!("{b:?} read before it was written"),
        })
    };
    for step in &plan.steps {
        match step {
            Step::Im2col => {
                let v = im2col(
                    &get(&buf, Buffer::Image)?,
                    plan.batch,
                    s.in_channels,
                    s.image_size,
                    s.patch,
                );
                store(&mut buf, Buffer::Patches, v);
            }
            Step::Gemm(Gemm {
                input,
                weight,
                bias,
                output,
                m,
                n,
                k,
            }) => {
                let b = bias.as_deref().map(w).transpose()?;
                let v = gemm(&get(&buf, *input)?, &w(weight)?, b.as_deref(), *m, *n, *k);
                store(&mut buf, *output, v);
            }
            Step::Assemble => {
                let v = assemble(
                    &get(&buf, Buffer::PatchOut)?,
                    &w("patch_embed.proj.bias")?,
                    &w("cls_token")?,
                    &w("pos_embed")?,
                    plan.batch,
                    s.tokens(),
                    s.width,
                );
                store(&mut buf, Buffer::Resid, v);
            }
            Step::ResidualNorm {
                add_delta,
                gamma,
                beta,
                output,
                rows,
                row_stride,
            } => {
                let delta = if *add_delta {
                    Some(get(&buf, Buffer::Delta)?)
                } else {
                    None
                };
                let mut resid = get(&buf, Buffer::Resid)?;
                let v = residual_norm(
                    &mut resid,
                    delta.as_deref(),
                    &w(gamma)?,
                    &w(beta)?,
                    *rows,
                    *row_stride,
                    s.width,
                );
                buf.insert(Buffer::Resid, resid);
                store(&mut buf, *output, v);
            }
            Step::Attention => {
                let v = attention(
                    &get(&buf, Buffer::Qkv)?,
                    plan.batch,
                    s.tokens(),
                    s.heads,
                    s.head_dim(),
                    round,
                );
                store(&mut buf, Buffer::Attended, v);
            }
            Step::BiasGelu { bias } => {
                let mut v = get(&buf, Buffer::Hidden)?;
                bias_gelu(&mut v, &w(bias)?);
                store(&mut buf, Buffer::Hidden, v);
            }
        }
    }
    get(&buf, Buffer::Features)
}

#[cfg(test)]
mod tests {
    use cxr_bundle::rel_l2;
    use cxr_model::{reference, VitSpec, Weights};

    use super::*;
    use crate::plan::head;

    fn image(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// A ViT with head dimension 64 (the kernel's), small enough for a test.
    fn spec() -> VitSpec {
        VitSpec {
            patch: 16,
            width: 128,
            depth: 2,
            heads: 2,
            mlp_ratio: 4,
            in_channels: 1,
            image_size: 64,
            labels: 3,
        }
    }

    fn check(round: Option<Precision>, bound: f32) {
        let spec = spec();
        let w = Weights::random(&spec, 11).unwrap_or_else(|e| panic!("{e}"));
        let batch = 2;
        let plan = Plan::new(spec, batch);
        let packed = PackedWeights::pack(&w, &plan, round.unwrap_or(Precision::Bf16));
        // Unrounded runs use the f32 weights themselves.
        let packed = match round {
            Some(_) => packed,
            None => PackedWeights {
                half: Default::default(),
                full: w
                    .iter()
                    .map(|(n, _, d)| (n.to_owned(), d.to_vec()))
                    .collect(),
                ..packed
            },
        };
        let px = spec.in_channels * spec.image_size * spec.image_size;
        let images = image(batch * px, 5);
        let features = run(&plan, &packed, &images, round).unwrap_or_else(|e| panic!("{e}"));
        let logits = head(
            &features,
            w.get("head.weight").unwrap_or_default(),
            w.get("head.bias").unwrap_or_default(),
            spec.width,
        );
        for b in 0..batch {
            let r = reference::forward(&w, &images[b * px..(b + 1) * px])
                .unwrap_or_else(|e| panic!("{e}"));
            let f = rel_l2(&features[b * spec.width..(b + 1) * spec.width], &r.features);
            let l = rel_l2(&logits[b * spec.labels..(b + 1) * spec.labels], &r.logits);
            assert!(
                f <= bound && l <= bound,
                "{round:?}: features {f:.2e}, logits {l:.2e}, bound {bound:.0e}"
            );
        }
    }

    #[test]
    fn the_plan_in_f32_is_the_reference_forward() {
        check(None, 1e-5);
    }

    #[test]
    fn sixteen_bit_emulation_stays_inside_the_issue_bounds() {
        // The bounds the GPU run must meet (bf16 1e-2, fp16 5e-3); the
        // emulation shows they are reachable with this plan's roundings.
        check(Some(Precision::Bf16), 1e-2);
        check(Some(Precision::F16), 5e-3);
    }

    #[test]
    fn a_short_or_long_image_is_refused() {
        let plan = Plan::new(spec(), 1);
        let w = Weights::random(&spec(), 1).unwrap_or_else(|e| panic!("{e}"));
        let packed = PackedWeights::pack(&w, &plan, Precision::F16);
        assert!(matches!(
            run(&plan, &packed, &[0.0; 7], None),
            Err(CudaError::Shape { .. })
        ));
    }
}
