use std::path::PathBuf;

/// Trainer library errors: each with a stable code and a fix hint.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("{action} {path}: {reason} (fix: check the path, its permissions and the free space)")]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The appliance's own reader refused an image (not a radiograph the
    /// device would accept, or damaged): the reason carries that reader's code
    /// and hint; the file itself was readable.
    #[error("{path}: image refused ({code}): {reason} (fix: replace the image or drop its row from the label table)")]
    ImageRefused {
        path: PathBuf,
        code: &'static str,
        reason: String,
    },
    #[error("{path} line {line}: {problem} (fix: {fix})")]
    Table {
        path: PathBuf,
        line: u64,
        problem: String,
        fix: &'static str,
    },
    #[error("{what}: {problem} (fix: {fix})")]
    Invalid {
        what: &'static str,
        problem: String,
        fix: &'static str,
    },
}

impl TrainerError {
    pub fn code(&self) -> &'static str {
        match self {
            TrainerError::Io { .. } => "TRAINER_IO",
            TrainerError::ImageRefused { .. } => "TRAINER_IMAGE_REFUSED",
            TrainerError::Table { .. } => "TRAINER_TABLE",
            TrainerError::Invalid { .. } => "TRAINER_INVALID",
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, e: impl ToString) -> Self {
        TrainerError::Io {
            action,
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn invalid(what: &'static str, problem: String, fix: &'static str) -> Self {
        TrainerError::Invalid { what, problem, fix }
    }
}
