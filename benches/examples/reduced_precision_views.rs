//! The appliance's reduced-precision CPU engine (OpenVINO through
//! `cxr-engine`) on the random-weight ViT-B/16 that `dev-random-model`
//! writes (seed 1): the bundle's golden self-test first, at the reduced
//! tolerance, then the median time of one view, as `classify` runs them.
//!
//! Usage: cargo run --release -p cxr-benches --example reduced_precision_views --
//!        LIBOPENVINO_C SIZES REPEATS   (prints one JSON object, seconds)
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use cxr_bundle::{compute_golden, GoldenTolerance};
use cxr_engine::{self_test, Accelerator, CpuPrecision, OpenVinoCpu};
use cxr_model::labels::NIH_FINDINGS;
use cxr_model::{onnx, VitSpec, Weights};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let library = PathBuf::from(&args[1]);
    let sizes: Vec<usize> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let repeats: usize = args[3].parse().unwrap();
    let mut out = serde_json::Map::new();
    for size in sizes {
        let spec = VitSpec::vit_b16(size, NIH_FINDINGS.len());
        let weights = Weights::random(&spec, 1).unwrap();
        let onnx = onnx::write(&weights).unwrap();
        let golden = compute_golden(&weights, 1, 1).unwrap();
        for threads in [1, 2] {
            let settings = OpenVinoCpu {
                library: library.clone(),
                precision: CpuPrecision::Bf16,
                threads,
            };
            let engine = settings.load(&onnx, spec).unwrap();
            let report =
                self_test(engine.as_ref(), &golden, &GoldenTolerance::default(), 5).unwrap();
            let image = &golden.cases[0].image;
            engine.infer(image, 1).unwrap();
            let mut samples: Vec<f64> = (0..repeats)
                .map(|_| {
                    let start = Instant::now();
                    engine.infer(image, 1).unwrap();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            samples.sort_by(f64::total_cmp);
            let key = format!("{size}px/{threads}thread");
            out.insert(format!("view/{key}"), samples[samples.len() / 2].into());
            out.insert(format!("self_test/{key}"), report.summary().into());
        }
    }
    println!("{}", serde_json::Value::Object(out));
}
