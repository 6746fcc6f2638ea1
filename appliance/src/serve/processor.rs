//! The worker's study path: the same as `classify`'s, audited the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

use crate::serve::worker::Processor;
use cxr_audit::{AuditLog, DeviceSecret, Event, Mode};
use cxr_board::BoardProfile;
use cxr_store::results::{
    Finding, InstanceOutcome, InstanceResult, LabelResult, ModelRef, Reason, StudyResult,
};
use cxr_store::spool::JournalRecord;
use cxr_study::{tightened, StudyPath};
use sha2::{Digest, Sha256};

use super::Model;
use crate::classify::{
    encode_record, failed, panic_text, refused, Auditor, Clock, Outcome, Study,
    StudyResult as StudyRun,
};
use crate::device::now_unix_ms;

/// The worker's study path: the same as `classify`'s, audited the same way.
pub(super) struct ServeProcessor {
    /// Swapped by the admin socket when a bundle is installed or rolled back.
    pub(super) model: Arc<Mutex<Result<Model, Reason>>>,
    pub(super) board: BoardProfile,
    pub(super) clock: Clock,
    pub(super) audit: Arc<Mutex<AuditLog>>,
    pub(super) secret: DeviceSecret,
}

fn finding(call: Option<&str>) -> Finding {
    match call {
        Some("positive") => Finding::Present,
        Some("negative") => Finding::Absent,
        _ => Finding::Indeterminate,
    }
}

/// The instance result from the study path's line. An abstained or
/// refused instance lists the model's findings as Indeterminate, with no
/// probability.
fn instance_result(
    record: &JournalRecord,
    run: &StudyRun,
    params: &cxr_bundle::ModelParams,
    model: Option<ModelRef>,
    audit_seq: Option<u64>,
) -> InstanceResult {
    let line = &run.line;
    let outcome = match run.outcome {
        Outcome::Decided => InstanceOutcome::Decision,
        Outcome::Undecided => InstanceOutcome::Undecided,
        Outcome::Abstained => InstanceOutcome::Abstention,
        Outcome::Refused => InstanceOutcome::Refused,
        Outcome::Failed => InstanceOutcome::Failed,
    };
    let labels = match line["decision"]["labels"].as_array() {
        Some(ls) => ls
            .iter()
            .map(|l| LabelResult {
                label: l["label"].as_str().unwrap_or_default().to_owned(),
                finding: finding(l["call"].as_str()),
                probability: l["probability"].as_f64().map(|p| p as f32),
                threshold: l["threshold"].as_f64().map(|t| t as f32),
            })
            .collect(),
        // The model's labels with their operating points (none where the
        // band is infinite), nothing called.
        None => params
            .labels
            .iter()
            .zip(params.thresholds.iter().zip(&params.bands))
            .map(|(n, (t, band))| LabelResult {
                label: n.clone(),
                finding: Finding::Indeterminate,
                probability: None,
                threshold: band.is_finite().then_some(*t),
            })
            .collect(),
    };
    let why = if line["decision"]["abstention"].is_object() {
        &line["decision"]["abstention"]
    } else {
        &line["error"]
    };
    let reason = why["code"].as_str().map(|code| Reason {
        code: code.to_owned(),
        message: why["message"].as_str().unwrap_or_default().to_owned(),
    });
    InstanceResult {
        // The study path's own rule (tags and content), never the tags alone.
        frontal: line["frontal_chest"] == true,
        labels,
        reason,
        model,
        audit_seq,
        detail: line.clone(),
        ..InstanceResult::new(record, outcome)
    }
}

fn no_model(record: &JournalRecord, reason: &Reason) -> InstanceResult {
    InstanceResult {
        reason: Some(reason.clone()),
        ..InstanceResult::new(record, InstanceOutcome::NoModel)
    }
}

impl ServeProcessor {
    /// The study path `classify` runs, on one spool instance; a panic past
    /// ingest fails this instance only.
    fn run_study(&self, model: &Model, file: &Path, bytes: &[u8]) -> StudyRun {
        let params = model.source.params();
        let study = Study {
            path: StudyPath {
                selection: &model.selection,
                params,
                decision_params: tightened(params.decision_params(), self.board.gate.require_age),
                gate_required: model.source.mode() == Mode::Verified,
            },
            clock: &self.clock,
            keep_input: true,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| study.run(file, bytes)))
            .unwrap_or_else(|p| {
                failed(file, "STUDY_PANICKED", format!("internal fault while processing this study: {} (fix: report this study to service)", panic_text(p.as_ref())))
            })
    }
}

/// How a result names the model it came from.
fn model_ref(model: &Model) -> ModelRef {
    let bundle = model.source.bundle_ref();
    ModelRef {
        model_id: bundle.model_id.clone(),
        version: bundle.version,
        digest: cxr_bundle::hex::encode(&bundle.digest),
    }
}

/// What decides a study, of one Part 10 file: its decoded pixels (shape
/// and digest) and the tags the gates read (modality, body part, view,
/// age, sex, input class), never how it was encoded; `None` when it cannot
/// be decoded.
fn decisive_content(bytes: &[u8]) -> Option<(usize, usize, String, String)> {
    let r = cxr_dicom::read_any_modality(bytes, &cxr_dicom::ReadLimits::default()).ok()?;
    let a = &r.acquisition;
    let tags = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        a.modality, a.body_part, a.view_position, a.age_years, a.sex, a.input_class
    );
    Some((r.rows(), r.cols(), r.pixel_sha256(), tags))
}

impl Processor for ServeProcessor {
    fn model(&self) -> Option<ModelRef> {
        let slot = self.model.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().ok().map(model_ref)
    }

    fn is_repeat(
        &mut self,
        record: &JournalRecord,
        bytes: &[u8],
        earlier: &JournalRecord,
        earlier_bytes: &[u8],
    ) -> bool {
        if cxr_report::identity::patient_conflict(&record.header, &earlier.header).is_some() {
            return false;
        }
        let decoded =
            std::panic::catch_unwind(|| (decisive_content(bytes), decisive_content(earlier_bytes)));
        let same = matches!(decoded, Ok((Some(a), Some(b))) if a == b);
        if !same {
            return false;
        }
        let event = Event::InstanceRepeated {
            study_key: self.secret.study_key(&record.study_instance_uid),
            instance: record.id,
            same_as: earlier.id,
            sha256: cxr_bundle::hex::decode::<32>(&record.sha256).unwrap_or([0; 32]),
        };
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        // Unaudited, it is not a repeat: the study then abstains on the conflict.
        log.append(now_unix_ms(), event).is_ok()
    }

    fn process(&mut self, record: &JournalRecord, bytes: &[u8]) -> InstanceResult {
        let slot = Arc::clone(&self.model);
        let slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        let model = match &*slot {
            Ok(m) => m,
            Err(reason) => return no_model(record, reason),
        };
        let file = PathBuf::from(format!("spool/{}.dcm", record.id));
        let params = model.source.params();
        let bundle = model.source.bundle_ref();
        let model_ref = Some(model_ref(model));
        // The audit log is locked only to check for room and to append:
        // never across an inference.
        let room = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ensure_room();
        if let Err(e) = room {
            return instance_result(
                record,
                &refused(&file, e.code(), e.to_string()),
                params,
                model_ref,
                None,
            );
        }
        let started = StdInstant::now();
        let run = self.run_study(model, &file, bytes);
        let preview = run
            .input
            .as_ref()
            .and_then(|input| cxr_preprocess::preview_png(input).ok());
        let (run, decision) = encode_record(&file, run);
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let mut auditor = Auditor {
            log: &mut log,
            secret: &self.secret,
            bundle,
            mode: model.source.mode(),
            engine: model.selection.engine.name().to_owned(),
            engine_reasons: model.selection.reasons.clone(),
        };
        let latency_us = started.elapsed().as_micros() as u64;
        let result = match auditor.record(bytes, &run, decision, latency_us) {
            Ok(seq) => instance_result(record, &run, params, model_ref, Some(seq)),
            // No result is published without its audit record.
            Err(e) => instance_result(
                record,
                &failed(
                    &file,
                    e.code(),
                    format!("the audit record could not be written, the result is withheld: {e}"),
                ),
                params,
                model_ref,
                None,
            ),
        };
        InstanceResult {
            preview_png: preview,
            ..result
        }
    }

    fn published(&mut self, result: &StudyResult, file: &[u8]) -> Result<u64, String> {
        let inputs = result
            .instances
            .iter()
            .filter_map(|i| cxr_bundle::hex::decode::<32>(&i.sha256))
            .collect();
        let event = Event::StudyResult {
            study_key: self.secret.study_key(&result.study_instance_uid),
            version: result.version,
            outcome: result.outcome.as_str().to_owned(),
            result_sha256: Sha256::digest(file).into(),
            inputs_sha256: inputs,
        };
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let seq = log
            .append(now_unix_ms(), event)
            .map_err(|e| e.to_string())?;
        Ok(seq)
    }
}
