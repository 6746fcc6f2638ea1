use cxr_radiograph::RadiographError;

/// Why a DICOM file was refused. Every variant has a stable [`code`](DicomError::code)
/// and its message ends with a fix hint for the operator or field engineer.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("input is {size} bytes, over the {limit}-byte limit; fix: send a single uncompressed-size-sane image or raise the configured limit")]
    InputTooLarge { size: usize, limit: usize },
    #[error("not a DICOM Part 10 file ({reason}); fix: send the file as written by the modality, with its 128-byte preamble and DICM prefix")]
    NotDicom { reason: String },
    #[error("malformed DICOM at byte {offset}: {reason}; fix: the file is truncated or corrupt, re-send it from the modality")]
    Malformed { offset: usize, reason: String },
    #[error("transfer syntax {uid} ({name}) is not supported; fix: configure the modality to send uncompressed, RLE, JPEG or JPEG 2000")]
    UnsupportedTransferSyntax { uid: String, name: String },
    #[error("modality {modality} is not a projection radiograph; fix: send only CR/DX chest radiographs to this device")]
    NotARadiograph { modality: String },
    #[error("pixel header invalid: {reason}; fix: the file's image description is inconsistent, re-export it from the modality")]
    BadPixelHeader { reason: String },
    #[error("colour image with differing channels ({photometric}); fix: send the original greyscale radiograph, not a screenshot or colour capture")]
    ColourImage { photometric: String },
    #[error("no pixel data (7FE0,0010) in the file; fix: send an image object, not a report or presentation state")]
    MissingPixelData,
    #[error("compressed codestream disagrees with the header: {reason}; fix: the file is corrupt or mislabelled, re-send it from the modality")]
    CodestreamMismatch { reason: String },
    #[error("decoding {transfer_syntax} failed: {reason}; fix: the compressed data is corrupt, re-send it from the modality")]
    DecodeFailed {
        transfer_syntax: String,
        reason: String,
    },
    #[error("the {transfer_syntax} decoder crashed on this file ({reason}); fix: the compressed data is corrupt, re-send it from the modality")]
    DecoderPanicked {
        transfer_syntax: String,
        reason: String,
    },
    #[error("decoded {got} bytes, expected {expected}; fix: the compressed data does not match the header, re-send it from the modality")]
    DecodedLengthMismatch { expected: usize, got: usize },
    #[error("modality LUT invalid: {reason}; fix: the file's Modality LUT or rescale values are inconsistent, re-export it")]
    BadModalityLut { reason: String },
    #[error("cannot read {path}: {reason}; fix: check the path and that the file is readable")]
    Io { path: String, reason: String },
    #[error("image could not be built: {0}")]
    Image(#[from] RadiographError),
}

impl DicomError {
    /// A stable, machine-readable code for logs, the API and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            DicomError::InputTooLarge { .. } => "DICOM_INPUT_TOO_LARGE",
            DicomError::NotDicom { .. } => "DICOM_NOT_PART10",
            DicomError::Malformed { .. } => "DICOM_MALFORMED",
            DicomError::UnsupportedTransferSyntax { .. } => "DICOM_UNSUPPORTED_TRANSFER_SYNTAX",
            DicomError::NotARadiograph { .. } => "DICOM_NOT_A_RADIOGRAPH",
            DicomError::BadPixelHeader { .. } => "DICOM_BAD_PIXEL_HEADER",
            DicomError::ColourImage { .. } => "DICOM_COLOUR_IMAGE",
            DicomError::MissingPixelData => "DICOM_MISSING_PIXEL_DATA",
            DicomError::CodestreamMismatch { .. } => "DICOM_CODESTREAM_MISMATCH",
            DicomError::DecodeFailed { .. } => "DICOM_DECODE_FAILED",
            DicomError::DecoderPanicked { .. } => "DICOM_DECODER_CRASHED",
            DicomError::DecodedLengthMismatch { .. } => "DICOM_DECODED_LENGTH_MISMATCH",
            DicomError::BadModalityLut { .. } => "DICOM_BAD_MODALITY_LUT",
            DicomError::Io { .. } => "DICOM_IO",
            DicomError::Image(_) => "DICOM_BAD_IMAGE",
        }
    }

    pub(crate) fn malformed(offset: usize, reason: impl Into<String>) -> Self {
        DicomError::Malformed {
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn header(reason: impl Into<String>) -> Self {
        DicomError::BadPixelHeader {
            reason: reason.into(),
        }
    }

    pub(crate) fn codestream(reason: impl Into<String>) -> Self {
        DicomError::CodestreamMismatch {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_a_fix_hint() {
        let errors = [
            DicomError::InputTooLarge { size: 2, limit: 1 },
            DicomError::NotDicom { reason: "x".into() },
            DicomError::malformed(3, "x"),
            DicomError::UnsupportedTransferSyntax {
                uid: "1.2".into(),
                name: "y".into(),
            },
            DicomError::NotARadiograph {
                modality: "CT".into(),
            },
            DicomError::header("x"),
            DicomError::ColourImage {
                photometric: "RGB".into(),
            },
            DicomError::MissingPixelData,
            DicomError::codestream("x"),
            DicomError::DecodeFailed {
                transfer_syntax: "t".into(),
                reason: "r".into(),
            },
            DicomError::DecoderPanicked {
                transfer_syntax: "t".into(),
                reason: "r".into(),
            },
            DicomError::DecodedLengthMismatch {
                expected: 1,
                got: 2,
            },
            DicomError::BadModalityLut { reason: "x".into() },
        ];
        let mut codes: Vec<&str> = errors.iter().map(DicomError::code).collect();
        for e in &errors {
            assert!(e.to_string().contains("fix:"), "{e}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len(), "codes must be distinct");
    }
}
