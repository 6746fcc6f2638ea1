/// Why an image could not be loaded or prepared.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(
        "image file could not be decoded: {reason}; fix: use an 8/16-bit greyscale PNG or JPEG"
    )]
    Decode { reason: String },
    #[error("colour image with differing channels; fix: use the greyscale radiograph, not a colour rendering")]
    ColourImage,
    #[error(
        "image has a transparent alpha channel; fix: export the radiograph without transparency"
    )]
    Transparent,
    #[error("unsupported pixel layout {layout}; fix: use an 8/16-bit greyscale PNG or JPEG")]
    UnsupportedLayout { layout: String },
    #[error("input spec invalid: {reason}; fix: correct the bundle's input spec")]
    BadSpec { reason: String },
    #[error("cannot read {path}: {reason}; fix: check the path and that the file is readable")]
    Io { path: String, reason: String },
    #[error("image could not be built: {0}")]
    Image(#[from] cxr_radiograph::RadiographError),
}

impl PreprocessError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PreprocessError::Decode { .. } => "IMAGE_DECODE_FAILED",
            PreprocessError::ColourImage => "IMAGE_COLOUR",
            PreprocessError::Transparent => "IMAGE_TRANSPARENT",
            PreprocessError::UnsupportedLayout { .. } => "IMAGE_UNSUPPORTED_LAYOUT",
            PreprocessError::BadSpec { .. } => "PREPROCESS_BAD_SPEC",
            PreprocessError::Io { .. } => "IMAGE_IO",
            PreprocessError::Image(_) => "IMAGE_INVALID",
        }
    }
}
