//! TractVit on ViT-B/16 (random weights) at 224 and 512, batch 1 and the 5 TTA
//! views, on 1 and 2 threads. `benches/compare_engine.sh` runs ONNX Runtime on
//! the same files in the same session and prints the ratios.
//!
//! Models come from `CXR_BENCH_MODELS` (`vit_b16_224.onnx`, `vit_b16_512.onnx`,
//! written by `cxr-appliance dev-random-model`), else are generated in memory.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use cxr_engine::{Engine, TractVit};
use cxr_model::{onnx, VitSpec, Weights};

fn model_bytes(spec: &VitSpec) -> Vec<u8> {
    if let Some(dir) = std::env::var_os("CXR_BENCH_MODELS") {
        let path = std::path::Path::new(&dir).join(format!("vit_b16_{}.onnx", spec.image_size));
        if let Ok(bytes) = std::fs::read(&path) {
            return bytes;
        }
    }
    onnx::write(&Weights::random(spec, 1).unwrap()).unwrap()
}

fn engine(c: &mut Criterion) {
    let only = std::env::var("CXR_BENCH_SIZES").unwrap_or_else(|_| "224,512".into());
    let mut group = c.benchmark_group("tract_vit_b16");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for size in only
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let spec = VitSpec::vit_b16(size, 14);
        let bytes = model_bytes(&spec);
        for threads in [1usize, 2] {
            let engine = TractVit::load(&bytes, spec, threads).unwrap();
            for batch in [1usize, 5] {
                let images = vec![0.1f32; batch * size * size];
                let id =
                    BenchmarkId::new(format!("{size}px_{threads}thread"), format!("batch{batch}"));
                group.bench_with_input(id, &batch, |b, &batch| {
                    b.iter(|| engine.infer(&images, batch).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
