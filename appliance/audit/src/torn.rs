//! Torn tails: the bytes of a record whose write was cut by a power loss.
//! They are kept under `torn/` before the segment is cut, and each is
//! reported in the log exactly once. A kept file without its `.reported`
//! marker is a report still owed: a crash between the cut and the report
//! (or between the report and the marker) must not lose or repeat it.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::AuditError;

/// A partial record cut off at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    /// Where the cut bytes were kept.
    pub kept_as: PathBuf,
}

const MARKER: &str = ".reported";

pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("syncing directory", dir, e))
}

/// `seg-<segment>-at-<offset>[-<n>].bin` → (segment, offset).
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".bin")?;
    let (segment, rest) = rest.split_once("-at-")?;
    let offset = rest.split_once('-').map_or(rest, |(o, _)| o);
    Some((segment.parse().ok()?, offset.parse().ok()?))
}

/// Keep `tail` (cut from `segment` at `offset`) under `torn_dir`, durably,
/// before the segment is truncated. A crash before the truncation leaves the
/// same tail to be cut again: an identical kept file is reused, so it is
/// reported once; different bytes at the same place (a report whose own
/// write was torn) get a new name and lose nothing.
pub(crate) fn keep(
    torn_dir: &Path,
    segment: u64,
    offset: u64,
    tail: &[u8],
) -> Result<TornTail, AuditError> {
    std::fs::create_dir_all(torn_dir).map_err(|e| AuditError::io("creating", torn_dir, e))?;
    let base = format!("seg-{segment:08}-at-{offset}");
    for n in 1u32.. {
        let name = if n == 1 {
            format!("{base}.bin")
        } else {
            format!("{base}-{n}.bin")
        };
        let path = torn_dir.join(&name);
        match std::fs::read(&path) {
            Ok(existing) if existing == tail => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Written aside and renamed: a crash mid-write must not leave
                // a short file under a name that is then owed a report.
                let aside = torn_dir.join(format!("{name}.partial"));
                std::fs::write(&aside, tail)
                    .and_then(|()| File::open(&aside)?.sync_all())
                    .and_then(|()| std::fs::rename(&aside, &path))
                    .map_err(|e| AuditError::io("writing", &path, e))?;
                sync_dir(torn_dir)?;
            }
            Err(e) => return Err(AuditError::io("reading", &path, e)),
        }
        return Ok(TornTail {
            segment,
            offset,
            bytes: tail.len() as u64,
            kept_as: path,
        });
    }
    unreachable!("u32 names run out long after the disk does")
}

/// Kept tails not yet marked as reported, oldest place first.
pub(crate) fn owed(torn_dir: &Path) -> Result<Vec<TornTail>, AuditError> {
    let entries = match std::fs::read_dir(torn_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io("listing", torn_dir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| AuditError::io("listing", torn_dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((segment, offset)) = parse_name(name) else {
            continue;
        };
        let path = torn_dir.join(name);
        if marker(&path).exists() {
            continue;
        }
        let bytes = e
            .metadata()
            .map_err(|e| AuditError::io("reading", &path, e))?
            .len();
        out.push(TornTail {
            segment,
            offset,
            bytes,
            kept_as: path,
        });
    }
    out.sort_by(|a, b| (a.segment, a.offset, &a.kept_as).cmp(&(b.segment, b.offset, &b.kept_as)));
    Ok(out)
}

fn marker(kept_as: &Path) -> PathBuf {
    let mut name = kept_as.as_os_str().to_owned();
    name.push(MARKER);
    PathBuf::from(name)
}

/// Record that `t`'s report is in the log, durably.
pub(crate) fn mark_reported(t: &TornTail) -> Result<(), AuditError> {
    let m = marker(&t.kept_as);
    File::create(&m)
        .and_then(|f| f.sync_all())
        .map_err(|e| AuditError::io("writing", &m, e))?;
    match t.kept_as.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The kept file's name, as reports are matched on it (the state directory
/// may be named differently from one start to the next).
pub(crate) fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn kept_names_parse_back_to_their_place() {
        assert_eq!(parse_name("seg-00000003-at-4096.bin"), Some((3, 4096)));
        assert_eq!(parse_name("seg-00000003-at-4096-2.bin"), Some((3, 4096)));
        assert_eq!(parse_name("seg-00000003-at-4096.bin.reported"), None);
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("seg-x-at-1.bin"), None);
    }
}
