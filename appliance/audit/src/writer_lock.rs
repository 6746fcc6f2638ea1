//! One writer per audit log: an exclusive lock on `<dir>/writer.lock`, held
//! for the whole life of an [`crate::AuditLog`]. Two writers would fork the
//! hash chain, and one could cut the other's half-written record as a torn
//! tail. The lock is released by the kernel when its holder exits or dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::AuditError;

pub(crate) const LOCK_FILE: &str = "writer.lock";

/// How often a waiting writer tries again.
const POLL: Duration = Duration::from_millis(25);

/// The held lock; dropping it releases the log.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

fn holder(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().parse::<u32>().is_ok() => format!("pid {}", text.trim()),
        _ => "unknown pid".into(),
    }
}

/// Take the lock, waiting up to `wait` for another writer to let go; then
/// refuse with [`AuditError::Locked`], naming the holder.
pub(crate) fn acquire(dir: &Path, wait: Duration) -> Result<WriterLock, AuditError> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| AuditError::io("opening", &path, e))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if started.elapsed() < wait => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    holder: holder(&path),
                    path,
                    waited_ms: started.elapsed().as_millis() as u64,
                })
            }
            Err(TryLockError::Error(e)) => return Err(AuditError::io("locking", &path, e)),
        }
    }
    // Say who holds it, for the message a waiting writer prints. Not
    // fsynced: it means nothing after a restart.
    file.set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|e| AuditError::io("writing", &path, e))?;
    Ok(WriterLock { _file: file })
}
