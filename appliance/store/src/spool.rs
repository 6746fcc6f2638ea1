//! The spool: acknowledged means durable.
//!
//! An instance is streamed into `spool/<id>.part` (`id` is our own sequence
//! number: nothing the peer sends becomes a path), then `commit`:
//! 1. fsyncs the file,
//! 2. renames it to `<id>.dcm` and fsyncs the directory,
//! 3. appends one JSON line to `journal.jsonl` and fsyncs it,
//! 4. and only then returns [`Durable`], the one value a protocol adapter may
//!    acknowledge on (C-STORE status 0000, STOW-RS 200).
//!
//! At start-up `open` discards what was never acknowledged: `.part` files,
//! and `.dcm` files the journal does not name (a crash between the rename
//! and the journal line); a journal line torn by power loss (no newline) is
//! cut. A complete line that does not parse is damage, not a torn tail, and
//! the spool refuses to open. Nothing undelivered is ever evicted: at quota
//! new input is refused ([`SpoolError::Full`], C-STORE A700).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::{
    append_line, create_dir, hex, lock_folder, open_journal, read_lines, rewrite_journal, sync_dir,
};
use crate::results::StudyHeader;
use crate::SpoolError;
use cxr_net::uid::is_valid_uid;

/// Limits of one spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Bytes of stored instances beyond which new input is refused.
    pub quota_bytes: u64,
    /// Largest single instance accepted.
    pub max_instance_bytes: u64,
}

impl Default for SpoolConfig {
    /// 8 GiB of instances, 512 MiB each at most.
    fn default() -> Self {
        SpoolConfig {
            quota_bytes: 8 << 30,
            max_instance_bytes: 512 << 20,
        }
    }
}

/// What the sender said the instance is, checked before it is journalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// Who sent it (calling AE title and address, or the HTTP client), as
    /// data for the record.
    pub source: String,
    pub series_instance_uid: Option<String>,
    /// The patient and study attributes read when it was received, so that
    /// nothing has to parse the file again to file a derived object.
    pub header: StudyHeader,
    /// Modality (0008,0060) as the instance says it.
    pub modality: Option<String>,
}

/// How a committed instance relates to what the spool already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Disposition {
    /// First time this SOP Instance UID is seen.
    New,
    /// The same UID with different bytes: both kept, the conflict flagged.
    Conflict { with: Vec<u64> },
}

/// One journal line: a durable instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub id: u64,
    pub bytes: u64,
    pub sha256: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// Empty in a tombstone (see [`Spool::compact`]), and then not written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub received_unix_ms: u64,
    pub disposition: Disposition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_header")]
    pub header: StudyHeader,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
}

fn is_empty_header(h: &StudyHeader) -> bool {
    *h == StudyHeader::default()
}

/// The proof that an instance is on disk: acknowledge on this only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durable {
    /// Journalled under `id`.
    Stored { id: u64, disposition: Disposition },
    /// Byte-identical to instance `of`, already durable: acknowledged, not
    /// stored or processed again.
    Duplicate { of: u64 },
}

/// What `open` found and cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// `.part` files removed: never acknowledged.
    pub partial_removed: usize,
    /// Renamed files the journal does not name, removed: never acknowledged.
    pub unjournalled_removed: usize,
    /// Bytes of a torn last journal line cut off.
    pub torn_bytes: u64,
}

/// Whether a record was already cut down to a tombstone.
fn is_tombstone(r: &JournalRecord) -> bool {
    r.source.is_empty() && r.header == StudyHeader::default() && r.series_instance_uid.is_none()
}

/// The spool of one state directory. One owner at a time: `open` takes an
/// exclusive lock that lasts as long as the `Spool`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    journal_path: PathBuf,
    journal: File,
    _lock: File,
    config: SpoolConfig,
    records: Vec<JournalRecord>,
    /// SOP Instance UID to the ids stored under it.
    by_uid: HashMap<String, Vec<u64>>,
    /// Id to its place in `records`.
    by_id: HashMap<u64, usize>,
    budget: Arc<Budget>,
    next_id: u64,
    /// Why the spool stopped: a journal write failed and could not be undone.
    poisoned: Option<String>,
    /// Called at the named points of `commit`, so that tests can crash the
    /// process there (the binary wires `CXR_FAILPOINT`).
    crash_hook: Option<fn(&'static str)>,
    /// Instances whose file was deleted once their results were delivered
    /// (their records stay, so a resend is still recognised).
    retired: HashSet<u64>,
    retired_path: PathBuf,
    retired_journal: File,
}

/// One line of `retired.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RetiredLine {
    id: u64,
    at_unix_ms: u64,
}

/// Bytes stored and bytes being received, shared with every `Incoming`, so
/// that transfers in flight count against the quota as they arrive.
#[derive(Debug, Default)]
struct Budget {
    used: AtomicU64,
    in_flight: AtomicU64,
}

impl Budget {
    fn check(&self, more: u64, quota: u64) -> Result<(), SpoolError> {
        let used = self.used.load(Ordering::SeqCst);
        let busy = used.saturating_add(self.in_flight.load(Ordering::SeqCst));
        if busy.saturating_add(more) > quota {
            return Err(SpoolError::Full {
                used,
                quota,
                incoming: more,
            });
        }
        Ok(())
    }

    fn reserve(&self, bytes: u64, quota: u64) -> Result<(), SpoolError> {
        let in_flight = self.in_flight.fetch_add(bytes, Ordering::SeqCst);
        let used = self.used.load(Ordering::SeqCst);
        if used.saturating_add(in_flight).saturating_add(bytes) > quota {
            self.in_flight.fetch_sub(bytes, Ordering::SeqCst);
            return Err(SpoolError::Full {
                used,
                quota,
                incoming: bytes,
            });
        }
        Ok(())
    }
}

/// An instance being received: bytes go to disk as they arrive.
#[derive(Debug)]
pub struct Incoming {
    id: u64,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    quota: u64,
    budget: Arc<Budget>,
}

/// The id a spool file name carries, if it is one of ours.
fn file_id(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Spool {
    /// Open (or create) the spool under `root/spool`, discarding what was
    /// never acknowledged.
    pub fn open(root: &Path, config: SpoolConfig) -> Result<(Spool, Recovery), SpoolError> {
        let dir = root.join("spool");
        // The new folder's own entry must survive power loss too.
        create_dir(&dir)?;
        let lock = lock_folder(&dir)?;
        let journal_path = dir.join("journal.jsonl");
        let mut journal = open_journal(&journal_path)?;
        let (records, torn_bytes): (Vec<JournalRecord>, u64) =
            read_lines(&mut journal, &journal_path)?;
        let mut recovery = Recovery {
            torn_bytes,
            ..Recovery::default()
        };
        let retired_path = dir.join("retired.jsonl");
        let mut retired_journal = open_journal(&retired_path)?;
        // A torn last retirement never happened: its file is still there.
        let (retired_lines, _): (Vec<RetiredLine>, u64) =
            read_lines(&mut retired_journal, &retired_path)?;
        let retired = retired_lines.iter().map(|r| r.id).collect();
        let mut spool = Spool {
            next_id: 1,
            dir,
            journal_path,
            journal,
            _lock: lock,
            config,
            records: Vec::new(),
            by_uid: HashMap::new(),
            by_id: HashMap::new(),
            budget: Arc::new(Budget::default()),
            poisoned: None,
            crash_hook: None,
            retired,
            retired_path,
            retired_journal,
        };
        for (line, r) in records.into_iter().enumerate() {
            spool.check_journalled(&r, line + 1)?;
            spool.next_id = spool.next_id.max(r.id.saturating_add(1));
            spool.index(r);
        }
        spool.sweep(&mut recovery)?;
        Ok((spool, recovery))
    }

    /// A journalled instance must be unique and on disk whole: anything
    /// else means an acknowledged instance is gone, and guessing is worse
    /// than refusing.
    fn check_journalled(&self, r: &JournalRecord, line: usize) -> Result<(), SpoolError> {
        let damaged = |reason: String| SpoolError::Journal {
            path: self.journal_path.clone(),
            line,
            reason,
        };
        if self.record(r.id).is_some() {
            return Err(damaged(format!("instance {} journalled twice", r.id)));
        }
        if self.retired.contains(&r.id) {
            // Retired: its file goes, if a crash left it behind.
            let path = self.path_of(r.id);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| SpoolError::io("removing", &path, e))?;
            }
            return Ok(());
        }
        let size = std::fs::metadata(self.path_of(r.id)).map(|m| m.len());
        if size.as_ref().ok() != Some(&r.bytes) {
            return Err(damaged(format!(
                "instance {} should be {} bytes on disk, found {size:?}",
                r.id, r.bytes
            )));
        }
        Ok(())
    }

    fn index(&mut self, r: JournalRecord) {
        if !self.retired.contains(&r.id) {
            self.budget.used.fetch_add(r.bytes, Ordering::SeqCst);
        }
        self.by_uid
            .entry(r.sop_instance_uid.clone())
            .or_default()
            .push(r.id);
        self.by_id.insert(r.id, self.records.len());
        self.records.push(r);
    }

    /// Remove `.part` files and unjournalled `.dcm` files; keep ids above
    /// every name seen, so a new instance never reuses one.
    fn sweep(&mut self, recovery: &mut Recovery) -> Result<(), SpoolError> {
        let listing =
            std::fs::read_dir(&self.dir).map_err(|e| SpoolError::io("listing", &self.dir, e))?;
        let journalled: std::collections::HashSet<u64> =
            self.records.iter().map(|r| r.id).collect();
        for entry in listing {
            let entry = entry.map_err(|e| SpoolError::io("listing", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (id, partial) = match (file_id(&name, ".part"), file_id(&name, ".dcm")) {
                (Some(id), _) => (id, true),
                (None, Some(id)) if !journalled.contains(&id) => (id, false),
                _ => continue,
            };
            self.next_id = self.next_id.max(id.saturating_add(1));
            std::fs::remove_file(entry.path())
                .map_err(|e| SpoolError::io("removing", &entry.path(), e))?;
            if partial {
                recovery.partial_removed += 1;
            } else {
                recovery.unjournalled_removed += 1;
            }
        }
        sync_dir(&self.dir)
    }

    /// Every durable instance, in the order received.
    pub fn records(&self) -> &[JournalRecord] {
        &self.records
    }

    /// Bytes free to an unprivileged writer on the spool's file system
    /// (`None` when the system will not say: callers then refuse).
    pub fn free_disk_bytes(&self) -> Option<u64> {
        rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Whether instance `id`'s file was deleted after delivery.
    pub fn is_retired(&self, id: u64) -> bool {
        self.retired.contains(&id)
    }

    /// Delete instance `id`'s file (its results are delivered and its
    /// retention is over): the retirement is journalled first, so a crash
    /// leaves at worst a file that the next `open` removes. Its record
    /// stays, so a resend is still a duplicate. `Ok(false)` when there is
    /// nothing to retire.
    pub fn retire(&mut self, id: u64, now_unix_ms: u64) -> Result<bool, SpoolError> {
        self.check_running()?;
        if self.retired.contains(&id) {
            return Ok(false);
        }
        let Some(bytes) = self.record(id).map(|r| r.bytes) else {
            return Ok(false);
        };
        let mut line = serde_json::to_vec(&RetiredLine {
            id,
            at_unix_ms: now_unix_ms,
        })
        .map_err(|e| SpoolError::io("encoding", &self.retired_path, e))?;
        line.push(b'\n');
        if let Err(e) = append_line(&mut self.retired_journal, &line) {
            if let Some(reason) = e.poisoned {
                self.poisoned = Some(reason);
            }
            return Err(SpoolError::io("appending to", &self.retired_path, e.error));
        }
        self.retired.insert(id);
        self.budget.used.fetch_sub(bytes, Ordering::SeqCst);
        let path = self.path_of(id);
        std::fs::remove_file(&path).map_err(|e| SpoolError::io("removing", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Rewrite the journal with the record of every retired instance for
    /// which `tombstone(id, study_instance_uid)` holds (its results were
    /// pruned) cut down to a
    /// tombstone: ids, UIDs, size and digest, so that a resend is still
    /// recognised, and no patient attribute or sender kept. Returns the
    /// journal's length (bytes) before and after.
    pub fn compact(
        &mut self,
        tombstone: impl Fn(u64, &str) -> bool,
    ) -> Result<(u64, u64), SpoolError> {
        self.check_running()?;
        let before = self
            .journal
            .metadata()
            .map_err(|e| SpoolError::io("reading", &self.journal_path, e))?
            .len();
        let retired = &self.retired;
        let mut changed = false;
        for r in self.records.iter_mut() {
            if retired.contains(&r.id) && tombstone(r.id, &r.study_instance_uid) && !is_tombstone(r)
            {
                r.header = StudyHeader::default();
                r.source = String::new();
                r.series_instance_uid = None;
                r.modality = None;
                changed = true;
            }
        }
        if !changed {
            return Ok((before, before));
        }
        let rewritten = rewrite_journal(&self.journal_path, self.records.iter())?;
        self.journal = rewritten.file;
        if let Some(reason) = rewritten.unsynced {
            self.poisoned = Some(format!(
                "the compacted journal may not be durable: {reason}"
            ));
        }
        Ok((before, rewritten.len))
    }

    /// Where instance `id` lies.
    pub fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.dcm"))
    }

    /// Bytes of stored instances.
    pub fn used_bytes(&self) -> u64 {
        self.budget.used.load(Ordering::SeqCst)
    }

    fn check_running(&self) -> Result<(), SpoolError> {
        match &self.poisoned {
            Some(reason) => Err(SpoolError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Failpoints of `commit`: `spool:before-rename` (the `.part` file is
    /// fsynced, nothing acknowledged) and `spool:before-journal` (renamed,
    /// not yet journalled).
    pub fn set_crash_hook(&mut self, hook: fn(&'static str)) {
        self.crash_hook = Some(hook);
    }

    fn failpoint(&self, name: &'static str) {
        if let Some(hook) = self.crash_hook {
            hook(name);
        }
    }

    /// Bytes that may still arrive before the quota: stored and in-flight
    /// bytes both count.
    pub fn headroom(&self) -> u64 {
        let busy = self
            .budget
            .used
            .load(Ordering::SeqCst)
            .saturating_add(self.budget.in_flight.load(Ordering::SeqCst));
        self.config.quota_bytes.saturating_sub(busy)
    }

    /// Start receiving an instance of `expected` bytes if the sender said
    /// (refused at once when it cannot fit).
    pub fn begin(&mut self, expected: Option<u64>) -> Result<Incoming, SpoolError> {
        self.check_running()?;
        let expected = expected.unwrap_or(0);
        if expected > self.config.max_instance_bytes {
            return Err(SpoolError::InstanceTooLarge {
                limit: self.config.max_instance_bytes,
            });
        }
        self.budget.check(expected, self.config.quota_bytes)?;
        let id = self.next_id;
        self.next_id = id
            .checked_add(1)
            .ok_or_else(|| SpoolError::io("numbering", &self.dir, "instance ids exhausted"))?;
        let path = self.dir.join(format!("{id}.part"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SpoolError::io("creating", &path, e))?;
        Ok(Incoming {
            id,
            path,
            file: Some(BufWriter::new(file)),
            hasher: Sha256::new(),
            bytes: 0,
            limit: self.config.max_instance_bytes,
            quota: self.config.quota_bytes,
            budget: Arc::clone(&self.budget),
        })
    }

    /// Make `incoming` durable and journal it; see the module docs for the
    /// order. On any error nothing is journalled and the `.part` file goes.
    pub fn commit(
        &mut self,
        mut incoming: Incoming,
        meta: &InstanceMeta,
        received_unix_ms: u64,
    ) -> Result<Durable, SpoolError> {
        self.check_running()?;
        for (field, value) in [
            ("SOP Class UID", &meta.sop_class_uid),
            ("SOP Instance UID", &meta.sop_instance_uid),
            ("Study Instance UID", &meta.study_instance_uid),
        ] {
            if !is_valid_uid(value) {
                let value = value.chars().take(80).collect();
                return Err(SpoolError::BadUid { field, value });
            }
        }
        let file = incoming.file.take().ok_or_else(|| {
            SpoolError::io("committing", &incoming.path, "instance already finished")
        })?;
        let file = file
            .into_inner()
            .map_err(|e| SpoolError::io("writing", &incoming.path, e.error()))?;
        file.sync_all()
            .map_err(|e| SpoolError::io("syncing", &incoming.path, e))?;
        drop(file);
        let sha256 = hex(&incoming.hasher.clone().finalize());
        let same_uid = self
            .by_uid
            .get(&meta.sop_instance_uid)
            .cloned()
            .unwrap_or_default();
        if let Some(of) = same_uid
            .iter()
            .find(|id| self.record(**id).is_some_and(|r| r.sha256 == sha256))
        {
            return Ok(Durable::Duplicate { of: *of });
        }
        let stored = self.path_of(incoming.id);
        self.failpoint("spool:before-rename");
        std::fs::rename(&incoming.path, &stored)
            .map_err(|e| SpoolError::io("renaming", &incoming.path, e))?;
        incoming.path = stored;
        sync_dir(&self.dir)?;
        self.failpoint("spool:before-journal");
        let disposition = if same_uid.is_empty() {
            Disposition::New
        } else {
            Disposition::Conflict { with: same_uid }
        };
        let record = JournalRecord {
            id: incoming.id,
            bytes: incoming.bytes,
            sha256,
            sop_class_uid: meta.sop_class_uid.clone(),
            sop_instance_uid: meta.sop_instance_uid.clone(),
            study_instance_uid: meta.study_instance_uid.clone(),
            source: meta.source.clone(),
            received_unix_ms,
            disposition: disposition.clone(),
            series_instance_uid: meta.series_instance_uid.clone(),
            header: meta.header.clone(),
            modality: meta.modality.clone(),
        };
        self.append(&record)?;
        // Journalled: the file and its bytes are the spool's now, no longer
        // the receiver's.
        incoming.path = PathBuf::new();
        self.index(record);
        incoming.release();
        Ok(Durable::Stored {
            id: incoming.id,
            disposition,
        })
    }

    /// The journal record of instance `id`.
    pub fn record(&self, id: u64) -> Option<&JournalRecord> {
        self.by_id.get(&id).and_then(|i| self.records.get(*i))
    }

    /// Append one line and fsync it. A failed write is undone (the journal
    /// cut back to where it was), so a line that might later reach the disk
    /// never names a file the caller then removes; if even that fails, the
    /// spool stops accepting.
    fn append(&mut self, record: &JournalRecord) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| SpoolError::io("encoding", &self.journal_path, e))?;
        line.push(b'\n');
        let before = self
            .journal
            .metadata()
            .map_err(|e| SpoolError::io("reading", &self.journal_path, e))?
            .len();
        let written = self
            .journal
            .write_all(&line)
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = written {
            let undone = self
                .journal
                .set_len(before)
                .and_then(|()| self.journal.sync_all());
            if let Err(u) = undone {
                self.poisoned = Some(format!("{e}; cutting it back: {u}"));
            }
            return Err(SpoolError::io("appending to", &self.journal_path, e));
        }
        Ok(())
    }
}

impl Incoming {
    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append a chunk as it arrives from the network.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let more = chunk.len() as u64;
        let bytes = self.bytes.saturating_add(more);
        if bytes > self.limit {
            return Err(SpoolError::InstanceTooLarge { limit: self.limit });
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| SpoolError::io("writing", &self.path, "instance already finished"))?;
        // Counted against the quota before it reaches the disk.
        self.budget.reserve(more, self.quota)?;
        if let Err(e) = file.write_all(chunk) {
            self.budget.in_flight.fetch_sub(more, Ordering::SeqCst);
            return Err(SpoolError::write(&self.path, e));
        }
        self.hasher.update(chunk);
        self.bytes = bytes;
        Ok(())
    }

    /// Flush and fsync what has arrived: done before `commit`, outside the
    /// spool's lock, so that one large instance does not hold up others.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| SpoolError::io("syncing", &self.path, "instance already finished"))?;
        file.flush()
            .and_then(|()| file.get_ref().sync_all())
            .map_err(|e| SpoolError::write(&self.path, e))
    }

    /// Flush what has arrived and read it back: the receiver checks the
    /// whole instance (that it parses, and says what its command said)
    /// before committing it. At most the instance limit.
    pub fn read_back(&mut self) -> Result<Vec<u8>, SpoolError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| SpoolError::io("reading", &self.path, "instance already finished"))?;
        file.flush()
            .map_err(|e| SpoolError::io("writing", &self.path, e))?;
        std::fs::read(&self.path).map_err(|e| SpoolError::io("reading back", &self.path, e))
    }

    /// Hand this transfer's reserved bytes back (once).
    fn release(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.budget.in_flight.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl Drop for Incoming {
    /// An instance never committed (abort, error, refusal) leaves nothing
    /// behind; a crash leaves a `.part` that the next `open` removes.
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.path);
        }
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn scratch(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cxr-spool-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn meta(sop: &str) -> InstanceMeta {
        InstanceMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: sop.into(),
            study_instance_uid: "1.2.3".into(),
            source: "MODALITY@127.0.0.1".into(),
            series_instance_uid: None,
            header: StudyHeader::default(),
            modality: Some("CR".into()),
        }
    }

    fn store(spool: &mut Spool, sop: &str, chunks: &[&[u8]]) -> Result<Durable, SpoolError> {
        let mut incoming = spool.begin(None)?;
        for c in chunks {
            incoming.write(c)?;
        }
        spool.commit(incoming, &meta(sop), 1_700_000_000_000)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("spool"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && n != "retired.jsonl")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_committed_instance_is_on_disk_journalled_and_survives_reopening() {
        let root = scratch("commit");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        let d = store(&mut spool, "1.2.3.4", &[b"DICM", b" body"]).unwrap();
        assert_eq!(
            d,
            Durable::Stored {
                id: 1,
                disposition: Disposition::New
            }
        );
        assert_eq!(std::fs::read(spool.path_of(1)).unwrap(), b"DICM body");
        assert_eq!(names(&root), ["1.dcm", "journal.jsonl"]);
        drop(spool);
        let (spool, recovery) = Spool::open(&root, SpoolConfig::default()).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.records().len(), 1);
        assert_eq!(spool.records()[0].bytes, 9);
        assert_eq!(spool.used_bytes(), 9);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn compaction_keeps_a_tombstone_that_still_recognises_a_resend() {
        let root = scratch("compact");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        let mut m = meta("1.2.3.4");
        m.header.patient_id = Some("PAT-1".into());
        let mut incoming = spool.begin(None).unwrap();
        incoming.write(b"first").unwrap();
        spool.commit(incoming, &m, 1).unwrap();
        store(&mut spool, "1.2.3.5", &[b"second"]).unwrap();
        assert_eq!(
            spool.compact(|_, _| true).map(|(a, b)| a == b).ok(),
            Some(true),
            "nothing retired yet"
        );
        assert!(spool.retire(1, 1000).unwrap());
        let (before, after) = spool.compact(|id, _| id == 1).unwrap();
        assert!(after < before, "{before} -> {after}");
        let text = std::fs::read_to_string(root.join("spool/journal.jsonl")).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            !first.contains("PAT-1") && !first.contains("MODALITY@"),
            "{first}"
        );
        // Appends go on after the rewrite, and the whole survives reopening.
        store(&mut spool, "1.2.3.6", &[b"third"]).unwrap();
        drop(spool);
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        assert_eq!(spool.records().len(), 3);
        assert_eq!(
            spool.records()[1].source,
            "MODALITY@127.0.0.1",
            "live records kept whole"
        );
        assert_eq!(
            store(&mut spool, "1.2.3.4", &[b"first"]).unwrap(),
            Durable::Duplicate { of: 1 }
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_retired_instance_frees_its_bytes_and_stays_known_across_reopening() {
        let root = scratch("retire");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        store(&mut spool, "1.2.3.4", &[b"first"]).unwrap();
        store(&mut spool, "1.2.3.5", &[b"second"]).unwrap();
        assert_eq!(spool.used_bytes(), 11);
        assert!(spool.retire(1, 1000).unwrap());
        assert!(!spool.retire(1, 1001).unwrap(), "once");
        assert!(!spool.retire(9, 1001).unwrap(), "unknown");
        assert_eq!(spool.used_bytes(), 6);
        assert_eq!(names(&root), ["2.dcm", "journal.jsonl"]);
        // A resend of the retired instance is still a duplicate.
        assert_eq!(
            store(&mut spool, "1.2.3.4", &[b"first"]).unwrap(),
            Durable::Duplicate { of: 1 }
        );
        drop(spool);
        // A crash after the retirement line but before the deletion: the
        // file is removed at the next open, and nothing is refused.
        std::fs::write(root.join("spool/1.dcm"), b"first").unwrap();
        let (spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        assert!(spool.is_retired(1) && !spool.is_retired(2));
        assert_eq!(spool.used_bytes(), 6);
        assert_eq!(names(&root), ["2.dcm", "journal.jsonl"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_same_uid_with_the_same_bytes_is_a_duplicate_and_with_other_bytes_a_conflict() {
        let root = scratch("dup");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        store(&mut spool, "1.2.3.4", &[b"first"]).unwrap();
        let again = store(&mut spool, "1.2.3.4", &[b"fir", b"st"]).unwrap();
        assert_eq!(again, Durable::Duplicate { of: 1 });
        let other = store(&mut spool, "1.2.3.4", &[b"second"]).unwrap();
        assert_eq!(
            other,
            Durable::Stored {
                id: 3,
                disposition: Disposition::Conflict { with: vec![1] }
            }
        );
        // The duplicate left no file; both conflicting copies are kept.
        assert_eq!(names(&root), ["1.dcm", "3.dcm", "journal.jsonl"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_peer_uid_never_becomes_a_path_and_a_bad_one_stores_nothing() {
        let root = scratch("uid");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        let e = store(&mut spool, "../../etc/passwd", &[b"x"]).unwrap_err();
        assert_eq!(e.code(), "SPOOL_BAD_UID");
        assert_eq!(names(&root), ["journal.jsonl"]);
        assert!(spool.records().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn what_was_never_acknowledged_is_discarded_at_start() {
        let root = scratch("crash");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        store(&mut spool, "1.2.3.4", &[b"kept"]).unwrap();
        // A crash mid-transfer: the .part stays (no Drop runs in a crash).
        let mut torn = spool.begin(None).unwrap();
        torn.write(b"half").unwrap();
        std::mem::forget(torn);
        // A crash after the rename, before the journal line.
        std::fs::write(root.join("spool/7.dcm"), b"renamed").unwrap();
        // Power lost in the middle of a journal line.
        let mut j = OpenOptions::new()
            .append(true)
            .open(root.join("spool/journal.jsonl"))
            .unwrap();
        j.write_all(b"{\"id\":8,\"by").unwrap();
        drop((spool, j));
        let (mut spool, recovery) = Spool::open(&root, SpoolConfig::default()).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                partial_removed: 1,
                unjournalled_removed: 1,
                torn_bytes: 11
            }
        );
        assert_eq!(spool.records().len(), 1);
        assert_eq!(names(&root), ["1.dcm", "journal.jsonl"]);
        // New ids never reuse a name seen on disk.
        let d = store(&mut spool, "1.2.3.5", &[b"next"]).unwrap();
        assert!(matches!(d, Durable::Stored { id: 8, .. }), "{d:?}");
        drop(spool);
        let (spool, recovery) = Spool::open(&root, SpoolConfig::default()).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.records().len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_damaged_complete_journal_line_refuses_to_open() {
        let root = scratch("damaged");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        store(&mut spool, "1.2.3.4", &[b"kept"]).unwrap();
        drop(spool);
        let path = root.join("spool/journal.jsonl");
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"not json\n");
        std::fs::write(&path, text).unwrap();
        let e = Spool::open(&root, SpoolConfig::default()).unwrap_err();
        assert_eq!(e.code(), "SPOOL_JOURNAL");
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn at_quota_new_input_is_refused_and_nothing_is_evicted() {
        let root = scratch("quota");
        let config = SpoolConfig {
            quota_bytes: 10,
            max_instance_bytes: 6,
        };
        let (mut spool, _) = Spool::open(&root, config).unwrap();
        store(&mut spool, "1.2.3.4", &[b"123456"]).unwrap();
        let e = spool.begin(Some(5)).unwrap_err();
        assert_eq!(e.code(), "SPOOL_FULL");
        let e = store(&mut spool, "1.2.3.5", &[b"12345"]).unwrap_err();
        assert_eq!(e.code(), "SPOOL_FULL");
        let e = store(&mut spool, "1.2.3.6", &[b"1234", b"567"]).unwrap_err();
        assert_eq!(e.code(), "SPOOL_INSTANCE_TOO_LARGE");
        assert_eq!(
            spool.begin(Some(7)).unwrap_err().code(),
            "SPOOL_INSTANCE_TOO_LARGE"
        );
        // The stored instance is still there; the refused ones left nothing.
        assert_eq!(names(&root), ["1.dcm", "journal.jsonl"]);
        store(&mut spool, "1.2.3.7", &[b"1234"]).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn one_owner_at_a_time() {
        let root = scratch("lock");
        let (spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        let e = Spool::open(&root, SpoolConfig::default()).unwrap_err();
        assert_eq!(e.code(), "SPOOL_LOCKED");
        drop(spool);
        Spool::open(&root, SpoolConfig::default()).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_acknowledged_instance_gone_from_disk_refuses_to_open() {
        let root = scratch("gone");
        let (mut spool, _) = Spool::open(&root, SpoolConfig::default()).unwrap();
        store(&mut spool, "1.2.3.4", &[b"kept"]).unwrap();
        store(&mut spool, "1.2.3.5", &[b"also kept"]).unwrap();
        drop(spool);
        std::fs::write(root.join("spool/2.dcm"), b"short").unwrap();
        let e = Spool::open(&root, SpoolConfig::default()).unwrap_err();
        assert_eq!(e.code(), "SPOOL_JOURNAL");
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::remove_file(root.join("spool/2.dcm")).unwrap();
        assert_eq!(
            Spool::open(&root, SpoolConfig::default())
                .unwrap_err()
                .code(),
            "SPOOL_JOURNAL"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn transfers_in_flight_count_against_the_quota() {
        let root = scratch("inflight");
        let config = SpoolConfig {
            quota_bytes: 10,
            max_instance_bytes: 8,
        };
        let (mut spool, _) = Spool::open(&root, config).unwrap();
        let mut a = spool.begin(None).unwrap();
        let mut b = spool.begin(None).unwrap();
        a.write(b"123456").unwrap();
        // Two transfers may not together go past the quota.
        assert_eq!(b.write(b"12345").unwrap_err().code(), "SPOOL_FULL");
        b.write(b"1234").unwrap();
        drop(b);
        let d = spool.commit(a, &meta("1.2.3.4"), 0).unwrap();
        assert!(matches!(d, Durable::Stored { id: 1, .. }), "{d:?}");
        assert_eq!(spool.used_bytes(), 6);
        assert_eq!(
            store(&mut spool, "1.2.3.9", &[b"12345"])
                .unwrap_err()
                .code(),
            "SPOOL_FULL"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_resent_instance_near_the_quota_is_acknowledged_as_a_duplicate() {
        let root = scratch("resent");
        let config = SpoolConfig {
            quota_bytes: 12,
            max_instance_bytes: 8,
        };
        let (mut spool, _) = Spool::open(&root, config).unwrap();
        store(&mut spool, "1.2.3.4", &[b"123456"]).unwrap();
        assert_eq!(
            store(&mut spool, "1.2.3.5", &[b"1234567"])
                .unwrap_err()
                .code(),
            "SPOOL_FULL"
        );
        // The same instance again needs room only while it streams, and
        // commit does not refuse it for the quota: the sender gets its ack.
        let d = store(&mut spool, "1.2.3.4", &[b"123", b"456"]).unwrap();
        assert_eq!(d, Durable::Duplicate { of: 1 });
        assert_eq!(spool.used_bytes(), 6);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
