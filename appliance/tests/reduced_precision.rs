//! A board that asks for bf16 on the CPU: the demo bundle runs on the
//! OpenVINO engine once its golden self-test passes at the reduced-precision
//! tolerance, every output line says so, and its decisions agree with tract's
//! in f32. A board whose library is missing falls back to tract in f32, and
//! says why.
#![cfg(feature = "openvino")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_tests::data::{cpu_has_bf16, openvino_library, scratch_dir};
use serde_json::Value;

/// Calibrated probabilities of the bf16 engine against tract's f32 ones.
/// Measured 2026-11-30 on the demo bundle and RG1 (AVX512-BF16): 0.0001.
const MAX_PROBABILITY_DIFFERENCE: f64 = 0.02;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn board_file(dir: &Path, library: &Path) -> PathBuf {
    let text = include_str!("../../board-config/boards/dev-x86.toml");
    let engine = format!(
        "[engine]\npreference = \"auto\"\nthreads = 2\ncpu_precision = \"bf16\"\nopenvino_library = {:?}\n",
        library.display().to_string()
    );
    let start = text.find("[engine]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap() + 1;
    let path = dir.join("board.toml");
    std::fs::write(
        &path,
        format!("{}{}{}", &text[..start], engine, &text[end..]),
    )
    .unwrap();
    path
}

/// (first output line, stderr) of `classify` on RG1 with the demo bundle.
fn classify(board: Option<&Path>, state: &Path) -> (Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"));
    command.args(["classify", "--bundle"]);
    command.arg(root().join("trainer/demo/demo-nih.cxrb"));
    command.arg(root().join("appliance/samples/RG1_J2KI.dcm"));
    if let Some(board) = board {
        command.arg("--board-file").arg(board);
    }
    let out = command
        .env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    (
        serde_json::from_str(stdout.lines().next().unwrap()).unwrap(),
        stderr,
    )
}

#[test]
fn a_bf16_board_runs_openvino_after_its_self_test_and_agrees_with_tract() {
    let Some(library) = openvino_library() else {
        return;
    };
    let dir = scratch_dir("reduced-precision");
    let board = board_file(&dir, &library);
    let (tract, _) = classify(None, &dir.join("state-f32"));
    let (bf16, stderr) = classify(Some(&board), &dir.join("state-bf16"));
    if !cpu_has_bf16() {
        assert_eq!(bf16["engine"]["precision"], "f32", "{bf16}");
        assert!(
            bf16["engine"]["reasons"]
                .to_string()
                .contains("no native BF16"),
            "{bf16}"
        );
        eprintln!("SKIPPED: this CPU has no bf16 arithmetic; the fallback was checked instead");
        return;
    }
    assert_eq!(bf16["engine"]["name"], "openvino-bf16", "{bf16}");
    assert_eq!(bf16["engine"]["precision"], "bf16", "{bf16}");
    let reasons = bf16["engine"]["reasons"].to_string();
    assert!(
        reasons.contains("self-test passed on openvino-bf16"),
        "{reasons}"
    );
    assert!(reasons.contains("tolerance 1.0e-2"), "{reasons}");
    assert!(stderr.contains("engine openvino-bf16 (bf16)"), "{stderr}");
    assert_eq!(tract["engine"]["precision"], "f32");
    assert_eq!(bf16["outcome"], tract["outcome"]);
    let labels = |v: &Value| v["decision"]["labels"].as_array().unwrap().clone();
    let mut worst = 0.0f64;
    for (a, b) in labels(&tract).iter().zip(&labels(&bf16)) {
        assert_eq!(a["call"], b["call"], "{a} vs {b}");
        let d = (a["probability"].as_f64().unwrap() - b["probability"].as_f64().unwrap()).abs();
        worst = worst.max(d);
    }
    println!("worst probability difference bf16 vs f32: {worst:.5}");
    assert!(worst <= MAX_PROBABILITY_DIFFERENCE, "{worst}");
}

#[test]
fn a_bf16_board_without_its_library_falls_back_to_tract_and_says_why() {
    let dir = scratch_dir("reduced-precision-missing");
    let board = board_file(&dir, Path::new("/nonexistent/libopenvino_c.so"));
    let (line, stderr) = classify(Some(&board), &dir.join("state"));
    assert_eq!(line["engine"]["name"], "tract", "{line}");
    assert_eq!(line["engine"]["precision"], "f32", "{line}");
    let reasons = line["engine"]["reasons"].to_string();
    assert!(reasons.contains("openvino-bf16: not used"), "{reasons}");
    assert!(
        reasons.contains("/nonexistent/libopenvino_c.so"),
        "{reasons}"
    );
    assert!(stderr.contains("engine tract (f32)"), "{stderr}");
}
