//! Small, forgiving readers for tag values on an in-memory DICOM object.

use dicom_core::header::HasLength;
use dicom_core::{Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

pub(crate) type Obj = InMemDicomObject;

/// The raw bytes of an element written with VR UN (some writers, and
/// anonymisers, emit standard attributes as UN). dicom-rs keeps those as
/// bytes, so reading them as text or numbers must start from the bytes.
fn unknown_vr_bytes(element: &InMemElement) -> Option<Vec<u8>> {
    (element.vr() == VR::UN)
        .then(|| element.to_bytes().map(|b| b.into_owned()).ok())
        .flatten()
}

/// The value as trimmed text (multiple values joined by `\`), control
/// characters (CR, LF, ESC, NUL, ...) removed: no value the appliance
/// copies into an SR, a FHIR resource or an HTTP body can break its lines.
/// `None` if absent or empty.
pub(crate) fn text(obj: &Obj, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let value = match unknown_vr_bytes(element) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => element.to_str().ok()?.into_owned(),
    };
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    let trimmed = clean.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Upper-case code text, e.g. Modality or View Position.
pub(crate) fn code(obj: &Obj, tag: Tag) -> Option<String> {
    text(obj, tag).map(|s| s.to_ascii_uppercase())
}

/// An unsigned integer value (US or IS); `Ok(None)` if absent, `Err` if present but unreadable.
pub(crate) fn uint(obj: &Obj, tag: Tag, name: &str) -> Result<Option<u32>, String> {
    let Some(element) = obj.get(tag) else {
        return Ok(None);
    };
    if element.is_empty() {
        return Ok(None);
    }
    if let Some(bytes) = unknown_vr_bytes(element) {
        // US/UL stored as UN (little endian), or IS text.
        return match bytes[..] {
            [a, b] => Ok(Some(u32::from(u16::from_le_bytes([a, b])))),
            [a, b, c, d] if text(obj, tag).and_then(|t| t.parse::<u32>().ok()).is_none() => {
                Ok(Some(u32::from_le_bytes([a, b, c, d])))
            }
            _ => text(obj, tag)
                .and_then(|t| t.parse::<u32>().ok())
                .map(Some)
                .ok_or_else(|| format!("{name} (VR UN) is not an unsigned integer")),
        };
    }
    element
        .to_int::<u32>()
        .map(Some)
        .map_err(|e| format!("{name} is not an unsigned integer ({e})"))
}

/// A single DS number; `Err` when it is present but not exactly one finite number.
pub(crate) fn single_decimal(obj: &Obj, tag: Tag, name: &str) -> Result<Option<f64>, String> {
    let Some(raw) = text(obj, tag) else {
        return Ok(None);
    };
    if raw.contains('\\') {
        return Err(format!("{name} has several values ({raw:?}), expected one"));
    }
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(format!("{name} is not a number ({raw:?})")),
    }
}

/// Several decimal numbers (e.g. Pixel Spacing); `None` if absent or unreadable.
pub(crate) fn decimals(obj: &Obj, tag: Tag) -> Option<Vec<f64>> {
    let raw = text(obj, tag)?;
    raw.split('\\')
        .map(|p| p.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect()
}
