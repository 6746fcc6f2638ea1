//! The durable file primitives every stage's journal uses: JSON Lines
//! files appended one fsynced line at a time (a failed append cut back),
//! read back with a torn last line cut, and folders whose entries are
//! fsynced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::SpoolError;

pub(crate) use cxr_fsio::hex;

/// Fsync a folder, so that the entries just made or renamed in it survive
/// power loss.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    cxr_fsio::sync_dir(dir).map_err(|e| SpoolError::io("syncing", dir, e))
}

/// Create `dir` (and fsync its parent's entry) unless it exists.
pub fn create_dir(dir: &Path) -> Result<(), SpoolError> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::io("creating", dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Take the exclusive lock `dir/lock` that makes this process the one
/// owner of the folder for as long as the returned file is held.
pub(crate) fn lock_folder(dir: &Path) -> Result<File, SpoolError> {
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| SpoolError::io("opening", &lock_path, e))?;
    lock.try_lock().map_err(|_| SpoolError::Locked {
        path: dir.to_owned(),
    })?;
    Ok(lock)
}

/// Open (or create) a journal for reading and appending.
pub(crate) fn open_journal(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| SpoolError::io("opening", path, e))
}

/// Why an append failed, and whether the file could not be cut back to
/// where it was (then nothing more may be appended).
#[derive(Debug)]
pub(crate) struct AppendError {
    pub error: std::io::Error,
    pub poisoned: Option<String>,
}

/// Append one whole line and fsync it; a failed write is cut back, so a
/// partial line never precedes the next one.
pub(crate) fn append_line(file: &mut File, line: &[u8]) -> Result<(), AppendError> {
    let before = file
        .metadata()
        .map_err(|error| AppendError {
            error,
            poisoned: None,
        })?
        .len();
    match file.write_all(line).and_then(|()| file.sync_data()) {
        Ok(()) => Ok(()),
        Err(error) => {
            let undone = file.set_len(before).and_then(|()| file.sync_all());
            let poisoned = undone
                .err()
                .map(|u| format!("{error}; cutting it back: {u}"));
            Err(AppendError { error, poisoned })
        }
    }
}

/// A journal rewritten by [`rewrite_journal`].
pub(crate) struct Rewritten {
    /// The new journal, open for appending (the very file renamed into
    /// place: never a handle on the old one).
    pub file: File,
    pub len: u64,
    /// The folder could not be fsynced after the rename: the new journal
    /// may not survive a power cut, so nothing more may be appended to it.
    pub unsynced: Option<String>,
}

/// Replace a journal by `lines` (each encoded as one JSON line): written
/// to a scratch file beside it, fsynced, renamed over it, the folder
/// fsynced; a crash leaves either the old journal or the new one whole.
/// An error before the rename leaves the old journal and its handle as
/// they were.
pub(crate) fn rewrite_journal<T: serde::Serialize>(
    path: &Path,
    lines: impl Iterator<Item = T>,
) -> Result<Rewritten, SpoolError> {
    let scratch = path.with_extension("jsonl.compact");
    let mut text = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut text, &line).map_err(|e| SpoolError::io("encoding", path, e))?;
        text.push(b'\n');
    }
    let written = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .open(&scratch)
        .and_then(|mut f| {
            f.set_len(0)?;
            f.write_all(&text)?;
            f.sync_all()?;
            Ok(f)
        });
    let file = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&scratch);
            return Err(SpoolError::io("writing", &scratch, e));
        }
    };
    if let Err(e) = std::fs::rename(&scratch, path) {
        let _ = std::fs::remove_file(&scratch);
        return Err(SpoolError::io("replacing", path, e));
    }
    let unsynced = path
        .parent()
        .and_then(|dir| sync_dir(dir).err())
        .map(|e| e.to_string());
    Ok(Rewritten {
        file,
        len: text.len() as u64,
        unsynced,
    })
}

/// Every complete line of a journal, parsed; a torn last line (a power cut
/// mid-append: that record never counted) is cut off and its length
/// returned. A complete line that does not parse is damage: refused.
pub(crate) fn read_lines<T: DeserializeOwned>(
    journal: &mut File,
    path: &Path,
) -> Result<(Vec<T>, u64), SpoolError> {
    let mut text = Vec::new();
    journal
        .seek(SeekFrom::Start(0))
        .and_then(|_| journal.read_to_end(&mut text))
        .map_err(|e| SpoolError::io("reading", path, e))?;
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let torn = (text.len() - complete) as u64;
    if torn > 0 {
        journal
            .set_len(complete as u64)
            .and_then(|()| journal.sync_all())
            .map_err(|e| SpoolError::io("cutting the torn tail of", path, e))?;
    }
    let lines = text[..complete]
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            serde_json::from_slice(line).map_err(|e| SpoolError::Journal {
                path: path.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((lines, torn))
}
