//! Results: one file per processed instance and one per study version,
//! each written whole (temporary file, fsync, rename, directory fsync), so
//! that after a power loss a result is either complete or absent. File
//! names are our instance ids and a digest of the Study Instance UID: never
//! the peer's strings.
//!
//! The study rule (how a study's decision is taken from its instances):
//! - An instance that repeats an earlier one (same SOP Instance UID, same
//!   pixels, same patient: `same_as`) is listed but never counted.
//! - **One patient**: if two counted instances name different patients
//!   ([`cxr_report::identity::patient_conflict`]), the study abstains with
//!   `ABSTAIN_PATIENT_CONFLICT` and the `patient_conflict` flag.
//! - **One instance per UID**: a SOP Instance UID that arrived with other
//!   content that is not a repeat makes the study abstain with
//!   `ABSTAIN_INSTANCE_CONFLICT` and the `instance_conflict` flag.
//! - Only **frontal chest views that passed every gate** (tags and
//!   content, as `cxr-study` judges them) count. Laterals, other images and
//!   refused or failed instances are listed with their outcome but never
//!   decide.
//! - With no such view, the study ends as its first instance did (refused,
//!   failed or abstention), with its reason, and publishes no per-label
//!   probability.
//! - With one, the study takes its calls and probabilities.
//! - With several, a label on which they all make the same call keeps it
//!   (with the first view's probability); a label on which they disagree
//!   is Indeterminate, with no probability.
//! - Views of different models never merge: the study abstains with
//!   `ABSTAIN_MIXED_MODELS` (the worker re-runs such views first, so this
//!   is the last guard, not the rule).
//! - A study with no label called present or absent is `undecided`, never
//!   a decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::{create_dir, hex};
use crate::spool::{Disposition, JournalRecord};
use crate::SpoolError;

pub use cxr_report::result::{
    Finding, Flag, InstanceOutcome, InstanceSummary, LabelResult, ModelRef, Reason, SrUids,
    StudyHeader, StudyOutcome, StudyResult, Superseded, RESULT_SCHEMA,
};

fn first_attempt() -> u32 {
    1
}

/// What the engine made of one spool instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceResult {
    pub schema: String,
    pub instance: u64,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: Option<String>,
    /// The patient and study attributes the instance carries.
    pub header: StudyHeader,
    pub sha256: String,
    pub outcome: InstanceOutcome,
    /// A frontal chest view by the gates (tags and content): only these decide.
    pub frontal: bool,
    pub labels: Vec<LabelResult>,
    pub reason: Option<Reason>,
    pub model: Option<ModelRef>,
    pub audit_seq: Option<u64>,
    /// The study path's full line (as `classify` prints it).
    pub detail: serde_json::Value,
    /// The earlier instance this one repeats (same SOP Instance UID, same
    /// decoded pixels and patient): not run, never a second view.
    #[serde(default)]
    pub same_as: Option<u64>,
    /// How many times the instance was run (a transient fault is retried).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// A PNG of the model input exactly as the engine saw it, written
    /// beside the result (`instances/ID.png`), not inside it.
    #[serde(skip)]
    pub preview_png: Option<Vec<u8>>,
}

impl InstanceResult {
    /// A result for `record` with nothing decided yet: the base every
    /// processor fills in.
    pub fn new(record: &JournalRecord, outcome: InstanceOutcome) -> InstanceResult {
        InstanceResult {
            schema: RESULT_SCHEMA.into(),
            instance: record.id,
            sop_class_uid: record.sop_class_uid.clone(),
            sop_instance_uid: record.sop_instance_uid.clone(),
            // What a derived object (the SR) repeats of the source study,
            // as read when the instance was received.
            series_instance_uid: record.series_instance_uid.clone(),
            header: record.header.clone(),
            sha256: record.sha256.clone(),
            outcome,
            frontal: false,
            labels: Vec::new(),
            reason: None,
            model: None,
            audit_seq: None,
            detail: serde_json::Value::Null,
            same_as: None,
            attempt: 1,
            preview_png: None,
        }
    }

    /// A fault that may clear by itself (no model installed yet, the audit
    /// log without room, the engine failing): worth running again.
    pub fn is_transient(&self) -> bool {
        let code = self.reason.as_ref().map_or("", |r| r.code.as_str());
        match self.outcome {
            InstanceOutcome::NoModel => true,
            InstanceOutcome::Failed | InstanceOutcome::Refused => {
                code.starts_with("AUDIT_")
                    || code.starts_with("ENGINE_")
                    || code == "CONTENT_GATE_UNAVAILABLE"
            }
            _ => false,
        }
    }
}

/// The result of a journalled instance whose file cannot be read.
pub fn unreadable(record: &JournalRecord, why: &str) -> InstanceResult {
    InstanceResult {
        reason: Some(Reason {
            code: "SPOOL_UNREADABLE".into(),
            message: format!("the stored instance cannot be read: {why} (fix: check the state directory's disk; ask the modality to resend)"),
        }),
        ..InstanceResult::new(record, InstanceOutcome::Failed)
    }
}

fn summary(r: &InstanceResult, record: &JournalRecord) -> InstanceSummary {
    InstanceSummary {
        instance: r.instance,
        sop_class_uid: r.sop_class_uid.clone(),
        sop_instance_uid: r.sop_instance_uid.clone(),
        series_instance_uid: r.series_instance_uid.clone(),
        sha256: r.sha256.clone(),
        outcome: r.outcome,
        frontal: r.frontal,
        reason_code: r.reason.as_ref().map(|x| x.code.clone()),
        conflicts_with: match &record.disposition {
            Disposition::Conflict { with } => with.clone(),
            Disposition::New => Vec::new(),
        },
        same_as: r.same_as,
    }
}

/// Which version of a study is being published, and what it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyVersion {
    pub version: u32,
    /// SHA-256 of the previous version's file.
    pub previous: Option<String>,
    /// The previous version's SR.
    pub supersedes: Option<Superseded>,
    pub completed_unix_ms: u64,
}

/// Apply the study rule (module docs) to a study's instances, in arrival order.
pub fn study_result(
    study_instance_uid: &str,
    at: StudyVersion,
    instances: &[(&InstanceResult, &JournalRecord)],
) -> StudyResult {
    let counted: Vec<(&InstanceResult, &JournalRecord)> = instances
        .iter()
        .filter(|(r, _)| r.same_as.is_none())
        .copied()
        .collect();
    let deciding: Vec<&InstanceResult> = counted
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| {
            r.frontal
                && matches!(
                    r.outcome,
                    InstanceOutcome::Decision | InstanceOutcome::Undecided
                )
        })
        .collect();
    let mut result = StudyResult {
        schema: RESULT_SCHEMA.into(),
        study_instance_uid: study_instance_uid.to_owned(),
        // The first instance whose header was read (one whose file could
        // not be read has none).
        header: instances
            .iter()
            .map(|(r, _)| &r.header)
            .find(|h| h.patient_id.is_some() || h.patient_name.is_some())
            .or_else(|| instances.first().map(|(r, _)| &r.header))
            .cloned()
            .unwrap_or_default(),
        version: at.version,
        previous: at.previous,
        completed_unix_ms: at.completed_unix_ms,
        outcome: StudyOutcome::Decision,
        flags: Vec::new(),
        labels: Vec::new(),
        reason: None,
        decided_by: deciding.iter().map(|r| r.instance).collect(),
        instances: instances.iter().map(|(r, j)| summary(r, j)).collect(),
        model: None,
        supersedes: at.supersedes,
        sr: None,
    };
    if let Some(reason) = conflict(&counted, &mut result.flags) {
        abstain(&mut result, &counted, Some(reason));
        return result;
    }
    let Some(first) = deciding.first() else {
        abstain(&mut result, &counted, None);
        return result;
    };
    if deciding.iter().any(|r| r.model != first.model) {
        abstain(
            &mut result,
            &counted,
            Some(Reason {
                code: "ABSTAIN_MIXED_MODELS".into(),
                message: "The study's views were classified by different models and are not combined; it runs again under the installed model".into(),
            }),
        );
        return result;
    }
    result.model = first.model.clone();
    result.labels = agreed_labels(first, &deciding);
    if !result
        .labels
        .iter()
        .any(|l| matches!(l.finding, Finding::Present | Finding::Absent))
    {
        result.outcome = StudyOutcome::Undecided;
    }
    result
}

/// Whether the counted instances name one patient and give each SOP
/// Instance UID one content; sets the flags and returns the reason to
/// abstain when not (an instance conflict's reason first: it is the more
/// specific one when a resend changed the patient's name).
fn conflict(
    counted: &[(&InstanceResult, &JournalRecord)],
    flags: &mut Vec<Flag>,
) -> Option<Reason> {
    let mut reason = None;
    let repeated = counted
        .iter()
        .find(|(_, j)| matches!(j.disposition, Disposition::Conflict { .. }));
    if let Some((r, _)) = repeated {
        flags.push(Flag::InstanceConflict);
        reason = Some(Reason {
            code: "ABSTAIN_INSTANCE_CONFLICT".into(),
            message: format!("Instance {} arrived again with other image or patient content under the same SOP Instance UID: nothing is reported; check which copy is right and resend the study with new UIDs", r.sop_instance_uid),
        });
    }
    let pairs = counted
        .iter()
        .enumerate()
        .flat_map(|(i, a)| counted[i + 1..].iter().map(move |b| (a.0, b.0)));
    for (a, b) in pairs {
        if let Some(field) = cxr_report::identity::patient_conflict(&a.header, &b.header) {
            flags.push(Flag::PatientConflict);
            reason = reason.or_else(|| Some(Reason {
                code: "ABSTAIN_PATIENT_CONFLICT".into(),
                message: format!("The study's images name different patients ({field} differs between instances {} and {}): nothing is reported; check the study at the modality and resend it under the right patient", a.instance, b.instance),
            }));
            break;
        }
    }
    flags.sort_unstable();
    reason
}

/// Whether `new` says what `old` said: the same outcome, calls,
/// probabilities, reason, flags and model over the same inputs. A re-run
/// that changes nothing (a fault that persists) publishes no new version.
pub fn says_the_same(old: &StudyResult, new: &StudyResult) -> bool {
    let inputs = |r: &StudyResult| -> Vec<(String, InstanceOutcome, Option<u64>)> {
        r.instances
            .iter()
            .map(|i| (i.sha256.clone(), i.outcome, i.same_as))
            .collect()
    };
    old.outcome == new.outcome
        && old.labels == new.labels
        && old.reason == new.reason
        && old.flags == new.flags
        && old.model == new.model
        && old.decided_by == new.decided_by
        && inputs(old) == inputs(new)
}

/// No instance decides: the study ends as its first instance did (or with
/// `reason`), and lists every finding the model would report,
/// Indeterminate, without a probability.
fn abstain(
    result: &mut StudyResult,
    instances: &[(&InstanceResult, &JournalRecord)],
    reason: Option<Reason>,
) {
    let first = instances.first().map(|(r, _)| *r);
    result.outcome = match (&reason, first.map(|r| r.outcome)) {
        (None, Some(InstanceOutcome::Refused)) => StudyOutcome::Refused,
        (None, Some(InstanceOutcome::Failed | InstanceOutcome::NoModel)) => StudyOutcome::Failed,
        _ => StudyOutcome::Abstention,
    };
    result.decided_by.clear();
    result.reason = Some(reason.or_else(|| first.and_then(|r| r.reason.clone())).unwrap_or_else(|| Reason {
        code: "NO_FRONTAL_VIEW".into(),
        message: "The study has no frontal chest view that passed every gate: no finding is reported".into(),
    }));
    result.model = instances.iter().find_map(|(r, _)| r.model.clone());
    result.labels = instances
        .iter()
        .map(|(r, _)| &r.labels)
        .find(|l| !l.is_empty())
        .map(|labels| labels.iter().map(indeterminate).collect())
        .unwrap_or_default();
}

/// The first deciding instance's findings where every deciding instance
/// agrees, Indeterminate (without a probability) where any differs.
fn agreed_labels(first: &InstanceResult, deciding: &[&InstanceResult]) -> Vec<LabelResult> {
    first
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let agree = deciding.iter().all(|r| {
                r.labels
                    .get(i)
                    .is_some_and(|o| o.label == l.label && o.finding == l.finding)
            });
            if agree {
                l.clone()
            } else {
                indeterminate(l)
            }
        })
        .collect()
}

fn indeterminate(label: &LabelResult) -> LabelResult {
    LabelResult {
        label: label.label.clone(),
        finding: Finding::Indeterminate,
        probability: None,
        threshold: label.threshold,
    }
}

/// The results folder of one state directory.
#[derive(Debug, Clone)]
pub struct ResultStore {
    instances: PathBuf,
    studies: PathBuf,
    publications: std::sync::Arc<crate::publications::PublicationLog>,
}

/// The folder name of a study: a digest of its UID, never the UID.
pub fn study_key(study_instance_uid: &str) -> String {
    let d = Sha256::digest(study_instance_uid.as_bytes());
    hex(&d[..16])
}

/// Write `bytes` to `path` whole: temporary file (`v1.json.tmp`, one per
/// final name), fsync, rename, directory fsync.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    cxr_fsio::write_atomically(path, bytes, 0o666)
        .map_err(|f| SpoolError::io(f.action, path, f.error))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SpoolError> {
    let bytes = std::fs::read(path).map_err(|e| SpoolError::io("reading", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| SpoolError::io("parsing", path, e))
}

/// A study's file `name`, relative to the state directory.
fn relative_study_file(study_instance_uid: &str, name: &str) -> PathBuf {
    PathBuf::from("results/studies")
        .join(study_key(study_instance_uid))
        .join(name)
}

impl ResultStore {
    /// Open (or create) `root/results`.
    pub fn open(root: &Path) -> Result<ResultStore, SpoolError> {
        let base = root.join("results");
        create_dir(&base)?;
        let store = ResultStore {
            instances: base.join("instances"),
            studies: base.join("studies"),
            publications: std::sync::Arc::new(crate::publications::PublicationLog::new(&base)),
        };
        create_dir(&store.instances)?;
        create_dir(&store.studies)?;
        Ok(store)
    }

    /// The order study versions were published in.
    pub fn publications(&self) -> &crate::publications::PublicationLog {
        &self.publications
    }

    fn instance_path(&self, id: u64) -> PathBuf {
        self.instances.join(format!("{id}.json"))
    }

    fn instance_preview_path(&self, id: u64) -> PathBuf {
        self.instances.join(format!("{id}.png"))
    }

    /// Delete the model input's PNG of a retired instance (it is the
    /// patient's image: it goes with the input).
    pub fn remove_instance_preview(&self, id: u64) {
        let _ = std::fs::remove_file(self.instance_preview_path(id));
    }

    /// The model input's PNG of instance `id`, once it was processed.
    pub fn instance_preview(&self, id: u64) -> Option<Vec<u8>> {
        std::fs::read(self.instance_preview_path(id)).ok()
    }

    /// The spool's records of instances still held: every one but a pruned
    /// instance's tombstone (retired, and its result deleted), which only
    /// recognises a resend and is neither run nor listed.
    pub fn held_records(&self, spool: &crate::spool::Spool) -> Vec<JournalRecord> {
        spool
            .records()
            .iter()
            .filter(|r| !spool.is_retired(r.id) || self.has_instance(r.id))
            .cloned()
            .collect()
    }

    /// Whether the study folder `key` (see [`study_key`]) is still here.
    pub fn has_study_key(&self, key: &str) -> bool {
        self.studies.join(key).is_dir()
    }

    /// Delete a study's results: every version's files, and its
    /// instances' results and pictures (their spool records stay).
    pub fn remove_study(
        &self,
        study_instance_uid: &str,
        instances: &[u64],
    ) -> Result<(), SpoolError> {
        for id in instances {
            for path in [self.instance_path(*id), self.instance_preview_path(*id)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::io("removing", &path, e)),
                }
            }
        }
        let dir = self.study_dir(study_instance_uid);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("removing", &dir, e)),
        }
        crate::files::sync_dir(&self.studies)?;
        crate::files::sync_dir(&self.instances)
    }

    pub fn study_dir(&self, study_instance_uid: &str) -> PathBuf {
        self.studies.join(study_key(study_instance_uid))
    }

    pub fn study_path(&self, study_instance_uid: &str, version: u32) -> PathBuf {
        self.study_dir(study_instance_uid)
            .join(format!("v{version}.json"))
    }

    pub fn write_instance(&self, result: &InstanceResult) -> Result<(), SpoolError> {
        if let Some(png) = &result.preview_png {
            write_whole(&self.instance_preview_path(result.instance), png)?;
        }
        let path = self.instance_path(result.instance);
        let bytes =
            serde_json::to_vec_pretty(result).map_err(|e| SpoolError::io("encoding", &path, e))?;
        write_whole(&path, &bytes)
    }

    /// Whether instance `id` has its result file.
    pub fn has_instance(&self, id: u64) -> bool {
        self.instance_path(id).is_file()
    }

    /// The stored result of an instance, if it has one.
    pub fn instance(&self, id: u64) -> Result<Option<InstanceResult>, SpoolError> {
        let path = self.instance_path(id);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Write a study version (the same bytes `serde_json::to_vec_pretty` gives).
    pub fn write_study(&self, result: &StudyResult) -> Result<Vec<u8>, SpoolError> {
        create_dir(&self.study_dir(&result.study_instance_uid))?;
        let path = self.study_path(&result.study_instance_uid, result.version);
        let bytes =
            serde_json::to_vec_pretty(result).map_err(|e| SpoolError::io("encoding", &path, e))?;
        write_whole(&path, &bytes)?;
        Ok(bytes)
    }

    /// Write `name` (one of a study version's files) beside its JSON;
    /// returns its path relative to the state directory (what the outbox
    /// records).
    fn write_study_file(
        &self,
        study_instance_uid: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        let dir = self.study_dir(study_instance_uid);
        create_dir(&dir)?;
        write_whole(&dir.join(name), bytes)?;
        Ok(relative_study_file(study_instance_uid, name))
    }

    /// A study version's JSON, relative to the state directory.
    pub fn study_file(&self, study_instance_uid: &str, version: u32) -> PathBuf {
        relative_study_file(study_instance_uid, &format!("v{version}.json"))
    }

    /// Write a study version's SR (`vN.dcm`).
    pub fn write_study_sr(
        &self,
        study_instance_uid: &str,
        version: u32,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        self.write_study_file(study_instance_uid, &format!("v{version}.dcm"), bytes)
    }

    /// Write a study version's result picture (`vN.png`).
    pub fn write_study_picture(
        &self,
        study_instance_uid: &str,
        version: u32,
        png: &[u8],
    ) -> Result<(), SpoolError> {
        self.write_study_file(study_instance_uid, &format!("v{version}.png"), png)
            .map(|_| ())
    }

    /// Write a study version's Secondary Capture (`vN-sc.dcm`).
    pub fn write_study_sc(
        &self,
        study_instance_uid: &str,
        version: u32,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        self.write_study_file(study_instance_uid, &format!("v{version}-sc.dcm"), bytes)
    }

    /// Every DICOM object the appliance wrote (each study version's SR, and
    /// its Secondary Capture when one is made).
    pub fn derived_files(&self) -> Vec<PathBuf> {
        let Ok(dirs) = std::fs::read_dir(&self.studies) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = dirs
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|files| files.flatten().map(|f| f.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            // Only a published version's objects: its JSON is written last.
            .filter(|p| {
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let version = stem.strip_suffix("-sc").unwrap_or(stem);
                p.with_file_name(format!("{version}.json")).is_file()
            })
            .collect();
        files.sort();
        files
    }

    /// The result picture (`vN.png`) of the study version that wrote
    /// `object` (`vN.dcm` or `vN-sc.dcm`), if it was drawn.
    pub fn picture_for(&self, object: &Path) -> Option<Vec<u8>> {
        let stem = object.file_stem()?.to_str()?;
        let version = stem.strip_suffix("-sc").unwrap_or(stem);
        std::fs::read(object.with_file_name(format!("{version}.png"))).ok()
    }

    /// The latest version of every study on disk (a study whose latest
    /// file cannot be read is left out; the service quarantines such files
    /// at start, see [`ResultStore::quarantine`]).
    pub fn latest_studies(&self) -> Result<BTreeMap<String, StudyResult>, SpoolError> {
        let mut out: BTreeMap<String, StudyResult> = BTreeMap::new();
        let dirs = std::fs::read_dir(&self.studies)
            .map_err(|e| SpoolError::io("listing", &self.studies, e))?;
        for dir in dirs.flatten() {
            let Some(latest) = latest_version(&dir.path()) else {
                continue;
            };
            if let Ok(r) = read_json::<StudyResult>(&dir.path().join(format!("v{latest}.json"))) {
                out.insert(r.study_instance_uid.clone(), r);
            }
        }
        Ok(out)
    }

    /// Every result file that does not parse (an instance's or a study
    /// version's JSON: a disk fault, a hand edit): its path under
    /// `results/` and why. See [`ResultStore::quarantine`].
    pub fn unreadable_results(&self) -> Result<Vec<(PathBuf, String)>, SpoolError> {
        let mut bad: Vec<(PathBuf, String)> = Vec::new();
        let mut check = |path: PathBuf, parses: &dyn Fn(&Path) -> Result<(), SpoolError>| {
            if let Err(e) = parses(&path) {
                bad.push((path, e.to_string()));
            }
        };
        for entry in read_dir_sorted(&self.instances)? {
            if entry.extension().is_some_and(|x| x == "json") {
                check(entry, &|p| read_json::<InstanceResult>(p).map(|_| ()));
            }
        }
        for dir in read_dir_sorted(&self.studies)?
            .into_iter()
            .filter(|d| d.is_dir())
        {
            for entry in read_dir_sorted(&dir)? {
                let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with('v') && name.ends_with(".json") {
                    check(entry, &|p| read_json::<StudyResult>(p).map(|_| ()));
                }
            }
        }
        let base = self.base();
        Ok(bad
            .into_iter()
            .map(|(path, why)| (path.strip_prefix(&base).unwrap_or(&path).to_owned(), why))
            .collect())
    }

    fn base(&self) -> PathBuf {
        self.studies.parent().unwrap_or(&self.studies).to_owned()
    }

    /// Move `relative` (a path under `results/` that
    /// [`ResultStore::unreadable_results`] named) to `results/quarantine/`,
    /// so that one bad file neither stops the start nor hides a study: an
    /// instance whose result is moved runs again, a study falls back to its
    /// last readable version.
    pub fn quarantine(&self, relative: &Path) -> Result<PathBuf, SpoolError> {
        let base = self.base();
        let quarantine = base.join("quarantine");
        create_dir(&quarantine)?;
        let flat = relative.to_string_lossy().replace(['/', '\\'], "_");
        let target = quarantine.join(format!("{flat}.{}", std::process::id()));
        let path = base.join(relative);
        std::fs::rename(&path, &target).map_err(|e| SpoolError::io("quarantining", &path, e))?;
        crate::files::sync_dir(&quarantine)?;
        Ok(target)
    }

    /// Every published version of a study, oldest first (a version whose
    /// file cannot be read is left out).
    pub fn study_versions(&self, study_instance_uid: &str) -> Vec<StudyResult> {
        let dir = self.study_dir(study_instance_uid);
        let Some(latest) = latest_version(&dir) else {
            return Vec::new();
        };
        (1..=latest)
            .filter_map(|v| read_json(&dir.join(format!("v{v}.json"))).ok())
            .collect()
    }

    /// The latest version's file of a study, if any: (version, bytes).
    pub fn latest_study_file(&self, study_instance_uid: &str) -> Option<(u32, Vec<u8>)> {
        let dir = self.study_dir(study_instance_uid);
        let v = latest_version(&dir)?;
        std::fs::read(dir.join(format!("v{v}.json")))
            .ok()
            .map(|b| (v, b))
    }
}

/// A folder's entries, sorted (missing folder: none).
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("listing", dir, e)),
    };
    let mut out: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    out.sort();
    Ok(out)
}

fn latest_version(dir: &Path) -> Option<u32> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix('v')?
                .strip_suffix(".json")?
                .parse::<u32>()
                .ok()
        })
        .max()
}

/// SHA-256 in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, disposition: Disposition) -> JournalRecord {
        JournalRecord {
            id,
            bytes: 1,
            sha256: format!("{id:064}"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: format!("1.2.{id}"),
            study_instance_uid: "1.2".into(),
            source: "test".into(),
            received_unix_ms: 0,
            disposition,
            series_instance_uid: Some("1.2.9".into()),
            header: StudyHeader::default(),
            modality: None,
        }
    }

    fn instance(
        id: u64,
        frontal: bool,
        outcome: InstanceOutcome,
        calls: &[(Finding, f32)],
    ) -> InstanceResult {
        InstanceResult {
            schema: RESULT_SCHEMA.into(),
            instance: id,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
            sop_instance_uid: format!("1.2.{id}"),
            series_instance_uid: Some("1.2.9".into()),
            header: StudyHeader::default(),
            sha256: format!("{id:064}"),
            outcome,
            frontal,
            labels: calls
                .iter()
                .enumerate()
                .map(|(i, (f, p))| LabelResult {
                    label: format!("L{i}"),
                    finding: *f,
                    probability: Some(*p),
                    threshold: Some(0.5),
                })
                .collect(),
            reason: (outcome == InstanceOutcome::Abstention).then(|| Reason {
                code: "NOT_FRONTAL_CHEST".into(),
                message: "a lateral".into(),
            }),
            model: None,
            audit_seq: None,
            detail: serde_json::Value::Null,
            same_as: None,
            attempt: 1,
            preview_png: None,
        }
    }

    fn at(version: u32) -> StudyVersion {
        StudyVersion {
            version,
            ..StudyVersion::default()
        }
    }

    #[test]
    fn a_lateral_never_decides_and_disagreeing_frontals_are_indeterminate() {
        use Finding::*;
        let lateral = instance(1, false, InstanceOutcome::Abstention, &[]);
        let a = instance(
            2,
            true,
            InstanceOutcome::Decision,
            &[(Present, 0.9), (Absent, 0.1)],
        );
        let b = instance(
            3,
            true,
            InstanceOutcome::Decision,
            &[(Present, 0.8), (Present, 0.6)],
        );
        let (r1, r2, r3) = (
            record(1, Disposition::New),
            record(2, Disposition::New),
            record(3, Disposition::New),
        );
        let one = study_result("1.2", at(1), &[(&lateral, &r1), (&a, &r2)]);
        assert_eq!(one.outcome, StudyOutcome::Decision);
        assert_eq!(one.decided_by, vec![2]);
        assert_eq!(one.labels, a.labels);
        let two = study_result("1.2", at(2), &[(&lateral, &r1), (&a, &r2), (&b, &r3)]);
        assert_eq!(
            two.labels[0], a.labels[0],
            "agreeing label keeps the first view's probability"
        );
        assert_eq!(two.labels[1].finding, Indeterminate);
        assert_eq!(two.labels[1].probability, None);
        let only_lateral = study_result("1.2", at(1), &[(&lateral, &r1)]);
        assert_eq!(only_lateral.outcome, StudyOutcome::Abstention);
        assert!(
            only_lateral.labels.is_empty(),
            "a lateral alone names no finding"
        );
        assert_eq!(
            only_lateral.reason.map(|r| r.code),
            Some("NOT_FRONTAL_CHEST".into())
        );
    }

    #[test]
    fn results_are_written_whole_and_found_again() {
        let dir = std::env::temp_dir().join(format!("cxr-results-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = ResultStore::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let r = instance(
            5,
            true,
            InstanceOutcome::Decision,
            &[(Finding::Absent, 0.2)],
        );
        store.write_instance(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store.instance(5).unwrap_or_else(|e| panic!("{e}")),
            Some(r.clone())
        );
        assert_eq!(store.instance(6).unwrap_or_else(|e| panic!("{e}")), None);
        let j = record(5, Disposition::New);
        for v in 1..=2 {
            store
                .write_study(&study_result("1.2", at(v), &[(&r, &j)]))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let latest = store.latest_studies().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(latest["1.2"].version, 2);
        assert!(!store.study_dir("1.2").join("v2.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_study_with_every_label_uncertain_is_undecided_not_a_decision() {
        use Finding::*;
        let all_uncertain = instance(
            1,
            true,
            InstanceOutcome::Undecided,
            &[(Indeterminate, 0.5), (Indeterminate, 0.4)],
        );
        let r = study_result(
            "1.2",
            at(1),
            &[(&all_uncertain, &record(1, Disposition::New))],
        );
        assert_eq!(r.outcome, StudyOutcome::Undecided);
        assert_eq!(r.findings_summary(), "0 present, 0 absent, 2 indeterminate");
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert!(text.contains("\"outcome\":\"undecided\""), "{text}");
    }

    fn of_patient(mut r: InstanceResult, id: &str, name: &str) -> InstanceResult {
        r.header.patient_id = Some(id.into());
        r.header.patient_name = Some(name.into());
        r
    }

    #[test]
    fn two_patients_under_one_study_uid_abstain_with_the_conflict_flagged() {
        use Finding::*;
        let a = of_patient(
            instance(1, true, InstanceOutcome::Decision, &[(Present, 0.9)]),
            "PAT-A",
            "DOE^JOHN",
        );
        let b = of_patient(
            instance(2, true, InstanceOutcome::Decision, &[(Present, 0.9)]),
            "PAT-B",
            "DOE^JOHN",
        );
        let (r1, r2) = (record(1, Disposition::New), record(2, Disposition::New));
        let r = study_result("1.2", at(1), &[(&a, &r1), (&b, &r2)]);
        assert_eq!(r.outcome, StudyOutcome::Abstention);
        assert_eq!(r.flags, vec![Flag::PatientConflict]);
        assert_eq!(
            r.reason.map(|x| x.code),
            Some("ABSTAIN_PATIENT_CONFLICT".into())
        );
        assert!(r
            .labels
            .iter()
            .all(|l| l.probability.is_none() && l.finding == Indeterminate));
        assert!(r.decided_by.is_empty());
        let same = of_patient(
            instance(2, true, InstanceOutcome::Decision, &[(Present, 0.9)]),
            "PAT-A",
            " doe^john^^",
        );
        let r = study_result("1.2", at(1), &[(&a, &r1), (&same, &r2)]);
        assert_eq!(
            r.outcome,
            StudyOutcome::Decision,
            "one patient, names normalised"
        );
    }

    #[test]
    fn a_resent_uid_with_other_content_abstains_and_an_identical_repeat_is_one_view() {
        use Finding::*;
        let a = instance(1, true, InstanceOutcome::Decision, &[(Present, 0.9)]);
        let resent = instance(2, true, InstanceOutcome::Decision, &[(Present, 0.8)]);
        let (r1, r2) = (
            record(1, Disposition::New),
            record(2, Disposition::Conflict { with: vec![1] }),
        );
        let r = study_result("1.2", at(1), &[(&a, &r1), (&resent, &r2)]);
        assert_eq!(r.outcome, StudyOutcome::Abstention);
        assert_eq!(r.flags, vec![Flag::InstanceConflict]);
        assert_eq!(
            r.reason.map(|x| x.code),
            Some("ABSTAIN_INSTANCE_CONFLICT".into())
        );
        let repeat = InstanceResult {
            same_as: Some(1),
            ..resent
        };
        let r = study_result("1.2", at(1), &[(&a, &r1), (&repeat, &r2)]);
        assert_eq!(r.outcome, StudyOutcome::Decision);
        assert_eq!(r.decided_by, vec![1], "a repeat is never a second view");
        assert_eq!(r.counted_instances().count(), 1);
        assert_eq!(r.instances[1].same_as, Some(1));
    }

    #[test]
    fn views_of_two_models_never_merge() {
        use Finding::*;
        let model = |v: u64| {
            Some(ModelRef {
                model_id: "m".into(),
                version: v,
                digest: format!("{v}"),
            })
        };
        let a = InstanceResult {
            model: model(1),
            ..instance(1, true, InstanceOutcome::Decision, &[(Present, 0.9)])
        };
        let b = InstanceResult {
            model: model(2),
            ..instance(2, true, InstanceOutcome::Decision, &[(Present, 0.9)])
        };
        let r = study_result(
            "1.2",
            at(1),
            &[
                (&a, &record(1, Disposition::New)),
                (&b, &record(2, Disposition::New)),
            ],
        );
        assert_eq!(
            r.reason.map(|x| x.code),
            Some("ABSTAIN_MIXED_MODELS".into())
        );
    }
}
