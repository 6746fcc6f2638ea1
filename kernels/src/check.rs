//! GPU checks for `benches/gpu/check.sh`: each kernel against its CPU
//! reference ([`crate::emulate`]) on fresh random inputs, the output buffer
//! poisoned with NaN before every launch (so a kernel that skips elements
//! fails), and the attention kernel timed alone. Only runs on a machine with
//! a GPU; the `cxr-cuda-check` binary drives it.

use std::time::Instant;

use cudarc::driver::CudaSlice;

use crate::emulate;
use crate::gpu::{Elem, Gpu};
use crate::launch;
use crate::params::{
    AssembleParams, AttentionParams, BiasGeluParams, Im2colParams, ResidualNormParams,
};
use crate::plan::{Precision, LN_EPS};
use crate::CudaError;

/// One kernel's result against its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelCheck {
    pub kernel: String,
    pub precision: Precision,
    pub shape: String,
    pub rel_l2: f64,
    pub bound: f64,
    /// Elements still NaN after the launch (poison not overwritten).
    pub untouched: usize,
}

impl KernelCheck {
    pub fn passed(&self) -> bool {
        self.untouched == 0 && self.rel_l2 <= self.bound
    }
}

/// Deterministic inputs in [-scale, scale).
pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        num += (f64::from(*g) - f64::from(*w)).powi(2);
        den += f64::from(*w).powi(2);
    }
    if got.len() != want.len() || got.iter().any(|g| !g.is_finite()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

fn rounded(p: Precision, v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| p.round(*x)).collect()
}

/// Bound on rel L2 for a result rounded once to `p` (a few ulps).
fn output_bound(p: Precision) -> f64 {
    match p {
        Precision::Bf16 => 1e-2,
        Precision::F16 => 2e-3,
    }
}

fn poisoned_elem<E: Elem>(gpu: &Gpu, n: usize) -> Result<CudaSlice<E>, CudaError> {
    gpu.upload_bits::<E>(&vec![0xFFFF; n])
}

fn poisoned_f32(gpu: &Gpu, n: usize) -> Result<CudaSlice<f32>, CudaError> {
    gpu.upload_f32(&vec![f32::NAN; n])
}

fn finish(
    kernel: &str,
    p: Precision,
    shape: String,
    got: &[f32],
    want: &[f32],
    bound: f64,
) -> KernelCheck {
    KernelCheck {
        kernel: kernel.to_owned(),
        precision: p,
        shape,
        rel_l2: rel_l2(got, want),
        bound,
        untouched: got.iter().filter(|x| x.is_nan()).count(),
    }
}

fn u(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The attention kernel's launch over `qkv` into `out` (head dimension 64).
fn attention_launch<E: Elem>(
    gpu: &Gpu,
    qkv: &CudaSlice<E>,
    out: &CudaSlice<E>,
    batch: usize,
    heads: usize,
    tokens: usize,
) -> Result<(launch::LaunchShape, AttentionParams), CudaError> {
    let params = AttentionParams {
        qkv: gpu.ptr(qkv),
        out: gpu.ptr(out),
        batch: u(batch),
        heads: u(heads),
        tokens: u(tokens),
        scale_log2: launch::attention_scale_log2(64),
    };
    Ok((launch::attention(batch, heads, tokens, 64)?, params))
}

/// Every kernel in precision `E`, at ViT-B/16 sizes (attention at 197 and
/// 1025 tokens).
pub fn check_kernels<E: Elem>(gpu: &Gpu, seed: u64) -> Result<Vec<KernelCheck>, CudaError> {
    let p = E::PRECISION;
    let mut out = Vec::new();
    let (batch, width, channels, size, patch) = (2usize, 768usize, 1usize, 224usize, 16usize);
    let grid = size / patch;
    let tokens = 1 + grid * grid;

    // im2col
    let image = random(batch * channels * size * size, seed, 2.0);
    let d_image = gpu.upload_f32(&image)?;
    let n = batch * grid * grid * channels * patch * patch;
    let d_patches = poisoned_elem::<E>(gpu, n)?;
    gpu.launch(
        "im2col",
        p,
        launch::elementwise("im2col", n, gpu.sms)?,
        Im2colParams {
            image: gpu.ptr(&d_image),
            patches: gpu.ptr(&d_patches),
            batch: u(batch),
            channels: u(channels),
            size: u(size),
            patch: u(patch),
        },
    )?;
    let want = rounded(p, &emulate::im2col(&image, batch, channels, size, patch));
    out.push(finish(
        "im2col",
        p,
        format!("{batch}x{channels}x{size}x{size}"),
        &gpu.download_elem(&d_patches)?,
        &want,
        0.0,
    ));

    // assemble_tokens
    let patch_out = rounded(p, &random(batch * (tokens - 1) * width, seed + 1, 1.0));
    let (bias, cls, pos) = (
        random(width, seed + 2, 0.1),
        random(width, seed + 3, 0.1),
        random(tokens * width, seed + 4, 0.1),
    );
    let d_resid = poisoned_f32(gpu, batch * tokens * width)?;
    let (d_po, d_bias, d_cls, d_pos) = (
        gpu.upload_elem::<E>(&patch_out)?,
        gpu.upload_f32(&bias)?,
        gpu.upload_f32(&cls)?,
        gpu.upload_f32(&pos)?,
    );
    gpu.launch(
        "assemble_tokens",
        p,
        launch::elementwise("assemble_tokens", batch * tokens * width, gpu.sms)?,
        AssembleParams {
            patch_out: gpu.ptr(&d_po),
            patch_bias: gpu.ptr(&d_bias),
            cls: gpu.ptr(&d_cls),
            pos: gpu.ptr(&d_pos),
            resid: gpu.ptr(&d_resid),
            batch: u(batch),
            tokens: u(tokens),
            width: u(width),
            pad0: 0,
        },
    )?;
    let want = emulate::assemble(&patch_out, &bias, &cls, &pos, batch, tokens, width);
    out.push(finish(
        "assemble_tokens",
        p,
        format!("{batch}x{tokens}x{width}"),
        &gpu.download_f32(&d_resid)?,
        &want,
        1e-6,
    ));

    // residual_norm (16-bit output, all rows; f32 output, CLS rows)
    for (name, row_stride) in [
        ("residual_norm_elem", 1usize),
        ("residual_norm_out_f32", tokens),
    ] {
        let rows_total = batch * tokens;
        let rows = rows_total / row_stride;
        let resid = random(rows_total * width, seed + 5, 3.0);
        let delta = rounded(p, &random(rows_total * width, seed + 6, 1.0));
        let (gamma, beta) = (random(width, seed + 7, 1.0), random(width, seed + 8, 0.5));
        let d_resid = gpu.upload_f32(&resid)?;
        let d_delta = gpu.upload_elem::<E>(&delta)?;
        let (d_gamma, d_beta) = (gpu.upload_f32(&gamma)?, gpu.upload_f32(&beta)?);
        let f32_out = row_stride > 1;
        let d_out_e = poisoned_elem::<E>(gpu, rows * width)?;
        let d_out_f = poisoned_f32(gpu, rows * width)?;
        gpu.launch(
            if f32_out {
                "residual_norm_out_f32"
            } else {
                "residual_norm_elem"
            },
            p,
            launch::residual_norm(rows, width)?,
            ResidualNormParams {
                resid: gpu.ptr(&d_resid),
                delta: gpu.ptr(&d_delta),
                gamma: gpu.ptr(&d_gamma),
                beta: gpu.ptr(&d_beta),
                out: if f32_out {
                    gpu.ptr(&d_out_f)
                } else {
                    gpu.ptr(&d_out_e)
                },
                rows: u(rows),
                row_stride: u(row_stride),
                width: u(width),
                eps: LN_EPS,
            },
        )?;
        let mut want_resid = resid.clone();
        let want = emulate::residual_norm(
            &mut want_resid,
            Some(&delta),
            &gamma,
            &beta,
            rows,
            row_stride,
            width,
        );
        let (got, bound) = if f32_out {
            (gpu.download_f32(&d_out_f)?, 1e-5)
        } else {
            (gpu.download_elem(&d_out_e)?, output_bound(p))
        };
        out.push(finish(
            name,
            p,
            format!("{rows}x{width}"),
            &got,
            &want,
            bound,
        ));
        // The stream itself must have taken the delta (selected rows).
        let got_resid = gpu.download_f32(&d_resid)?;
        let sel = |v: &[f32]| -> Vec<f32> {
            (0..rows)
                .flat_map(|i| v[i * row_stride * width..][..width].to_vec())
                .collect()
        };
        out.push(finish(
            &format!("{name} (residual)"),
            p,
            format!("{rows}x{width}"),
            &sel(&got_resid),
            &sel(&want_resid),
            1e-6,
        ));
    }

    // bias_gelu
    let (rows, cols) = (batch * tokens, 4 * width);
    let x = rounded(p, &random(rows * cols, seed + 9, 3.0));
    let b = random(cols, seed + 10, 0.5);
    let d_x = gpu.upload_elem::<E>(&x)?;
    let d_b = gpu.upload_f32(&b)?;
    gpu.launch(
        "bias_gelu",
        p,
        launch::elementwise("bias_gelu", rows * cols, gpu.sms)?,
        BiasGeluParams {
            x: gpu.ptr(&d_x),
            bias: gpu.ptr(&d_b),
            rows: u(rows),
            cols: u(cols),
        },
    )?;
    let mut want = x.clone();
    emulate::bias_gelu(&mut want, &b);
    out.push(finish(
        "bias_gelu",
        p,
        format!("{rows}x{cols}"),
        &gpu.download_elem(&d_x)?,
        &want,
        output_bound(p),
    ));

    // flash_attention at the two ViT-B/16 sequence lengths.
    for tokens in [197usize, 1025] {
        let heads = 12;
        let qkv = rounded(
            p,
            &random(batch * tokens * 3 * width, seed + tokens as u64, 2.0),
        );
        let d_qkv = gpu.upload_elem::<E>(&qkv)?;
        let d_o = poisoned_elem::<E>(gpu, batch * tokens * width)?;
        let (shape, params) = attention_launch(gpu, &d_qkv, &d_o, batch, heads, tokens)?;
        gpu.launch("flash_attention", p, shape, params)?;
        let want = emulate::attention(&qkv, batch, tokens, heads, 64, Some(p));
        out.push(finish(
            "flash_attention",
            p,
            format!("{batch}x{tokens}x{heads}x64"),
            &gpu.download_elem(&d_o)?,
            &want,
            match p {
                Precision::Bf16 => 1e-2,
                Precision::F16 => 3e-3,
            },
        ));
    }
    gpu.synchronize()?;
    Ok(out)
}

/// Median milliseconds of the attention kernel alone over `iters` launches
/// (after warm-up), and its achieved TFLOP/s (4 * B * H * T^2 * 64 FLOP).
pub fn time_attention<E: Elem>(
    gpu: &Gpu,
    batch: usize,
    heads: usize,
    tokens: usize,
    iters: usize,
) -> Result<(f64, f64), CudaError> {
    let p = E::PRECISION;
    let width = heads * 64;
    let d_qkv = gpu.upload_elem::<E>(&random(batch * tokens * 3 * width, 3, 1.0))?;
    let d_o = gpu.zeros::<E>(batch * tokens * width)?;
    let (shape, params) = attention_launch(gpu, &d_qkv, &d_o, batch, heads, tokens)?;
    for _ in 0..5 {
        gpu.launch("flash_attention", p, shape, params)?;
    }
    gpu.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        for _ in 0..10 {
            gpu.launch("flash_attention", p, shape, params)?;
        }
        gpu.synchronize()?;
        times.push(t.elapsed().as_secs_f64() * 1e3 / 10.0);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let flop = 4.0 * (batch * heads) as f64 * (tokens * tokens) as f64 * 64.0;
    Ok((ms, flop / (ms * 1e-3) / 1e12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_inputs_are_deterministic_and_in_range() {
        let a = random(1000, 5, 2.0);
        assert_eq!(a, random(1000, 5, 2.0));
        assert_ne!(a, random(1000, 6, 2.0));
        assert!(a.iter().all(|x| (-2.0..2.0).contains(x)));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.2, "{mean}");
    }

    #[test]
    fn a_poisoned_or_wrong_output_fails_the_check() {
        let want = [1.0f32, 2.0, 3.0];
        assert!(finish("k", Precision::F16, String::new(), &want, &want, 0.0).passed());
        let nan = finish(
            "k",
            Precision::F16,
            String::new(),
            &[1.0, f32::NAN, 3.0],
            &want,
            1.0,
        );
        assert!(!nan.passed() && nan.untouched == 1);
        let off = finish(
            "k",
            Precision::F16,
            String::new(),
            &[1.0, 2.1, 3.0],
            &want,
            1e-3,
        );
        assert!(!off.passed());
    }
}
