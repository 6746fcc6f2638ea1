//! Study assembly: which instances belong to which study, which still wait
//! for the engine, and when a study is complete. The completion rule: every
//! association that delivered to the study has ended (released, aborted or
//! dropped) **and** no instance has arrived for `stable_ms`. Times come from
//! the injected monotonic clock, so the rule is exact in tests and in the
//! field alike (no polling interval widens it beyond one worker tick).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Default)]
struct StudyState {
    instances: BTreeSet<u64>,
    processed: BTreeSet<u64>,
    open_associations: BTreeSet<u64>,
    last_arrival_ms: u64,
    /// Instances the latest published version covered, and its number.
    published: BTreeSet<u64>,
    version: u32,
    /// Put off after a failed publication (monotonic ms).
    not_before_ms: u64,
    /// An instance was run again since the latest version: publish anew
    /// even though the instances are the same.
    rerun: bool,
}

impl StudyState {
    fn due_at(&self, stable_ms: u64) -> Option<u64> {
        let settled = self.open_associations.is_empty()
            && self.processed.len() == self.instances.len()
            && (self.published != self.instances || self.rerun);
        settled.then(|| {
            self.last_arrival_ms
                .saturating_add(stable_ms)
                .max(self.not_before_ms)
        })
    }
}

#[derive(Debug, Default)]
struct Board {
    studies: BTreeMap<String, StudyState>,
    /// Association to the studies it delivered to.
    open: HashMap<u64, BTreeSet<String>>,
    /// Instance to its study.
    study_of: HashMap<u64, String>,
    pending: VecDeque<u64>,
    /// Instances to run again although they have a result.
    rerun: BTreeSet<u64>,
    /// Instances to run again at a time (monotonic ms): a transient fault's
    /// retry.
    retries: BTreeMap<u64, u64>,
    stopping: bool,
}

impl Board {
    /// Queue `id` to run again (at the head when `first`): its study is
    /// not complete until it has.
    fn queue_rerun(&mut self, id: u64) -> bool {
        self.retries.remove(&id);
        let Some(study) = self.study_of.get(&id).cloned() else {
            return false;
        };
        if let Some(s) = self.studies.get_mut(&study) {
            s.processed.remove(&id);
            s.rerun = true;
        }
        if self.rerun.insert(id) {
            self.pending.push_back(id);
        }
        true
    }
}

/// What the worker should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run the engine on this spool instance.
    Instance(u64),
    /// Publish a new version of this study over these instances.
    Study {
        study_instance_uid: String,
        version: u32,
        instances: Vec<u64>,
    },
    /// Nothing is due for this long (or until woken).
    Wait(Duration),
    /// The service is stopping.
    Stop,
}

/// Shared between the receivers (who report arrivals and ended
/// associations) and the one worker.
#[derive(Debug)]
pub struct StudyBoard {
    board: Mutex<Board>,
    wake: Condvar,
    stable_ms: u64,
}

/// The longest the worker sleeps without being woken.
const IDLE_TICK: Duration = Duration::from_millis(500);

impl StudyBoard {
    pub fn new(stable: Duration) -> Self {
        StudyBoard {
            board: Mutex::new(Board::default()),
            wake: Condvar::new(),
            stable_ms: stable.as_millis() as u64,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance is durable: queue it for the engine. `association` is
    /// `None` for instances found in the spool at start-up.
    pub fn arrived(&self, id: u64, study: &str, association: Option<u64>, now_ms: u64) {
        let mut b = self.lock();
        b.study_of.insert(id, study.to_owned());
        let s = b.studies.entry(study.to_owned()).or_default();
        s.instances.insert(id);
        s.last_arrival_ms = s.last_arrival_ms.max(now_ms);
        if let Some(a) = association {
            s.open_associations.insert(a);
            b.open.entry(a).or_default().insert(study.to_owned());
        }
        b.pending.push_back(id);
        drop(b);
        self.wake.notify_all();
    }

    /// The instances waiting for the engine.
    pub fn pending_ids(&self) -> std::collections::HashSet<u64> {
        self.lock().pending.iter().copied().collect()
    }

    /// Put an instance back at the head of the queue (its result could not
    /// be written).
    pub fn requeue(&self, id: u64) {
        self.lock().pending.push_front(id);
    }

    /// At start-up: an instance that already has its result.
    pub fn restore_processed(&self, id: u64, study: &str) {
        let mut b = self.lock();
        b.study_of.insert(id, study.to_owned());
        let s = b.studies.entry(study.to_owned()).or_default();
        s.instances.insert(id);
        s.processed.insert(id);
    }

    /// At start-up: the latest published version of a study.
    pub fn restore_published(&self, study: &str, version: u32, instances: &[u64]) {
        let mut b = self.lock();
        let s = b.studies.entry(study.to_owned()).or_default();
        if version >= s.version {
            s.version = version;
            s.published = instances.iter().copied().collect();
        }
    }

    /// A study whose results were pruned: nothing of it is held any more.
    pub fn forget_study(&self, study: &str) {
        let mut b = self.lock();
        if let Some(s) = b.studies.remove(study) {
            for id in &s.instances {
                b.study_of.remove(id);
            }
        }
    }

    /// An association ended: its studies may now become complete.
    pub fn association_ended(&self, association: u64) {
        let mut b = self.lock();
        for study in b.open.remove(&association).unwrap_or_default() {
            if let Some(s) = b.studies.get_mut(&study) {
                s.open_associations.remove(&association);
            }
        }
        drop(b);
        self.wake.notify_all();
    }

    /// The engine's result for `id` is on disk.
    pub fn processed(&self, id: u64) {
        let mut b = self.lock();
        let Some(study) = b.study_of.get(&id).cloned() else {
            return;
        };
        if let Some(s) = b.studies.get_mut(&study) {
            s.processed.insert(id);
        }
    }

    /// A study version is on disk. A re-run asked for while it was being
    /// published keeps the study due.
    pub fn published(&self, study: &str, version: u32, instances: &[u64]) {
        self.restore_published(study, version, instances);
        let mut b = self.lock();
        let Board { studies, rerun, .. } = &mut *b;
        if let Some(s) = studies.get_mut(study) {
            let running_again = s.instances.iter().any(|id| rerun.contains(id));
            if !running_again && s.processed == s.instances {
                s.rerun = false;
            }
        }
    }

    /// At start-up: a study whose instances' results changed after its
    /// latest version (a re-run written before a stop) publishes again.
    pub fn restore_stale(&self, study: &str) {
        if let Some(s) = self.lock().studies.get_mut(study) {
            s.rerun = true;
        }
    }

    /// Whether the board holds `study`.
    pub fn knows_study(&self, study: &str) -> bool {
        self.lock().studies.contains_key(study)
    }

    /// Run instance `id` again although it has a result (a transient fault
    /// cleared, another model is installed, an operator asked): its study
    /// publishes a new version once it has run. `false` for an unknown id.
    pub fn rerun(&self, id: u64) -> bool {
        let queued = self.lock().queue_rerun(id);
        self.wake.notify_all();
        queued
    }

    /// Run every instance of `study` again; the ids, or `None` for a study
    /// the board does not know.
    pub fn rerun_study(&self, study: &str) -> Option<Vec<u64>> {
        let mut b = self.lock();
        let ids: Vec<u64> = b.studies.get(study)?.instances.iter().copied().collect();
        for id in &ids {
            b.queue_rerun(*id);
        }
        drop(b);
        self.wake.notify_all();
        Some(ids)
    }

    /// Run instance `id` again at `due_ms` (monotonic): a transient fault's
    /// retry, after a back-off.
    pub fn retry_at(&self, id: u64, due_ms: u64) {
        self.lock().retries.insert(id, due_ms);
    }

    /// Whether `id` was queued to run again; the worker takes the mark
    /// when it runs it.
    pub fn take_rerun(&self, id: u64) -> bool {
        self.lock().rerun.remove(&id)
    }

    /// A study's publication failed: other studies go first until `until_ms`.
    pub fn defer_study(&self, study: &str, until_ms: u64) {
        if let Some(s) = self.lock().studies.get_mut(study) {
            s.not_before_ms = until_ms;
        }
    }

    /// Sleep `timeout` after a failure, whatever is queued; only a stop
    /// ends it early.
    pub fn pause(&self, timeout: Duration) {
        let b = self.lock();
        if b.stopping {
            return;
        }
        let _ = self.wake.wait_timeout_while(b, timeout, |b| !b.stopping);
    }

    /// Stop handing out work; the worker finishes what it holds.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Instances queued for the engine and studies not yet published.
    pub fn backlog(&self) -> (usize, usize) {
        let b = self.lock();
        let studies = b
            .studies
            .values()
            .filter(|s| s.published != s.instances || s.rerun)
            .count();
        (b.pending.len(), studies)
    }

    /// The next thing due at `now_ms`: instances first (arrival order),
    /// then the first complete study.
    pub fn next(&self, now_ms: u64) -> Work {
        let mut b = self.lock();
        if b.stopping {
            return Work::Stop;
        }
        let due: Vec<u64> = b
            .retries
            .iter()
            .filter(|(_, t)| **t <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            b.queue_rerun(id);
        }
        if let Some(id) = b.pending.pop_front() {
            return Work::Instance(id);
        }
        let mut soonest: Option<u64> = b.retries.values().min().copied();
        for (uid, s) in &b.studies {
            // An instance waiting to retry a passing fault holds its study:
            // the fault is not published only to be corrected.
            if s.instances.iter().any(|id| b.retries.contains_key(id)) {
                continue;
            }
            let Some(due) = s.due_at(self.stable_ms) else {
                continue;
            };
            if due <= now_ms {
                return Work::Study {
                    study_instance_uid: uid.clone(),
                    version: s.version + 1,
                    instances: s.instances.iter().copied().collect(),
                };
            }
            soonest = Some(soonest.map_or(due, |t| t.min(due)));
        }
        let wait = soonest.map_or(IDLE_TICK, |t| {
            Duration::from_millis(t.saturating_sub(now_ms)).min(IDLE_TICK)
        });
        Work::Wait(wait)
    }

    /// Sleep until woken or `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let b = self.lock();
        if b.stopping || !b.pending.is_empty() {
            return;
        }
        let _ = self.wake.wait_timeout(b, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_study_completes_only_after_release_and_stable_time() {
        let board = StudyBoard::new(Duration::from_millis(1000));
        board.arrived(1, "1.2.3", Some(7), 100);
        assert_eq!(board.next(100), Work::Instance(1));
        board.processed(1);
        // The association is still open: never due, however long.
        assert!(matches!(board.next(10_000), Work::Wait(_)));
        board.association_ended(7);
        // Released, but the last instance came at 100: due at 1100.
        assert!(matches!(board.next(1099), Work::Wait(d) if d == Duration::from_millis(1)));
        assert_eq!(
            board.next(1100),
            Work::Study {
                study_instance_uid: "1.2.3".into(),
                version: 1,
                instances: vec![1]
            }
        );
        board.published("1.2.3", 1, &[1]);
        assert!(matches!(board.next(5000), Work::Wait(_)));
        // A late instance makes version 2 over both.
        board.arrived(2, "1.2.3", None, 6000);
        assert_eq!(board.next(6000), Work::Instance(2));
        board.processed(2);
        assert!(matches!(board.next(6999), Work::Wait(_)));
        assert_eq!(
            board.next(7000),
            Work::Study {
                study_instance_uid: "1.2.3".into(),
                version: 2,
                instances: vec![1, 2]
            }
        );
    }

    #[test]
    fn an_unprocessed_instance_holds_its_study_back() {
        let board = StudyBoard::new(Duration::ZERO);
        board.restore_processed(1, "9.9");
        board.arrived(2, "9.9", None, 0);
        board.restore_published("9.9", 3, &[1]);
        assert_eq!(board.next(50), Work::Instance(2));
        assert!(
            matches!(board.next(50), Work::Wait(_)),
            "2 not yet processed"
        );
        board.processed(2);
        assert!(matches!(board.next(50), Work::Study { version: 4, .. }));
        board.stop();
        assert_eq!(board.next(50), Work::Stop);
    }

    #[test]
    fn a_rerun_instance_runs_again_and_its_study_publishes_a_new_version() {
        let board = StudyBoard::new(Duration::ZERO);
        board.arrived(1, "7.7", None, 0);
        assert_eq!(board.next(0), Work::Instance(1));
        board.processed(1);
        assert!(matches!(board.next(0), Work::Study { version: 1, .. }));
        board.published("7.7", 1, &[1]);
        assert!(
            matches!(board.next(0), Work::Wait(_)),
            "published, nothing due"
        );
        assert!(board.rerun(1));
        assert!(!board.rerun(99), "unknown instance");
        assert_eq!(board.next(0), Work::Instance(1));
        assert!(board.take_rerun(1) && !board.take_rerun(1));
        assert!(matches!(board.next(0), Work::Wait(_)), "not yet run again");
        board.processed(1);
        assert!(matches!(board.next(0), Work::Study { version: 2, .. }));
        board.published("7.7", 2, &[1]);
        // A retry waits for its time, and holds its study back meanwhile.
        board.arrived(2, "7.7", None, 0);
        assert_eq!(board.next(0), Work::Instance(2));
        board.processed(2);
        board.retry_at(1, 5_000);
        assert!(matches!(board.next(4_000), Work::Wait(d) if d <= Duration::from_millis(500)));
        assert_eq!(board.next(5_000), Work::Instance(1));
        assert!(board.take_rerun(1));
        board.processed(1);
        assert!(matches!(board.next(5_000), Work::Study { version: 3, .. }));
        assert_eq!(board.rerun_study("7.7"), Some(vec![1, 2]));
        assert_eq!(board.rerun_study("8.8"), None);
    }
}
