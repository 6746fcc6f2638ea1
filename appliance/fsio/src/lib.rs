//! `cxr-fsio`: the small file and text primitives every crate that keeps
//! state shares, so that each is written once:
//!
//! - [`write_atomically`]: replace a file whole (a temporary file beside it,
//!   fsync, rename, folder fsync). After a power loss the file holds the old
//!   bytes or the new ones, never a mix.
//! - [`sync_dir`]: fsync a folder, so that entries made or renamed in it
//!   survive power loss.
//! - [`hex`]: lower-case hex, as digests, key ids and pseudonyms are written
//!   in file names, journals and reports.
//!
//! It knows nothing of DICOM, models or the service: errors are plain
//! [`std::io::Error`]s with what was being done, for the caller's own error
//! type (which carries the stable code and the fix hint).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a write did not complete: what was being done, and the error.
#[derive(Debug)]
pub struct WriteFault {
    pub action: &'static str,
    pub error: std::io::Error,
}

impl std::fmt::Display for WriteFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.action, self.error)
    }
}

impl std::error::Error for WriteFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

fn fault(action: &'static str) -> impl FnOnce(std::io::Error) -> WriteFault {
    move |error| WriteFault { action, error }
}

/// The temporary file a replacement of `path` is written to: `path` with
/// `.tmp` appended (`v1.json.tmp`), one per final name.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Write `bytes` to `path` whole: the temporary file beside it (created with
/// `mode`, before the umask), fsync, rename over `path`, folder fsync.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteFault> {
    let tmp = temporary_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fault("creating"))?;
    file.write_all(bytes).map_err(fault("writing"))?;
    file.sync_all().map_err(fault("syncing"))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fault("renaming"))?;
    sync_dir(folder_of(path)).map_err(fault("syncing the folder of"))
}

/// The folder `path` is in: `.` for a bare file name (whose parent is the
/// empty path, which cannot be opened).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    }
}

/// Fsync a folder, so that the entries just made or renamed in it survive
/// power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    fn a_replacement_leaves_the_new_bytes_with_their_mode_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("cxr-fsio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("settings.json");
        std::fs::write(&path, b"old").unwrap_or_else(|e| panic!("{e}"));
        write_atomically(&path, b"new", 0o600).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"new"[..]));
        assert!(!temporary_path(&path).exists());
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_bare_file_name_is_replaced_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("demo-v1.cxrb")), Path::new("."));
        assert_eq!(folder_of(Path::new("out/demo.cxrb")), Path::new("out"));
        assert_eq!(folder_of(Path::new("/demo.cxrb")), Path::new("/"));
    }

    #[test]
    fn a_write_into_a_missing_folder_says_what_failed() {
        let path = Path::new("/nonexistent-cxr-fsio/folder/file");
        let e = write_atomically(path, b"x", 0o644).err();
        assert_eq!(e.map(|e| e.action), Some("creating"));
    }
}
