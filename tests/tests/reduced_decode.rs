//! Decoding for the model (`DecodeTarget::ShortSideAtLeast`) against a full
//! decode then resize, on real chest films: the model input must agree within
//! a stated tolerance, and codecs that cannot reduce must not change at all.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use cxr_dicom::{read_radiograph, read_radiograph_for, DecodeTarget, Radiograph, ReadLimits};
use cxr_preprocess::{prepare, InputSpec};
use cxr_radiograph::Step;
use cxr_tests::data::{pydicom_file, shared_file};
use cxr_tests::hostile::{first_fragment, set_us, variants, Base};

/// The tolerance of one codec's reduced decode: the largest difference in
/// one model-input element (in standard deviations of the input
/// normalisation, (x - 0.5) / 0.25 after a [0, 1] percentile clip), and the
/// largest relative L2 difference over the whole input, against a full
/// decode resized by `prepare`.
///
/// Measured (2026-11-30): RG1 JPEG 2000 at 512 (one level dropped) 0.22 and
/// 0.0077; at 224 and 128 (three levels) up to 1.03 and 0.047, because the
/// 5/3 wavelet's low band aliases more than `prepare`'s antialiasing filter
/// and only a small resize is left after it; the DCT JPEG at 512 (1/2)
/// 0.90 and 0.028. The demo bundle's probabilities on the same films move by
/// under 0.001 (`appliance/tests/reduced_decode_decisions.rs`).
struct Tolerance {
    max_abs: f32,
    rel_l2: f64,
}

const JPEG2000: Tolerance = Tolerance {
    max_abs: 1.1,
    rel_l2: 0.05,
};
const JPEG_DCT: Tolerance = Tolerance {
    max_abs: 1.0,
    rel_l2: 0.03,
};

const CHEST_JPEG: &str =
    "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm";
const CHEST_MONO1: &str = "torchxrayvision-test-samples/Fake_MONOHR1.dcm";

fn films() -> Option<Vec<(&'static str, PathBuf, Tolerance)>> {
    Some(vec![
        ("RG1_J2KR", pydicom_file("RG1_J2KR.dcm")?, JPEG2000),
        ("RG1_J2KI", pydicom_file("RG1_J2KI.dcm")?, JPEG2000),
        ("SIIM chest JPEG", shared_file(CHEST_JPEG)?, JPEG_DCT),
        (
            "SIIM chest MONOCHROME1",
            shared_file(CHEST_MONO1)?,
            JPEG_DCT,
        ),
    ])
}

fn reduction(r: &Radiograph) -> Option<u32> {
    r.steps.iter().find_map(|s| match s {
        Step::ReducedResolution { divisor, .. } => Some(*divisor),
        _ => None,
    })
}

/// (max abs difference, relative L2 difference) of the two model inputs.
fn input_difference(full: &Radiograph, reduced: &Radiograph, size: u32) -> (f32, f64) {
    let spec = InputSpec {
        size,
        ..InputSpec::default()
    };
    let a = prepare(full, &spec).unwrap().data;
    let b = prepare(reduced, &spec).unwrap().data;
    assert_eq!(a.len(), b.len());
    let max_abs = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    (max_abs, (diff / norm).sqrt())
}

#[test]
fn reduced_decode_gives_the_model_the_same_input_within_tolerance() {
    let Some(films) = films() else {
        return;
    };
    let limits = ReadLimits::default();
    for (name, path, tolerance) in films {
        let bytes = std::fs::read(&path).unwrap();
        let full = read_radiograph(&bytes, &limits).unwrap();
        for size in [512u32, 224, 128] {
            let reduced =
                read_radiograph_for(&bytes, &limits, DecodeTarget::ShortSideAtLeast(size)).unwrap();
            let divisor = reduction(&reduced)
                .unwrap_or_else(|| panic!("{name} @{size}: no reduction: {:?}", reduced.steps));
            assert!(divisor >= 2, "{name} @{size}: divisor {divisor}");
            let short = reduced.rows().min(reduced.cols());
            assert!(
                short >= size as usize,
                "{name} @{size}: short side {short} under the target"
            );
            assert!(
                short < 2 * size as usize || divisor == 8,
                "{name} @{size}: short side {short}, more than needed"
            );
            assert_eq!(
                reduced.acquisition.input_class,
                full.acquisition.input_class
            );
            let (max_abs, rel_l2) = input_difference(&full, &reduced, size);
            println!("{name} @{size}: divisor {divisor}, {}x{}, max abs {max_abs:.4}, rel L2 {rel_l2:.5}", reduced.rows(), reduced.cols());
            assert!(
                max_abs <= tolerance.max_abs && rel_l2 <= tolerance.rel_l2,
                "{name} @{size}: max abs {max_abs}, rel L2 {rel_l2}"
            );
        }
    }
}

#[test]
fn a_target_at_or_above_the_stored_size_changes_nothing() {
    let Some(films) = films() else {
        return;
    };
    let limits = ReadLimits::default();
    for (name, path, _) in films {
        let bytes = std::fs::read(&path).unwrap();
        let full = read_radiograph(&bytes, &limits).unwrap();
        let short = full.rows().min(full.cols()) as u32;
        let same =
            read_radiograph_for(&bytes, &limits, DecodeTarget::ShortSideAtLeast(short)).unwrap();
        assert_eq!(reduction(&same), None, "{name}");
        assert_eq!(same.pixel_sha256(), full.pixel_sha256(), "{name}");
        assert_eq!(same.steps, full.steps, "{name}");
    }
}

#[test]
fn uncompressed_films_are_never_reduced() {
    let Some(path) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let limits = ReadLimits::default();
    let full = read_radiograph(&bytes, &limits).unwrap();
    let target = read_radiograph_for(&bytes, &limits, DecodeTarget::ShortSideAtLeast(128)).unwrap();
    assert_eq!(target.pixel_sha256(), full.pixel_sha256());
    assert_eq!(reduction(&target), None);
}

#[test]
fn reduced_pixel_spacing_covers_the_same_film() {
    let Some(path) = shared_file(CHEST_JPEG) else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let limits = ReadLimits::default();
    let full = read_radiograph(&bytes, &limits).unwrap();
    let reduced =
        read_radiograph_for(&bytes, &limits, DecodeTarget::ShortSideAtLeast(224)).unwrap();
    assert_eq!((reduced.rows(), reduced.cols()), (256, 256));
    let (Some(a), Some(b)) = (
        full.acquisition.pixel_spacing_mm,
        reduced.acquisition.pixel_spacing_mm,
    ) else {
        panic!("the SIIM chest film has a pixel spacing");
    };
    assert!((b[0] - 4.0 * a[0]).abs() < 1e-9, "{a:?} -> {b:?}");
    let extent = |r: &Radiograph, s: [f64; 2]| (r.rows() as f64 * s[0], r.cols() as f64 * s[1]);
    let (fa, fb) = (extent(&full, a), extent(&reduced, b));
    assert!(
        (fa.0 - fb.0).abs() < 1e-6 && (fa.1 - fb.1).abs() < 1e-6,
        "{fa:?} vs {fb:?}"
    );
}

/// The hostile variants of the two codecs that reduce: on these, a reduced
/// read refuses exactly what a full read refuses, with the same code (a
/// reduced decode that fails falls back to the full one), and never panics.
#[test]
fn hostile_variants_are_refused_the_same_way_reduced_or_full() {
    let (Some(j2k), Some(jpeg)) = (pydicom_file("RG1_J2KR.dcm"), shared_file(CHEST_JPEG)) else {
        return;
    };
    let base = |name: &str, path: PathBuf| Base {
        name: name.to_owned(),
        bytes: std::fs::read(path).unwrap(),
        big_endian: false,
    };
    let variants = variants(&[base("RG1_J2KR", j2k), base("chest-jpeg", jpeg)]);
    assert!(variants.len() >= 20, "only {} variants", variants.len());
    let limits = ReadLimits::default();
    let mut reduced_ok = 0;
    for v in &variants {
        let full = read_radiograph(&v.bytes, &limits);
        let reduced = read_radiograph_for(&v.bytes, &limits, DecodeTarget::ShortSideAtLeast(128));
        match (&full, &reduced) {
            (Ok(_), Ok(r)) => reduced_ok += usize::from(reduction(r).is_some()),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{}", v.name),
            _ => panic!(
                "{}: full {:?} but reduced {:?}",
                v.name,
                full.as_ref().map(|_| ()).map_err(|e| e.code()),
                reduced.as_ref().map(|_| ()).map_err(|e| e.code())
            ),
        }
    }
    // Some damaged films still decode, and then through the reduced path.
    assert!(reduced_ok > 0, "no variant was read at reduced resolution");
}

/// Regression: a codestream whose precision is not the header's BitsStored
/// is not reduced (a full decode masks to BitsStored; a wavelet overshoot in
/// a reduced decode would have wrapped there), so both reads agree exactly.
#[test]
fn a_codestream_wider_than_bits_stored_is_decoded_in_full() {
    let Some(path) = pydicom_file("RG1_J2KR.dcm") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let narrowed = set_us(&bytes, 0x0028, 0x0101, 12)
        .and_then(|b| set_us(&b, 0x0028, 0x0102, 11))
        .unwrap();
    let limits = ReadLimits::default();
    let full = read_radiograph(&narrowed, &limits).unwrap();
    let target =
        read_radiograph_for(&narrowed, &limits, DecodeTarget::ShortSideAtLeast(128)).unwrap();
    assert_eq!(reduction(&target), None, "{:?}", target.steps);
    assert_eq!(target.pixel_sha256(), full.pixel_sha256());
}

/// RG1 with its first fragment split in two, and a Basic Offset Table of
/// `table` (RG1's own is empty).
fn split_first_fragment(bytes: &[u8], table: &[u32]) -> Vec<u8> {
    let (item, data) = first_fragment(bytes).unwrap();
    let half = (data.len() / 2) & !1;
    // RG1's offset table is empty: its item header sits right before `item`.
    let mut out = bytes[..item - 8].to_vec();
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    out.extend_from_slice(&(4 * table.len() as u32).to_le_bytes());
    for offset in table {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for part in [data.start..data.start + half, data.start + half..data.end] {
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes[part]);
    }
    out.extend_from_slice(&bytes[data.end..]);
    out
}

/// Frame 0 is taken from the fragments as the full decoder takes it: all of
/// them when the offset table is empty (reduced, same pixels within
/// tolerance), and an offset table that starts frame 0 past the first
/// fragment is refused by both reads alike (regression).
#[test]
fn frame_zero_comes_from_the_fragments_the_full_decoder_uses() {
    let Some(path) = pydicom_file("RG1_J2KR.dcm") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let limits = ReadLimits::default();
    let target = DecodeTarget::ShortSideAtLeast(512);
    let original = read_radiograph(&bytes, &limits).unwrap();
    let split = split_first_fragment(&bytes, &[]);
    let full = read_radiograph(&split, &limits).unwrap();
    assert_eq!(full.pixel_sha256(), original.pixel_sha256());
    let reduced = read_radiograph_for(&split, &limits, target).unwrap();
    assert_eq!(reduction(&reduced), Some(2));
    // Frame 0 starting past the first fragment, or ending after it (a
    // second entry): each read sees the same bytes, so the same outcome.
    let (_, data) = first_fragment(&bytes).unwrap();
    let second = 8 + ((data.len() / 2) & !1) as u32;
    for table in [vec![12], vec![0, second], vec![0, 0]] {
        let skewed = split_first_fragment(&bytes, &table);
        let full = read_radiograph(&skewed, &limits);
        let reduced = read_radiograph_for(&skewed, &limits, target);
        match (&full, &reduced) {
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{table:?}"),
            (Ok(a), Ok(b)) if reduction(b).is_none() => {
                assert_eq!(a.pixel_sha256(), b.pixel_sha256(), "{table:?}")
            }
            (Ok(_), Ok(_)) => {}
            _ => panic!(
                "{table:?}: full {:?}, reduced {:?}",
                full.as_ref().map(|_| ()).map_err(|e| e.code()),
                reduced.as_ref().map(|_| ()).map_err(|e| e.code())
            ),
        }
    }
}
