//! What the `serve` suites share: the binary and the demo bundle, and
//! readers of the service's state directory and of SR files.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn appliance() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cxr-appliance"))
}

pub fn demo() -> String {
    format!(
        "{}/../trainer/demo/demo-nih.cxrb",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Instances journalled in the spool.
pub fn journal_lines(state: &Path) -> usize {
    std::fs::read_to_string(state.join("spool/journal.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The files of every study version with this extension (`json` for the
/// results, `dcm` for their SRs).
pub fn study_files(state: &Path, extension: &str) -> Vec<PathBuf> {
    let Ok(studies) = std::fs::read_dir(state.join("results/studies")) else {
        return Vec::new();
    };
    studies
        .flatten()
        .flat_map(|study| std::fs::read_dir(study.path()).unwrap().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect()
}

/// The SOP Instance UID of a DICOM file, as dcmtk's `dcmdump` reads it.
pub fn sop_instance_uid(dcmdump: &Path, file: &Path) -> String {
    let out = Command::new(dcmdump)
        .args(["+P", "0008,0018"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_default()
        .to_owned()
}

/// The audit log's records (`audit export --jsonl` with the state and
/// board arguments `device`), read while the service runs or after.
pub fn audit_records(device: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(appliance())
        .args(["audit", "export", "--jsonl"])
        .args(device)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every line `serve` wrote to stderr, each one JSON object with an
/// `event` name (the console's contract).
pub fn console_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a console line is not JSON ({e}): {line}"));
            assert!(v["event"].is_string(), "no event name: {line}");
            v
        })
        .collect()
}

/// A fresh viewer token for the service on `state` (made by the CLI, as a
/// field engineer would): the `Authorization` header's value.
pub fn viewer_bearer(state: &str) -> String {
    let out = std::process::Command::new(appliance())
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--label",
            "test",
            "--state-dir",
            state,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text.lines().last().unwrap_or_default().trim().to_owned();
    assert!(token.starts_with("cxr_"), "{text}");
    format!("Bearer {token}")
}
