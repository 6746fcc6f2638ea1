//! Small, forgiving readers for tag values on an in-memory DICOM object.

use dicom_core::header::HasLength;
use dicom_core::Tag;
use dicom_object::InMemDicomObject;

pub(crate) type Obj = InMemDicomObject;

/// The value as trimmed text (multiple values joined by `\`); `None` if absent or empty.
pub(crate) fn text(obj: &Obj, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
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
