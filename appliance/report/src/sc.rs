//! The result picture as a DICOM Secondary Capture Image (PS3.3 A.8.1),
//! for PACS viewers that cannot display an SR: in the source study, in its
//! own series, 8-bit MONOCHROME2, Burned In Annotation YES, with UIDs
//! derived like the SR's (the same result gives the same UIDs).

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::GrayImage;

use crate::result::StudyResult;
use crate::sr::{date_time, source_study_elements, text, SrDevice, EXPLICIT_VR_LE};
use crate::uid::derived_uid;
use crate::ReportError;

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// An encoded Secondary Capture and the UIDs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScDocument {
    pub bytes: Vec<u8>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

/// The SC's series and instance UIDs, from the same parts as the SR's.
pub fn sc_uids(result: &StudyResult, device: &SrDevice) -> (String, String) {
    let parts = crate::sr::uid_parts(result, device);
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    (
        derived_uid("sc-series", &parts),
        derived_uid("sc-instance", &parts),
    )
}

type Obj = InMemDicomObject;

fn elements(
    result: &StudyResult,
    device: &SrDevice,
    uids: (&str, &str),
    picture: &GrayImage,
) -> Vec<DataElement<Obj>> {
    let (date, time) = date_time(result.completed_unix_ms);
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let mut elements = source_study_elements(result, device, (uids.0, uids.1, "991"));
    elements.extend([
        text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY"),
        text(tags::SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE),
        text(tags::MODALITY, VR::CS, "OT"),
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "AI result picture (unverified)",
        ),
        DataElement::new(tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Empty),
        // Type 2C in General Series; empty: the picture has no side.
        DataElement::new(tags::LATERALITY, VR::CS, PrimitiveValue::Empty),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
        crate::sr::contributing_equipment(device),
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, picture.height() as u16),
        us(tags::COLUMNS, picture.width() as u16),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
        text(tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &date),
        text(tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &time),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(picture.as_raw().clone()),
        ),
    ]);
    elements
}

/// Encode `picture` (the result picture of `result`) as a Part 10 file.
pub fn encode_sc(
    result: &StudyResult,
    picture: &GrayImage,
    device: &SrDevice,
) -> Result<ScDocument, ReportError> {
    if picture.width() > u16::MAX as u32 || picture.height() > u16::MAX as u32 {
        return Err(ReportError::Encode {
            what: "the Secondary Capture",
            reason: "the picture is larger than 65535 pixels".into(),
        });
    }
    let (series_uid, instance_uid) = sc_uids(result, device);
    let obj = Obj::from_element_iter(elements(
        result,
        device,
        (&series_uid, &instance_uid),
        picture,
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(SECONDARY_CAPTURE)
        .media_storage_sop_instance_uid(instance_uid.as_str())
        .transfer_syntax(EXPLICIT_VR_LE)
        .implementation_class_uid(device.implementation_class_uid.as_str())
        .implementation_version_name(device.implementation_version_name.as_str())
        .build()
        .map_err(|e| ReportError::Encode {
            what: "the Secondary Capture's file meta",
            reason: e.to_string(),
        })?;
    let mut bytes = Vec::new();
    obj.with_exact_meta(meta)
        .write_all(&mut bytes)
        .map_err(|e| ReportError::Encode {
            what: "the Secondary Capture",
            reason: e.to_string(),
        })?;
    Ok(ScDocument {
        bytes,
        sop_class_uid: SECONDARY_CAPTURE.into(),
        sop_instance_uid: instance_uid,
        series_instance_uid: series_uid,
    })
}
