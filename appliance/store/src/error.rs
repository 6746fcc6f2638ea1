use std::path::PathBuf;

/// Why the spool could not make an instance durable: each with a stable
/// code and a fix hint. Nothing is acknowledged while one of these stands.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{action} {path}: {reason} (fix: check the state directory's disk, permissions and free space)")]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// At quota: new input is refused (C-STORE status A700), undelivered
    /// input is never evicted to make room.
    #[error("spool full: {used} of {quota} bytes in use, {incoming} more refused (fix: restore the PACS link so results are delivered and inputs can be retired, or raise the spool quota)")]
    Full {
        used: u64,
        quota: u64,
        incoming: u64,
    },
    /// The file system is full (ENOSPC): answered like a full spool (A700).
    #[error("no space left on the spool's disk at {path} (fix: free disk space; results waiting for a PACS keep their inputs)")]
    DiskFull { path: PathBuf },
    #[error("instance over {limit} bytes refused (fix: raise the spool's instance limit if such images are expected)")]
    InstanceTooLarge { limit: u64 },
    #[error("{field} {value:?} is not a valid DICOM UID (fix: the sender must use UIDs of digits and dots, at most 64 characters)")]
    BadUid { field: &'static str, value: String },
    #[error("another process holds the spool at {path} (fix: stop the other `serve` or administrative command using this state directory)")]
    Locked { path: PathBuf },
    /// A journal write failed and could not be undone: the spool accepts
    /// nothing more until it is reopened (and checked).
    #[error("spool stopped after a failed journal write: {reason} (fix: free disk space or repair the disk, then restart the service)")]
    Poisoned { reason: String },
    #[error("spool journal {path} line {line}: {reason} (fix: the journal is damaged beyond a torn last line; keep the folder for inspection and restore it from a backup)")]
    Journal {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl SpoolError {
    pub fn code(&self) -> &'static str {
        match self {
            SpoolError::Io { .. } => "SPOOL_IO",
            SpoolError::Full { .. } => "SPOOL_FULL",
            SpoolError::DiskFull { .. } => "SPOOL_DISK_FULL",
            SpoolError::InstanceTooLarge { .. } => "SPOOL_INSTANCE_TOO_LARGE",
            SpoolError::BadUid { .. } => "SPOOL_BAD_UID",
            SpoolError::Journal { .. } => "SPOOL_JOURNAL",
            SpoolError::Locked { .. } => "SPOOL_LOCKED",
            SpoolError::Poisoned { .. } => "SPOOL_POISONED",
        }
    }

    /// A write's error: `DiskFull` when the disk is full, `Io` otherwise.
    pub(crate) fn write(path: &std::path::Path, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            SpoolError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            SpoolError::io("writing", path, e)
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, e: impl ToString) -> Self {
        SpoolError::Io {
            action,
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}
