//! `cxr-trainer evaluate` on the demo bundle: a small table of real films
//! and a non-chest DICOM goes through the appliance's study path, and the
//! report says what each study got.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cxr_tests::data::{pydicom_file, scratch_dir, shared_file};
use serde_json::Value;

fn evaluate(table: &std::path::Path, tags: &str, out: &std::path::Path) -> Value {
    let demo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/demo-nih.cxrb");
    let status = Command::new(env!("CARGO_BIN_EXE_cxr-trainer"))
        .args(["evaluate", "--bundle"])
        .arg(&demo)
        .arg("--data")
        .arg(table)
        .args(["--tags", tags, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(text.contains("| Pneumonia |"), "{text}");
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn evaluate_runs_the_deployed_decision_over_a_labelled_table() {
    let (Some(a), Some(b), Some(rg3)) = (
        shared_file("nih-chestxray14-subset/images/00001371_001.png"),
        shared_file("nih-chestxray14-subset/images/00001483_017.png"),
        pydicom_file("RG3_J2KR.dcm"),
    ) else {
        return;
    };
    let dir = scratch_dir("trainer-evaluate");
    // A DICOM is known by its bytes, not its name.
    let unnamed = dir.join("extremity-without-extension");
    std::fs::copy(&rg3, &unnamed).unwrap();
    let rg3 = unnamed;
    let table = dir.join("table.csv");
    std::fs::write(
        &table,
        format!(
            "path,patient_id,age,sex,view,Pneumonia\n{},1371,45,M,PA,0\n{},1483,60,F,AP,1\n{},9,40,F,,0\n{},1372,45,M,LL,0\n",
            a.display(),
            b.display(),
            rg3.display(),
            a.display()
        ),
    )
    .unwrap();
    let v = evaluate(&table, "table", &dir.join("tagged"));
    // The film the table calls lateral is not left out: it goes to the
    // device like any other, which stops it on its tags.
    assert_eq!(v["studies"], 4);
    let rows = v["rows"].as_array().unwrap();
    // The films, tagged from the table, reach a decision with 14 numbers;
    // the extremity DICOM keeps its own tags and abstains before the model.
    for r in &rows[..2] {
        assert_eq!(r["outcome"], "decision", "{r}");
        assert_eq!(r["content"], "frontal_chest", "{r}");
        assert_eq!(r["probabilities"].as_array().unwrap().len(), 14, "{r}");
    }
    assert_eq!(rows[0]["truth"][12], 0.0);
    assert_eq!(rows[1]["truth"][12], 1.0);
    assert_eq!(rows[2]["outcome"], "abstention");
    assert_eq!(rows[2]["code"], "ABSTAIN_NOT_CHEST");
    assert!(rows[2]["probabilities"].is_null());
    assert_eq!(v["outcomes"]["decision"], 2);
    assert_eq!(rows[3]["outcome"], "abstention", "{}", rows[3]);
    // The gate against the table's views: two frontal films seen as
    // frontal, and the frontal film the table mislabels as lateral.
    let confusion = &v["content_confusion"];
    assert_eq!(
        confusion["frontal_chest"]["frontal_chest"], 2,
        "{confusion}"
    );
    assert_eq!(
        confusion["lateral_chest"]["frontal_chest"], 1,
        "{confusion}"
    );
    assert!(confusion.get("not stated").is_none(), "{confusion}");
    let pneumonia = v["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "Pneumonia")
        .unwrap();
    assert_eq!(pneumonia["scored"], 2);
    assert_eq!(pneumonia["positives"], 1);
    // Before temperature scaling: the model's own probability, recovered
    // from the calibrated one through the bundle's temperature.
    let (p, raw) = (
        rows[1]["probabilities"][12].as_f64().unwrap(),
        rows[1]["uncalibrated"][12].as_f64().unwrap(),
    );
    assert!(p > 0.0 && p < 1.0 && raw > 0.0 && raw < 1.0, "{p} {raw}");
    // The demo's Pneumonia temperature, from its finalize report.
    let fitted: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/report.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let t = fitted["calibration"][12]["temperature"].as_f64().unwrap();
    assert!(
        (t - 1.0).abs() > 0.05,
        "a temperature of 1 would test nothing"
    );
    let expected = 1.0 / (1.0 + (-t * (p / (1.0 - p)).ln()).exp());
    assert!((raw - expected).abs() < 1e-5, "{raw} vs {expected}");
    // The pictures the Markdown links are there, beside it.
    let md = std::fs::read_to_string(dir.join("tagged/report.md")).unwrap();
    let figures = v["figures"].as_array().unwrap();
    assert!(figures.iter().any(|f| f == "report/roc.png"), "{figures:?}");
    for f in figures {
        let f = f.as_str().unwrap();
        assert!(md.contains(&format!("]({f})")), "{f} not linked");
        let png = std::fs::read(dir.join("tagged").join(f)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{f}");
    }

    // Without tags the content gate decides: the films still reach the model.
    let v = evaluate(&table, "none", &dir.join("untagged"));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[0]["outcome"], "decision", "{}", rows[0]);
    assert_eq!(rows[2]["content"], "other_radiograph", "{}", rows[2]);
    assert_eq!(rows[2]["code"], "ABSTAIN_NOT_CHEST", "{}", rows[2]);
    std::fs::remove_dir_all(&dir).unwrap();
}
