//! The content gate in the demo bundle, through the binary: films whose tags
//! are missing or wrong, wrapped as 8-bit MONOCHROME2 DX the way an external
//! test set presents them. Each case fails without the gate: untagged films
//! would abstain as unknown input, and wrongly tagged ones would be classified.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_dicom::{read_any_modality, ReadLimits};
use cxr_tests::data::{pydicom_file, scratch_dir, shared_file};
use cxr_tests::wrap::{to_grey8, wrap_grey8, WrapTags};
use serde_json::Value;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../trainer/demo/demo-nih.cxrb")
}

fn classify(files: &[PathBuf], state: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .arg("classify")
        .arg("--bundle")
        .arg(demo())
        .args(files)
        .env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len(), "{out:?}");
    lines
}

/// A DICOM's or PNG's pixels as 8-bit grey, wrapped with `tags`.
fn wrapped(source: &Path, tags: &WrapTags, to: &Path) -> PathBuf {
    let r = if source.extension().is_some_and(|e| e == "dcm") {
        read_any_modality(&std::fs::read(source).unwrap(), &ReadLimits::default()).unwrap()
    } else {
        cxr_preprocess::load_image_file(source).unwrap()
    };
    let bytes = wrap_grey8(
        r.rows() as u16,
        r.cols() as u16,
        &to_grey8(r.pixels()),
        tags,
    );
    std::fs::write(to, bytes).unwrap();
    to.to_owned()
}

fn abstention(v: &Value) -> &str {
    v["decision"]["abstention"]["code"]
        .as_str()
        .unwrap_or("none")
}

/// Whether a printed line shows any number of an abstained study.
fn shows_numbers(v: &Value) -> bool {
    let text = v.to_string();
    ["probability", "distance", "score", "spread"]
        .iter()
        .any(|k| text.contains(k))
}

#[test]
fn untagged_chest_films_are_classified_and_wrongly_tagged_non_chest_images_abstain() {
    // A film of a held-out test patient (neither the classifier nor the gate
    // trained on them), file groups the gate held out (the CT of
    // `explicit_VR-UN`, the MR of `MR2`, the NM of `JPEG-LL`), and the
    // extremity film (a group the gate trained on).
    let (Some(nih), Some(ct), Some(mr), Some(nm), Some(extremity)) = (
        shared_file("nih-chestxray14-subset/images/00001371_001.png"),
        pydicom_file("explicit_VR-UN.dcm"),
        pydicom_file("MR2_J2KR.dcm"),
        pydicom_file("JPEG-LL.dcm"),
        pydicom_file("RG3_J2KR.dcm"),
    ) else {
        return;
    };
    let dir = scratch_dir("content-gate");
    let untagged = WrapTags::default();
    let files = [
        wrapped(&nih, &untagged, &dir.join("nih-untagged.dcm")),
        wrapped(
            &nih,
            &WrapTags::adult_chest_pa(1),
            &dir.join("nih-chest-pa.dcm"),
        ),
        wrapped(
            &ct,
            &WrapTags::adult_chest_pa(2),
            &dir.join("ct-as-chest-pa.dcm"),
        ),
        wrapped(
            &mr,
            &WrapTags::adult_chest_pa(3),
            &dir.join("mr-as-chest-pa.dcm"),
        ),
        wrapped(
            &nm,
            &WrapTags::adult_chest_pa(4),
            &dir.join("nm-as-chest-pa.dcm"),
        ),
        wrapped(
            &extremity,
            &WrapTags::adult_chest_pa(5),
            &dir.join("rg3-as-chest-pa.dcm"),
        ),
        wrapped(&ct, &untagged, &dir.join("ct-untagged.dcm")),
    ];
    let lines = classify(&files, &dir.join("state"));

    // The untagged NIH film: the tags say nothing, the content says frontal.
    let v = &lines[0];
    assert_eq!(v["input_class"], "unknown", "{v}");
    assert_eq!(v["content"]["class"], "frontal_chest", "{v}");
    assert_eq!(v["outcome"], "decision", "{v}");
    assert_eq!(v["decision"]["labels"].as_array().unwrap().len(), 14, "{v}");
    assert!(
        v["content"]["frontal_probability"].as_f64().unwrap() > 0.5,
        "{v}"
    );
    // Tagged as what it is: tags and content agree.
    assert_eq!(lines[1]["input_class"], "frontal_chest");
    assert_eq!(lines[1]["outcome"], "decision", "{}", lines[1]);

    // A CT slice sent as a DX chest PA: the mismatch code, and a message
    // that says what the image looks like. No number is shown.
    let v = &lines[2];
    assert_eq!(v["input_class"], "frontal_chest", "{v}");
    assert_eq!(abstention(v), "ABSTAIN_CONTENT_MISMATCH", "{v}");
    assert_eq!(v["content"]["class"], "not_radiograph", "{v}");
    let message = v["decision"]["abstention"]["message"].as_str().unwrap();
    assert!(message.contains("CT or MR slice"), "{message}");
    assert!(!shows_numbers(v), "{v}");
    // So do the MR and NM images, and the extremity film (its content:
    // another body part).
    for v in &lines[3..5] {
        assert_eq!(abstention(v), "ABSTAIN_CONTENT_MISMATCH", "{v}");
    }
    assert_eq!(
        abstention(&lines[5]),
        "ABSTAIN_CONTENT_MISMATCH",
        "{}",
        lines[5]
    );
    assert_eq!(
        lines[5]["content"]["class"], "other_radiograph",
        "{}",
        lines[5]
    );

    // The CT slice without tags: the content decides, and says so.
    let v = &lines[6];
    assert_eq!(abstention(v), "ABSTAIN_NOT_RADIOGRAPH", "{v}");
    let message = v["decision"]["abstention"]["message"].as_str().unwrap();
    assert!(message.contains("judged from the image"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}
