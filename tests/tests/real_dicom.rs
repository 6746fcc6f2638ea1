//! The guarded ingest path on real DICOM files: pydicom-data from PyPI and the
//! shared torchxrayvision samples (CXR_DATA_DIR).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cxr_dicom::{
    read_radiograph, read_radiograph_file, DicomError, InputClass, Radiograph, ReadLimits,
};
use cxr_radiograph::{Sex, Step};
use cxr_tests::data::{pydicom_data_dir, pydicom_file, shared_file, workspace_root};
use cxr_tests::hostile::set_text_in;

const CHEST_JPEG: &str =
    "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm";
const CHEST_MONO1: &str = "torchxrayvision-test-samples/Fake_MONOHR1.dcm";

fn read(path: &Path) -> Result<Radiograph, DicomError> {
    read_radiograph_file(path, &ReadLimits::default())
}

/// A pydicom-data file with its Modality rewritten to CR, so that codecs only
/// found on non-radiographs in the package still reach the decoder.
fn as_cr(name: &str) -> Option<Vec<u8>> {
    let bytes = std::fs::read(pydicom_file(name)?).unwrap();
    let big = name.contains("big_endian");
    Some(set_text_in(&bytes, 0x0008, 0x0060, "CR", big).expect("Modality element present"))
}

#[test]
fn rg1_chest_decodes_in_all_four_encodings() {
    let Some(dir) = pydicom_data_dir() else {
        return;
    };
    let uncr = read(&dir.join("RG1_UNCR.dcm")).unwrap();
    let j2kr = read(&dir.join("RG1_J2KR.dcm")).unwrap();
    let unci = read(&dir.join("RG1_UNCI.dcm")).unwrap();
    let j2ki = read(&dir.join("RG1_J2KI.dcm")).unwrap();
    for r in [&uncr, &j2kr, &unci, &j2ki] {
        assert_eq!((r.rows(), r.cols()), (1955, 1841));
        assert_eq!(r.acquisition.input_class, InputClass::FrontalChest);
        assert!(
            r.steps
                .iter()
                .any(|s| matches!(s, Step::InvertedMonochrome1 { .. })),
            "{:?}",
            r.steps
        );
    }
    assert_eq!(
        uncr.pixel_sha256(),
        j2kr.pixel_sha256(),
        "lossless JPEG 2000 must equal the uncompressed original"
    );
    assert_eq!(
        unci.pixel_sha256(),
        j2ki.pixel_sha256(),
        "lossy JPEG 2000 must equal the package's decoded copy"
    );
    assert_ne!(
        uncr.pixel_sha256(),
        unci.pixel_sha256(),
        "lossy and lossless differ"
    );
}

#[test]
fn rg3_extremity_is_a_non_chest_radiograph() {
    let Some(path) = pydicom_file("RG3_UNCR.dcm") else {
        return;
    };
    let r = read(&path).unwrap();
    assert_eq!(r.acquisition.input_class, InputClass::NonChestRadiograph);
    assert_eq!(r.acquisition.body_part.as_deref(), Some("EXTREMITY"));
    // Patient Orientation R\F: flipped to put the patient's left on the right.
    assert!(r.steps.contains(&Step::FlippedHorizontally));
}

#[test]
fn ct_mr_us_nm_are_refused_as_not_radiographs() {
    // Regression: explicit_VR-UN writes its attributes, Modality included,
    // with VR UN; they were read as byte lists ("67\\84") before.
    for (name, modality) in [
        ("693_UNCR.dcm", "CT"),
        ("MR2_UNCR.dcm", "MR"),
        ("US1_UNCR.dcm", "US"),
        ("JPEG-LL.dcm", "NM"),
        ("explicit_VR-UN.dcm", "CT"),
    ] {
        let Some(path) = pydicom_file(name) else {
            return;
        };
        match read(&path) {
            Err(e @ DicomError::NotARadiograph { .. }) => {
                assert_eq!(e.code(), "DICOM_NOT_A_RADIOGRAPH");
                assert!(e.to_string().contains(modality), "{name}: {e}");
                assert!(e.to_string().contains("fix:"), "{name}: {e}");
            }
            other => panic!("{name}: expected NotARadiograph, got {other:?}"),
        }
    }
}

#[test]
fn nm_jpeg_lossless_decodes_when_it_is_labelled_a_radiograph() {
    let Some(bytes) = as_cr("JPEG-LL.dcm") else {
        return;
    };
    let r = read_radiograph(&bytes, &ReadLimits::default()).unwrap();
    assert!(r.steps.iter().any(|s| matches!(s, Step::Decoded { transfer_syntax } if transfer_syntax == "1.2.840.10008.1.2.4.70")));
    let (min, max) = r
        .pixels()
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    assert!(max > min, "decoded image is flat");
}

#[test]
fn big_endian_rle_and_j2k_equal_the_little_endian_original() {
    let Some(le) = as_cr("emri_small.dcm") else {
        return;
    };
    let reference = read_radiograph(&le, &ReadLimits::default()).unwrap();
    for name in [
        "emri_small_big_endian.dcm",
        "emri_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ] {
        let Some(bytes) = as_cr(name) else { return };
        let r = read_radiograph(&bytes, &ReadLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.pixel_sha256(), reference.pixel_sha256(), "{name}");
    }
}

#[test]
fn deflated_data_set_equals_the_original() {
    let Some(le) = as_cr("emri_small.dcm") else {
        return;
    };
    let reference = read_radiograph(&le, &ReadLimits::default()).unwrap();
    let deflated = cxr_tests::deflate::deflated_copy(&le).unwrap();
    assert!(deflated.len() < le.len());
    let r = read_radiograph(&deflated, &ReadLimits::default()).unwrap();
    assert_eq!(
        r.acquisition.transfer_syntax.as_deref(),
        Some("1.2.840.10008.1.2.1.99")
    );
    assert_eq!(r.pixel_sha256(), reference.pixel_sha256());
    // A deflate bomb is capped by max_inflated_bytes.
    let tight = ReadLimits {
        max_inflated_bytes: 1000,
        ..ReadLimits::default()
    };
    assert_eq!(
        read_radiograph(&deflated, &tight).unwrap_err().code(),
        "DICOM_INPUT_TOO_LARGE"
    );
}

#[test]
fn truncated_j2k_is_a_typed_refusal() {
    let Some(bytes) = as_cr("emri_small_jpeg_2k_lossless_too_short.dcm") else {
        return;
    };
    let err = read_radiograph(&bytes, &ReadLimits::default()).unwrap_err();
    assert_eq!(err.code(), "DICOM_MALFORMED", "{err}");
}

/// JPEG-LS decodes with the `jpeg-ls` feature and is named unsupported without
/// it. CI builds with the feature once and sets `CXR_EXPECT_JPEG_LS=1`.
#[test]
fn jpeg_ls_is_decoded_or_named_unsupported() {
    let Some(bytes) = as_cr("emri_small_jpeg_ls_lossless.dcm") else {
        return;
    };
    let expect_decode = std::env::var("CXR_EXPECT_JPEG_LS").is_ok_and(|v| v == "1");
    match read_radiograph(&bytes, &ReadLimits::default()) {
        Ok(r) => {
            let reference =
                read_radiograph(&as_cr("emri_small.dcm").unwrap(), &ReadLimits::default()).unwrap();
            assert_eq!(
                r.pixel_sha256(),
                reference.pixel_sha256(),
                "JPEG-LS lossless must equal the original"
            );
        }
        Err(DicomError::UnsupportedTransferSyntax { uid, name }) if !expect_decode => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.80");
            assert!(name.contains("jpeg-ls"), "{name}");
        }
        Err(e) => panic!("JPEG-LS: {e}"),
    }
}

#[test]
fn real_jpeg_baseline_chest_carries_age_sex_and_view() {
    let Some(path) = shared_file(CHEST_JPEG) else {
        return;
    };
    let r = read(&path).unwrap();
    let a = &r.acquisition;
    assert_eq!((r.rows(), r.cols()), (1024, 1024));
    assert_eq!(a.input_class, InputClass::FrontalChest);
    assert_eq!(a.age_years, Some(62.0));
    assert_eq!(a.sex, Some(Sex::Male));
    assert_eq!(a.view_position.as_deref(), Some("PA"));
    assert_eq!(a.transfer_syntax.as_deref(), Some("1.2.840.10008.1.2.4.50"));
}

#[test]
fn synthetic_monochrome1_is_the_inverse_of_its_original() {
    let (Some(p2), Some(p1)) = (shared_file(CHEST_JPEG), shared_file(CHEST_MONO1)) else {
        return;
    };
    let mono2 = read(&p2).unwrap();
    let mono1 = read(&p1).unwrap();
    assert!(mono1.steps.iter().any(
        |s| matches!(s, Step::InvertedMonochrome1 { low, high } if *low == 0.0 && *high == 255.0)
    ));
    assert!(!mono2
        .steps
        .iter()
        .any(|s| matches!(s, Step::InvertedMonochrome1 { .. })));
    for (a, b) in mono1.pixels().iter().zip(mono2.pixels()) {
        assert_eq!(a + b, 255.0);
    }
}

#[test]
fn pixel_values_match_pydicom() {
    let Some(dir) = pydicom_data_dir() else {
        return;
    };
    let fixture = workspace_root().join("tests/fixtures/pydicom_reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let files = reference["files"].as_object().unwrap();
    assert!(files.len() >= 9);
    for (key, expected) in files {
        let path = if let Some(name) = key.strip_prefix("pydicom-data/") {
            dir.join(name)
        } else {
            let Some(p) = shared_file(key.strip_prefix("shared/").unwrap()) else {
                return;
            };
            p
        };
        let r = read(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
        // Lossy JPEG: decoders' IDCTs legitimately differ by a grey level or two.
        let tolerance = expected["tolerance"].as_f64().unwrap();
        assert_eq!(r.rows() as u64, expected["rows"].as_u64().unwrap(), "{key}");
        assert_eq!(r.cols() as u64, expected["cols"].as_u64().unwrap(), "{key}");
        for v in expected["values"].as_array().unwrap() {
            let (row, col, want) = (
                v[0].as_u64().unwrap() as usize,
                v[1].as_u64().unwrap() as usize,
                v[2].as_f64().unwrap(),
            );
            let got = f64::from(r.at(row, col).unwrap());
            assert!(
                (got - want).abs() <= tolerance,
                "{key} at ({row},{col}): got {got}, pydicom {want}"
            );
        }
        let mean = r.pixels().iter().map(|v| f64::from(*v)).sum::<f64>() / r.pixels().len() as f64;
        let want = expected["mean"].as_f64().unwrap();
        assert!(
            (mean - want).abs() <= tolerance.max(1e-3) * 0.5,
            "{key} mean: got {mean}, pydicom {want}"
        );
    }
}

#[test]
fn every_package_file_is_accepted_or_refused_with_a_code() {
    let Some(dir) = pydicom_data_dir() else {
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 68, "pydicom-data 1.0.0 holds 68 files");
    let mut accepted = 0;
    for path in &paths {
        match read(path) {
            Ok(r) => {
                accepted += 1;
                assert!(r.pixels().iter().all(|v| v.is_finite()));
            }
            Err(e) => assert!(e.code().starts_with("DICOM_"), "{}: {e}", path.display()),
        }
    }
    assert!(accepted >= 10, "only {accepted} accepted");
}

#[test]
fn the_identity_a_receiver_files_an_instance_under_is_read_without_decoding() {
    let Some(path) = pydicom_file("RG1_J2KR.dcm") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let id = cxr_dicom::read_identity(&bytes, &ReadLimits::default()).unwrap();
    assert_eq!(id.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1");
    assert_eq!(
        id.sop_instance_uid,
        "1.3.6.1.4.1.5962.1.1.9.1.2.20040826185059.5457"
    );
    assert_eq!(
        id.study_instance_uid,
        "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
    );
    assert!(id.series_instance_uid.is_some());
    assert!(id.study.patient_id.is_some());
    // Cut short, or without its study: a typed refusal, never a panic.
    assert!(cxr_dicom::read_identity(&bytes[..bytes.len() / 2], &ReadLimits::default()).is_err());
    let no_study = set_text_in(&bytes, 0x0020, 0x000D, "", false).unwrap();
    let e = cxr_dicom::read_identity(&no_study, &ReadLimits::default()).unwrap_err();
    assert!(e.to_string().contains("Study Instance UID"), "{e}");
}
