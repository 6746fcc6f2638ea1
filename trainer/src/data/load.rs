//! Loading one training image: PNG/JPEG through `cxr-preprocess`, DICOM
//! through the appliance's guarded reader, then the one `prepare`. There is
//! no other path, so a trainer tensor is the appliance's tensor.

use std::path::Path;

use cxr_dicom::{read_radiograph_file, DicomError, ReadLimits};
use cxr_preprocess::{load_image_file, prepare, InputSpec, ModelInput, PreprocessError};

use crate::TrainerError;

/// `[C, S, S]` model input for one image file.
pub fn load_input(path: &Path, spec: &InputSpec) -> Result<ModelInput, TrainerError> {
    let is_dicom = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    // A file that cannot be read is an I/O error; one the appliance's reader
    // refuses is the image's fault, with that reader's own code and hint.
    let radiograph = if is_dicom {
        read_radiograph_file(path, &ReadLimits::default()).map_err(|e| match e {
            DicomError::Io { .. } => TrainerError::io("reading", path, e),
            e => refused(path, e.code(), e),
        })?
    } else {
        load_image_file(path).map_err(|e| match e {
            PreprocessError::Io { .. } => TrainerError::io("reading", path, e),
            e => refused(path, e.code(), e),
        })?
    };
    prepare(&radiograph, spec).map_err(|e| refused(path, e.code(), e))
}

fn refused(path: &Path, code: &'static str, e: impl ToString) -> TrainerError {
    TrainerError::ImageRefused {
        path: path.to_owned(),
        code,
        reason: e.to_string(),
    }
}
