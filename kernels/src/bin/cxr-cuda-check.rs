//! `cxr-cuda-check`: the GPU machine's check, run by `benches/gpu/check.sh`
//! (built here, carried there: that machine has no Rust toolchain).
//!
//! (a) every kernel against its CPU reference, output poisoned first;
//! (b) ViT-B/16 forward against the `cxr-model` reference;
//! (c) ViT-B/16 end to end at 224 and 512, batch 1 and 5 (and writes the
//!     same weights for the PyTorch reference);
//! (d) the attention kernel alone at 197 and 1025 tokens.
//! One JSON object per line on stdout; exit 1 if a correctness check fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cxr_cuda::check::{check_kernels, random, time_attention};
use cxr_cuda::plan::{Plan, Precision};
use cxr_cuda::{CudaOptions, CudaVit, Gpu};
use cxr_engine::Engine;
use cxr_model::{reference, VitSpec, Weights};

type Failure = Box<dyn std::error::Error>;

fn line(v: String) {
    println!("{v}");
    let _ = std::io::stdout().flush();
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    if a.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// Weights as a raw f32 file plus a JSON index, for `torch_vit.py`.
fn write_weights(w: &Weights, path: &Path) -> Result<(), Failure> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in w.iter() {
        index.push(format!(
            "{{\"name\":\"{name}\",\"shape\":{shape:?},\"offset\":{}}}",
            data.len() / 4
        ));
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path.with_extension("bin"), data)?;
    std::fs::write(
        path.with_extension("json"),
        format!("[{}]", index.join(",")),
    )?;
    Ok(())
}

/// The check's own kernel cache. Its key is fixed: the check tool runs on
/// a bench machine with no device secret, and its cache is its own.
fn check_cache(dir: &Path) -> cxr_cuda::nvrtc::KernelCache {
    cxr_cuda::nvrtc::KernelCache {
        dir: dir.to_path_buf(),
        key: *b"cxr-cuda-check bench cache key!!",
    }
}

/// The engine as the appliance would load it (batch up to the five TTA views).
fn load(w: &Weights, precision: Precision, cache: &Path) -> Result<CudaVit, Failure> {
    let options = CudaOptions {
        precision,
        cache: Some(check_cache(cache)),
        ordinal: 0,
        max_batch: 5,
    };
    Ok(CudaVit::load(w, &options)?)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("cxr-cuda-check: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `Ok(false)`: a correctness check failed (the run still times everything).
fn run() -> Result<bool, Failure> {
    let out_dir = std::env::var_os("CXR_CHECK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let cache = out_dir.join("kernel-cache");
    let t = Instant::now();
    let gpu = Gpu::open(0, Some(&check_cache(&cache)))?;
    line(format!(
        "{{\"event\":\"gpu\",\"description\":\"{}\",\"open_ms\":{:.1}}}",
        gpu.description,
        t.elapsed().as_secs_f64() * 1e3
    ));
    let mut failed = 0usize;

    // (a) kernels.
    let mut checks = check_kernels::<half::bf16>(&gpu, 11)?;
    checks.extend(check_kernels::<half::f16>(&gpu, 12)?);
    for c in &checks {
        failed += usize::from(!c.passed());
        line(format!(
            "{{\"event\":\"kernel\",\"kernel\":\"{}\",\"precision\":\"{:?}\",\"shape\":\"{}\",\"rel_l2\":{:e},\"bound\":{:e},\"untouched\":{},\"passed\":{}}}",
            c.kernel, c.precision, c.shape, c.rel_l2, c.bound, c.untouched, c.passed()
        ));
    }

    // (b) full forward against the reference (one image at 224).
    let spec224 = VitSpec::vit_b16(224, 14);
    let w224 = Weights::random(&spec224, 1)?;
    let image = random(224 * 224, 2, 2.0);
    let t = Instant::now();
    let want = reference::forward(&w224, &image)?;
    let reference_s = t.elapsed().as_secs_f64();
    for (precision, bound) in [(Precision::Bf16, 1e-2), (Precision::F16, 5e-3)] {
        let engine = load(&w224, precision, &cache)?;
        let got = engine.infer(&image, 1)?;
        let (l, f) = (
            rel_l2(&got.logits, &want.logits),
            rel_l2(&got.features, &want.features),
        );
        let passed = l <= bound && f <= bound;
        failed += usize::from(!passed);
        line(format!(
            "{{\"event\":\"forward\",\"precision\":\"{precision:?}\",\"size\":224,\"rel_l2_logits\":{l:e},\"rel_l2_features\":{f:e},\"bound\":{bound:e},\"passed\":{passed},\"reference_s\":{reference_s:.1}}}"
        ));
    }

    // (c) end to end timing, and the same weights for PyTorch.
    for size in [224usize, 512] {
        let spec = VitSpec::vit_b16(size, 14);
        let w = Weights::random(&spec, 1)?;
        write_weights(&w, &out_dir.join(format!("vit_b16_{size}")))?;
        for precision in [Precision::Bf16, Precision::F16] {
            let engine = load(&w, precision, &cache)?;
            for batch in [1usize, 5] {
                let images = random(batch * size * size, 3, 2.0);
                for _ in 0..3 {
                    engine.infer(&images, batch)?;
                }
                let mut ms: Vec<f64> = (0..20)
                    .map(|_| {
                        let t = Instant::now();
                        engine
                            .infer(&images, batch)
                            .map(|_| t.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect::<Result<_, _>>()?;
                ms.sort_by(f64::total_cmp);
                let median = ms[ms.len() / 2];
                let flop = 2.0 * Plan::new(spec, batch).macs() as f64;
                line(format!(
                    "{{\"event\":\"vit\",\"engine\":\"ours\",\"precision\":\"{precision:?}\",\"size\":{size},\"batch\":{batch},\"ms\":{median:.3},\"tflops\":{:.1}}}",
                    flop / (median * 1e-3) / 1e12
                ));
            }
        }
    }

    // (d) attention alone (batch 5, 12 heads).
    for tokens in [197usize, 1025] {
        for (name, timed) in [
            (
                "Bf16",
                time_attention::<half::bf16>(&gpu, 5, 12, tokens, 20)?,
            ),
            ("F16", time_attention::<half::f16>(&gpu, 5, 12, tokens, 20)?),
        ] {
            line(format!(
                "{{\"event\":\"attention\",\"engine\":\"ours\",\"precision\":\"{name}\",\"tokens\":{tokens},\"batch\":5,\"heads\":12,\"ms\":{:.4},\"tflops\":{:.1}}}",
                timed.0, timed.1
            ));
        }
    }
    line(format!("{{\"event\":\"summary\",\"failed\":{failed}}}"));
    Ok(failed == 0)
}
