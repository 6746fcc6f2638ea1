//! `cxr-appliance classify` end to end, with random-weight models written by
//! `dev-random-model` (developer mode: no bundle yet).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_tests::data::{pydicom_file, scratch_dir};

fn appliance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
}

fn random_model(dir: &Path, preset: &str, size: u32) -> (PathBuf, PathBuf) {
    let (model, params) = (
        dir.join(format!("{preset}.onnx")),
        dir.join(format!("{preset}.toml")),
    );
    let status = appliance()
        .args([
            "dev-random-model",
            "--preset",
            preset,
            "--size",
            &size.to_string(),
            "--model",
        ])
        .arg(&model)
        .arg("--params")
        .arg(&params)
        .status()
        .unwrap();
    assert!(status.success());
    // Neutral bands (0.2 logits) hold a random model's near-0.5
    // probabilities Uncertain: narrow them so that these studies are decided.
    let mut table: toml::Table = std::fs::read_to_string(&params).unwrap().parse().unwrap();
    let labels = table["labels"].as_array().unwrap().len();
    table.insert(
        "bands".into(),
        vec![toml::Value::Float(BAND); labels].into(),
    );
    std::fs::write(&params, toml::to_string(&table).unwrap()).unwrap();
    (model, params)
}

/// The Uncertain band the tests' parameters carry, logit units.
const BAND: f64 = 0.05;

fn classify(
    model: &Path,
    params: &Path,
    files: &[PathBuf],
    threads: &str,
) -> (i32, Vec<serde_json::Value>) {
    let out = appliance()
        .arg("classify")
        .args(files)
        .arg("--model")
        .arg(model)
        .arg("--params")
        .arg(params)
        .args(["--engine", "tract", "--threads", threads, "--json"])
        .arg("--state-dir")
        .arg(model.parent().unwrap().join("state"))
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), lines)
}

#[test]
fn chest_gets_a_decision_and_others_abstain_or_are_refused() {
    let (Some(rg1), Some(rg3), Some(ct), Some(us)) = (
        pydicom_file("RG1_J2KR.dcm"),
        pydicom_file("RG3_UNCR.dcm"),
        pydicom_file("693_UNCR.dcm"),
        pydicom_file("US1_UNCR.dcm"),
    ) else {
        return;
    };
    let dir = scratch_dir("classify-tiny");
    let (model, params) = random_model(&dir, "tiny", 64);

    let (code, lines) = classify(&model, &params, std::slice::from_ref(&rg1), "1");
    assert_eq!(code, 0, "{lines:?}");
    let d = &lines[0];
    assert_eq!(d["outcome"], "decision");
    assert_eq!(
        d["frontal_chest"], true,
        "the study path's own frontal rule"
    );
    assert_eq!(d["flags"], serde_json::json!([]));
    assert_eq!(d["engine"]["name"], "tract");
    assert!(!d["engine"]["reasons"].as_array().unwrap().is_empty());
    let labels = d["decision"]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 14);
    // Threshold 0.5 and a band of BAND logits: each call follows from the
    // printed probability.
    let (upper, lower) = (1.0 / (1.0 + (-BAND).exp()), 1.0 / (1.0 + BAND.exp()));
    for l in labels {
        let p = l["probability"].as_f64().unwrap();
        let expected = if p >= upper + 1e-6 {
            "positive"
        } else if p < lower - 1e-6 {
            "negative"
        } else if p > lower + 1e-6 && p < upper - 1e-6 {
            "uncertain"
        } else {
            continue; // on an edge, to print precision
        };
        assert_eq!(l["call"], expected, "{l}");
    }
    // No OOD gate in neutral parameters: the scores are shown, none kept.
    let ood = &d["decision"]["ood"];
    assert!(ood["low_joint_energy"].as_f64().unwrap() < 0.0, "{ood}");
    assert!(ood["combined"].is_null() && ood["kept"].as_array().unwrap().is_empty());
    assert!(d["decision"]["abstention"].is_null());
    for stage in ["decode", "preprocess", "inference_per_view"] {
        assert!(d["timings_ms"][stage].as_f64().unwrap() > 0.0, "{stage}");
    }
    assert!(d["mode"].as_str().unwrap().contains("developer"));

    let (code, lines) = classify(&model, &params, &[rg3], "1");
    assert_eq!(code, 3);
    assert_eq!(
        lines[0]["decision"]["abstention"]["code"],
        "ABSTAIN_NOT_CHEST"
    );
    assert!(lines[0]["decision"]["abstention"]["message"]
        .as_str()
        .unwrap()
        .contains("refer to a radiologist"));
    // An abstention withholds every number: no labels, no probability, no
    // OOD score, only the code, the message and the gates.
    assert!(lines[0]["decision"].get("labels").is_none(), "{}", lines[0]);
    assert!(lines[0]["decision"].get("ood").is_none(), "{}", lines[0]);
    assert!(!lines[0].to_string().contains("probability"));
    assert_eq!(lines[0]["decision"]["gates"]["input"], "ABSTAIN_NOT_CHEST");

    let (code, lines) = classify(&model, &params, &[ct, us, rg1], "2");
    assert_eq!(code, 2, "a refusal wins over decisions");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["error"]["code"], "DICOM_NOT_A_RADIOGRAPH");
    assert_eq!(lines[1]["error"]["code"], "DICOM_NOT_A_RADIOGRAPH");
    assert_eq!(lines[2]["outcome"], "decision");

    // Every study above left an audit record, marked as developer mode.
    let out = appliance()
        .args(["audit", "export", "--jsonl", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert_eq!(r["event"]["type"], "inference");
        assert_eq!(r["event"]["mode"], "developer");
        assert_eq!(r["event"]["bundle"]["model_id"], "developer-mode");
    }
    assert_eq!(
        records[3]["event"]["outcome"]["refused"]["code"],
        "DICOM_NOT_A_RADIOGRAPH"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_line_per_file_in_order_and_a_panicking_study_fails_alone() {
    let (Some(rg1), Some(rg3)) = (pydicom_file("RG1_J2KR.dcm"), pydicom_file("RG3_UNCR.dcm"))
    else {
        return;
    };
    let dir = scratch_dir("classify-panic");
    let (model, params) = random_model(&dir, "tiny", 64);
    let missing = dir.join("no-such-file.dcm");
    let files = [rg3.clone(), missing.clone(), rg1.clone(), rg3.clone()];
    let out = appliance()
        .arg("classify")
        .args(&files)
        .arg("--model")
        .arg(&model)
        .arg("--params")
        .arg(&params)
        .args(["--engine", "tract", "--json", "--state-dir"])
        .arg(dir.join("state"))
        .env("CXR_TEST_PANIC_STUDY", "RG1_J2KR.dcm")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "never 101: {stderr}");
    assert!(stderr.contains("internal fault"), "{stderr}");
    assert!(!stderr.contains("decoder fault"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(line["file"], file.to_str().unwrap());
    }
    let outcomes: Vec<&str> = lines
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["abstention", "refused", "failed", "abstention"]);
    assert_eq!(lines[1]["error"]["code"], "INPUT_UNREADABLE");
    assert_eq!(lines[2]["error"]["code"], "STUDY_PANICKED");
    // The failed study is audited like any other.
    let export = appliance()
        .args(["audit", "export", "--jsonl", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let records = String::from_utf8(export.stdout).unwrap();
    assert!(records.contains("STUDY_PANICKED"), "{records}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vit_b16_at_512_gives_a_full_decision_on_rg1() {
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let dir = scratch_dir("classify-vitb16");
    let (model, params) = random_model(&dir, "vit-b16", 512);
    let (code, lines) = classify(&model, &params, &[rg1], "2");
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["decision"]["labels"].as_array().unwrap().len(), 14);
    std::fs::remove_dir_all(&dir).unwrap();
}
