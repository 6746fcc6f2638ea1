//! tract on the ONNX file written by `cxr-model` must match the f32 reference
//! forward: for the tiny test config and for ViT-B/16 with random weights.
#![allow(clippy::unwrap_used)]

use cxr_engine::{Engine, TractVit};
use cxr_model::{onnx, reference, VitSpec, Weights};

/// Deterministic pseudo-random images in roughly the normalised input range.
fn images(spec: &VitSpec, batch: usize, seed: u32) -> Vec<f32> {
    let n = batch * spec.in_channels * spec.image_size * spec.image_size;
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

/// (max absolute error, relative L2 error) of `got` against `want`.
fn errors(got: &[f32], want: &[f32]) -> (f32, f64) {
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (max, (num / den.max(1e-30)).sqrt())
}

fn check(spec: VitSpec, batch: usize, threads: usize) -> (f32, f64, f32, f64) {
    let weights = Weights::random(&spec, 42).unwrap();
    let bytes = onnx::write(&weights).unwrap();
    let engine = TractVit::load(&bytes, spec, threads).unwrap();
    let input = images(&spec, batch, 7);
    let out = engine.infer(&input, batch).unwrap();
    let per_image = spec.in_channels * spec.image_size * spec.image_size;
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let r = reference::forward(&weights, &input[b * per_image..(b + 1) * per_image]).unwrap();
        logits.extend(r.logits);
        features.extend(r.features);
    }
    let (lmax, lrel) = errors(&out.logits, &logits);
    let (fmax, frel) = errors(&out.features, &features);
    eprintln!("{spec:?} batch {batch}: logits max abs {lmax:.2e} rel L2 {lrel:.2e}; features max abs {fmax:.2e} rel L2 {frel:.2e}");
    (lmax, lrel, fmax, frel)
}

#[test]
fn tiny_matches_the_reference() {
    let (lmax, lrel, fmax, frel) = check(VitSpec::tiny(), 3, 1);
    assert!(lmax < 1e-4 && lrel < 1e-5, "logits {lmax} {lrel}");
    assert!(fmax < 1e-4 && frel < 1e-5, "features {fmax} {frel}");
}

#[test]
fn tiny_with_three_channels_and_two_threads_matches() {
    let spec = VitSpec {
        in_channels: 3,
        labels: 14,
        ..VitSpec::tiny()
    };
    let (_, lrel, _, frel) = check(spec, 2, 2);
    assert!(lrel < 1e-5 && frel < 1e-5, "{lrel} {frel}");
}

#[test]
fn vit_b16_matches_the_reference() {
    let (lmax, lrel, fmax, frel) = check(VitSpec::vit_b16(224, 14), 1, 2);
    assert!(lmax < 1e-3 && lrel < 1e-4, "logits {lmax} {lrel}");
    assert!(fmax < 1e-3 && frel < 1e-4, "features {fmax} {frel}");
}

#[test]
fn chunked_inference_equals_one_batch() {
    let small = VitSpec::tiny();
    let small_bytes = onnx::write(&Weights::random(&small, 9).unwrap()).unwrap();
    let small_engine = TractVit::load(&small_bytes, small, 1).unwrap();
    assert_eq!(
        small_engine.preferred_batch(),
        usize::MAX,
        "small inputs go as one batch"
    );
    // 256 px with patch 8 is 1025 tokens, like ViT-B/16 at 512: one at a time.
    let big = VitSpec {
        image_size: 256,
        ..small
    };
    let big_bytes = onnx::write(&Weights::random(&big, 9).unwrap()).unwrap();
    let engine = TractVit::load(&big_bytes, big, 1).unwrap();
    assert_eq!(engine.preferred_batch(), 1);
    let input = images(&big, 3, 3);
    let whole = engine.infer(&input, 3).unwrap();
    let chunked = engine.infer_chunked(&input, 3).unwrap();
    assert_eq!(
        (chunked.batch, chunked.logits.len(), chunked.features.len()),
        (3, whole.logits.len(), whole.features.len())
    );
    let (max, rel) = errors(&chunked.logits, &whole.logits);
    assert!(max < 1e-5 && rel < 1e-6, "{max} {rel}");
}

#[test]
fn wrong_input_sizes_are_typed_errors() {
    let spec = VitSpec::tiny();
    let bytes = onnx::write(&Weights::random(&spec, 1).unwrap()).unwrap();
    let engine = TractVit::load(&bytes, spec, 1).unwrap();
    assert_eq!(
        engine.infer(&[0.0; 10], 1).unwrap_err().code(),
        "ENGINE_INPUT_SHAPE"
    );
    assert_eq!(
        engine.infer(&[], 0).unwrap_err().code(),
        "ENGINE_INPUT_SHAPE"
    );
    assert_eq!(
        TractVit::load(b"not onnx", spec, 1).unwrap_err().code(),
        "ENGINE_LOAD"
    );
}
