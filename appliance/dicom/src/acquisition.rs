//! Acquisition facts and the input class, from the tags alone.

use cxr_radiograph::{AcquisitionInfo, InputClass, Portable, Sex, StudyUids};
use dicom_dictionary_std::tags;

use crate::tags::{code, decimals, text, uint, Obj};

/// Modalities that are projection radiographs.
const RADIOGRAPH_MODALITIES: &[&str] = &["CR", "DX", "RG", "DR", "PX", "MG", "IO"];
/// Modalities that are certainly not projection radiographs.
const NON_RADIOGRAPH_MODALITIES: &[&str] = &[
    "CT", "MR", "US", "NM", "PT", "XA", "RF", "ES", "OP", "SM", "XC", "GM", "IVUS", "OCT", "ECG",
    "EPS", "HD", "RTIMAGE", "RTDOSE", "RTSTRUCT", "RTPLAN", "SEG", "SR", "PR", "KO", "DOC", "BI",
    "TG", "OPT", "OPM",
];

/// Words (whole tokens) in body part or descriptions that mean chest.
const CHEST_WORDS: &[&str] = &[
    "CHEST", "THORAX", "LUNG", "LUNGS", "CXR", "TORAX", "POITRINE",
];
const FRONTAL_VIEWS: &[&str] = &["PA", "AP", "FRONTAL"];
const LATERAL_VIEWS: &[&str] = &["LL", "RL", "LAT", "LATERAL", "LLD", "RLD"];
const PORTABLE_WORDS: &[&str] = &["PORTABLE", "PORT", "MOBILE", "BEDSIDE"];

/// Upper-case tokens of a tag value, split at anything not a letter or digit,
/// so that "REPORT" never reads as "PORT" nor "BILATERAL" as "LAT".
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn has_word(s: &str, vocabulary: &[&str]) -> bool {
    words(s).any(|w| vocabulary.contains(&w))
}

/// Whether a modality code names something other than a projection radiograph.
pub(crate) fn is_non_radiograph(modality: &str) -> bool {
    NON_RADIOGRAPH_MODALITIES.contains(&modality)
}

/// Read every acquisition fact and derive the input class.
pub(crate) fn read(obj: &Obj, transfer_syntax: &str) -> AcquisitionInfo {
    let modality = code(obj, tags::MODALITY);
    let body_part = code(obj, tags::BODY_PART_EXAMINED);
    let view_position = code(obj, tags::VIEW_POSITION);
    let descriptions: Vec<String> = [
        tags::STUDY_DESCRIPTION,
        tags::SERIES_DESCRIPTION,
        tags::PROTOCOL_NAME,
        tags::STATION_NAME,
        tags::IMAGE_COMMENTS,
        tags::ACQUISITION_DEVICE_PROCESSING_DESCRIPTION,
    ]
    .iter()
    .filter_map(|t| code(obj, *t))
    .collect();
    let (pixel_spacing_mm, pixel_spacing_source) = spacing(obj);
    let input_class = classify(
        modality.as_deref(),
        body_part.as_deref(),
        view_position.as_deref(),
        &descriptions,
    );
    AcquisitionInfo {
        sex: code(obj, tags::PATIENT_SEX).and_then(|s| parse_sex(&s)),
        age_years: text(obj, tags::PATIENT_AGE).and_then(|a| parse_age(&a)),
        manufacturer: text(obj, tags::MANUFACTURER),
        manufacturer_model: text(obj, tags::MANUFACTURER_MODEL_NAME),
        pixel_spacing_mm,
        pixel_spacing_source,
        bits_stored: uint(obj, tags::BITS_STORED, "BitsStored")
            .ok()
            .flatten()
            .and_then(|v| u16::try_from(v).ok()),
        photometric_interpretation: code(obj, tags::PHOTOMETRIC_INTERPRETATION),
        transfer_syntax: Some(transfer_syntax.to_owned()),
        portable: portable(obj),
        input_class,
        uids: StudyUids {
            study: text(obj, tags::STUDY_INSTANCE_UID),
            series: text(obj, tags::SERIES_INSTANCE_UID),
            instance: text(obj, tags::SOP_INSTANCE_UID),
        },
        modality,
        body_part,
        view_position,
    }
}

fn spacing(obj: &Obj) -> (Option<[f64; 2]>, Option<String>) {
    for (tag, name) in [
        (tags::IMAGER_PIXEL_SPACING, "ImagerPixelSpacing"),
        (tags::PIXEL_SPACING, "PixelSpacing"),
    ] {
        if let Some(v) = decimals(obj, tag) {
            if let [r, c] = v[..] {
                if r > 0.0 && c > 0.0 {
                    return (Some([r, c]), Some(name.to_owned()));
                }
            }
        }
    }
    (None, None)
}

fn parse_sex(s: &str) -> Option<Sex> {
    match s {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        "O" => Some(Sex::Other),
        _ => None,
    }
}

/// Patient's Age, `nnnD`, `nnnW`, `nnnM` or `nnnY`, in years. Bare digits
/// (written by some anonymisers and dataset converters, e.g. `62`) are read as years.
pub(crate) fn parse_age(s: &str) -> Option<f32> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u16>().ok().map(f32::from).filter(|y| *y <= 150.0);
    }
    if s.len() < 2 || !s.is_ascii() {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: f32 = digits.parse::<u16>().ok()?.into();
    let years = match unit.to_ascii_uppercase().as_str() {
        "D" => n / 365.25,
        "W" => n * 7.0 / 365.25,
        "M" => n / 12.0,
        "Y" => n,
        _ => return None,
    };
    (years <= 150.0).then_some(years)
}

fn portable(obj: &Obj) -> Portable {
    let sources = [
        (tags::STUDY_DESCRIPTION, "StudyDescription"),
        (tags::SERIES_DESCRIPTION, "SeriesDescription"),
        (tags::PROTOCOL_NAME, "ProtocolName"),
        (tags::STATION_NAME, "StationName"),
        (tags::IMAGE_COMMENTS, "ImageComments"),
        (
            tags::ACQUISITION_DEVICE_PROCESSING_DESCRIPTION,
            "AcquisitionDeviceProcessingDescription",
        ),
    ];
    for (tag, name) in sources {
        if let Some(value) = code(obj, tag) {
            if let Some(word) = words(&value).find(|w| PORTABLE_WORDS.contains(w)) {
                return Portable {
                    value: Some(true),
                    how: format!("{name} contains {word:?}"),
                };
            }
        }
    }
    Portable {
        value: None,
        how: "no description, protocol or station tag mentions a portable unit; AP view alone is not taken as evidence".to_owned(),
    }
}

/// The input class from modality, body part, view and descriptions.
pub(crate) fn classify(
    modality: Option<&str>,
    body_part: Option<&str>,
    view: Option<&str>,
    descriptions: &[String],
) -> InputClass {
    let Some(modality) = modality else {
        return InputClass::Unknown;
    };
    if is_non_radiograph(modality) {
        return InputClass::NotRadiograph;
    }
    if !RADIOGRAPH_MODALITIES.contains(&modality) {
        return InputClass::Unknown;
    }
    let chest = match body_part {
        Some(part) => has_word(part, CHEST_WORDS),
        None if descriptions.iter().any(|d| has_word(d, CHEST_WORDS)) => true,
        None => return InputClass::Unknown,
    };
    if !chest {
        return InputClass::NonChestRadiograph;
    }
    match view {
        Some(v) if has_word(v, FRONTAL_VIEWS) => InputClass::FrontalChest,
        Some(v) if has_word(v, LATERAL_VIEWS) => InputClass::LateralChest,
        _ => {
            let lateral = descriptions.iter().any(|d| has_word(d, LATERAL_VIEWS));
            let frontal = descriptions.iter().any(|d| has_word(d, FRONTAL_VIEWS));
            match (frontal, lateral) {
                (true, false) => InputClass::FrontalChest,
                (false, true) => InputClass::LateralChest,
                // "CHEST PA AND LAT" describes the series, not this image.
                _ => InputClass::Unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_convert_to_years() {
        assert_eq!(parse_age("045Y"), Some(45.0));
        assert_eq!(parse_age("006M"), Some(0.5));
        assert!((parse_age("014D").unwrap() - 14.0 / 365.25).abs() < 1e-6);
        assert_eq!(parse_age("052W"), Some(52.0 * 7.0 / 365.25));
        assert_eq!(parse_age("45"), Some(45.0));
        assert_eq!(parse_age("4500"), None);
        assert_eq!(parse_age("XXXY"), None);
        assert_eq!(parse_age("999Y"), None);
    }

    #[test]
    fn words_are_whole_tokens() {
        assert!(has_word("CHEST_PORT", PORTABLE_WORDS));
        assert!(!has_word("REPORT ATTACHED", PORTABLE_WORDS));
        assert!(has_word("XR CHEST 1V PORTABLE", PORTABLE_WORDS));
        assert!(!has_word("BILATERAL", LATERAL_VIEWS));
    }

    #[test]
    fn classes_follow_the_tags() {
        let none: Vec<String> = vec![];
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), Some("PA"), &none),
            InputClass::FrontalChest
        );
        assert_eq!(
            classify(Some("DX"), Some("CHEST"), Some("LL"), &none),
            InputClass::LateralChest
        );
        assert_eq!(
            classify(Some("CR"), Some("EXTREMITY"), Some("AP"), &none),
            InputClass::NonChestRadiograph
        );
        assert_eq!(
            classify(Some("CT"), Some("CHEST"), None, &none),
            InputClass::NotRadiograph
        );
        assert_eq!(classify(Some("OT"), None, None, &none), InputClass::Unknown);
        assert_eq!(
            classify(None, Some("CHEST"), Some("PA"), &none),
            InputClass::Unknown
        );
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), None, &none),
            InputClass::Unknown
        );
        let both = vec!["CHEST PA AND LAT".to_owned()];
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), None, &both),
            InputClass::Unknown
        );
        let bilateral = vec!["BILATERAL RIBS".to_owned()];
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), None, &bilateral),
            InputClass::Unknown
        );
        let desc = vec!["CHEST PA".to_owned()];
        assert_eq!(
            classify(Some("DX"), None, None, &desc),
            InputClass::FrontalChest
        );
    }
}
