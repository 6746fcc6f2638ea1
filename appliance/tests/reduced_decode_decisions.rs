//! `classify` decodes compressed films only as far as the model needs. The
//! same film uncompressed (never reduced) is the full-resolution reference:
//! the demo bundle must reach the same outcome and calls on both, with each
//! probability within `MAX_PROBABILITY_DIFFERENCE`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_tests::data::{pydicom_file, scratch_dir, shared_file};
use cxr_tests::dicom_net::tool;
use serde_json::Value;

/// Measured 2026-11-30 (demo bundle, 128 px): 0.0094 and 0.0099 on RG1's
/// lossless and lossy JPEG 2000 (Pneumonia 0.321 -> 0.331, decoded three
/// levels down), 0.0007 on the DCT JPEG (1/8). The same labels' spread over
/// the five TTA views is 0.02 to 0.06: the reduced decode moves a
/// probability less than the model's own test-time augmentation does.
const MAX_PROBABILITY_DIFFERENCE: f64 = 0.02;

const CHEST_JPEG: &str =
    "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm";

fn classify(files: &[&Path], state: &Path) -> Vec<Value> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/demo/demo-nih.cxrb");
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .arg("classify")
        .arg("--bundle")
        .arg(demo)
        .args(files)
        .env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (uncompressed reference, compressed film) pairs with the same pixels.
fn pairs(dir: &Path) -> Option<Vec<(PathBuf, PathBuf)>> {
    let jpeg = shared_file(CHEST_JPEG)?;
    let decompressed = dir.join("siim-chest-uncompressed.dcm");
    let status = Command::new(tool("dcmdjpeg")?)
        .arg(&jpeg)
        .arg(&decompressed)
        .status()
        .unwrap();
    assert!(status.success());
    Some(vec![
        (pydicom_file("RG1_UNCR.dcm")?, pydicom_file("RG1_J2KR.dcm")?),
        (pydicom_file("RG1_UNCI.dcm")?, pydicom_file("RG1_J2KI.dcm")?),
        (decompressed, jpeg),
    ])
}

#[test]
fn reduced_decoding_keeps_the_demo_bundles_decisions_and_probabilities() {
    let dir = scratch_dir("reduced-decisions");
    let Some(pairs) = pairs(&dir) else {
        return;
    };
    let mut worst = 0.0f64;
    for (reference, compressed) in &pairs {
        let lines = classify(&[reference, compressed], &dir.join("state"));
        let [full, reduced] = &lines[..] else {
            panic!("two lines expected: {lines:?}");
        };
        let name = compressed.display();
        assert_eq!(full["outcome"], "decision", "{name}: {full}");
        assert_eq!(full["outcome"], reduced["outcome"], "{name}");
        // The line says how the film was decoded.
        assert_eq!(full["reduced_resolution"], Value::Null, "{name}");
        assert!(
            reduced["reduced_resolution"]["divisor"].as_u64() >= Some(2),
            "{name}: {reduced}"
        );
        let labels = |v: &Value| v["decision"]["labels"].as_array().unwrap().clone();
        let (a, b) = (labels(full), labels(reduced));
        assert_eq!(a.len(), 14, "{name}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["label"], y["label"]);
            assert_eq!(x["call"], y["call"], "{name}: {x} vs {y}");
            let d = (x["probability"].as_f64().unwrap() - y["probability"].as_f64().unwrap()).abs();
            worst = worst.max(d);
            assert!(d <= MAX_PROBABILITY_DIFFERENCE, "{name}: {x} vs {y}");
        }
    }
    println!("worst probability difference: {worst:.5}");
}
