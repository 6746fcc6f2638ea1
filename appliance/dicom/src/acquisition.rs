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
const FRONTAL_VIEWS: &[&str] = &["PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"];
const LATERAL_VIEWS: &[&str] = &["LL", "RL", "LAT", "LATERAL"];
/// Decubitus (LLD, RLD, "decubitus"): a horizontal-beam film of a patient
/// lying on one side. Checked before the lateral words ("left lateral
/// decubitus" is a decubitus film, not a lateral one).
const DECUBITUS_VIEWS: &[&str] = &["LLD", "RLD", "DECUBITUS", "DECUB"];
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

/// Whether a stated view (View Position, a dataset's view column) names a
/// frontal projection and nothing else: one vocabulary for the appliance's
/// tag gate and the trainer's choice of films.
pub fn is_frontal_view(view: &str) -> bool {
    let v = view.to_ascii_uppercase();
    has_word(&v, FRONTAL_VIEWS) && !has_word(&v, LATERAL_VIEWS) && !has_word(&v, DECUBITUS_VIEWS)
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
    // What the examination was. StationName names a room or a unit and
    // ImageComments is free text: neither is evidence of a chest film.
    let descriptions: Vec<String> = [
        tags::STUDY_DESCRIPTION,
        tags::SERIES_DESCRIPTION,
        tags::PROTOCOL_NAME,
        tags::ACQUISITION_DEVICE_PROCESSING_DESCRIPTION,
    ]
    .iter()
    .filter_map(|t| code(obj, *t))
    .collect();
    let (pixel_spacing_mm, pixel_spacing_source) = spacing(obj);
    let view_code = view_code_meaning(obj);
    let mut input_class = classify(
        modality.as_deref(),
        body_part.as_deref(),
        view_position.as_deref().or(view_code.as_deref()),
        &descriptions,
    );
    // View Position and the View Code Sequence must agree; when they do
    // not, the tags do not say what the image is.
    if let (Some(position), Some(code)) = (&view_position, &view_code) {
        let as_class = |v: &str| {
            classify(
                modality.as_deref(),
                body_part.as_deref(),
                Some(v),
                &descriptions,
            )
        };
        if input_class == InputClass::FrontalChest && as_class(code) != as_class(position) {
            input_class = InputClass::Unknown;
        }
    }
    // StationName and ImageComments never make a film a chest film, but a
    // non-frontal word there (LAT, decubitus) stops a frontal one.
    if input_class == InputClass::FrontalChest {
        let free_text: Vec<String> = [tags::STATION_NAME, tags::IMAGE_COMMENTS]
            .iter()
            .filter_map(|t| code(obj, *t))
            .collect();
        if free_text.iter().any(|t| has_word(t, DECUBITUS_VIEWS)) {
            input_class = InputClass::DecubitusChest;
        } else if free_text.iter().any(|t| has_word(t, LATERAL_VIEWS)) {
            input_class = InputClass::LateralChest;
        }
    }
    // A patient orientation whose rows run front to back is a lateral
    // projection, whatever the view tag says: fail towards abstention.
    if input_class == InputClass::FrontalChest
        && text(obj, tags::PATIENT_ORIENTATION).is_some_and(|o| orientation_is_lateral(&o))
    {
        input_class = InputClass::LateralChest;
    }
    AcquisitionInfo {
        sex: code(obj, tags::PATIENT_SEX).and_then(|s| parse_sex(&s)),
        age_years: age_years(obj),
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

/// The upper-cased Code Meaning of the View Code Sequence's first item
/// (0054,0220), e.g. "POSTERO-ANTERIOR", "LATERAL".
fn view_code_meaning(obj: &Obj) -> Option<String> {
    let items = obj.get(tags::VIEW_CODE_SEQUENCE)?.items()?;
    let first = items.first()?;
    code(first, tags::CODE_MEANING).map(|m| m.replace('-', ""))
}

/// Patient Orientation (0020,0020) is the direction of the rows, then of
/// the columns (`L\F` for a PA film). Rows running anterior or posterior
/// with no left or right component (`A\F`, `P\F`, `AH\F`) mean the beam
/// went through the patient sideways: a lateral projection.
pub(crate) fn orientation_is_lateral(orientation: &str) -> bool {
    let row = orientation
        .split('\\')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    let front_back = row.contains('A') || row.contains('P');
    let left_right = row.contains('L') || row.contains('R');
    front_back && !left_right
}

/// Age in years: PatientAge, else PatientBirthDate against the StudyDate
/// (or AcquisitionDate, then ContentDate).
fn age_years(obj: &Obj) -> Option<f32> {
    if let Some(age) = text(obj, tags::PATIENT_AGE).and_then(|a| parse_age(&a)) {
        return Some(age);
    }
    let birth = text(obj, tags::PATIENT_BIRTH_DATE).and_then(|d| parse_date(&d))?;
    let on = [tags::STUDY_DATE, tags::ACQUISITION_DATE, tags::CONTENT_DATE]
        .iter()
        .find_map(|t| text(obj, *t).and_then(|d| parse_date(&d)))?;
    years_between(birth, on)
}

/// A DICOM DA value `YYYYMMDD` as (year, month, day), checked loosely.
pub(crate) fn parse_date(s: &str) -> Option<(u16, u8, u8)> {
    let s = s.trim();
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: u16 = s[..4].parse().ok()?;
    let m: u8 = s[4..6].parse().ok()?;
    let d: u8 = s[6..].parse().ok()?;
    ((1850..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then_some((y, m, d))
}

/// Whole years from `birth` to `on`, plus the fraction of the current year
/// by months; `None` if `on` is before `birth` or the span is implausible.
pub(crate) fn years_between(birth: (u16, u8, u8), on: (u16, u8, u8)) -> Option<f32> {
    let months = (i32::from(on.0) - i32::from(birth.0)) * 12 + i32::from(on.1)
        - i32::from(birth.1)
        - i32::from(on.2 < birth.2);
    (0..=150 * 12)
        .contains(&months)
        .then(|| months as f32 / 12.0)
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

/// The input class from modality, body part, view and descriptions: the
/// tag rules of ingest, for callers that hold the tags outside a DICOM file
/// (a dataset's table).
pub fn classify(
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
    // A decubitus film is often tagged AP (the beam is still front to back):
    // the word anywhere wins, towards abstention.
    let decubitus = view.is_some_and(|v| has_word(v, DECUBITUS_VIEWS))
        || descriptions.iter().any(|d| has_word(d, DECUBITUS_VIEWS));
    match view {
        _ if decubitus => InputClass::DecubitusChest,
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
    fn ages_from_birth_dates() {
        let birth = parse_date("19700615").unwrap();
        assert_eq!(
            years_between(birth, parse_date("20200615").unwrap()),
            Some(50.0)
        );
        assert_eq!(
            years_between(birth, parse_date("20200614").unwrap()),
            Some(49.0 + 11.0 / 12.0)
        );
        assert_eq!(years_between(birth, parse_date("19690101").unwrap()), None);
        assert_eq!(parse_date("2020-06-15"), None);
        assert_eq!(parse_date("20201315"), None);
        let child = parse_date("20150301").unwrap();
        let age = years_between(child, parse_date("20230301").unwrap()).unwrap();
        assert_eq!(age, 8.0);
    }

    fn object(elements: &[(dicom_core::Tag, &str)]) -> Obj {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        Obj::from_element_iter(
            elements
                .iter()
                .map(|(t, v)| DataElement::new(*t, VR::LO, PrimitiveValue::from(*v))),
        )
    }

    /// A View Code Sequence with one item of this code meaning.
    fn put_view_code(obj: &mut Obj, meaning: &str) {
        let item = object(&[(tags::CODE_MEANING, meaning)]);
        obj.put(dicom_core::DataElement::new(
            tags::VIEW_CODE_SEQUENCE,
            dicom_core::VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));
    }

    #[test]
    fn tags_on_the_object_decide_class_and_age() {
        let ts = "1.2.840.10008.1.2.1";
        // A station or a comment naming the chest is not a chest examination.
        let station = object(&[
            (tags::MODALITY, "CR"),
            (tags::VIEW_POSITION, "PA"),
            (tags::STATION_NAME, "CHEST ROOM 1"),
            (tags::IMAGE_COMMENTS, "chest"),
        ]);
        assert_eq!(read(&station, ts).input_class, InputClass::Unknown);
        // A PA tag with rows running front to back is a lateral.
        let sideways = object(&[
            (tags::MODALITY, "DX"),
            (tags::BODY_PART_EXAMINED, "CHEST"),
            (tags::VIEW_POSITION, "PA"),
            (tags::PATIENT_ORIENTATION, "A\\F"),
        ]);
        assert_eq!(read(&sideways, ts).input_class, InputClass::LateralChest);
        let upright = object(&[
            (tags::MODALITY, "DX"),
            (tags::BODY_PART_EXAMINED, "CHEST"),
            (tags::VIEW_POSITION, "PA"),
            (tags::PATIENT_ORIENTATION, "L\\F"),
            (tags::PATIENT_BIRTH_DATE, "19600101"),
            (tags::STUDY_DATE, "20200101"),
        ]);
        let info = read(&upright, ts);
        assert_eq!(info.input_class, InputClass::FrontalChest);
        assert_eq!(info.age_years, Some(60.0));
        // The View Code Sequence stands in for a missing View Position.
        let mut coded = object(&[(tags::MODALITY, "DX"), (tags::BODY_PART_EXAMINED, "CHEST")]);
        put_view_code(&mut coded, "postero-anterior");
        assert_eq!(read(&coded, ts).input_class, InputClass::FrontalChest);
        // View Position PA but a View Code Sequence saying lateral: unknown.
        let mut torn = object(&[
            (tags::MODALITY, "DX"),
            (tags::BODY_PART_EXAMINED, "CHEST"),
            (tags::VIEW_POSITION, "PA"),
        ]);
        put_view_code(&mut torn, "lateral");
        assert_eq!(read(&torn, ts).input_class, InputClass::Unknown);
        // A comment saying decubitus stops a film tagged chest PA.
        let commented = object(&[
            (tags::MODALITY, "CR"),
            (tags::BODY_PART_EXAMINED, "CHEST"),
            (tags::VIEW_POSITION, "AP"),
            (tags::IMAGE_COMMENTS, "left lat decubitus"),
        ]);
        assert_eq!(read(&commented, ts).input_class, InputClass::DecubitusChest);
    }

    #[test]
    fn orientation_tells_lateral_from_frontal() {
        for lateral in ["A\\F", "P\\F", "AH\\F", "p\\h"] {
            assert!(orientation_is_lateral(lateral), "{lateral}");
        }
        for frontal in ["L\\F", "R\\F", "RA\\F", "", "F"] {
            assert!(!orientation_is_lateral(frontal), "{frontal}");
        }
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
        let decubitus = vec!["CHEST LEFT LATERAL DECUBITUS".to_owned()];
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), Some("LLD"), &none),
            InputClass::DecubitusChest
        );
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), None, &decubitus),
            InputClass::DecubitusChest
        );
        // A decubitus film tagged AP (horizontal beam) is still decubitus.
        assert_eq!(
            classify(Some("CR"), Some("CHEST"), Some("AP"), &decubitus),
            InputClass::DecubitusChest
        );
        assert_eq!(
            classify(Some("DX"), Some("CHEST"), Some("POSTEROANTERIOR"), &none),
            InputClass::FrontalChest
        );
        let desc = vec!["CHEST PA".to_owned()];
        assert_eq!(
            classify(Some("DX"), None, None, &desc),
            InputClass::FrontalChest
        );
    }
}
