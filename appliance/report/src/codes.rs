//! Coded concepts: (value, scheme, meaning). SNOMED CT where a code for the
//! finding exists and is certain; otherwise a local code in the `99CXR`
//! scheme (a private scheme, so a receiver never mistakes it for a
//! standard concept).

/// A coded concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

const fn code(value: &'static str, scheme: &'static str, meaning: &'static str) -> Code {
    Code {
        value,
        scheme,
        meaning,
    }
}

pub const IMAGING_MEASUREMENT_REPORT: Code = code("126000", "DCM", "Imaging Measurement Report");
pub const LANGUAGE: Code = code("121049", "DCM", "Language of Content Item and Descendants");
pub const ENGLISH: Code = code("eng", "RFC5646", "English");
pub const OBSERVER_TYPE: Code = code("121005", "DCM", "Observer Type");
pub const DEVICE: Code = code("121007", "DCM", "Device");
pub const DEVICE_OBSERVER_UID: Code = code("121012", "DCM", "Device Observer UID");
pub const DEVICE_OBSERVER_NAME: Code = code("121013", "DCM", "Device Observer Name");
pub const DEVICE_OBSERVER_MANUFACTURER: Code =
    code("121014", "DCM", "Device Observer Manufacturer");
pub const DEVICE_OBSERVER_MODEL_NAME: Code = code("121015", "DCM", "Device Observer Model Name");
pub const PROCEDURE_REPORTED: Code = code("121058", "DCM", "Procedure reported");
pub const PLAIN_CHEST_XRAY: Code = code("399208008", "SCT", "Plain chest X-ray");
pub const IMAGE_LIBRARY: Code = code("111028", "DCM", "Image Library");
pub const IMAGE_LIBRARY_GROUP: Code = code("126200", "DCM", "Image Library Group");
pub const IMAGING_MEASUREMENTS: Code = code("126010", "DCM", "Imaging Measurements");
pub const MEASUREMENT_GROUP: Code = code("125007", "DCM", "Measurement Group");
pub const TRACKING_IDENTIFIER: Code = code("112039", "DCM", "Tracking Identifier");
pub const TRACKING_UID: Code = code("112040", "DCM", "Tracking Unique Identifier");
pub const FINDING: Code = code("121071", "DCM", "Finding");
pub const PRESENCE: Code = code("705057003", "SCT", "Presence");
pub const PRESENT: Code = code("52101004", "SCT", "Present");
pub const ABSENT: Code = code("2667000", "SCT", "Absent");
pub const INDETERMINATE: Code = code("82334004", "SCT", "Indeterminate");
pub const CERTAINTY_OF_FINDING: Code = code("111012", "DCM", "Certainty of Finding");
pub const PERCENT: Code = code("%", "UCUM", "percent");
pub const ALGORITHM_NAME: Code = code("111001", "DCM", "Algorithm Name");
pub const ALGORITHM_VERSION: Code = code("111003", "DCM", "Algorithm Version");
pub const COMMENT: Code = code("121106", "DCM", "Comment");
pub const PROCESSING_EQUIPMENT: Code = code("109102", "DCM", "Processing Equipment");

/// The finding a label names (the NIH ChestX-ray14 labels and common
/// synonyms); `None` for a label this table does not know.
pub fn finding_code(label: &str) -> Option<Code> {
    let normalised: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match normalised.as_str() {
        "atelectasis" => code("46621007", "SCT", "Atelectasis"),
        "cardiomegaly" => code("8186001", "SCT", "Cardiomegaly"),
        "consolidation" => code("95436008", "SCT", "Lung consolidation"),
        "edema" | "oedema" => code("19242006", "SCT", "Pulmonary edema"),
        "effusion" | "pleuraleffusion" => code("60046008", "SCT", "Pleural effusion"),
        "emphysema" => code("87433001", "SCT", "Pulmonary emphysema"),
        "fibrosis" => code("51615001", "SCT", "Fibrosis of lung"),
        "hernia" => code("84089009", "SCT", "Hiatal hernia"),
        "infiltration" => code("409609008", "SCT", "Radiologic infiltrate of lung"),
        "nodule" => code("786838002", "SCT", "Nodule of lung"),
        "pneumonia" => code("233604007", "SCT", "Pneumonia"),
        "pneumothorax" => code("36118008", "SCT", "Pneumothorax"),
        "mass" => code("CXR-MASS", "99CXR", "Lung mass"),
        "pleuralthickening" => code("CXR-PLTHICK", "99CXR", "Pleural thickening"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nih_label_has_a_code_and_standard_codes_are_snomed() {
        let nih = cxr_model::labels::NIH_FINDINGS;
        for label in nih {
            let c = finding_code(label).unwrap_or_else(|| panic!("{label} has no code"));
            assert!(c.scheme == "SCT" || c.scheme == "99CXR", "{label}");
            assert!(c.value.len() <= 16 && c.meaning.len() <= 64, "{label}");
        }
        assert_eq!(
            finding_code("Pleural Thickening"),
            finding_code("Pleural_Thickening")
        );
        assert_eq!(finding_code("Fracture"), None);
    }
}
