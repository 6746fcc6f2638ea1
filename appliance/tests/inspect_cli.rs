//! `cxr-appliance inspect` as an operator runs it.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cxr_tests::data::{pydicom_data_dir, shared_data_dir, shared_file};

fn run(args: &[&std::ffi::OsStr]) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

#[test]
fn accepted_chest_prints_the_documented_fields_and_a_preview() {
    let Some(path) = shared_file(
        "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    ) else {
        return;
    };
    let dir = cxr_tests::data::scratch_dir("inspect-png");
    let (code, lines) = run(&[
        path.as_os_str(),
        "--json".as_ref(),
        "--png".as_ref(),
        dir.as_os_str(),
    ]);
    assert_eq!(code, 0);
    let l = &lines[0];
    assert_eq!(l["ok"], true);
    assert!(l["error"].is_null());
    assert_eq!(l["input_class"], "frontal_chest");
    assert_eq!(l["acquisition"]["modality"], "CR");
    assert_eq!(l["acquisition"]["view"], "PA");
    assert_eq!(l["acquisition"]["sex"], "male");
    assert_eq!(l["acquisition"]["age"], 62.0);
    assert_eq!(l["rows"], 1024);
    assert_eq!(l["pixel_sha256"].as_str().unwrap().len(), 64);
    assert!(l["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "decoded"));
    let preview = std::path::PathBuf::from(l["preview"].as_str().unwrap());
    let png = std::fs::read(&preview).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_real_dicom_gives_one_line_and_never_exit_101() {
    let Some(dir) = pydicom_data_dir() else {
        return;
    };
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let shared = shared_data_dir().join("torchxrayvision-test-samples");
    if shared.is_dir() {
        files.extend(
            std::fs::read_dir(&shared)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "dcm")),
        );
    } else if cxr_tests::data::missing::<()>(
        "torchxrayvision-test-samples",
        "CXR_DATA_DIR has no samples",
    )
    .is_none()
    {
        return;
    }
    files.sort();
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|p| p.as_os_str()).collect();
    let (code, lines) = run(&args);
    assert_eq!(code, 2, "some files (CT, MR, ...) are refused");
    assert_eq!(lines.len(), files.len());
    for l in &lines {
        if l["ok"] == false {
            let code = l["error"]["code"].as_str().unwrap();
            assert!(code.starts_with("DICOM_"), "{l}");
            assert!(
                l["error"]["message"].as_str().unwrap().contains("fix:"),
                "{l}"
            );
        }
    }
    let by_name = |n: &str| {
        lines
            .iter()
            .find(|l| l["file"].as_str().unwrap().ends_with(n))
            .unwrap()
    };
    assert_eq!(
        by_name("RG3_UNCR.dcm")["input_class"],
        "non_chest_radiograph"
    );
    assert_eq!(
        by_name("693_UNCR.dcm")["error"]["code"],
        "DICOM_NOT_A_RADIOGRAPH"
    );
    assert_eq!(by_name("693_UNCR.dcm")["input_class"], "not_radiograph");
    assert_eq!(
        by_name("RG1_J2KR.dcm")["pixel_sha256"],
        by_name("RG1_UNCR.dcm")["pixel_sha256"]
    );
}

#[test]
fn a_missing_file_is_refused_not_crashed() {
    let (code, lines) = run(&["/nonexistent/study.dcm".as_ref()]);
    assert_eq!(code, 2);
    assert_eq!(lines[0]["error"]["code"], "DICOM_IO");
}
