//! The publication log (`results/publications.jsonl`): one fsynced line per
//! study version, in the order the versions were published, each with a
//! sequence number and the summary a list shows. It is the change feed's
//! cursor (a version published late, after a retry or a re-run, still comes
//! after everything a client has read) and the index that study lists are
//! served from, without reading every result file.
//!
//! One writer (the worker) appends; readers (the HTTP side) tail the file,
//! taking whole lines only. A torn last line (a power cut mid-append) is
//! ignored by readers and cut by the writer before its next line; a line
//! that does not parse is skipped and counted, never fatal.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cxr_report::result::{Finding, Flag, StudyOutcome, StudyResult};
use serde::{Deserialize, Serialize};

use crate::files::append_line;
use crate::SpoolError;

/// One published study version, as lists and the change feed show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// 1, 2, 3, ... in publication order: the change feed's cursor.
    pub seq: u64,
    pub published_unix_ms: u64,
    pub study_instance_uid: String,
    pub version: u32,
    pub outcome: StudyOutcome,
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// [`StudyResult::findings_summary`].
    pub summary: String,
    /// When the study's last instance arrived.
    pub completed_unix_ms: u64,
    pub accession_number: Option<String>,
    pub study_date: Option<String>,
    /// The labels called present.
    pub present: Vec<String>,
    pub reason: Option<String>,
    pub instances: usize,
}

impl Publication {
    fn of(result: &StudyResult, seq: u64, published_unix_ms: u64) -> Publication {
        Publication {
            seq,
            published_unix_ms,
            study_instance_uid: result.study_instance_uid.clone(),
            version: result.version,
            outcome: result.outcome,
            flags: result.flags.clone(),
            summary: result.findings_summary(),
            completed_unix_ms: result.completed_unix_ms,
            accession_number: result.header.accession_number.clone(),
            study_date: result.header.study_date.clone(),
            present: result
                .labels
                .iter()
                .filter(|l| l.finding == Finding::Present)
                .map(|l| l.label.clone())
                .collect(),
            reason: result.reason.as_ref().map(|r| r.code.clone()),
            instances: result.instances.len(),
        }
    }
}

/// What has been read of the file so far.
#[derive(Debug, Default)]
struct Tail {
    /// The file read (its inode): a compaction replaces it, and a reader
    /// then starts again from the top.
    inode: Option<u64>,
    /// Bytes of whole lines read.
    offset: u64,
    all: Vec<Publication>,
    /// Whole lines that did not parse (left out).
    skipped: u64,
    /// The highest sequence number a compaction saw.
    floor: u64,
}

impl Tail {
    /// The highest sequence number given so far.
    fn highest(&self) -> u64 {
        self.all.last().map_or(0, |p| p.seq).max(self.floor)
    }
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    /// Written first by a compaction.
    Floor {
        floor_seq: u64,
    },
    Published(Publication),
}

/// The log, tailed: each call reads only what was appended since the last.
#[derive(Debug)]
pub struct PublicationLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

/// Longest line taken: a longer one is damage, skipped.
const MAX_LINE: usize = 64 * 1024;

impl PublicationLog {
    /// The log of `results_dir` (created by the first append).
    pub fn new(results_dir: &Path) -> PublicationLog {
        PublicationLog {
            path: results_dir.join("publications.jsonl"),
            tail: Mutex::new(Tail::default()),
        }
    }

    /// Read what was appended since the last call.
    fn refreshed(&self) -> Result<MutexGuard<'_, Tail>, SpoolError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tail),
            Err(e) => return Err(SpoolError::io("opening", &self.path, e)),
        };
        let inode = std::os::unix::fs::MetadataExt::ino(
            &file
                .metadata()
                .map_err(|e| SpoolError::io("reading", &self.path, e))?,
        );
        if tail.inode != Some(inode) {
            *tail = Tail {
                inode: Some(inode),
                ..Tail::default()
            };
        }
        let mut fresh = Vec::new();
        file.seek(SeekFrom::Start(tail.offset))
            .and_then(|_| file.read_to_end(&mut fresh))
            .map_err(|e| SpoolError::io("reading", &self.path, e))?;
        let whole = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in fresh[..whole].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match (line.len() <= MAX_LINE)
                .then(|| serde_json::from_slice::<Line>(line).ok())
                .flatten()
            {
                Some(Line::Published(p)) => tail.all.push(p),
                Some(Line::Floor { floor_seq }) => tail.floor = tail.floor.max(floor_seq),
                None => tail.skipped += 1,
            }
        }
        tail.offset += whole as u64;
        Ok(tail)
    }

    /// Log `result` as published now, unless that version is already
    /// logged (a crash between writing it and logging it, then a restart).
    pub fn append(
        &self,
        result: &StudyResult,
        now_unix_ms: u64,
    ) -> Result<Publication, SpoolError> {
        let mut tail = self.refreshed()?;
        if let Some(p) = tail.all.iter().find(|p| {
            p.study_instance_uid == result.study_instance_uid && p.version == result.version
        }) {
            return Ok(p.clone());
        }
        let seq = tail.highest() + 1;
        let publication = Publication::of(result, seq, now_unix_ms);
        let mut line = serde_json::to_vec(&publication)
            .map_err(|e| SpoolError::io("encoding", &self.path, e))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SpoolError::io("opening", &self.path, e))?;
        // A torn line left by a power cut goes before the next is written.
        file.set_len(tail.offset)
            .map_err(|e| SpoolError::io("cutting the torn tail of", &self.path, e))?;
        append_line(&mut file, &line)
            .map_err(|e| SpoolError::io("appending to", &self.path, e.error))?;
        tail.offset += line.len() as u64;
        tail.all.push(publication.clone());
        Ok(publication)
    }

    /// Rewrite the log without the lines of studies for which `forget`
    /// holds (their results were pruned). A first line keeps the highest
    /// sequence number given, so the sequence goes on from where it was.
    /// Returns the log's length (bytes) before and after.
    pub fn compact(&self, forget: impl Fn(&str) -> bool) -> Result<(u64, u64), SpoolError> {
        let mut tail = self.refreshed()?;
        let before = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let floor = tail.highest();
        let kept: Vec<Publication> = tail
            .all
            .iter()
            .filter(|p| !forget(&p.study_instance_uid))
            .cloned()
            .collect();
        if kept.len() == tail.all.len() && tail.skipped == 0 {
            return Ok((before, before));
        }
        let lines = std::iter::once(Line::Floor { floor_seq: floor })
            .chain(kept.iter().cloned().map(Line::Published));
        let rewritten = crate::files::rewrite_journal(&self.path, lines)?;
        let inode = rewritten
            .file
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok();
        *tail = Tail {
            inode,
            offset: rewritten.len,
            all: kept,
            skipped: 0,
            floor,
        };
        Ok((before, rewritten.len))
    }

    /// Versions published after `seq`, oldest first, at most `limit`.
    pub fn since(&self, seq: u64, limit: usize) -> Result<Vec<Publication>, SpoolError> {
        let tail = self.refreshed()?;
        let start = tail.all.partition_point(|p| p.seq <= seq);
        Ok(tail.all[start..].iter().take(limit).cloned().collect())
    }

    /// The latest logged version of every study.
    pub fn latest(&self) -> Result<BTreeMap<String, Publication>, SpoolError> {
        let tail = self.refreshed()?;
        let mut out: BTreeMap<String, Publication> = BTreeMap::new();
        for p in &tail.all {
            let newer = out
                .get(&p.study_instance_uid)
                .is_none_or(|q| q.version <= p.version);
            if newer {
                out.insert(p.study_instance_uid.clone(), p.clone());
            }
        }
        Ok(out)
    }

    /// The highest sequence number given so far (0 for none).
    pub fn last_seq(&self) -> Result<u64, SpoolError> {
        Ok(self.refreshed()?.highest())
    }

    /// Lines that did not parse so far.
    pub fn skipped(&self) -> Result<u64, SpoolError> {
        Ok(self.refreshed()?.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cxr-pub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    fn result(uid: &str, version: u32, completed: u64) -> StudyResult {
        let text = format!(
            r#"{{"schema":"s","study_instance_uid":"{uid}","header":{{}},"version":{version},
            "previous":null,"completed_unix_ms":{completed},"outcome":"decision","labels":[],
            "reason":null,"decided_by":[],"instances":[],"model":null}}"#
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_feed_follows_publication_not_arrival_and_a_reader_sees_each_once() {
        let dir = scratch("order");
        let writer = PublicationLog::new(&dir);
        let reader = PublicationLog::new(&dir);
        // B arrived first but published second.
        writer
            .append(&result("A", 1, 2000), 10)
            .unwrap_or_else(|e| panic!("{e}"));
        let first = reader.since(0, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.len(), 1);
        writer
            .append(&result("B", 1, 1000), 20)
            .unwrap_or_else(|e| panic!("{e}"));
        writer
            .append(&result("A", 2, 3000), 30)
            .unwrap_or_else(|e| panic!("{e}"));
        // Logged again after a crash: nothing new.
        let again = writer
            .append(&result("B", 1, 1000), 40)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.seq, 2);
        let next = reader
            .since(first[0].seq, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<(&str, u32)> = next
            .iter()
            .map(|p| (p.study_instance_uid.as_str(), p.version))
            .collect();
        assert_eq!(seen, vec![("B", 1), ("A", 2)]);
        let latest = reader.latest().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(latest["A"].version, 2);
        assert_eq!(reader.since(3, 10).map(|v| v.len()).ok(), Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_forgets_pruned_studies_keeps_the_sequence_and_readers_follow() {
        let dir = scratch("compact");
        let writer = PublicationLog::new(&dir);
        let reader = PublicationLog::new(&dir);
        for (uid, at) in [("OLD", 1), ("KEPT", 2), ("OLD2", 3)] {
            writer
                .append(&result(uid, 1, at), at)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(reader.since(0, 10).map(|v| v.len()).ok(), Some(3));
        let (before, after) = writer
            .compact(|uid| uid.starts_with("OLD"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(after < before);
        let next = writer
            .append(&result("NEW", 1, 4), 4)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next.seq, 4, "the sequence goes on");
        // A reader that had read the old file reads the new one whole.
        let seen: Vec<(String, u64)> = reader
            .since(0, 10)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|p| (p.study_instance_uid, p.seq))
            .collect();
        assert_eq!(seen, vec![("KEPT".into(), 2), ("NEW".into(), 4)]);
        // And after a restart.
        let reopened = PublicationLog::new(&dir);
        let p = reopened
            .append(&result("LATER", 1, 5), 5)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.seq, 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_or_damaged_line_is_left_out_and_the_next_append_follows_whole_lines() {
        let dir = scratch("torn");
        let log = PublicationLog::new(&dir);
        log.append(&result("A", 1, 1), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("publications.jsonl"))
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{not json}\n{\"seq\":9")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let writer = PublicationLog::new(&dir);
        let p = writer
            .append(&result("B", 1, 2), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.seq, 2);
        let reader = PublicationLog::new(&dir);
        let all = reader.since(0, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(reader.skipped().ok(), Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
