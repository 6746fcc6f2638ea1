use cxr_core::InputClass;
use serde::{Deserialize, Serialize};

/// Patient sex as recorded in (0010,0040).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
    Other,
}

/// Whether the image came from a portable (bedside) unit, and how we know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portable {
    /// `Some(true)` when a tag says portable/mobile/bedside, `None` when no tag tells.
    pub value: Option<bool>,
    /// How the value was inferred, in words (for the audit trail and subgroup reports).
    pub how: String,
}

impl Default for Portable {
    fn default() -> Self {
        Portable {
            value: None,
            how: "no source tags".to_owned(),
        }
    }
}

/// Patient and General Study module values of the source study, as text
/// (absent when empty): what ingest reads, and what results, queries and
/// reports carry. Unlike [`StudyUids`] it is serialised, into the study's
/// result files only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyHeader {
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub study_id: Option<String>,
    pub referring_physician_name: Option<String>,
}

/// Study, series and SOP instance UIDs.
///
/// Kept in memory only: they identify a patient's study, so they are never
/// serialised (the serde derive skips them on [`AcquisitionInfo`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyUids {
    pub study: Option<String>,
    pub series: Option<String>,
    pub instance: Option<String>,
}

/// What the tags say about how and of whom the image was acquired.
///
/// Every field is optional: a PNG from a dataset has none of them, and vendors
/// omit many. Strings are trimmed; codes (modality, body part, view) are upper case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcquisitionInfo {
    /// (0008,0060), e.g. `CR`, `DX`, `CT`.
    pub modality: Option<String>,
    /// (0018,0015), e.g. `CHEST`.
    pub body_part: Option<String>,
    /// (0018,5101), e.g. `PA`, `AP`, `LL`.
    pub view_position: Option<String>,
    pub sex: Option<Sex>,
    /// From (0010,1010) Patient's Age (`nnnD/W/M/Y`), in years.
    pub age_years: Option<f32>,
    pub manufacturer: Option<String>,
    pub manufacturer_model: Option<String>,
    /// Row spacing then column spacing, mm: Imager Pixel Spacing (0018,1164),
    /// else Pixel Spacing (0028,0030).
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// Which tag the spacing came from.
    pub pixel_spacing_source: Option<String>,
    pub bits_stored: Option<u16>,
    pub photometric_interpretation: Option<String>,
    pub transfer_syntax: Option<String>,
    pub portable: Portable,
    /// The class the decision core gates on, derived from the tags.
    pub input_class: InputClass,
    /// Identifiers: in memory only, never serialised.
    #[serde(skip)]
    pub uids: StudyUids,
}

impl AcquisitionInfo {
    /// Facts for an image that came without tags (a PNG or JPEG from a dataset).
    pub fn untagged() -> Self {
        AcquisitionInfo {
            modality: None,
            body_part: None,
            view_position: None,
            sex: None,
            age_years: None,
            manufacturer: None,
            manufacturer_model: None,
            pixel_spacing_mm: None,
            pixel_spacing_source: None,
            bits_stored: None,
            photometric_interpretation: None,
            transfer_syntax: None,
            portable: Portable::default(),
            input_class: InputClass::Unknown,
            uids: StudyUids::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_never_serialise() {
        let mut info = AcquisitionInfo::untagged();
        info.uids.study = Some("1.2.3.4.5.6789".to_owned());
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("6789"), "{json}");
        assert!(json.contains("\"input_class\":\"unknown\""), "{json}");
    }
}
