/// Why a result could not be encoded: each with a stable code and a fix hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("encoding {what}: {reason} (fix: report this result to service; the study result itself is kept)")]
    Encode { what: &'static str, reason: String },
}

impl ReportError {
    pub fn code(&self) -> &'static str {
        match self {
            ReportError::Encode { .. } => "REPORT_ENCODE",
        }
    }
}
