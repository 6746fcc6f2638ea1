//! The committed demo bundle: it verifies on a fresh development board with
//! no trust directory (its key is built into development profiles), it is
//! refused on a release board, and it classifies a real chest DICOM.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use cxr_tests::data::{scratch_dir, shared_file};
use serde_json::Value;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../trainer/demo/demo-nih.cxrb")
}

fn run(args: &[&str], state: &std::path::Path) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .args(args)
        .env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("null")
        .to_owned();
    (
        out.status.code().unwrap(),
        serde_json::from_str(&first).unwrap(),
    )
}

#[test]
fn the_demo_bundle_verifies_on_a_fresh_dev_board_and_classifies_a_real_chest_study() {
    let dir = scratch_dir("demo-bundle");
    let state = dir.join("state");
    let demo = demo();
    let demo_s = demo.to_str().unwrap();
    let (code, v) = run(&["bundle", "verify", demo_s], &state);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["bundle"]["version"], 3);
    // A bundle that verifies: one JSON object on stdout, nothing on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .args(["bundle", "verify", demo_s])
        .env("CXR_STATE_DIR", &state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert_eq!(v["bundle"]["signed_by"]["name"], "dev-demo");
    assert_eq!(v["bundle"]["signed_by"]["role"], "development");
    assert!(v["bundle"]["intended_use"]
        .as_str()
        .unwrap()
        .contains("not for clinical use"));
    assert_eq!(v["bundle"]["labels"].as_array().unwrap().len(), 14);
    assert!(std::fs::metadata(&demo).unwrap().len() <= 25 << 20);

    // A release board (its own, empty trust store) refuses it.
    let trust = dir.join("release-trust");
    std::fs::create_dir_all(&trust).unwrap();
    let profile = include_str!("../../board-config/boards/orin-release.toml")
        .replace("/etc/cxr-appliance/trust", trust.to_str().unwrap())
        .replace(
            "/var/lib/cxr-appliance",
            dir.join("release-state").to_str().unwrap(),
        );
    let board = dir.join("board.toml");
    std::fs::write(&board, profile).unwrap();
    let (code, v) = run(
        &[
            "bundle",
            "verify",
            demo_s,
            "--board-file",
            board.to_str().unwrap(),
        ],
        &state,
    );
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_UNKNOWN_KEY");

    let Some(dcm) = shared_file(
        "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    ) else {
        return;
    };
    let (code, v) = run(
        &["classify", "--bundle", demo_s, dcm.to_str().unwrap()],
        &state,
    );
    assert!([0, 3, 5].contains(&code), "{v}");
    assert_eq!(v["mode"], "verified");
    assert_eq!(v["bundle"]["model_id"], "cxr-demo-nih");
    match v["outcome"].as_str().unwrap() {
        "decision" | "undecided" => {
            assert_eq!(v["decision"]["labels"].as_array().unwrap().len(), 14, "{v}")
        }
        "abstention" => assert!(v["decision"].get("labels").is_none(), "{v}"),
        other => panic!("unexpected outcome {other}: {v}"),
    }
    assert!(v["engine"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains("self-test passed")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped demo's calls on real studies, as locked: a regression of the
/// bundle as a whole (weights, operating points, OOD gate), through the
/// binary. A re-lock that changes them must change this test knowingly.
#[test]
fn the_demo_bundles_calls_on_real_chest_studies() {
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples");
    let (Some(chest), Some(inverted)) = (
        shared_file(
            "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
        ),
        shared_file("torchxrayvision-test-samples/Fake_MONOHR1.dcm"),
    ) else {
        return;
    };
    let dir = scratch_dir("demo-calls");
    let demo = demo();
    let files = [
        samples.join("RG1_J2KI.dcm"),
        chest,
        inverted,
        samples.join("RG3_J2KI.dcm"),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .arg("classify")
        .arg("--bundle")
        .arg(&demo)
        .args(&files)
        .env("CXR_STATE_DIR", dir.join("state"))
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls = |v: &Value| -> Vec<(String, String)> {
        v["decision"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["call"] != "uncertain")
            .map(|l| {
                (
                    l["label"].as_str().unwrap().to_owned(),
                    l["call"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    // RG1 (pydicom-data's CR chest): nothing found on the decided labels.
    assert_eq!(lines[0]["outcome"], "decision", "{}", lines[0]);
    assert_eq!(
        calls(&lines[0]),
        pairs(&[
            ("Atelectasis", "negative"),
            ("Edema", "negative"),
            ("Effusion", "negative"),
            ("Infiltration", "negative"),
            ("Pneumonia", "negative"),
        ])
    );
    // The torchxrayvision chest film: Atelectasis called.
    assert_eq!(lines[1]["outcome"], "decision", "{}", lines[1]);
    assert_eq!(
        calls(&lines[1]),
        pairs(&[
            ("Atelectasis", "positive"),
            ("Edema", "negative"),
            ("Infiltration", "negative"),
        ])
    );
    // Its copy retagged MONOCHROME1 without inverting the pixels reads as a
    // negative film: it does not look like a radiograph to the content gate,
    // which stops it before the classifier, and no label's number is shown.
    assert_eq!(
        lines[2]["decision"]["abstention"]["code"], "ABSTAIN_CONTENT_MISMATCH",
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[2]["content"]["class"], "not_radiograph",
        "{}",
        lines[2]
    );
    assert!(!lines[2]["decision"].to_string().contains("probability"));
    assert_eq!(
        lines[3]["decision"]["abstention"]["code"],
        "ABSTAIN_NOT_CHEST"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
