//! The one inference worker: it takes durable instances in arrival order,
//! runs the injected [`Processor`] (the same study path as `classify`,
//! wired by the binary: this crate does not know how a decision is made),
//! writes each instance's result, and publishes a study version when study
//! assembly says the study is complete.
//!
//! Its queue is the spool itself: an instance without a result file is
//! pending, so the queue is bounded by the spool's quota and survives
//! restarts. An instance that has a result runs again only when asked
//! (study assembly's rerun mark): a transient fault's retry, another model
//! installed, an operator's `study rerun`. Its new result replaces the old
//! one and its study publishes a new version that names the one it
//! replaces, so one instance never has two answers at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxr_report::{encode_sc, encode_sr, PictureFacts, SrDevice};
use tokio::sync::Notify;

use cxr_delivery::destination::Destination;
use cxr_http::metrics::Metrics;
use cxr_store::assembly::Work;
use cxr_store::clock::Clock;
use cxr_store::intake::Intake;
use cxr_store::outbox::{Outbox, Outgoing, Payload};
use cxr_store::results::{
    says_the_same, sha256_hex, study_key, study_result, InstanceResult, ModelRef, Reason,
    ResultStore, SrUids, StudyResult, StudyVersion, Superseded,
};
use cxr_store::spool::{Disposition, JournalRecord};
use cxr_store::SpoolError;

mod prune;

/// What the worker calls; the binary implements it over `cxr-study`.
pub trait Processor: Send {
    /// Classify one spool instance from its Part 10 bytes. Faults become a
    /// `Failed` or `Refused` result, never a panic out of here.
    fn process(&mut self, record: &JournalRecord, bytes: &[u8]) -> InstanceResult;
    /// A study version is on disk (`file` is its bytes): audit it, and
    /// answer the record's sequence number. An error keeps the version from
    /// being counted as published, so it is retried.
    fn published(&mut self, result: &StudyResult, file: &[u8]) -> Result<u64, String>;
    /// The model studies run on now (`None` without a verified one).
    fn model(&self) -> Option<ModelRef>;
    /// Whether `record` (a SOP Instance UID seen before, with other bytes)
    /// repeats `earlier`: the same decoded pixels and the same patient.
    /// A repeat is audited here; anything that cannot be compared is not
    /// one.
    fn is_repeat(
        &mut self,
        record: &JournalRecord,
        bytes: &[u8],
        earlier: &JournalRecord,
        earlier_bytes: &[u8],
    ) -> bool;
}

/// Pause after a failed write before trying the same work again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How often a transient fault is tried in all.
const MAX_ATTEMPTS: u32 = 5;

/// Where published results go: the SR encoder's device identity, and the
/// outbox with its destinations.
pub struct Delivery {
    pub device: SrDevice,
    pub outbox: Arc<Mutex<Outbox>>,
    pub destinations: Vec<String>,
    /// Wakes the sender when something is queued.
    pub wake: Arc<Notify>,
    /// How long an input is kept after its study's results reached every
    /// destination (or, with none, after its result was published).
    pub retain: Duration,
    /// Send the result picture as a Secondary Capture too, beside the SR.
    pub secondary_capture: bool,
    /// The first pause before an instance's transient fault (no model, the
    /// audit log without room, the engine) is tried again, doubled each time.
    pub fault_retry: Duration,
    /// How the console names a study (its keyed pseudonym).
    pub pseudonym: cxr_http::StudyPseudonym,
    /// How long a study's results are kept after its inputs were retired
    /// and its last version published and delivered.
    pub result_retention: Duration,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

/// A study version's objects, encoded before anything is audited or written.
struct Encoded {
    sr: cxr_report::SrDocument,
    png: Vec<u8>,
    sc: Option<cxr_report::ScDocument>,
}

/// What the worker remembers of a published study: enough for retention
/// without reading every result file again.
#[derive(Debug, Clone)]
struct Published {
    instances: Vec<u64>,
    completed_unix_ms: u64,
    /// Every input of this version is retired.
    retired: bool,
}

pub struct Worker {
    intake: Arc<Intake>,
    store: ResultStore,
    processor: Box<dyn Processor>,
    clock: Arc<dyn Clock>,
    delivery: Delivery,
    /// When retention was last looked at (monotonic ms).
    retention_checked_ms: Option<u64>,
    /// When the journals were last compacted (monotonic ms).
    compacted_ms: Option<u64>,
    /// Something was pruned after the last compaction.
    pruned_since_compaction: bool,
    /// Study UID to its latest published version.
    published: HashMap<String, Published>,
    /// A result computed but not yet written: written on the retry rather
    /// than computed again.
    unsaved: Option<InstanceResult>,
    /// Monotonic ms of the loop's last turn: a watchdog feeds on it.
    heartbeat: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The model seen at the last turn: a change re-runs what failed for
    /// want of one.
    last_model: Option<ModelRef>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(
        intake: Arc<Intake>,
        store: ResultStore,
        processor: Box<dyn Processor>,
        clock: Arc<dyn Clock>,
        delivery: Delivery,
    ) -> Self {
        Worker {
            intake,
            store,
            processor,
            clock,
            delivery,
            retention_checked_ms: None,
            compacted_ms: None,
            pruned_since_compaction: false,
            published: HashMap::new(),
            unsaved: None,
            heartbeat: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::default()),
            last_model: None,
        }
    }

    /// Count into `metrics` (shared with the HTTP side's `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// When the work loop last turned (monotonic ms on the worker's clock):
    /// a worker stuck in one step stops it moving.
    pub fn heartbeat(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.heartbeat)
    }

    /// Fill study assembly from what is on disk: every journalled instance,
    /// whether it has its result, and each study's latest version. Studies
    /// with unpublished instances complete `stable` after start-up.
    pub fn restore(&mut self) -> Result<(), SpoolError> {
        let board = Arc::clone(self.intake.board());
        let records = self.store.held_records(&self.intake.spool());
        let now = self.clock.monotonic_ms();
        for r in &records {
            if self.store.has_instance(r.id) {
                board.restore_processed(r.id, &r.study_instance_uid);
            } else {
                board.arrived(r.id, &r.study_instance_uid, None, now);
            }
        }
        let studies = self.store.latest_studies()?;
        self.log_unlogged(&studies)?;
        for (uid, s) in studies {
            let ids: Vec<u64> = s.instances.iter().map(|i| i.instance).collect();
            board.restore_published(&uid, s.version, &ids);
            if self.changed_since(&s) {
                board.restore_stale(&uid);
            }
            self.remember(&uid, ids, s.completed_unix_ms);
        }
        Ok(())
    }

    /// Versions written but not in the publication log (a stop between the
    /// two, or results older than the log) are logged, in completion order.
    fn log_unlogged(
        &self,
        studies: &std::collections::BTreeMap<String, StudyResult>,
    ) -> Result<(), SpoolError> {
        let log = self.store.publications();
        let logged = log.latest()?;
        let mut missing: Vec<&StudyResult> = studies
            .values()
            .filter(|s| {
                logged
                    .get(&s.study_instance_uid)
                    .is_none_or(|p| p.version < s.version)
            })
            .collect();
        missing.sort_by_key(|s| (s.completed_unix_ms, s.study_instance_uid.clone()));
        for s in missing {
            log.append(s, self.clock.unix_ms())?;
        }
        Ok(())
    }

    /// Whether an instance of `published` has a result other than the one
    /// the version was made from (it ran again before a stop, and the new
    /// version was not yet written).
    fn changed_since(&self, published: &StudyResult) -> bool {
        published
            .instances
            .iter()
            .any(|i| match self.store.instance(i.instance) {
                Ok(Some(r)) => {
                    r.outcome != i.outcome
                        || r.same_as != i.same_as
                        || (published.decided_by.contains(&i.instance)
                            && r.model != published.model)
                }
                _ => false,
            })
    }

    fn remember(&mut self, uid: &str, instances: Vec<u64>, completed_unix_ms: u64) {
        let spool = self.intake.spool();
        let retired = instances.iter().all(|id| spool.is_retired(*id));
        drop(spool);
        self.published.insert(
            uid.to_owned(),
            Published {
                instances,
                completed_unix_ms,
                retired,
            },
        );
    }

    /// Work until the board says stop: the current item is finished first.
    pub fn run(mut self) {
        let board = Arc::clone(self.intake.board());
        loop {
            let now = self.clock.monotonic_ms();
            self.heartbeat.store(now, Ordering::SeqCst);
            self.notice_model_change();
            let step = match board.next(now) {
                Work::Stop => return,
                Work::Wait(d) => self.retire_if_due().map(|()| board.wait(d)),
                Work::Instance(id) => self.instance(id),
                Work::Study {
                    study_instance_uid,
                    version,
                    instances,
                } => {
                    if let Err(e) = self.study(&study_instance_uid, version, &instances) {
                        // Put off this study alone: the others go on.
                        super::console::say(
                            "worker_fault",
                            serde_json::json!({ "message": e.to_string(), "retry_in_ms": RETRY_AFTER.as_millis() as u64 }),
                        );
                        let later = self.clock.monotonic_ms() + RETRY_AFTER.as_millis() as u64;
                        board.defer_study(&study_instance_uid, later);
                    }
                    Ok(())
                }
            };
            if let Err(e) = step {
                super::console::say(
                    "worker_fault",
                    serde_json::json!({ "message": e.to_string(), "retry_in_ms": RETRY_AFTER.as_millis() as u64 }),
                );
                board.pause(RETRY_AFTER);
            }
        }
    }

    /// Look at retention when idle, at most every `retain / 2` (1 s to 60 s).
    fn retire_if_due(&mut self) -> Result<(), String> {
        let now = self.clock.monotonic_ms();
        let every = (self.delivery.retain.as_millis() as u64 / 2).clamp(1000, 60_000);
        if self.retention_checked_ms.is_some_and(|t| now < t + every) {
            return Ok(());
        }
        self.retention_checked_ms = Some(now);
        let retired = self.retire()?;
        self.prune_if_due()?;
        if retired > 0 {
            super::console::say(
                "inputs_retired",
                serde_json::json!({ "count": retired, "detail": "delivered inputs deleted after their retention" }),
            );
        }
        Ok(())
    }

    /// Delete the inputs of every study whose results all reached every
    /// destination at least `retain` ago. Undelivered input is never
    /// deleted: a study with a pending or dead-lettered result keeps all
    /// its inputs. Without destinations (and without entries left from
    /// earlier ones) the clock starts when the result was published.
    fn retire(&mut self) -> Result<usize, String> {
        let now = self.clock.unix_ms();
        let retain = self.delivery.retain.as_millis() as u64;
        let settled = self.outbox().settled_studies();
        let no_destinations = self.delivery.destinations.is_empty();
        let mut retired = 0;
        for (uid, study) in self.published.iter_mut().filter(|(_, p)| !p.retired) {
            let since = match settled.get(&study_key(uid)) {
                Some(finished) => *finished,
                None if no_destinations => Some(study.completed_unix_ms),
                None => None,
            };
            if since.is_none_or(|t| now < t.saturating_add(retain)) {
                continue;
            }
            for id in &study.instances {
                let mut spool = self.intake.spool();
                if spool.retire(*id, now).map_err(|e| e.to_string())? {
                    self.store.remove_instance_preview(*id);
                    retired += 1;
                }
            }
            study.retired = true;
        }
        Ok(retired)
    }

    /// The outbox, shared with the sender and the admin socket.
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.delivery
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, id: u64) -> Result<JournalRecord, String> {
        self.intake
            .spool()
            .record(id)
            .cloned()
            .ok_or_else(|| format!("instance {id} is not in the spool journal"))
    }

    /// Another model is being served (or the first since start): what
    /// failed for want of one, or for another passing fault, runs again.
    fn notice_model_change(&mut self) {
        let current = self.processor.model();
        if current == self.last_model {
            return;
        }
        self.last_model = current.clone();
        if current.is_none() {
            return;
        }
        let board = Arc::clone(self.intake.board());
        let records: Vec<u64> = self.intake.spool().records().iter().map(|r| r.id).collect();
        let mut again = 0;
        for id in records {
            let transient = self
                .store
                .instance(id)
                .ok()
                .flatten()
                .is_some_and(|r| r.is_transient());
            if transient && !self.intake.spool().is_retired(id) && board.rerun(id) {
                again += 1;
            }
        }
        if again > 0 {
            super::console::say(
                "instances_rerun",
                serde_json::json!({ "count": again, "detail": "a model is served: instances that failed for a passing fault run again" }),
            );
        }
    }

    fn instance(&mut self, id: u64) -> Result<(), String> {
        let board = Arc::clone(self.intake.board());
        if let Some(result) = self.unsaved.take_if(|r| r.instance == id) {
            return self.save(result);
        }
        let rerun = board.take_rerun(id);
        // A retired input is gone: its result stands, it cannot run again.
        let retired = self.intake.spool().is_retired(id);
        if (!rerun || retired) && self.store.has_instance(id) {
            board.processed(id);
            return Ok(());
        }
        let before = if rerun {
            self.store.instance(id).ok().flatten()
        } else {
            None
        };
        let record = match self.record(id) {
            Ok(r) => r,
            Err(e) => {
                if rerun {
                    board.rerun(id);
                } else {
                    board.requeue(id);
                }
                return Err(e);
            }
        };
        let path = self.intake.spool().path_of(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                // Journalled but unreadable: retrying will not help. The
                // failure is the instance's result, shown to the operator.
                let result =
                    cxr_store::results::unreadable(&record, &format!("{}: {e}", path.display()));
                return self.save(result);
            }
        };
        if let Some(repeat) = self.repeat(&record, &bytes) {
            return self.save(repeat);
        }
        let mut result = self.processor.process(&record, &bytes);
        // A transient fault's retry counts on; any other run starts afresh.
        result.attempt = match before {
            Some(b) if b.is_transient() => b.attempt.saturating_add(1),
            _ => 1,
        };
        self.save(result)
    }

    /// For an instance whose SOP Instance UID arrived before with other
    /// bytes: the result that records it as a repeat of the earlier one, if
    /// the processor finds it is one (same pixels, same patient).
    fn repeat(&mut self, record: &JournalRecord, bytes: &[u8]) -> Option<InstanceResult> {
        let Disposition::Conflict { with } = &record.disposition else {
            return None;
        };
        for earlier_id in with {
            let Ok(earlier) = self.record(*earlier_id) else {
                continue;
            };
            let path = self.intake.spool().path_of(*earlier_id);
            let Ok(earlier_bytes) = std::fs::read(&path) else {
                continue;
            };
            if self
                .processor
                .is_repeat(record, bytes, &earlier, &earlier_bytes)
            {
                let outcome = self
                    .store
                    .instance(*earlier_id)
                    .ok()
                    .flatten()
                    .map_or(cxr_store::results::InstanceOutcome::Abstention, |r| {
                        r.outcome
                    });
                return Some(InstanceResult {
                    same_as: Some(*earlier_id),
                    reason: Some(Reason {
                        code: "INSTANCE_REPEATED".into(),
                        message: format!("The same image and patient as instance {earlier_id}, sent again with other bytes: counted once"),
                    }),
                    ..InstanceResult::new(record, outcome)
                });
            }
        }
        None
    }

    fn save(&mut self, result: InstanceResult) -> Result<(), String> {
        let id = result.instance;
        match self.store.write_instance(&result) {
            Ok(()) => {
                let outcome = serde_json::to_value(result.outcome).unwrap_or_default();
                self.metrics.instance_processed(
                    outcome.as_str().unwrap_or("unknown"),
                    &result.detail["timings_ms"],
                );
                self.intake.board().processed(id);
                // Without a model a retry cannot help: a model's arrival
                // runs it again (`notice_model_change`).
                let retry = result.is_transient()
                    && result.outcome != cxr_store::results::InstanceOutcome::NoModel
                    && result.attempt < MAX_ATTEMPTS;
                if retry {
                    let pause = self
                        .delivery
                        .fault_retry
                        .saturating_mul(1 << (result.attempt - 1).min(16));
                    let due = self.clock.monotonic_ms() + pause.as_millis() as u64;
                    self.intake.board().retry_at(id, due);
                }
                Ok(())
            }
            Err(e) => {
                // Written on the retry, not computed again.
                self.unsaved = Some(result);
                self.intake.board().requeue(id);
                Err(e.to_string())
            }
        }
    }

    fn study(&mut self, uid: &str, version: u32, ids: &[u64]) -> Result<(), String> {
        let mut pairs = Vec::with_capacity(ids.len());
        for id in ids {
            let result = self
                .store
                .instance(*id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("instance {id} has no result yet"))?;
            pairs.push((result, self.record(*id)?));
        }
        if self.run_again_under_current_model(&pairs) {
            return Ok(());
        }
        let latest = (version > 1)
            .then(|| self.store.latest_study_file(uid))
            .flatten();
        let previous = latest.as_ref().map(|(_, bytes)| sha256_hex(bytes));
        let old: Option<StudyResult> = latest.as_ref().and_then(|(v, bytes)| {
            serde_json::from_slice(bytes)
                .map_err(|e| super::console::say("result_unreadable", serde_json::json!({ "version": v, "message": e.to_string(), "detail": "the new version names no predecessor" })))
                .ok()
        });
        let supersedes = old.as_ref().map(|o| self.superseded(o));
        // Completed when its last instance arrived: the same inputs give the
        // same result, byte for byte, however often it is published.
        let completed = pairs
            .iter()
            .map(|(_, j)| j.received_unix_ms)
            .max()
            .unwrap_or(0);
        let refs: Vec<_> = pairs.iter().map(|(r, j)| (r, j)).collect();
        let at = StudyVersion {
            version,
            previous,
            supersedes,
            completed_unix_ms: completed,
        };
        let mut result = study_result(uid, at, &refs);
        let (series, sop) = cxr_report::sr::sr_uids(&result, &self.delivery.device);
        result.sr = Some(SrUids {
            series_instance_uid: series,
            sop_instance_uid: sop,
        });
        if let Some(old) = old.filter(|o| says_the_same(o, &result)) {
            // Run again, nothing changed: the published version stays
            // current. It is logged (a stop or a failed append may have come
            // between writing it and logging it) and remembered.
            self.store
                .publications()
                .append(&old, self.clock.unix_ms())
                .map_err(|e| e.to_string())?;
            self.intake.board().published(uid, old.version, ids);
            self.remember(uid, ids.to_vec(), old.completed_unix_ms);
            return Ok(());
        }
        // Everything is encoded first (a failure there leaves no audit
        // record behind to be repeated on the retry); then audited, then the
        // objects written and queued, then the version's JSON: a crash in
        // between publishes the same version again, with the same bytes and
        // UIDs, and the outbox queues nothing twice.
        let file = serde_json::to_vec_pretty(&result).map_err(|e| e.to_string())?;
        let instances: Vec<&InstanceResult> = pairs.iter().map(|(r, _)| r).collect();
        let facts = cxr_store::picture_facts::picture_facts(&result, &instances, |id| {
            self.store.instance_preview(id)
        });
        let objects = self.encode(&result, &facts)?;
        let audit_seq = self.processor.published(&result, &file)?;
        self.deliver(&result, objects)?;
        self.write_and_log(&result, audit_seq)?;
        self.intake.board().published(uid, version, ids);
        self.metrics.study_published(result.outcome.as_str());
        self.remember(uid, ids.to_vec(), completed);
        Ok(())
    }

    /// Write the version's JSON, log its publication (the change feed's
    /// order) and say it on the console.
    fn write_and_log(&mut self, result: &StudyResult, audit_seq: u64) -> Result<(), String> {
        self.store.write_study(result).map_err(|e| e.to_string())?;
        let publication = self
            .store
            .publications()
            .append(result, self.clock.unix_ms())
            .map_err(|e| e.to_string())?;
        super::console::say(
            "study_published",
            serde_json::json!({
                "study": (self.delivery.pseudonym)(&result.study_instance_uid),
                "version": result.version, "outcome": result.outcome, "flags": result.flags,
                "summary": publication.summary, "seq": publication.seq, "audit_seq": audit_seq,
                "destinations": self.delivery.destinations,
            }),
        );
        Ok(())
    }

    /// Views run on a model other than the one served now (a bundle was
    /// installed or rolled back before the study was published) run again,
    /// so a result names exactly one model; `true` when any was queued.
    fn run_again_under_current_model(&mut self, pairs: &[(InstanceResult, JournalRecord)]) -> bool {
        let Some(current) = self.processor.model() else {
            return false;
        };
        let board = Arc::clone(self.intake.board());
        let mut queued = false;
        for (r, _) in pairs {
            // A retired view cannot run again: the study rule's guard then
            // keeps the two models apart (it abstains).
            let retired = self.intake.spool().is_retired(r.instance);
            if r.model.as_ref().is_some_and(|m| *m != current) && r.same_as.is_none() && !retired {
                queued |= board.rerun(r.instance);
            }
        }
        queued
    }

    /// The SR of the version a new one replaces: the UIDs it recorded, or
    /// derived again for a version written before they were.
    fn superseded(&self, old: &StudyResult) -> Superseded {
        let sr = old.sr.clone().unwrap_or_else(|| {
            let (series, sop) = cxr_report::sr::sr_uids(old, &self.delivery.device);
            SrUids {
                series_instance_uid: series,
                sop_instance_uid: sop,
            }
        });
        Superseded {
            version: old.version,
            sr,
        }
    }

    /// Encode the SR and draw the picture (and its Secondary Capture when
    /// the board asks for it). A Secondary Capture that cannot be made is
    /// said on stderr and left out: it never holds the result back.
    fn encode(&self, result: &StudyResult, facts: &PictureFacts) -> Result<Encoded, String> {
        let d = &self.delivery;
        let sr = encode_sr(result, &d.device).map_err(|e| e.to_string())?;
        let picture = cxr_report::picture::draw(result, facts);
        let png = cxr_report::picture::encode_png(&picture).map_err(|e| e.to_string())?;
        let sc = if d.secondary_capture {
            encode_sc(result, &picture, &d.device)
                .map_err(|e| {
                    super::console::say(
                        "secondary_capture_failed",
                        serde_json::json!({ "study": (d.pseudonym)(&result.study_instance_uid), "version": result.version, "message": e.to_string() }),
                    )
                })
                .ok()
        } else {
            None
        };
        Ok(Encoded { sr, png, sc })
    }

    /// Write the encoded objects beside the result and queue the DICOM ones
    /// for every destination.
    fn deliver(&mut self, result: &StudyResult, encoded: Encoded) -> Result<(), String> {
        let d = &self.delivery;
        let uid = &result.study_instance_uid;
        let sr_path = self
            .store
            .write_study_sr(uid, result.version, &encoded.sr.bytes)
            .map_err(|e| e.to_string())?;
        self.store
            .write_study_picture(uid, result.version, &encoded.png)
            .map_err(|e| e.to_string())?;
        let sr = encoded.sr;
        // A FHIR server gets the result itself, identified like the SR.
        let fhir = Outgoing {
            file: self.store.study_file(uid, result.version),
            sop_class_uid: String::new(),
            sop_instance_uid: sr.sop_instance_uid.clone(),
            payload: Payload::FhirResult,
        };
        let mut dicom = vec![Outgoing {
            file: sr_path,
            sop_class_uid: sr.sop_class_uid,
            sop_instance_uid: sr.sop_instance_uid,
            payload: Payload::Dicom,
        }];
        if let Some(sc) = encoded.sc {
            let sc_path = self
                .store
                .write_study_sc(uid, result.version, &sc.bytes)
                .map_err(|e| e.to_string())?;
            dicom.push(Outgoing {
                file: sc_path,
                sop_class_uid: sc.sop_class_uid,
                sop_instance_uid: sc.sop_instance_uid,
                payload: Payload::Dicom,
            });
        }
        let mut outbox = d.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let key = study_key(uid);
        for destination in &d.destinations {
            let objects = match Destination::parse(destination) {
                Ok(parsed) if !parsed.takes_dicom() => std::slice::from_ref(&fhir),
                _ => dicom.as_slice(),
            };
            for object in objects {
                outbox
                    .ensure(
                        &key,
                        result.version,
                        object,
                        destination,
                        self.clock.unix_ms(),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        drop(outbox);
        d.wake.notify_one();
        Ok(())
    }
}
