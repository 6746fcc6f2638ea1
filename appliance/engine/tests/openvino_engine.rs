//! The OpenVINO CPU engine against the f32 reference forward, through the
//! same golden self-test a bundle gets at install: bf16 must pass at the
//! reduced-precision tolerance and really be reduced (its error is far above
//! f32's), f32 must pass at the f32 tolerance, and a missing library or a
//! CPU without the arithmetic is a reason to fall back, never a crash.
#![cfg(feature = "openvino")]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use cxr_bundle::{compute_golden, GoldenTolerance};
use cxr_engine::{self_test, Accelerator, CpuPrecision, OpenVinoCpu};
use cxr_model::{onnx, VitSpec, Weights};
use cxr_tests::data::{cpu_has_bf16, openvino_library};

/// A ViT-Ti/16 at 224 (197 tokens, head dimension 64), 14 labels.
fn model() -> (Vec<u8>, cxr_bundle::GoldenSet, VitSpec) {
    let spec = VitSpec::vit_ti16(224, 14);
    let weights = Weights::random(&spec, 3).unwrap();
    (
        onnx::write(&weights).unwrap(),
        compute_golden(&weights, 2, 1).unwrap(),
        spec,
    )
}

fn settings(library: PathBuf, precision: CpuPrecision) -> OpenVinoCpu {
    OpenVinoCpu {
        library,
        precision,
        threads: 2,
    }
}

#[test]
fn bf16_passes_the_golden_self_test_at_the_reduced_tolerance_and_is_really_reduced() {
    let Some(library) = openvino_library() else {
        return;
    };
    let (onnx, golden, spec) = model();
    let accelerator = settings(library, CpuPrecision::Bf16);
    if !cpu_has_bf16() {
        let err = accelerator.load(&onnx, spec).err().unwrap();
        assert!(err.contains("no native BF16"), "{err}");
        eprintln!("SKIPPED: this CPU has no bf16 arithmetic; the refusal was checked instead");
        return;
    }
    let engine = accelerator.load(&onnx, spec).unwrap();
    assert_eq!(engine.name(), "openvino-bf16");
    assert_eq!(engine.precision(), "bf16");
    assert!(engine.reduced_precision());
    let tolerance = GoldenTolerance::default();
    let report = self_test(engine.as_ref(), &golden, &tolerance, 5).unwrap();
    println!("{}", report.summary());
    assert_eq!(report.tolerance, tolerance.reduced_rel_l2);
    // f32 arithmetic would land near 1e-6: bf16 keeps 8 mantissa bits.
    assert!(report.worst_logits > 1e-4, "{report:?}");
}

#[test]
fn f32_matches_the_reference_at_the_f32_tolerance() {
    let Some(library) = openvino_library() else {
        return;
    };
    let (onnx, golden, spec) = model();
    let engine = settings(library, CpuPrecision::F32)
        .load(&onnx, spec)
        .unwrap();
    assert!(!engine.reduced_precision());
    let report = self_test(engine.as_ref(), &golden, &GoldenTolerance::default(), 5).unwrap();
    println!("{}", report.summary());
    assert!(report.worst_logits <= 1e-4, "{report:?}");
}

#[test]
fn a_missing_library_is_a_reason_not_a_crash() {
    let (onnx, _, spec) = model();
    let err = settings(
        PathBuf::from("/nonexistent/libopenvino_c.so"),
        CpuPrecision::Bf16,
    )
    .load(&onnx, spec)
    .err()
    .unwrap();
    assert!(err.contains("/nonexistent/libopenvino_c.so"), "{err}");
}

#[test]
fn a_wrong_input_length_is_refused() {
    let Some(library) = openvino_library() else {
        return;
    };
    let (onnx, _, spec) = model();
    let engine = settings(library, CpuPrecision::F32)
        .load(&onnx, spec)
        .unwrap();
    let err = engine.infer(&[0.0; 10], 1).unwrap_err();
    assert_eq!(err.code(), "ENGINE_INPUT_SHAPE");
}
