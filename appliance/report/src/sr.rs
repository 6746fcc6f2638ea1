//! The study result as a Comprehensive 3D SR following TID 1500 (Imaging
//! Measurement Report) and the IHE AI Results profile: one measurement
//! group per label with its finding, presence (Present, Absent or
//! Indeterminate), certainty as a percentage (never for an abstention) and
//! the algorithm's name and version; the abstention reason as text; the
//! source study's patient and study attributes; our own deterministic
//! series and instance UIDs; Verification Flag UNVERIFIED.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::codes::{self, Code};
use crate::result::{Finding, LabelResult, StudyResult};
use crate::uid::derived_uid;
use crate::ReportError;

/// Comprehensive 3D SR Storage.
pub const COMPREHENSIVE_3D_SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
/// Explicit VR Little Endian: the SR's transfer syntax.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Who made the result: the appliance, as the SR's equipment and observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrDevice {
    pub manufacturer: String,
    pub model_name: String,
    pub serial_number: String,
    pub software_version: String,
    /// The Device Observer UID: stable per appliance.
    pub device_uid: String,
    /// Our Implementation Class UID and version name for the file meta.
    pub implementation_class_uid: String,
    pub implementation_version_name: String,
}

/// An encoded SR and the UIDs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrDocument {
    pub bytes: Vec<u8>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

type Obj = InMemDicomObject;

pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> DataElement<Obj> {
    DataElement::new(tag, vr, PrimitiveValue::from(value.to_owned()))
}

/// A value copied from the source study: made to fit its VR (see
/// [`fit_to_vr`]), empty when nothing valid is left.
pub(crate) fn optional(tag: Tag, vr: VR, value: Option<&String>) -> DataElement<Obj> {
    match value.and_then(|v| fit_to_vr(v, vr)) {
        Some(v) => text(tag, vr, &v),
        None => DataElement::new(tag, vr, PrimitiveValue::Empty),
    }
}

/// A copied patient or study value as its VR allows it: no control
/// characters, one value (no `\`), at most the VR's length (PN: 64 per
/// component group); a DA must be `YYYYMMDD` and a TM digits with an
/// optional fraction, or the value is dropped. Input from a modality is
/// not trusted to be valid: an SR carrying it must still validate.
pub fn fit_to_vr(value: &str, vr: VR) -> Option<String> {
    let clean: String = value
        .chars()
        .filter(|c| !c.is_control() && *c != '\\')
        .collect();
    let clean = clean.trim();
    let cut = |s: &str, max: usize| s.chars().take(max).collect::<String>().trim().to_owned();
    let fitted = match vr {
        VR::PN => clean
            .split('=')
            .take(3)
            .map(|group| cut(group, 64))
            .collect::<Vec<_>>()
            .join("="),
        VR::DA => (clean.len() == 8 && clean.bytes().all(|b| b.is_ascii_digit()))
            .then(|| clean.to_owned())?,
        VR::TM => {
            let (whole, fraction) = clean.split_once('.').unwrap_or((clean, ""));
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            (whole.len() >= 2
                && whole.len() <= 6
                && whole.len() % 2 == 0
                && digits(whole)
                && fraction.len() <= 6
                && digits(fraction))
            .then(|| clean.to_owned())?
        }
        VR::SH | VR::CS => cut(clean, 16),
        VR::LO => cut(clean, 64),
        _ => clean.to_owned(),
    };
    (!fitted.trim_matches('=').is_empty()).then_some(fitted)
}

pub(crate) fn sequence(tag: Tag, items: Vec<Obj>) -> DataElement<Obj> {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

fn code_item(c: Code) -> Obj {
    Obj::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, c.value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme),
        text(tags::CODE_MEANING, VR::LO, c.meaning),
    ])
}

/// The relationship of a content item to its parent.
#[derive(Debug, Clone, Copy)]
enum Rel {
    Contains,
    HasObsContext,
    HasConceptMod,
}

impl Rel {
    fn cs(self) -> &'static str {
        match self {
            Rel::Contains => "CONTAINS",
            Rel::HasObsContext => "HAS OBS CONTEXT",
            Rel::HasConceptMod => "HAS CONCEPT MOD",
        }
    }
}

fn item(rel: Rel, value_type: &str, concept: Code, rest: Vec<DataElement<Obj>>) -> Obj {
    let mut o = Obj::from_element_iter([
        text(tags::RELATIONSHIP_TYPE, VR::CS, rel.cs()),
        text(tags::VALUE_TYPE, VR::CS, value_type),
        sequence(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(concept)]),
    ]);
    for e in rest {
        o.put(e);
    }
    o
}

/// A CONTAINER item; one without children carries no Content Sequence at
/// all (Type 1C: an empty one is invalid), as a study with no model has.
fn container(rel: Rel, concept: Code, children: Vec<Obj>) -> Obj {
    let mut rest = vec![text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE")];
    if !children.is_empty() {
        rest.push(sequence(tags::CONTENT_SEQUENCE, children));
    }
    item(rel, "CONTAINER", concept, rest)
}

fn code_value(rel: Rel, concept: Code, value: Code) -> Obj {
    item(
        rel,
        "CODE",
        concept,
        vec![sequence(
            tags::CONCEPT_CODE_SEQUENCE,
            vec![code_item(value)],
        )],
    )
}

fn text_value(rel: Rel, concept: Code, value: &str) -> Obj {
    item(
        rel,
        "TEXT",
        concept,
        vec![text(tags::TEXT_VALUE, VR::UT, value)],
    )
}

fn uid_value(rel: Rel, concept: Code, value: &str) -> Obj {
    item(rel, "UIDREF", concept, vec![text(tags::UID, VR::UI, value)])
}

fn num_value(rel: Rel, concept: Code, value: f32, units: Code) -> Obj {
    let measured = Obj::from_element_iter([
        sequence(
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![code_item(units)],
        ),
        text(tags::NUMERIC_VALUE, VR::DS, &format!("{value:.2}")),
    ]);
    item(
        rel,
        "NUM",
        concept,
        vec![sequence(tags::MEASURED_VALUE_SEQUENCE, vec![measured])],
    )
}

fn image_value(sop_class: &str, sop_instance: &str) -> Obj {
    Obj::from_element_iter([
        text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
        text(tags::VALUE_TYPE, VR::CS, "IMAGE"),
        sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            vec![Obj::from_element_iter([
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, sop_class),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_instance),
            ])],
        ),
    ])
}

/// `YYYYMMDD` and `HHMMSS` (UTC) of a Unix time in milliseconds.
pub fn date_time(unix_ms: u64) -> (String, String) {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

fn presence(f: Finding) -> Code {
    match f {
        Finding::Present => codes::PRESENT,
        Finding::Absent => codes::ABSENT,
        Finding::Indeterminate => codes::INDETERMINATE,
    }
}

/// One TID 1501 measurement group: a label's finding.
fn measurement_group(
    result: &StudyResult,
    label: &LabelResult,
    algorithm: &(String, String),
) -> Obj {
    let finding = codes::finding_code(&label.label).unwrap_or(Code {
        value: "CXR-UNKNOWN",
        scheme: "99CXR",
        meaning: "Finding named by the model",
    });
    let tracking = derived_uid(
        "sr-tracking",
        &[
            &result.study_instance_uid,
            &result.version.to_string(),
            &label.label,
        ],
    );
    let mut children = vec![
        text_value(Rel::HasObsContext, codes::TRACKING_IDENTIFIER, &label.label),
        uid_value(Rel::HasObsContext, codes::TRACKING_UID, &tracking),
        code_value(Rel::Contains, codes::FINDING, finding),
        code_value(Rel::Contains, codes::PRESENCE, presence(label.finding)),
    ];
    // An abstained study publishes no per-label probability.
    if let (Some(p), true) = (label.probability, result.outcome.carries_calls()) {
        children.push(num_value(
            Rel::Contains,
            codes::CERTAINTY_OF_FINDING,
            p * 100.0,
            codes::PERCENT,
        ));
    }
    children.push(text_value(
        Rel::HasConceptMod,
        codes::ALGORITHM_NAME,
        &algorithm.0,
    ));
    children.push(text_value(
        Rel::HasConceptMod,
        codes::ALGORITHM_VERSION,
        &algorithm.1,
    ));
    container(Rel::Contains, codes::MEASUREMENT_GROUP, children)
}

/// The root container's content items.
fn content(result: &StudyResult, device: &SrDevice) -> Vec<Obj> {
    let algorithm = match &result.model {
        Some(m) => (
            m.model_id.clone(),
            format!("{} (sha256 {})", m.version, m.digest),
        ),
        None => ("none".to_owned(), "no verified model".to_owned()),
    };
    let mut items = vec![
        code_value(Rel::HasConceptMod, codes::LANGUAGE, codes::ENGLISH),
        code_value(Rel::HasObsContext, codes::OBSERVER_TYPE, codes::DEVICE),
        uid_value(
            Rel::HasObsContext,
            codes::DEVICE_OBSERVER_UID,
            &device.device_uid,
        ),
        text_value(
            Rel::HasObsContext,
            codes::DEVICE_OBSERVER_NAME,
            &device.model_name,
        ),
        text_value(
            Rel::HasObsContext,
            codes::DEVICE_OBSERVER_MANUFACTURER,
            &device.manufacturer,
        ),
        text_value(
            Rel::HasObsContext,
            codes::DEVICE_OBSERVER_MODEL_NAME,
            &device.model_name,
        ),
        code_value(
            Rel::HasConceptMod,
            codes::PROCEDURE_REPORTED,
            codes::PLAIN_CHEST_XRAY,
        ),
    ];
    // Only instances the evidence sequence can name (those with a series).
    let images: Vec<Obj> = result
        .counted_instances()
        .filter(|i| i.series_instance_uid.is_some())
        .map(|i| image_value(&i.sop_class_uid, &i.sop_instance_uid))
        .collect();
    items.push(container(
        Rel::Contains,
        codes::IMAGE_LIBRARY,
        vec![container(Rel::Contains, codes::IMAGE_LIBRARY_GROUP, images)],
    ));
    let groups = result
        .labels
        .iter()
        .map(|l| measurement_group(result, l, &algorithm))
        .collect();
    items.push(container(
        Rel::Contains,
        codes::IMAGING_MEASUREMENTS,
        groups,
    ));
    let mut comment = format!(
        "Outcome: {}. {}.",
        result.outcome,
        result.findings_summary()
    );
    if !result.flags.is_empty() {
        let flags: Vec<&str> = result.flags.iter().map(|f| f.as_str()).collect();
        comment.push_str(&format!(" Flags: {}.", flags.join(", ")));
    }
    if let Some(reason) = &result.reason {
        comment.push_str(&format!(" {}: {}", reason.code, reason.message));
    }
    if let Some(old) = &result.supersedes {
        comment.push_str(&format!(
            " Replaces result version {} (SR {}).",
            old.version, old.sr.sop_instance_uid
        ));
    }
    items.push(text_value(Rel::Contains, codes::COMMENT, &comment));
    items
}

/// Current Requested Procedure Evidence: the source instances by series.
fn evidence(result: &StudyResult) -> Obj {
    let mut series: Vec<(String, Vec<Obj>)> = Vec::new();
    for i in result.counted_instances() {
        let Some(s) = &i.series_instance_uid else {
            continue;
        };
        let sop = Obj::from_element_iter([
            text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &i.sop_class_uid),
            text(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &i.sop_instance_uid,
            ),
        ]);
        match series.iter_mut().find(|(uid, _)| uid == s) {
            Some((_, sops)) => sops.push(sop),
            None => series.push((s.clone(), vec![sop])),
        }
    }
    let series = series
        .into_iter()
        .map(|(uid, sops)| {
            Obj::from_element_iter([
                sequence(tags::REFERENCED_SOP_SEQUENCE, sops),
                text(tags::SERIES_INSTANCE_UID, VR::UI, &uid),
            ])
        })
        .collect();
    Obj::from_element_iter([
        sequence(tags::REFERENCED_SERIES_SEQUENCE, series),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &result.study_instance_uid),
    ])
}

/// Predecessor Documents Sequence: the SR this version replaces, so a PACS
/// links the versions instead of keeping two contradictory results.
fn predecessor(result: &StudyResult, old: &crate::result::Superseded) -> DataElement<Obj> {
    let sop = Obj::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, COMPREHENSIVE_3D_SR),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &old.sr.sop_instance_uid,
        ),
    ]);
    let series = Obj::from_element_iter([
        sequence(tags::REFERENCED_SOP_SEQUENCE, vec![sop]),
        text(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &old.sr.series_instance_uid,
        ),
    ]);
    sequence(
        tags::PREDECESSOR_DOCUMENTS_SEQUENCE,
        vec![Obj::from_element_iter([
            sequence(tags::REFERENCED_SERIES_SEQUENCE, vec![series]),
            text(tags::STUDY_INSTANCE_UID, VR::UI, &result.study_instance_uid),
        ])],
    )
}

/// Patient, General Study, SR Document Series, equipment and SOP Common.
fn header_elements(
    result: &StudyResult,
    device: &SrDevice,
    uids: (&str, &str),
) -> Vec<DataElement<Obj>> {
    let mut elements = source_study_elements(result, device, (uids.0, uids.1, "990"));
    elements.extend([
        text(tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_3D_SR),
        text(tags::MODALITY, VR::CS, "SR"),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "AI result (preliminary, unverified)",
        ),
        sequence(
            tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
            Vec::new(),
        ),
        contributing_equipment(device),
    ]);
    elements
}

/// This appliance as Contributing Equipment: what marks an object as its
/// own (a receiver refuses it, so a PACS that routes results back cannot
/// make a loop).
pub(crate) fn contributing_equipment(device: &SrDevice) -> DataElement<Obj> {
    let item = Obj::from_element_iter([
        text(tags::MANUFACTURER, VR::LO, &device.manufacturer),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &device.model_name),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, &device.serial_number),
        text(tags::SOFTWARE_VERSIONS, VR::LO, &device.software_version),
        sequence(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![code_item(codes::PROCESSING_EQUIPMENT)],
        ),
        text(
            tags::CONTRIBUTION_DESCRIPTION,
            VR::ST,
            "Chest X-ray classifier result",
        ),
    ]);
    sequence(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, vec![item])
}

/// The Manufacturer and Manufacturer's Model Name every appliance writes.
pub const APPLIANCE_MANUFACTURER: &str = "CXR appliance project";
pub const APPLIANCE_MODEL_NAME: &str = "CXR classifier appliance";

/// Whether equipment named by an object (its manufacturer and model) is a
/// CXR appliance: the object is a result, never a radiograph.
pub fn is_appliance(manufacturer: Option<&str>, model_name: Option<&str>) -> bool {
    manufacturer == Some(APPLIANCE_MANUFACTURER) && model_name == Some(APPLIANCE_MODEL_NAME)
}

/// What every object the appliance writes for a study carries: the source
/// study's patient and study attributes, this appliance as equipment, the
/// instance's creation time (UTC), its series (`ids`: series UID, instance
/// UID, series number) and its instance number (the result's version).
pub(crate) fn source_study_elements(
    result: &StudyResult,
    device: &SrDevice,
    ids: (&str, &str, &str),
) -> Vec<DataElement<Obj>> {
    let h = &result.header;
    let (date, time) = date_time(result.completed_unix_ms);
    vec![
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::SOP_INSTANCE_UID, VR::UI, ids.1),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &time),
        // The dates and times the appliance writes are UTC.
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        optional(tags::STUDY_DATE, VR::DA, h.study_date.as_ref()),
        text(tags::CONTENT_DATE, VR::DA, &date),
        optional(tags::STUDY_TIME, VR::TM, h.study_time.as_ref()),
        text(tags::CONTENT_TIME, VR::TM, &time),
        optional(tags::ACCESSION_NUMBER, VR::SH, h.accession_number.as_ref()),
        text(tags::MANUFACTURER, VR::LO, &device.manufacturer),
        optional(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            h.referring_physician_name.as_ref(),
        ),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &device.model_name),
        optional(tags::PATIENT_NAME, VR::PN, h.patient_name.as_ref()),
        optional(tags::PATIENT_ID, VR::LO, h.patient_id.as_ref()),
        optional(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            h.patient_birth_date.as_ref(),
        ),
        optional(tags::PATIENT_SEX, VR::CS, h.patient_sex.as_ref()),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, &device.serial_number),
        text(tags::SOFTWARE_VERSIONS, VR::LO, &device.software_version),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &result.study_instance_uid),
        text(tags::SERIES_INSTANCE_UID, VR::UI, ids.0),
        optional(tags::STUDY_ID, VR::SH, h.study_id.as_ref()),
        text(tags::SERIES_NUMBER, VR::IS, ids.2),
        text(tags::INSTANCE_NUMBER, VR::IS, &result.version.to_string()),
    ]
}

/// What every object of one result version derives its UIDs from (see
/// [`sr_uids`]).
pub(crate) fn uid_parts(result: &StudyResult, device: &SrDevice) -> Vec<String> {
    let model = result.model.as_ref().map_or("none", |m| m.digest.as_str());
    let mut inputs: Vec<String> = result.instances.iter().map(|i| i.sha256.clone()).collect();
    inputs.sort_unstable();
    let mut parts = vec![
        device.device_uid.clone(),
        result.study_instance_uid.clone(),
        result.version.to_string(),
        model.to_owned(),
        result.outcome.as_str().to_owned(),
    ];
    parts.extend(inputs);
    parts
}

/// The SR's series and instance UIDs: derived from this appliance (its
/// Device Observer UID), the study, the version, the model, the outcome and
/// the digests of the inputs it covers, so that publishing the same result
/// again gives the same UIDs, while another appliance, or a version
/// computed over other inputs (after a crash, say), never reuses them.
pub fn sr_uids(result: &StudyResult, device: &SrDevice) -> (String, String) {
    let parts = uid_parts(result, device);
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    (
        derived_uid("sr-series", &parts),
        derived_uid("sr-instance", &parts),
    )
}

/// Encode `result` as a Part 10 Comprehensive 3D SR file.
pub fn encode_sr(result: &StudyResult, device: &SrDevice) -> Result<SrDocument, ReportError> {
    let (series_uid, instance_uid) = sr_uids(result, device);
    let mut obj = Obj::from_element_iter(header_elements(
        result,
        device,
        (&series_uid, &instance_uid),
    ));
    let root = [
        text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        sequence(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item(codes::IMAGING_MEASUREMENT_REPORT)],
        ),
        text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        sequence(
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![Obj::from_element_iter([
                text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                text(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
            ])],
        ),
        sequence(tags::CONTENT_SEQUENCE, content(result, device)),
        text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        text(tags::PRELIMINARY_FLAG, VR::CS, "PRELIMINARY"),
        sequence(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new()),
    ];
    for e in root {
        obj.put(e);
    }
    // Type 1C: present when the SR references instances.
    if result
        .instances
        .iter()
        .any(|i| i.series_instance_uid.is_some())
    {
        obj.put(sequence(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence(result)],
        ));
    }
    if let Some(old) = &result.supersedes {
        obj.put(predecessor(result, old));
    }
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(COMPREHENSIVE_3D_SR)
        .media_storage_sop_instance_uid(instance_uid.as_str())
        .transfer_syntax(EXPLICIT_VR_LE)
        .implementation_class_uid(device.implementation_class_uid.as_str())
        .implementation_version_name(device.implementation_version_name.as_str())
        .build()
        .map_err(|e| ReportError::Encode {
            what: "the SR's file meta",
            reason: e.to_string(),
        })?;
    let file = obj.with_exact_meta(meta);
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| ReportError::Encode {
            what: "the SR",
            reason: e.to_string(),
        })?;
    Ok(SrDocument {
        bytes,
        sop_class_uid: COMPREHENSIVE_3D_SR.into(),
        sop_instance_uid: instance_uid,
        series_instance_uid: series_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{
        InstanceOutcome, InstanceSummary, SrUids, StudyHeader, StudyOutcome, Superseded,
        RESULT_SCHEMA,
    };

    #[test]
    fn copied_values_fit_their_vr() {
        let crafted = "PAT\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<b>x</b>";
        let id = fit_to_vr(crafted, VR::LO).unwrap_or_default();
        assert!(!id.contains(['\r', '\n']), "{id:?}");
        assert!(id.chars().count() <= 64);
        assert_eq!(fit_to_vr("A\\B", VR::LO).as_deref(), Some("AB"));
        assert_eq!(
            fit_to_vr(&"x".repeat(40), VR::SH).map(|s| s.len()),
            Some(16)
        );
        assert_eq!(
            fit_to_vr(&format!("{}={}", "a".repeat(70), "b"), VR::PN),
            Some(format!("{}=b", "a".repeat(64)))
        );
        assert_eq!(fit_to_vr("20240131", VR::DA).as_deref(), Some("20240131"));
        assert_eq!(fit_to_vr("2024-01-31", VR::DA), None);
        assert_eq!(fit_to_vr("101500.25", VR::TM).as_deref(), Some("101500.25"));
        assert_eq!(fit_to_vr("10:15", VR::TM), None);
        assert_eq!(fit_to_vr("\u{1b}\r\n", VR::LO), None);
        assert_eq!(fit_to_vr("=", VR::PN), None);
    }

    pub(crate) fn device(uid: &str) -> SrDevice {
        SrDevice {
            manufacturer: "m".into(),
            model_name: "n".into(),
            serial_number: "S1".into(),
            software_version: "v".into(),
            device_uid: uid.into(),
            implementation_class_uid: "1.2".into(),
            implementation_version_name: "x".into(),
        }
    }

    fn result(inputs: &[&str]) -> StudyResult {
        StudyResult {
            schema: RESULT_SCHEMA.into(),
            study_instance_uid: "1.2.3".into(),
            header: StudyHeader::default(),
            version: 1,
            previous: None,
            completed_unix_ms: 0,
            outcome: StudyOutcome::Abstention,
            flags: Vec::new(),
            supersedes: None,
            sr: None,
            labels: Vec::new(),
            reason: None,
            decided_by: Vec::new(),
            instances: inputs
                .iter()
                .enumerate()
                .map(|(i, sha)| InstanceSummary {
                    instance: i as u64 + 1,
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
                    sop_instance_uid: format!("1.2.3.{i}"),
                    series_instance_uid: None,
                    sha256: (*sha).into(),
                    outcome: InstanceOutcome::Abstention,
                    frontal: false,
                    reason_code: None,
                    conflicts_with: Vec::new(),
                    same_as: None,
                })
                .collect(),
            model: None,
        }
    }

    #[test]
    fn the_same_result_keeps_its_uids_and_other_inputs_never_reuse_them() {
        let d = device("1.2.9");
        let a = result(&["aa", "bb"]);
        assert_eq!(
            sr_uids(&a, &d),
            sr_uids(&result(&["bb", "aa"]), &d),
            "order of arrival aside"
        );
        assert_ne!(
            sr_uids(&a, &d).1,
            sr_uids(&result(&["aa", "bb", "cc"]), &d).1
        );
        let mut v2 = a.clone();
        v2.version = 2;
        assert_ne!(sr_uids(&a, &d).1, sr_uids(&v2, &d).1);
        assert_ne!(
            sr_uids(&a, &d).0,
            sr_uids(&a, &d).1,
            "series and instance differ"
        );
    }

    #[test]
    fn two_appliances_never_share_an_sr_uid_for_the_same_film() {
        let a = result(&["aa"]);
        let (one, other) = (
            sr_uids(&a, &device("2.25.1")),
            sr_uids(&a, &device("2.25.2")),
        );
        assert_ne!(one.0, other.0);
        assert_ne!(one.1, other.1);
    }

    #[test]
    fn a_new_version_names_the_sr_it_replaces() {
        let mut r = result(&["aa"]);
        r.version = 2;
        r.supersedes = Some(Superseded {
            version: 1,
            sr: SrUids {
                series_instance_uid: "2.25.11".into(),
                sop_instance_uid: "2.25.12".into(),
            },
        });
        let doc = encode_sr(&r, &device("2.25.1")).expect("encodes");
        let obj = dicom_object::from_reader(&doc.bytes[128..]).expect("reads back");
        let item = &obj
            .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
            .expect("predecessor")
            .items()
            .expect("items")[0];
        let series = &item
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .expect("series")
            .items()
            .expect("items")[0];
        assert_eq!(
            series
                .element(tags::SERIES_INSTANCE_UID)
                .expect("uid")
                .to_str()
                .expect("text"),
            "2.25.11"
        );
        let sop = &series
            .element(tags::REFERENCED_SOP_SEQUENCE)
            .expect("sop")
            .items()
            .expect("items")[0];
        assert_eq!(
            sop.element(tags::REFERENCED_SOP_INSTANCE_UID)
                .expect("uid")
                .to_str()
                .expect("text"),
            "2.25.12"
        );
        r.supersedes = None;
        let first = encode_sr(&r, &device("2.25.1")).expect("encodes");
        let obj = dicom_object::from_reader(&first.bytes[128..]).expect("reads back");
        assert!(obj.element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE).is_err());
    }

    #[test]
    fn unix_times_become_dicom_dates_and_times() {
        assert_eq!(date_time(0), ("19700101".into(), "000000".into()));
        // 2024-02-29 13:45:07 UTC.
        assert_eq!(
            date_time(1_709_214_307_000),
            ("20240229".into(), "134507".into())
        );
        assert_eq!(date_time(1_795_990_304_021).0, "20261129");
    }
}
