use std::path::PathBuf;

/// Audit-log failures. Each has a stable code and a fix hint.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{action} {path}: {source} (fix: check the device's storage and permissions; studies are refused until the log can be written)")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit log is full ({used} of {max} bytes): new studies are refused so that no record is lost (fix: export the log with `audit export`, archive it, then have service rotate the archive out)")]
    Full { used: u64, max: u64 },
    #[error(
        "audit record is {size} bytes, over the {max}-byte limit (fix: this is a bug; report it)"
    )]
    RecordTooLarge { size: usize, max: usize },
    #[error("audit log {path} is damaged at byte {offset}: {problem} (fix: keep the device out of service, run `cxr-appliance audit verify` and `audit export`, and contact service; nothing was truncated)")]
    Damaged {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("audit log segment {missing} is missing (segments {first}..{last} present) (fix: restore the segment from a backup; records were deleted)")]
    MissingSegment { missing: u64, first: u64, last: u64 },
    #[error("audit record {found} follows record {expected_prev} in {path} at byte {offset}: records were deleted, reordered or inserted (fix: keep the device out of service and contact service)")]
    Sequence {
        path: PathBuf,
        offset: u64,
        expected_prev: u64,
        found: u64,
    },
    #[error("audit record {seq} in {path} at byte {offset} does not chain to the record before it: records were deleted, reordered, inserted or altered (fix: keep the device out of service and contact service)")]
    ChainBroken {
        path: PathBuf,
        offset: u64,
        seq: u64,
    },
    #[error("audit log {path} ends inside a record at byte {offset}: the log was truncated (fix: keep the device out of service and contact service)")]
    Truncated { path: PathBuf, offset: u64 },
    #[error("the audit log {path} is held by another writer ({holder}) and stayed locked for {waited_ms} ms: nothing was done (fix: wait for that command to finish, or run this through the running service; exit code 75 means try again)")]
    Locked {
        path: PathBuf,
        /// `pid N`, or `unknown pid` when the holder had not written it yet.
        holder: String,
        waited_ms: u64,
    },
    #[error("device secret {path}: {problem} (fix: {fix})")]
    Secret {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
}

impl AuditError {
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Io { .. } => "AUDIT_IO",
            AuditError::Full { .. } => "AUDIT_FULL",
            AuditError::RecordTooLarge { .. } => "AUDIT_RECORD_TOO_LARGE",
            AuditError::Damaged { .. } => "AUDIT_DAMAGED",
            AuditError::MissingSegment { .. } => "AUDIT_MISSING_SEGMENT",
            AuditError::Sequence { .. } => "AUDIT_SEQUENCE",
            AuditError::ChainBroken { .. } => "AUDIT_CHAIN_BROKEN",
            AuditError::Truncated { .. } => "AUDIT_TRUNCATED",
            AuditError::Secret { .. } => "AUDIT_SECRET",
            AuditError::Locked { .. } => "AUDIT_LOCKED",
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
