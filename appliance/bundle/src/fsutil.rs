//! Crash-safe file replacement: write a temporary file beside the target,
//! fsync it, rename it over the target, fsync the directory. After a power
//! loss the target is either the old file or the new one, never a mix.

use std::io::Write;
use std::path::Path;

use crate::BundleError;

pub fn fsync_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BundleError::io("syncing directory", dir, e))
}

/// Write `bytes` to `path.tmp` and fsync it (the first half of a replace).
pub fn write_temp(path: &Path, bytes: &[u8]) -> Result<std::path::PathBuf, BundleError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| BundleError::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BundleError::io("writing", &tmp, e))?;
    Ok(tmp)
}

/// Rename the fsynced temporary over `path`, then fsync the directory.
pub fn commit_temp(tmp: &Path, path: &Path) -> Result<(), BundleError> {
    std::fs::rename(tmp, path).map_err(|e| BundleError::io("renaming into", path, e))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let tmp = write_temp(path, bytes)?;
    commit_temp(&tmp, path)
}

/// Read a file of at most `max` bytes: checked before reading, and the read
/// itself stops past `max` (a file that grows meanwhile is still refused).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let io = |e| BundleError::io("reading", path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > max {
        return Err(BundleError::BundleTooLarge { size, max });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(BundleError::BundleTooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}
