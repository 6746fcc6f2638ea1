//! On a machine without a GPU the appliance classifies with tract, and says
//! why: in its log (stderr), in each output line and in the audit record.
//! Built with `--features cuda` (CI runs it so), the CUDA engine is really
//! tried and its own error is the reason; without it, the build says it has
//! no GPU engine.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use cxr_tests::data::scratch_dir;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn without_a_gpu_tract_runs_and_the_reason_is_logged_and_audited() {
    let state = scratch_dir("engine-fallback").join("state");
    let bin = env!("CARGO_BIN_EXE_cxr-appliance");
    let out = Command::new(bin)
        .args(["classify", "--bundle"])
        .arg(root().join("trainer/demo/demo-nih.cxrb"))
        .arg(root().join("appliance/samples/RG1_J2KI.dcm"))
        .env("CXR_STATE_DIR", &state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["engine"]["name"], "tract", "{line}");
    assert_eq!(line["engine"]["precision"], "f32", "{line}");
    let reasons: Vec<String> = line["engine"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let why = &reasons[0];
    if cfg!(feature = "cuda") {
        // The real CUDA engine was tried; on this machine it had no driver
        // (or no device), and said so with a fix.
        assert!(why.starts_with("cuda: not used: "), "{reasons:?}");
        assert!(why.contains("fix:"), "{why}");
        assert!(reasons
            .iter()
            .any(|r| r == "auto: falling back to tract (CPU)"));
    } else {
        assert!(why.contains("this build has no GPU engine"), "{reasons:?}");
    }
    assert!(
        stderr.contains(&format!("cxr-appliance: engine tract (f32): {why}")),
        "{stderr}"
    );
    // The audit record carries the same reasons.
    let export = Command::new(bin)
        .args(["audit", "export"])
        .env("CXR_STATE_DIR", &state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    let records = String::from_utf8_lossy(&export.stdout);
    let inference = records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r.to_string().contains("engine_reasons"))
        .unwrap_or_else(|| panic!("no inference record in {records}"));
    assert!(inference.to_string().contains(why.as_str()), "{inference}");
}
