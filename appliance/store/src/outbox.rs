//! The outbox: store-and-forward of result SRs to each configured
//! destination. Every (result, destination) pair is an entry in an
//! append-only journal (`outbox/journal.jsonl`, each line fsynced), so the
//! outbox survives restarts and power loss. Retries back off exponentially
//! (from `retry_initial` up to `retry_max`) for `retention`, then the entry
//! is dead-lettered: visible in `outbox list`, audited, retried only on a
//! field engineer's `outbox retry`. A retry sends the same file, so the
//! same SOP Instance UID: a PACS deduplicates it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::files::{append_line, create_dir, lock_folder, open_journal, read_lines, sync_dir};
use crate::SpoolError;

/// The state of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Pending,
    Delivered,
    /// Retention ran out: no more automatic retries.
    Dead,
    /// Dropped by a field engineer.
    Dropped,
}

impl EntryState {
    /// The word `outbox list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Delivered => "delivered",
            EntryState::Dead => "dead",
            EntryState::Dropped => "dropped",
        }
    }
}

/// What an entry sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// The DICOM file (an SR or a Secondary Capture), by C-STORE or STOW-RS.
    #[default]
    Dicom,
    /// The study result version (its JSON), as a FHIR transaction Bundle.
    FhirResult,
}

/// One object to queue: a file of a study version and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Relative to the state directory.
    pub file: PathBuf,
    pub sop_class_uid: String,
    /// For a FHIR result, the result identifier (the SR's instance UID).
    pub sop_instance_uid: String,
    pub payload: Payload,
}

/// One (result, destination) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// The study folder (a digest of the Study Instance UID) and version.
    pub study_key: String,
    pub version: u32,
    /// The SR file, relative to the state directory.
    pub file: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub destination: String,
    #[serde(default)]
    pub payload: Payload,
    pub created_unix_ms: u64,
    pub state: EntryState,
    pub attempts: u32,
    pub next_attempt_unix_ms: u64,
    pub last_error: Option<String>,
    /// When it was delivered or dropped.
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Enqueue(Entry),
    Attempt {
        id: u64,
        at_unix_ms: u64,
        error: String,
    },
    Delivered {
        id: u64,
        at_unix_ms: u64,
        status: u16,
    },
    Dead {
        id: u64,
        at_unix_ms: u64,
    },
    Retry {
        id: u64,
        at_unix_ms: u64,
    },
    Drop {
        id: u64,
        at_unix_ms: u64,
    },
    /// Written first by a compaction: ids below this were given.
    Floor {
        next_id: u64,
    },
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub retention: Duration,
}

impl Default for RetryPolicy {
    /// 30 s doubling to 1 h, for 14 days.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            retention: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failure.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What an attempt changed, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Delivered { status: u16 },
    WillRetry { in_ms: u64 },
    Dead,
}

/// The outbox of one state directory. One owner at a time (its lock).
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    journal: File,
    _lock: File,
    entries: BTreeMap<u64, Entry>,
    /// Ids below this were given (entries since compacted away).
    floor: u64,
    /// Set when a failed append could not be cut back: nothing more is
    /// written until the service restarts (and replays what is whole).
    poisoned: Option<String>,
}

impl Outbox {
    /// Open (or create) `root/outbox`; a torn last line is cut.
    pub fn open(root: &Path) -> Result<Outbox, SpoolError> {
        let dir = root.join("outbox");
        create_dir(&dir)?;
        let lock = lock_folder(&dir)?;
        let path = dir.join("journal.jsonl");
        let mut journal = open_journal(&path)?;
        sync_dir(&dir)?;
        let (entries, floor) = replay(&mut journal, &path)?;
        Ok(Outbox {
            path,
            journal,
            _lock: lock,
            entries,
            floor,
            poisoned: None,
        })
    }

    fn append(&mut self, line: &Line) -> Result<(), SpoolError> {
        if let Some(reason) = &self.poisoned {
            return Err(SpoolError::Poisoned {
                reason: reason.clone(),
            });
        }
        let mut bytes =
            serde_json::to_vec(line).map_err(|e| SpoolError::io("encoding", &self.path, e))?;
        bytes.push(b'\n');
        if let Err(e) = append_line(&mut self.journal, &bytes) {
            self.poisoned = e.poisoned;
            return Err(SpoolError::io("appending to", &self.path, e.error));
        }
        apply(&mut self.entries, line.clone());
        Ok(())
    }

    /// Put off an entry's next attempt (in memory too, so that a journal
    /// that cannot be written does not make the sender spin).
    fn defer(&mut self, id: u64, until_unix_ms: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.next_attempt_unix_ms = until_unix_ms;
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn entry(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Queue `object` for `destination` unless that pair is already queued
    /// (in any state): calling it again after a crash adds nothing.
    pub fn ensure(
        &mut self,
        study_key: &str,
        version: u32,
        object: &Outgoing,
        destination: &str,
        now_unix_ms: u64,
    ) -> Result<bool, SpoolError> {
        let known = self.entries.values().any(|e| {
            e.sop_instance_uid == object.sop_instance_uid
                && e.payload == object.payload
                && e.destination == destination
        });
        if known {
            return Ok(false);
        }
        let id = self.next_id();
        self.append(&Line::Enqueue(Entry {
            id,
            study_key: study_key.to_owned(),
            version,
            file: object.file.clone(),
            sop_class_uid: object.sop_class_uid.clone(),
            sop_instance_uid: object.sop_instance_uid.clone(),
            destination: destination.to_owned(),
            payload: object.payload,
            created_unix_ms: now_unix_ms,
            state: EntryState::Pending,
            attempts: 0,
            next_attempt_unix_ms: now_unix_ms,
            last_error: None,
            finished_unix_ms: None,
        }))?;
        Ok(true)
    }

    /// For every study with entries: when its last entry was delivered or
    /// dropped, or `None` while any is pending or dead.
    pub fn settled_studies(&self) -> BTreeMap<String, Option<u64>> {
        let mut out: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for e in self.entries.values() {
            let finished = match e.state {
                EntryState::Delivered | EntryState::Dropped => e.finished_unix_ms,
                EntryState::Pending | EntryState::Dead => None,
            };
            let slot = out.entry(e.study_key.clone()).or_insert(Some(0));
            *slot = match (*slot, finished) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        out
    }

    /// Pending entries due at `now`, oldest first.
    /// The pending entries that may go now or later: per study and
    /// destination, only the oldest pending version (a newer one waits
    /// while an older is pending; delivered or dead-lettered lets it go),
    /// and never one older than a version already delivered there (a retried
    /// dead letter must not overwrite a newer result).
    fn sendable(&self) -> impl Iterator<Item = &Entry> {
        type Key<'a> = (&'a str, &'a str);
        let mut oldest_pending: HashMap<Key<'_>, u32> = HashMap::new();
        let mut newest_delivered: HashMap<Key<'_>, u32> = HashMap::new();
        for e in self.entries.values() {
            let key = (e.study_key.as_str(), e.destination.as_str());
            match e.state {
                EntryState::Pending => {
                    let v = oldest_pending.entry(key).or_insert(e.version);
                    *v = (*v).min(e.version);
                }
                EntryState::Delivered => {
                    let v = newest_delivered.entry(key).or_insert(e.version);
                    *v = (*v).max(e.version);
                }
                _ => {}
            }
        }
        self.entries.values().filter(move |e| {
            let key = (e.study_key.as_str(), e.destination.as_str());
            e.state == EntryState::Pending
                && oldest_pending.get(&key) == Some(&e.version)
                && newest_delivered.get(&key).is_none_or(|d| *d <= e.version)
        })
    }

    /// Entries due at `now_unix_ms` (see [`Outbox::sendable`]).
    pub fn due(&self, now_unix_ms: u64) -> Vec<Entry> {
        self.sendable()
            .filter(|e| e.next_attempt_unix_ms <= now_unix_ms)
            .cloned()
            .collect()
    }

    /// When the next sendable entry is due.
    pub fn next_due(&self) -> Option<u64> {
        self.sendable().map(|e| e.next_attempt_unix_ms).min()
    }

    /// Record how an attempt ended.
    pub fn record(
        &mut self,
        id: u64,
        outcome: Result<u16, String>,
        policy: &RetryPolicy,
        now_unix_ms: u64,
    ) -> Result<Change, SpoolError> {
        let Some(entry) = self.entries.get(&id).cloned() else {
            return Err(SpoolError::io(
                "recording",
                &self.path,
                format!("no outbox entry {id}"),
            ));
        };
        let in_ms = policy.backoff(entry.attempts + 1).as_millis() as u64;
        let later = now_unix_ms.saturating_add(in_ms);
        let result = match outcome {
            Ok(status) => self
                .append(&Line::Delivered {
                    id,
                    at_unix_ms: now_unix_ms,
                    status,
                })
                .map(|()| Change::Delivered { status }),
            Err(error) => self
                .failed(&entry, error, policy, now_unix_ms)
                .map(|change| {
                    if change == Change::Dead {
                        change
                    } else {
                        Change::WillRetry { in_ms }
                    }
                }),
        };
        match result {
            Ok(Change::Delivered { .. }) => {
                self.destination_answers(&entry.destination, now_unix_ms)
            }
            Ok(Change::Dead) => {}
            _ => self.defer(id, later),
        }
        result
    }

    /// A destination that took a file is up again: its backed-off entries
    /// are due now rather than after their (up to `retry_max`) wait.
    fn destination_answers(&mut self, destination: &str, now_unix_ms: u64) {
        for e in self.entries.values_mut() {
            if e.state == EntryState::Pending && e.destination == destination {
                e.next_attempt_unix_ms = e.next_attempt_unix_ms.min(now_unix_ms);
            }
        }
    }

    fn failed(
        &mut self,
        entry: &Entry,
        error: String,
        policy: &RetryPolicy,
        now_unix_ms: u64,
    ) -> Result<Change, SpoolError> {
        let id = entry.id;
        self.append(&Line::Attempt {
            id,
            at_unix_ms: now_unix_ms,
            error,
        })?;
        let age = now_unix_ms.saturating_sub(entry.created_unix_ms);
        if age >= policy.retention.as_millis() as u64 {
            self.append(&Line::Dead {
                id,
                at_unix_ms: now_unix_ms,
            })?;
            return Ok(Change::Dead);
        }
        Ok(Change::WillRetry { in_ms: 0 })
    }

    /// A field engineer's retry of a dead letter: pending again, due now,
    /// with a fresh retention period. Anything else is refused: a dropped
    /// entry stays dropped (its input may be gone), a delivered one is
    /// there, a pending one is already being tried.
    pub fn retry(&mut self, id: u64, now_unix_ms: u64) -> Result<(), SpoolError> {
        self.known(id)?;
        self.in_state(id, &[EntryState::Dead], "retried")?;
        // A newer version already at that destination: sending this one
        // would put an older result over it.
        let newer = self.entries.get(&id).and_then(|e| {
            self.entries.values().find(|o| {
                o.state == EntryState::Delivered
                    && o.study_key == e.study_key
                    && o.destination == e.destination
                    && o.version > e.version
            })
        });
        if let Some(newer) = newer {
            return Err(SpoolError::io(
                "retrying",
                &self.path,
                format!("entry {id} is superseded: version {} of its study already reached {} (fix: nothing to send; drop it with `outbox drop {id}`)", newer.version, newer.destination),
            ));
        }
        self.append(&Line::Retry {
            id,
            at_unix_ms: now_unix_ms,
        })
    }

    /// A field engineer's drop of an entry not yet delivered: never sent
    /// again.
    pub fn drop_entry(&mut self, id: u64, now_unix_ms: u64) -> Result<(), SpoolError> {
        self.known(id)?;
        self.in_state(id, &[EntryState::Pending, EntryState::Dead], "dropped")?;
        self.append(&Line::Drop {
            id,
            at_unix_ms: now_unix_ms,
        })
    }

    /// Rewrite the journal as one line per entry in its current state,
    /// leaving out the delivered or dropped entries for which `forget`
    /// holds (their study's results were pruned). A first line keeps the
    /// next id, so an id is never given twice. Returns the journal's length
    /// (bytes) before and after.
    pub fn compact(&mut self, forget: impl Fn(&Entry) -> bool) -> Result<(u64, u64), SpoolError> {
        if let Some(reason) = &self.poisoned {
            return Err(SpoolError::Poisoned {
                reason: reason.clone(),
            });
        }
        let before = self
            .journal
            .metadata()
            .map_err(|e| SpoolError::io("reading", &self.path, e))?
            .len();
        let next_id = self.next_id();
        self.entries.retain(|_, e| {
            !(matches!(e.state, EntryState::Delivered | EntryState::Dropped) && forget(e))
        });
        self.floor = next_id;
        let lines = std::iter::once(Line::Floor { next_id })
            .chain(self.entries.values().cloned().map(Line::Enqueue));
        let rewritten = crate::files::rewrite_journal(&self.path, lines)?;
        self.journal = rewritten.file;
        if let Some(reason) = rewritten.unsynced {
            self.poisoned = Some(format!(
                "the compacted journal may not be durable: {reason}"
            ));
        }
        Ok((before, rewritten.len))
    }

    /// The id the next entry gets.
    fn next_id(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .map_or(1, |k| k + 1)
            .max(self.floor)
    }

    /// Drop every undelivered entry whose destination is no longer among
    /// `configured` (the board's list changed): they would never be sent.
    /// Returns the entries dropped, for the audit log.
    pub fn drop_removed_destinations(
        &mut self,
        configured: &[String],
        now_unix_ms: u64,
    ) -> Result<Vec<Entry>, SpoolError> {
        let removed: Vec<Entry> = self
            .entries
            .values()
            .filter(|e| matches!(e.state, EntryState::Pending | EntryState::Dead))
            .filter(|e| !configured.contains(&e.destination))
            .cloned()
            .collect();
        for e in &removed {
            self.append(&Line::Drop {
                id: e.id,
                at_unix_ms: now_unix_ms,
            })?;
        }
        Ok(removed)
    }

    fn in_state(&self, id: u64, allowed: &[EntryState], verb: &str) -> Result<(), SpoolError> {
        match self.entries.get(&id) {
            Some(e) if !allowed.contains(&e.state) => Err(SpoolError::io(
                "changing",
                &self.path,
                format!(
                    "entry {id} is {}: only {} entries are {verb} (fix: see `outbox list`)",
                    e.state.as_str(),
                    allowed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
            _ => Ok(()),
        }
    }

    fn known(&self, id: u64) -> Result<(), SpoolError> {
        if self.entries.contains_key(&id) {
            Ok(())
        } else {
            Err(SpoolError::io(
                "changing",
                &self.path,
                format!("no outbox entry {id} (fix: see `outbox list`)"),
            ))
        }
    }
}

/// Apply one line to the entries (replay and live alike).
fn apply(entries: &mut BTreeMap<u64, Entry>, line: Line) {
    match line {
        Line::Enqueue(e) => {
            entries.insert(e.id, e);
        }
        Line::Attempt {
            id,
            at_unix_ms,
            error,
        } => {
            if let Some(e) = entries.get_mut(&id) {
                e.attempts += 1;
                e.last_error = Some(error);
                // Replayed without the policy: due again at once after a
                // restart, then backed off from there.
                e.next_attempt_unix_ms = at_unix_ms;
            }
        }
        Line::Delivered { id, at_unix_ms, .. } => {
            set_state(entries, id, EntryState::Delivered, Some(at_unix_ms))
        }
        Line::Dead { id, .. } => set_state(entries, id, EntryState::Dead, None),
        Line::Drop { id, at_unix_ms } => {
            set_state(entries, id, EntryState::Dropped, Some(at_unix_ms))
        }
        Line::Floor { .. } => {}
        Line::Retry { id, at_unix_ms } => {
            if let Some(e) = entries.get_mut(&id) {
                e.state = EntryState::Pending;
                e.created_unix_ms = at_unix_ms;
                e.next_attempt_unix_ms = at_unix_ms;
            }
        }
    }
}

fn set_state(
    entries: &mut BTreeMap<u64, Entry>,
    id: u64,
    state: EntryState,
    finished: Option<u64>,
) {
    if let Some(e) = entries.get_mut(&id) {
        e.state = state;
        e.finished_unix_ms = finished;
    }
}

/// The entries, and the id floor a compaction left.
fn replay(journal: &mut File, path: &Path) -> Result<(BTreeMap<u64, Entry>, u64), SpoolError> {
    let (lines, _torn): (Vec<Line>, u64) = read_lines(journal, path)?;
    let mut entries = BTreeMap::new();
    let mut floor = 1;
    for line in lines {
        if let Line::Floor { next_id } = line {
            floor = floor.max(next_id);
        } else {
            apply(&mut entries, line);
        }
    }
    Ok((entries, floor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cxr-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    /// Study `k`'s first SR.
    fn sr(k: &str) -> Outgoing {
        Outgoing {
            file: PathBuf::from(format!("results/studies/{k}/v1.dcm")),
            sop_class_uid: "1.2".into(),
            sop_instance_uid: format!("1.2.{k}"),
            payload: Payload::Dicom,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            retention: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_destination_gets_a_study_s_versions_in_order() {
        let dir = scratch("order");
        let sr = |v: u32| Outgoing {
            file: PathBuf::from(format!("results/studies/k/v{v}.dcm")),
            sop_class_uid: "1.2".into(),
            sop_instance_uid: format!("1.2.{v}"),
            payload: Payload::Dicom,
        };
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        for v in [1, 2] {
            o.ensure("k", v, &sr(v), "PACS@h:1", 1000)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        o.ensure("k", 2, &sr(2), "OTHER@h:1", 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        let versions = |o: &Outbox, at| {
            let mut v: Vec<(String, u32)> = o
                .due(at)
                .into_iter()
                .map(|e| (e.destination, e.version))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            versions(&o, 1000),
            vec![("OTHER@h:1".into(), 2), ("PACS@h:1".into(), 1)]
        );
        // Version 1 failed once and waits: version 2 still waits behind it.
        o.record(1, Err("down".into()), &policy(), 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions(&o, 1000), vec![("OTHER@h:1".into(), 2)]);
        o.record(1, Ok(0), &policy(), 5000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(versions(&o, 5000).contains(&("PACS@h:1".into(), 2)));
        let id_of = |o: &Outbox, v: u32| {
            o.entries()
                .find(|e| e.destination == "PACS@h:1" && e.version == v)
                .map(|e| e.id)
                .unwrap_or_default()
        };
        let (v1, v2) = (id_of(&o, 1), id_of(&o, 2));
        o.record(v2, Ok(0), &policy(), 6000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            o.retry(v1, 7000).is_err(),
            "version 1 never goes over version 2"
        );
        assert!(
            o.retry(v2, 7000).is_err(),
            "a delivered entry is not sent again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_for_a_destination_removed_from_the_board_are_dropped() {
        let dir = scratch("removed");
        let sr = sr("k");
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        for dest in ["OLD@h:1", "KEPT@h:1", "GONE@h:1"] {
            o.ensure("k", 1, &sr, dest, 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        o.record(3, Ok(0), &policy(), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let dropped = o
            .drop_removed_destinations(&["KEPT@h:1".into()], 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = dropped.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![1], "a delivered entry keeps its state");
        drop(o);
        let o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let states: Vec<EntryState> = o.entries().map(|e| e.state).collect();
        assert_eq!(
            states,
            vec![
                EntryState::Dropped,
                EntryState::Pending,
                EntryState::Delivered
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_each_entry_s_state_and_forgets_only_what_is_settled() {
        let dir = scratch("compact");
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        for k in ["old", "pending", "new"] {
            o.ensure(k, 1, &sr(k), "PACS@h:1", 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        o.record(1, Ok(0), &policy(), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        o.record(2, Err("down".into()), &policy(), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        o.record(3, Ok(0), &policy(), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        // Every study is "pruned": only the settled ones may go; ids are
        // never given twice.
        let (before, after) = o.compact(|_| true).unwrap_or_else(|e| panic!("{e}"));
        assert!(after < before, "{before} -> {after}");
        o.ensure("later", 1, &sr("later"), "PACS@h:1", 2)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(o);
        let o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let kept: Vec<(u64, EntryState, u32)> =
            o.entries().map(|e| (e.id, e.state, e.attempts)).collect();
        assert_eq!(
            kept,
            vec![(2, EntryState::Pending, 1), (4, EntryState::Pending, 0)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(30));
        assert_eq!(p.backoff(2), Duration::from_secs(60));
        assert_eq!(p.backoff(8), Duration::from_secs(3600));
        assert_eq!(p.backoff(1000), Duration::from_secs(3600));
    }

    #[test]
    fn a_destination_that_answers_again_gets_its_backlog_at_once() {
        let dir = scratch("backlog");
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        for (k, dest) in [("a", "PACS@h:1"), ("b", "PACS@h:1"), ("c", "OTHER@h:1")] {
            o.ensure(k, 1, &sr(k), dest, 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for id in [1, 2, 3] {
            o.record(id, Err("refused".into()), &policy(), 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(o.due(10).is_empty(), "all backed off by 1 s");
        // A new study reaches the PACS: the older one there is due again,
        // the other destination's entry keeps its wait.
        o.ensure("d", 1, &sr("d"), "PACS@h:1", 10)
            .unwrap_or_else(|e| panic!("{e}"));
        o.record(4, Ok(0), &policy(), 10)
            .unwrap_or_else(|e| panic!("{e}"));
        let due: Vec<u64> = o.due(10).iter().map(|e| e.id).collect();
        assert_eq!(due, vec![1, 2]);
    }

    #[test]
    fn entries_survive_reopening_retry_then_die_and_are_never_queued_twice() {
        let dir = scratch("life");
        let sr = Outgoing {
            file: PathBuf::from("results/studies/k/v1.dcm"),
            sop_class_uid: "1.2".into(),
            sop_instance_uid: "1.2.3".into(),
            payload: Payload::Dicom,
        };
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(o
            .ensure("k", 1, &sr, "PACS@h:1", 1000)
            .unwrap_or_else(|e| panic!("{e}")));
        assert!(!o
            .ensure("k", 1, &sr, "PACS@h:1", 2000)
            .unwrap_or_else(|e| panic!("{e}")));
        assert!(o
            .ensure("k", 1, &sr, "OTHER@h:1", 1000)
            .unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(o.due(1000).len(), 2);
        let p = policy();
        assert_eq!(
            o.record(1, Err("down".into()), &p, 1000).ok(),
            Some(Change::WillRetry { in_ms: 1000 })
        );
        assert_eq!(
            o.record(1, Err("down".into()), &p, 2000).ok(),
            Some(Change::WillRetry { in_ms: 2000 })
        );
        assert!(o.due(3999).iter().all(|e| e.id != 1));
        assert!(o.due(4000).iter().any(|e| e.id == 1));
        assert_eq!(
            o.record(2, Ok(0), &p, 1500).ok(),
            Some(Change::Delivered { status: 0 })
        );
        drop(o);
        // A torn line from a power loss is cut; the rest replays.
        let journal = dir.join("outbox/journal.jsonl");
        let mut f = OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"op\":\"deliv")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let mut o = Outbox::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o.entry(1).map(|e| (e.state, e.attempts)),
            Some((EntryState::Pending, 2))
        );
        assert_eq!(o.entry(2).map(|e| e.state), Some(EntryState::Delivered));
        assert_eq!(
            o.record(1, Err("still down".into()), &p, 61_000).ok(),
            Some(Change::Dead)
        );
        assert!(
            o.due(u64::MAX).is_empty(),
            "dead entries are not retried automatically"
        );
        o.retry(1, 70_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.due(70_000).len(), 1);
        o.drop_entry(1, 71_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o.settled_studies().get("k"),
            Some(&Some(71_000)),
            "delivered or dropped"
        );
        assert!(o.due(u64::MAX).is_empty());
        let revive = o.retry(1, 72_000).map_err(|e| e.to_string());
        assert!(
            revive.as_ref().is_err_and(|e| e.contains("is dropped")),
            "a dropped entry stays dropped: {revive:?}"
        );
        assert!(o.drop_entry(1, 72_000).is_err(), "dropped once");
        assert!(o.retry(99, 0).is_err());
        // One owner at a time.
        assert_eq!(
            Outbox::open(&dir).map(|_| ()).unwrap_err().code(),
            "SPOOL_LOCKED"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
