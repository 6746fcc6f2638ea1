use std::path::PathBuf;

/// Trainer library errors: each with a stable code and a fix hint.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("reading {path}: {reason} (fix: check the path and permissions)")]
    Io { path: PathBuf, reason: String },
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
            TrainerError::Table { .. } => "TRAINER_TABLE",
            TrainerError::Invalid { .. } => "TRAINER_INVALID",
        }
    }

    pub(crate) fn invalid(what: &'static str, problem: String, fix: &'static str) -> Self {
        TrainerError::Invalid { what, problem, fix }
    }
}
