//! The data set of one of our own Part 10 files (the result SR or SC,
//! written in Explicit VR Little Endian) in Implicit VR Little Endian, for
//! a peer that accepts only that. Only native (uncompressed) syntaxes are
//! converted: the values stay byte for byte, only the element headers
//! change.

use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::pixels::guarded;
use crate::DicomError;

/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// The data set of `part10` (a whole file, preamble included) encoded in
/// Implicit VR Little Endian.
pub fn data_set_in_implicit_vr_le(part10: &[u8]) -> Result<Vec<u8>, DicomError> {
    let body = part10
        .get(128..)
        .filter(|b| b.starts_with(b"DICM"))
        .ok_or_else(|| DicomError::NotDicom {
            reason: "no DICM prefix after the preamble".into(),
        })?;
    let written = guarded(|| {
        let file = dicom_object::from_reader(body).map_err(|e| e.to_string())?;
        let ts = file
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_owned();
        if ts != IMPLICIT_VR_LE && ts != "1.2.840.10008.1.2.1" {
            return Err(format!(
                "transfer syntax {ts} is not a native little endian one"
            ));
        }
        let mut out = Vec::new();
        file.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| e.to_string())?;
        Ok(out)
    });
    match written {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(reason)) => Err(DicomError::malformed(
            0,
            format!("re-encoding in implicit VR: {reason}"),
        )),
        Err(_) => Err(DicomError::malformed(
            0,
            "re-encoding in implicit VR crashed",
        )),
    }
}
