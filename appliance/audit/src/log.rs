//! The append side: open (with torn-tail recovery), append with fsync,
//! rotation by size, and the size budget.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::frame::{self, Frame, FRAME_OVERHEAD, HEADER_BYTES, MAX_PAYLOAD};
use crate::torn::{self, sync_dir, TornTail};
use crate::writer_lock::{self, WriterLock};
use crate::{AuditError, Event, Record};

/// Size and durability policy (from the board profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    pub segment_bytes: u64,
    pub max_total_bytes: u64,
    /// fsync every record before `append` returns.
    pub fsync_every_record: bool,
    /// How long `open` waits for another writer to release the log.
    pub lock_wait_ms: u64,
}

/// The wait for another writer that the appliance uses.
pub const DEFAULT_LOCK_WAIT_MS: u64 = 10_000;

/// Room kept free for one more record when a study is admitted.
pub const RESERVE_BYTES: u64 = (MAX_PAYLOAD + FRAME_OVERHEAD + HEADER_BYTES) as u64;

#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    config: AuditConfig,
    file: File,
    index: u64,
    len: u64,
    total: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    crash_hook: Option<fn(&'static str)>,
    /// Why the last append failed to write (cleared by one that succeeds):
    /// a log that cannot take a record makes the service not ready.
    last_write_failure: Option<(&'static str, String)>,
    /// Held until the log is dropped: no other process appends meanwhile.
    _writer: WriterLock,
}

/// The segment indexes present, sorted.
pub fn segments(dir: &Path) -> Result<Vec<u64>, AuditError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| AuditError::io("listing", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| AuditError::io("listing", dir, e))?;
        if let Some(i) = e.file_name().to_str().and_then(frame::parse_segment_name) {
            out.push(i);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Scan a segment's frames. Returns (last seq and hash, offset after the last
/// whole frame, the first problem if any, and the kept files whose torn
/// tails this segment reports).
struct Scan {
    last: Option<(u64, [u8; 32])>,
    good_end: usize,
    problem: Option<Problem>,
    torn_reports: Vec<String>,
}

enum Problem {
    Incomplete,
    BadLastFrame,
    Damaged(String),
}

fn scan(bytes: &[u8], mut expect: Option<(u64, [u8; 32])>) -> Scan {
    let mut at = HEADER_BYTES;
    let mut last = None;
    let mut torn_reports = Vec::new();
    while at < bytes.len() {
        match frame::read(bytes, at) {
            Frame::Incomplete => {
                return Scan {
                    last,
                    good_end: at,
                    problem: Some(Problem::Incomplete),
                    torn_reports,
                }
            }
            Frame::Bad { end } => {
                let problem = if end == bytes.len() {
                    Problem::BadLastFrame
                } else {
                    Problem::Damaged("a record's digest does not match its bytes".into())
                };
                return Scan {
                    last,
                    good_end: at,
                    problem: Some(problem),
                    torn_reports,
                };
            }
            Frame::Whole { payload, hash, end } => {
                let record: Result<Record, _> = postcard::from_bytes(payload);
                let chained = match (&record, expect) {
                    (Ok(r), Some((seq, h))) => r.seq == seq + 1 && r.prev == h,
                    (Ok(_), None) => true,
                    (Err(_), _) => false,
                };
                if !chained {
                    return Scan {
                        last,
                        good_end: at,
                        problem: Some(Problem::Damaged(
                            "a record does not decode or does not chain to the one before".into(),
                        )),
                        torn_reports,
                    };
                }
                if let Ok(r) = record {
                    last = Some((r.seq, hash));
                    expect = last;
                    if let Event::TornTailRecovered { kept_as, .. } = r.event {
                        if let Some(name) = torn::file_name(Path::new(&kept_as)) {
                            torn_reports.push(name.to_owned());
                        }
                    }
                }
                at = end;
            }
        }
    }
    Scan {
        last,
        good_end: at,
        problem: None,
        torn_reports,
    }
}

/// Board profiles allow segments up to 256 MiB; one record may overshoot.
pub const MAX_SEGMENT_BYTES: u64 = (256 << 20) + RESERVE_BYTES;

/// Read a segment, refusing one larger than this log could have written.
pub(crate) fn read_segment(path: &Path, max: u64) -> Result<Vec<u8>, AuditError> {
    use std::io::Read;
    let limit = max + RESERVE_BYTES;
    let io = |e| AuditError::io("reading", path, e);
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let too_big = |size| AuditError::Damaged {
        path: path.to_owned(),
        offset: size,
        problem: "segment is larger than any segment this log writes".into(),
    };
    if size > limit {
        return Err(too_big(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

impl AuditLog {
    /// Open the log in `dir`, creating it if needed. A partial record at the
    /// very end of the last segment (a write cut by power loss: it was never
    /// acknowledged) is cut off, its bytes kept under `torn/`, and reported
    /// in the log itself by a `TornTailRecovered` record stamped
    /// `now_unix_ms`; so is any tail an earlier start cut but died before
    /// reporting. Returns the tails reported by this start.
    /// Damage anywhere else refuses to open: nothing is truncated then.
    ///
    /// The log is locked against other writers first (waiting up to
    /// `config.lock_wait_ms`, then [`AuditError::Locked`]), so recovery never
    /// cuts a record another process is still writing.
    pub fn open(
        dir: &Path,
        config: AuditConfig,
        now_unix_ms: u64,
    ) -> Result<(Self, Vec<TornTail>), AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io("creating", dir, e))?;
        let writer =
            writer_lock::acquire(dir, std::time::Duration::from_millis(config.lock_wait_ms))?;
        let present = segments(dir)?;
        let mut total = 0u64;
        for i in &present {
            let p = dir.join(frame::segment_name(*i));
            total += std::fs::metadata(&p)
                .map_err(|e| AuditError::io("reading", &p, e))?
                .len();
        }
        let Some(&index) = present.last() else {
            let mut log = AuditLog {
                dir: dir.to_owned(),
                config,
                file: File::open(dir).map_err(|e| AuditError::io("opening", dir, e))?,
                index: 0,
                len: 0,
                total: 0,
                next_seq: 0,
                last_hash: [0; 32],
                crash_hook: None,
                last_write_failure: None,
                _writer: writer,
            };
            log.start_segment(1)?;
            return Ok((log, Vec::new()));
        };
        let path = dir.join(frame::segment_name(index));
        let bytes = read_segment(&path, config.segment_bytes)?;
        let header = frame::header(index);
        let torn_dir = dir.join("torn");
        let mut keep = bytes.len();
        if bytes.len() < HEADER_BYTES {
            if !header.starts_with(&bytes) {
                return Err(damaged(&path, 0, "segment header is not an audit header"));
            }
            keep = 0;
        } else if bytes[..HEADER_BYTES] != header {
            return Err(damaged(
                &path,
                0,
                "segment header does not match its file name",
            ));
        }
        let mut last = None;
        let mut reported = Vec::new();
        if keep > 0 {
            let s = scan(&bytes, None);
            last = s.last;
            reported = s.torn_reports;
            match s.problem {
                None => {}
                Some(Problem::Incomplete) | Some(Problem::BadLastFrame) => keep = s.good_end,
                Some(Problem::Damaged(p)) => return Err(damaged(&path, s.good_end as u64, &p)),
            }
        }
        if keep < bytes.len() {
            // Kept durably before the cut, so the cut never loses bytes.
            torn::keep(&torn_dir, index, keep as u64, &bytes[keep..])?;
            total -= (bytes.len() - keep) as u64;
        }
        // The chain continues from the last record of this segment, or of
        // the one before when this one holds none yet.
        if last.is_none() && index > 1 {
            let prev_path = dir.join(frame::segment_name(index - 1));
            let prev = read_segment(&prev_path, config.segment_bytes)?;
            let s = scan(&prev, None);
            if s.problem.is_some() {
                return Err(damaged(
                    &prev_path,
                    s.good_end as u64,
                    "the previous segment does not end cleanly",
                ));
            }
            last = s.last;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io("opening", &path, e))?;
        let mut log = AuditLog {
            dir: dir.to_owned(),
            config,
            file,
            index,
            len: keep as u64,
            total,
            next_seq: last.map_or(0, |(s, _)| s + 1),
            last_hash: last.map_or([0; 32], |(_, h)| h),
            crash_hook: None,
            last_write_failure: None,
            _writer: writer,
        };
        if keep < bytes.len() {
            log.file
                .set_len(keep as u64)
                .and_then(|()| log.file.sync_all())
                .map_err(|e| AuditError::io("truncating", &path, e))?;
        }
        if keep == 0 {
            // The header itself was torn: write it again.
            log.write_header()?;
        }
        let mut reported_now = Vec::new();
        for t in torn::owed(&torn_dir)? {
            // A report already appended by a start that died before marking
            // it is the last thing in the log; it is not repeated.
            let name = torn::file_name(&t.kept_as);
            if !reported.iter().any(|r| Some(r.as_str()) == name) {
                log.append(
                    now_unix_ms,
                    Event::TornTailRecovered {
                        segment: t.segment,
                        offset: t.offset,
                        bytes: t.bytes,
                        kept_as: t.kept_as.display().to_string(),
                    },
                )?;
            }
            torn::mark_reported(&t)?;
            reported_now.push(t);
        }
        Ok((log, reported_now))
    }

    fn write_header(&mut self) -> Result<(), AuditError> {
        let path = self.dir.join(frame::segment_name(self.index));
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(&frame::header(self.index)))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| AuditError::io("writing", &path, e))?;
        self.len = HEADER_BYTES as u64;
        self.total += HEADER_BYTES as u64;
        sync_dir(&self.dir)
    }

    fn start_segment(&mut self, index: u64) -> Result<(), AuditError> {
        let path = self.dir.join(frame::segment_name(index));
        self.file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| AuditError::io("creating", &path, e))?;
        self.index = index;
        self.write_header()
    }

    /// Crash-safety tests: with a hook set, each record is written in two
    /// halves with the hook (`"audit:partial-record"`) called between them,
    /// so a test can kill the process with half a record on disk, as a power
    /// loss would leave it.
    pub fn set_crash_hook(&mut self, hook: fn(&'static str)) {
        self.crash_hook = Some(hook);
    }

    /// SHA-256 of the last record written (zeros before the first): the
    /// head that `verify` reports and the next record chains to.
    pub fn head(&self) -> [u8; 32] {
        self.last_hash
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes used by all segments.
    pub fn used_bytes(&self) -> u64 {
        self.total
    }

    /// Whether one more record certainly fits: checked before a study is
    /// admitted, so a study is refused rather than processed and not logged.
    pub fn ensure_room(&self) -> Result<(), AuditError> {
        if self.total + RESERVE_BYTES > self.config.max_total_bytes {
            return Err(AuditError::Full {
                used: self.total,
                max: self.config.max_total_bytes,
            });
        }
        Ok(())
    }

    /// Append one record; with `fsync_every_record` it is on stable storage
    /// when this returns. On a failed write the segment is cut back to its
    /// last whole record.
    pub fn append(&mut self, time_unix_ms: u64, event: Event) -> Result<u64, AuditError> {
        let result = self.append_record(time_unix_ms, event);
        match &result {
            Ok(_) => self.last_write_failure = None,
            Err(e @ (AuditError::Io { .. } | AuditError::Full { .. })) => {
                self.last_write_failure = Some((e.code(), e.to_string()));
            }
            Err(_) => {}
        }
        result
    }

    /// Whether the log can take the next record: room for it, and the last
    /// write did not fail. `Err` holds the stable code and the message.
    pub fn takes_records(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self.ensure_room() {
            return Err((e.code(), e.to_string()));
        }
        match &self.last_write_failure {
            Some((code, message)) => Err((code, message.clone())),
            None => Ok(()),
        }
    }

    fn append_record(&mut self, time_unix_ms: u64, event: Event) -> Result<u64, AuditError> {
        let record = Record {
            seq: self.next_seq,
            time_unix_ms,
            prev: self.last_hash,
            event,
        };
        let payload = postcard::to_allocvec(&record).map_err(|e| AuditError::Damaged {
            path: self.dir.clone(),
            offset: 0,
            problem: format!("record does not encode: {e}"),
        })?;
        if payload.len() > MAX_PAYLOAD {
            return Err(AuditError::RecordTooLarge {
                size: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let bytes = frame::encode(&payload);
        let rotate = self.len + bytes.len() as u64 > self.config.segment_bytes
            && self.len > HEADER_BYTES as u64;
        let extra = if rotate { HEADER_BYTES as u64 } else { 0 };
        if self.total + extra + bytes.len() as u64 > self.config.max_total_bytes {
            return Err(AuditError::Full {
                used: self.total,
                max: self.config.max_total_bytes,
            });
        }
        if rotate {
            self.start_segment(self.index + 1)?;
        }
        let path = self.dir.join(frame::segment_name(self.index));
        let written = match self.crash_hook {
            None => self.file.write_all(&bytes),
            Some(hook) => {
                let half = bytes.len() / 2;
                let first = self
                    .file
                    .write_all(&bytes[..half])
                    .and_then(|()| self.file.sync_data());
                hook("audit:partial-record");
                first.and_then(|()| self.file.write_all(&bytes[half..]))
            }
        };
        let written = written.and_then(|()| {
            if self.config.fsync_every_record {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut back so the log ends on a whole record (ENOSPC, EIO).
            let _ = self.file.set_len(self.len);
            return Err(AuditError::io("appending to", &path, e));
        }
        self.len += bytes.len() as u64;
        self.total += bytes.len() as u64;
        self.last_hash = Sha256::digest(&payload).into();
        self.next_seq += 1;
        Ok(record.seq)
    }
}

fn damaged(path: &Path, offset: u64, problem: &str) -> AuditError {
    AuditError::Damaged {
        path: path.to_owned(),
        offset,
        problem: problem.to_owned(),
    }
}
