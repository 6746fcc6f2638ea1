/// Why a DIMSE command could not be read: each with a stable code and a
/// fix hint (the peer's, since the bytes are theirs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimseError {
    #[error("command set of {size} bytes over the {limit}-byte limit (fix: the peer sends an oversized command; check its DICOM implementation)")]
    CommandTooLarge { size: usize, limit: usize },
    #[error("command set malformed at byte {offset}: {reason} (fix: the peer's command set is not implicit VR little endian as PS3.7 requires)")]
    Malformed { offset: usize, reason: String },
    #[error(
        "command set lacks {element} (fix: the peer omitted a required element of this command)"
    )]
    MissingElement { element: &'static str },
    #[error(
        "command field {field:#06x} is not served (fix: only C-ECHO and C-STORE are served here)"
    )]
    UnknownCommand { field: u16 },
    #[error("{reason} (fix: the peer broke the PDV sequence of PS3.8 §9.3.5)")]
    OutOfOrder { reason: String },
}

impl DimseError {
    pub fn code(&self) -> &'static str {
        match self {
            DimseError::CommandTooLarge { .. } => "DIMSE_COMMAND_TOO_LARGE",
            DimseError::Malformed { .. } => "DIMSE_MALFORMED",
            DimseError::MissingElement { .. } => "DIMSE_MISSING_ELEMENT",
            DimseError::UnknownCommand { .. } => "DIMSE_UNKNOWN_COMMAND",
            DimseError::OutOfOrder { .. } => "DIMSE_OUT_OF_ORDER",
        }
    }
}
