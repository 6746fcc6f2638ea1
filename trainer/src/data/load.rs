//! Loading one training image: PNG/JPEG through `cxr-preprocess`, DICOM
//! through the appliance's guarded reader, then the one `prepare`. There is
//! no other path, so a trainer tensor is the appliance's tensor.

use std::path::Path;

use cxr_dicom::{read_radiograph_file, ReadLimits};
use cxr_preprocess::{load_image_file, prepare, InputSpec, ModelInput};

use crate::TrainerError;

/// `[C, S, S]` model input for one image file.
pub fn load_input(path: &Path, spec: &InputSpec) -> Result<ModelInput, TrainerError> {
    let is_dicom = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    let fail = |reason: String| TrainerError::Io {
        path: path.to_owned(),
        reason,
    };
    let radiograph = if is_dicom {
        read_radiograph_file(path, &ReadLimits::default()).map_err(|e| fail(e.to_string()))?
    } else {
        load_image_file(path).map_err(|e| fail(e.to_string()))?
    };
    prepare(&radiograph, spec).map_err(|e| fail(e.to_string()))
}
