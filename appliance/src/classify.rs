//! `classify`: a study from DICOM to a gated, calibrated decision on one line
//! of JSON. Exit code, the most serious present: 4 no verified model, 2 a
//! study refused or failed, 3 an abstention, 5 a study with every label
//! uncertain (undecided), 0 decisions only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant as StdInstant;

use anyhow::Context;
use cxr_audit::{AuditLog, BundleRef, DeviceSecret, Event, Inference, Mode};
use cxr_bundle::{read_bounded, verify, ModelParams, VerifiedBundle, MAX_BUNDLE_BYTES};
use cxr_core::{
    AbstentionReason, Call, ContentVerdict, Decision, DecisionRecord, InputClass, StageTimings,
    StudyFacts,
};
use cxr_dicom::{read_radiograph_for, DecodeTarget, ReadLimits};
use cxr_engine::{select_engine, select_for_bundle, EnginePreference, Selection};
use cxr_radiograph::Radiograph;
use cxr_study::{tightened, StudyOutput, StudyPath};
use embassy_time::Instant;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::accel::Accelerators;
use crate::bundle_cmd::{bundle_ref, engine_preference, error_json, print};
use crate::device::{now_unix_ms, Device, DeviceArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    Auto,
    Tract,
}

#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    /// DICOM files, one study each.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Classify with this bundle file instead of the active one; it is
    /// verified on the fly (trust, board, anti-rollback floor).
    #[arg(long, conflicts_with_all = ["model", "params"])]
    bundle: Option<PathBuf>,
    /// Developer mode: a loose ONNX model (needs --params). Never for
    /// patients; the audit log marks every inference made this way.
    #[arg(long, requires = "params")]
    model: Option<PathBuf>,
    /// Developer mode: model spec and decision parameters, TOML.
    #[arg(long, requires = "model")]
    params: Option<PathBuf>,
    /// Engine (default: the board profile's).
    #[arg(long, value_enum)]
    engine: Option<EngineChoice>,
    /// Matrix-multiply threads for the CPU engine (default: the board profile's).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON lines (the default and, for now, only format).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The injected clock: embassy-time instants counted from process start.
pub(crate) struct Clock(pub(crate) StdInstant);

impl Clock {
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as u64)
    }
}

fn ms(since: StdInstant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn call_name(c: Call) -> &'static str {
    match c {
        Call::Positive => "positive",
        Call::Negative => "negative",
        Call::Uncertain => "uncertain",
    }
}

fn gates_json(d: &Decision) -> Value {
    json!({
        "input": d.gates.input.map(|r| r.code()),
        "ood": d.gates.ood,
        "deadline": d.gates.deadline,
    })
}

/// What the content gate saw: its class, and its scores only when the study
/// was not abstained (an abstention shows no number; the audit record keeps
/// them).
fn content_json(v: &ContentVerdict, abstained: bool) -> Value {
    if abstained {
        return json!({ "class": v.class.code(), "looks_like": v.class.description() });
    }
    json!({
        "class": v.class.code(),
        "looks_like": v.class.description(),
        "score": v.score,
        "frontal_probability": v.frontal_probability,
        "distance": v.distance,
    })
}

/// The operator's message: a content mismatch says what the image looks
/// like, and a class the image decided (its tags said nothing) says so.
fn abstention_message(
    reason: AbstentionReason,
    tags: InputClass,
    content: Option<&ContentVerdict>,
) -> String {
    match (reason, tags, content) {
        (AbstentionReason::ContentMismatch, _, Some(v)) => format!(
            "The tags say frontal chest film, but the image looks like {} — check the image and its tags, or refer to a radiologist",
            v.class.description()
        ),
        (_, InputClass::Unknown, Some(v)) if reason.is_input_class() => format!(
            "{} (judged from the image, which looks like {}: its tags do not say)",
            reason.operator_message(),
            v.class.description()
        ),
        _ => reason.operator_message().to_owned(),
    }
}

/// The decision as printed. An abstained study shows only why (its code,
/// message and gates): the numbers it withholds stay in the audit record.
fn decision_json(d: &Decision, params: &ModelParams, facts: &StudyFacts) -> Value {
    if let Some(a) = d.abstention {
        let message = abstention_message(a.reason, facts.input_class, facts.content.as_ref());
        return json!({
            "abstention": { "code": a.reason.code(), "message": message },
            "gates": gates_json(d),
        });
    }
    // A label without an operating point (an infinite band: always
    // Uncertain) shows no threshold.
    let labels: Vec<Value> = d
        .labels
        .iter()
        .zip(&params.labels)
        .zip(params.thresholds.iter().zip(&params.bands))
        .map(|((l, name), (threshold, band))| {
            let operating_point = band.is_finite();
            json!({ "label": name, "probability": l.probability, "spread": l.spread, "threshold": operating_point.then_some(threshold), "operating_point": operating_point, "call": l.call.map(call_name) })
        })
        .collect();
    json!({
        "labels": labels,
        "ood": d.ood.map(|s| json!({
            "low_joint_energy": s.low_joint_energy, "low_max_logit": s.low_max_logit, "mahalanobis": s.mahalanobis,
            "combined": s.combined, "max_combined": (!params.ood.terms.is_empty()).then_some(params.ood.max_combined),
            "kept": params.ood.terms.iter().map(|t| t.kind.name()).collect::<Vec<_>>(),
        })),
        "gates": gates_json(d),
        "abstention": null,
    })
}

/// How one study ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Decided,
    /// Every gate passed and every label was Uncertain.
    Undecided,
    Abstained,
    /// Ingest refused the input (or the audit log had no room).
    Refused,
    /// The study failed past ingest: engine, decision core, a caught panic.
    Failed,
}

impl Outcome {
    /// The batch's exit code is the one of its most serious study.
    fn severity(self) -> u8 {
        match self {
            Outcome::Decided => 0,
            Outcome::Undecided => 1,
            Outcome::Abstained => 2,
            Outcome::Refused | Outcome::Failed => 3,
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            Outcome::Decided => 0,
            Outcome::Undecided => 5,
            Outcome::Abstained => 3,
            Outcome::Refused | Outcome::Failed => 2,
        }
    }
}

/// What one study produced: the printed line and what the audit keeps.
pub(crate) struct StudyResult {
    pub(crate) outcome: Outcome,
    pub(crate) line: Value,
    pub(crate) audit_outcome: cxr_audit::Outcome,
    pub(crate) study_uid: Option<String>,
    pub(crate) record: Option<DecisionRecord>,
    /// The classifier's input as the engine saw it (prepared for the
    /// picture when a gate stopped the study first), when asked for.
    pub(crate) input: Option<cxr_preprocess::ModelInput>,
}

pub(crate) struct Study<'a> {
    pub(crate) path: StudyPath<'a>,
    pub(crate) clock: &'a Clock,
    /// Keep the model input in the result (the service draws it).
    pub(crate) keep_input: bool,
}

/// A study that got no decision and no abstention: refused at ingest, or
/// failed past it (`code` is the fault's stable code either way).
fn without_decision(file: &Path, outcome: Outcome, code: &str, message: String) -> StudyResult {
    let (name, audit_outcome) = match outcome {
        Outcome::Failed => (
            "failed",
            cxr_audit::Outcome::Failed {
                code: code.to_owned(),
            },
        ),
        _ => (
            "refused",
            cxr_audit::Outcome::Refused {
                code: code.to_owned(),
            },
        ),
    };
    StudyResult {
        outcome,
        line: json!({ "file": file.display().to_string(), "outcome": name, "flags": [], "error": { "code": code, "message": message } }),
        audit_outcome,
        study_uid: None,
        record: None,
        input: None,
    }
}

pub(crate) fn refused(file: &Path, code: &str, message: String) -> StudyResult {
    without_decision(file, Outcome::Refused, code, message)
}

pub(crate) fn failed(file: &Path, code: &str, message: String) -> StudyResult {
    without_decision(file, Outcome::Failed, code, message)
}

/// How far a compressed film was decoded below its stored size for the
/// model (`null` when it was decoded in full).
fn reduced_resolution_json(radiograph: &Radiograph) -> Value {
    radiograph
        .steps
        .iter()
        .find_map(|s| match s {
            cxr_radiograph::Step::ReducedResolution {
                method,
                divisor,
                stored_rows,
                stored_cols,
                rows,
                cols,
            } => Some(json!({
                "method": method,
                "divisor": divisor,
                "stored": [stored_rows, stored_cols],
                "decoded": [rows, cols],
            })),
            _ => None,
        })
        .unwrap_or(Value::Null)
}

fn micros(ms: f64) -> u64 {
    (ms * 1e3) as u64
}

/// The record the audit log keeps of a study that reached a decision.
fn record(radiograph: &Radiograph, out: &StudyOutput, timings: StageTimings) -> DecisionRecord {
    let a = &radiograph.acquisition;
    DecisionRecord {
        input_class: a.input_class,
        content: out.facts.content,
        age_years: a.age_years.map(|y| y.clamp(0.0, 255.0) as u8),
        views: out.views as u8,
        decision: out.decision.clone(),
        timings,
    }
}

impl Study<'_> {
    /// One study, start to end. Every fault is a `refused` or `failed`
    /// result with its stable code: nothing escapes as a bare error.
    pub(crate) fn run(&self, file: &Path, bytes: &[u8]) -> StudyResult {
        #[cfg(feature = "testing")]
        crate::testing::maybe_panic(file);
        let received = self.clock.now();
        let t = StdInstant::now();
        let target = DecodeTarget::ShortSideAtLeast(self.path.decode_short_side());
        let radiograph = match read_radiograph_for(bytes, &ReadLimits::default(), target) {
            Ok(r) => r,
            Err(e) => return refused(file, e.code(), e.to_string()),
        };
        let decode_ms = ms(t);
        match self.path.run(&radiograph, received, &|| self.clock.now()) {
            Ok(mut out) => {
                let input = if self.keep_input {
                    out.input.take().or_else(|| {
                        cxr_preprocess::prepare(&radiograph, &self.path.params.input).ok()
                    })
                } else {
                    None
                };
                StudyResult {
                    input,
                    ..self.finish(file, &radiograph, &out, decode_ms)
                }
            }
            Err(e) => failed(file, e.code, e.message),
        }
    }

    /// The printed line and the audit outcome of a decided (or abstained) study.
    fn finish(
        &self,
        file: &Path,
        radiograph: &Radiograph,
        out: &StudyOutput,
        decode_ms: f64,
    ) -> StudyResult {
        let d = &out.decision;
        let (outcome, name, audit_outcome) = match d.abstention {
            Some(x) => (
                Outcome::Abstained,
                "abstention",
                cxr_audit::Outcome::Abstention {
                    code: x.reason.code().to_owned(),
                },
            ),
            None if d.is_undecided() => (
                Outcome::Undecided,
                "undecided",
                cxr_audit::Outcome::Undecided,
            ),
            None => (Outcome::Decided, "decision", cxr_audit::Outcome::Decision),
        };
        let m = out.ms;
        let timings = StageTimings {
            decode_us: micros(decode_ms),
            preprocess_us: micros(m.preprocess),
            inference_us: micros(m.inference),
            decision_us: micros(m.decision),
            content_gate_us: micros(m.content_gate),
        };
        let timings_json = if out.views == 0 {
            json!({ "decode": decode_ms, "content_gate": m.content_gate })
        } else {
            json!({ "decode": decode_ms, "content_gate": m.content_gate, "preprocess": m.preprocess, "inference_per_view": m.inference / out.views as f64, "decision": m.decision })
        };
        let selection = self.path.selection;
        let engine_json = json!({ "name": selection.engine.name(), "precision": selection.engine.precision(), "reasons": selection.reasons });
        let content = out
            .facts
            .content
            .as_ref()
            .map(|v| content_json(v, d.abstention.is_some()));
        let line = json!({
            "file": file.display().to_string(),
            "input_class": out.facts.input_class.code(),
            "frontal_chest": cxr_study::is_frontal_chest(&out.facts),
            "flags": [],
            "content": content,
            "engine": engine_json,
            "outcome": name,
            "decision": decision_json(d, self.path.params, &out.facts),
            "timings_ms": timings_json,
            "reduced_resolution": reduced_resolution_json(radiograph),
        });
        StudyResult {
            outcome,
            line,
            audit_outcome,
            study_uid: radiograph.acquisition.uids.study.clone(),
            record: Some(record(radiograph, out, timings)),
            input: None,
        }
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// Where the model and its parameters come from.
pub(crate) enum Source {
    Verified(Box<VerifiedBundle>),
    Developer(Box<DevModel>),
}

/// Developer mode's loose files.
pub(crate) struct DevModel {
    params: ModelParams,
    onnx: Vec<u8>,
    digest: [u8; 32],
}

impl Source {
    pub(crate) fn params(&self) -> &ModelParams {
        match self {
            Source::Verified(b) => &b.manifest().params,
            Source::Developer(d) => &d.params,
        }
    }

    /// The signing key's id, for a verified bundle.
    pub(crate) fn key_id(&self) -> Option<String> {
        match self {
            Source::Verified(b) => Some(b.key_id_hex()),
            Source::Developer(_) => None,
        }
    }

    pub(crate) fn bundle_ref(&self) -> BundleRef {
        match self {
            Source::Verified(b) => bundle_ref(b),
            Source::Developer(d) => BundleRef {
                model_id: "developer-mode".into(),
                version: 0,
                digest: d.digest,
            },
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self {
            Source::Verified(_) => Mode::Verified,
            Source::Developer(_) => Mode::Developer,
        }
    }
}

/// Load the model: the active bundle, `--bundle` verified on the fly, or the
/// developer-mode files. `Err((code, message))` means nothing may be classified.
fn load_source(
    args: &ClassifyArgs,
    device: &Device,
) -> anyhow::Result<Result<Source, (String, String)>> {
    if let (Some(model), Some(params)) = (&args.model, &args.params) {
        if device.board.kind == cxr_board::BoardKind::Release {
            return Ok(Err((
                "DEVELOPER_MODE_REFUSED".into(),
                format!(
                    "board `{}` is a release board: loose --model/--params files are refused (fix: lock the model into a signed bundle and install it)",
                    device.board.id
                ),
            )));
        }
        let text = std::fs::read_to_string(params)
            .with_context(|| format!("reading {}", params.display()))?;
        let params = ModelParams::from_toml(&text)
            .with_context(|| format!("parsing {}", params.display()))?;
        let onnx = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        let digest = Sha256::digest(&onnx).into();
        return Ok(Ok(Source::Developer(Box::new(DevModel {
            params,
            onnx,
            digest,
        }))));
    }
    Ok(load_verified(args.bundle.as_deref(), device))
}

/// The active bundle, or `file` verified on the fly (trust, board,
/// anti-rollback floor). `Err((code, message))`: nothing may be classified.
pub(crate) fn load_verified(
    file: Option<&Path>,
    device: &Device,
) -> Result<Source, (String, String)> {
    let loaded = device.trust().and_then(|trust| match file {
        Some(file) => {
            let bytes = read_bounded(file, MAX_BUNDLE_BYTES)?;
            verify(bytes, &trust, &device.board, &device.store.state()?.floors)
        }
        None => device
            .store
            .load_active(&trust, &device.board)
            .map(|(_, b)| b),
    });
    loaded
        .map(|b| Source::Verified(Box::new(b)))
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

/// Choose and check the engine for `source`: the board's preference unless
/// overridden. `Err((code, message))`: no engine passed its checks.
pub(crate) fn select_for_source(
    source: &Source,
    device: &Device,
    engine: Option<EngineChoice>,
    threads: Option<usize>,
) -> anyhow::Result<Result<Selection, (String, String)>> {
    let board_engine = &device.board.engine;
    let preference = match engine {
        Some(EngineChoice::Auto) => EnginePreference::Auto,
        Some(EngineChoice::Tract) => EnginePreference::Tract,
        None => engine_preference(board_engine.preference),
    };
    let threads = threads.unwrap_or(board_engine.threads);
    let selection = match source {
        Source::Verified(b) => {
            // `--threads` sets every CPU engine's threads, OpenVINO's too.
            let mut board = device.board.clone();
            board.engine.threads = threads;
            let accelerators = Accelerators::for_board(&board, device.kernel_cache_key()?);
            select_for_bundle(b, preference, threads, &accelerators.refs()).map(|(s, _)| s)
        }
        Source::Developer(d) => select_engine(&d.onnx, d.params.model, preference, threads),
    };
    Ok(selection.map_err(|e| (e.code().to_owned(), e.to_string())))
}

fn read_input(file: &Path) -> Result<Vec<u8>, (String, String)> {
    let limit = ReadLimits::default().max_input_bytes as u64;
    match std::fs::metadata(file) {
        Ok(m) if m.len() > limit => {
            return Err((
                "DICOM_INPUT_TOO_LARGE".into(),
                format!(
                    "{} is {} bytes, over the {limit}-byte limit (fix: send one image per file)",
                    file.display(),
                    m.len()
                ),
            ))
        }
        Err(e) => {
            return Err((
                "INPUT_UNREADABLE".into(),
                format!("{}: {e} (fix: check the path)", file.display()),
            ))
        }
        Ok(_) => {}
    }
    std::fs::read(file).map_err(|e| {
        (
            "INPUT_UNREADABLE".into(),
            format!("{}: {e} (fix: check the path)", file.display()),
        )
    })
}

pub(crate) struct Auditor<'a> {
    pub(crate) log: &'a mut AuditLog,
    pub(crate) secret: &'a DeviceSecret,
    pub(crate) bundle: BundleRef,
    pub(crate) mode: Mode,
    pub(crate) engine: String,
    pub(crate) engine_reasons: Vec<String>,
}

impl Auditor<'_> {
    pub(crate) fn record(
        &mut self,
        input: &[u8],
        result: &StudyResult,
        decision: Option<Vec<u8>>,
        latency_us: u64,
    ) -> Result<u64, cxr_audit::AuditError> {
        let event = Event::Inference(Inference {
            mode: self.mode,
            bundle: self.bundle.clone(),
            engine: self.engine.clone(),
            engine_reasons: self.engine_reasons.clone(),
            input_sha256: Sha256::digest(input).into(),
            study_key: result
                .study_uid
                .as_deref()
                .map(|u| self.secret.study_key(u)),
            decision,
            latency_us,
            outcome: result.audit_outcome.clone(),
        });
        self.log.append(now_unix_ms(), event)
    }
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let clock = Clock(StdInstant::now());
    let device = Device::open(&args.device)?;
    // No audit log, no classification: every inference must leave a record.
    let mut log = device.open_audit()?;
    let secret = device.secret()?;
    let source = match load_source(args, &device)? {
        Ok(s) => s,
        Err((code, message)) => {
            return refuse_start(&mut log, &code, "no verified model", &message)
        }
    };
    let selection = match select_for_source(&source, &device, args.engine, args.threads)? {
        Ok(s) => s,
        Err((code, message)) => {
            return refuse_start(&mut log, &code, "no engine passed its checks", &message)
        }
    };
    // The log says which engine runs and why (the audit record says it too).
    eprintln!(
        "cxr-appliance: engine {} ({}): {}",
        selection.engine.name(),
        selection.engine.precision(),
        selection.reasons.join("; ")
    );
    let params = source.params();
    let study = Study {
        path: StudyPath {
            selection: &selection,
            params,
            decision_params: tightened(params.decision_params(), device.board.gate.require_age),
            gate_required: source.mode() == Mode::Verified,
        },
        clock: &clock,
        keep_input: false,
    };
    let mut auditor = Auditor {
        log: &mut log,
        secret: &secret,
        bundle: source.bundle_ref(),
        mode: source.mode(),
        engine: selection.engine.name().to_owned(),
        engine_reasons: selection.reasons.clone(),
    };
    let mode = mode_json(source.mode(), &auditor.bundle);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut worst = Outcome::Decided;
    for file in &args.files {
        let (line, outcome) = classify_file(&study, &mut auditor, file, &mode)?;
        writeln!(out, "{line}")?;
        if outcome.severity() > worst.severity() {
            worst = outcome;
        }
    }
    out.flush()?;
    Ok(ExitCode::from(worst.exit_code()))
}

/// Nothing can be classified (`why`): audit the refusal, say so, exit 4.
fn refuse_start(
    log: &mut AuditLog,
    code: &str,
    why: &str,
    message: &str,
) -> anyhow::Result<ExitCode> {
    log.append(
        now_unix_ms(),
        Event::StartRefused {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    )?;
    print(&error_json(
        code,
        &format!("{why}, nothing is classified: {message}"),
    ));
    Ok(ExitCode::from(4))
}

/// What every result line says of the model it came from.
fn mode_json(mode: Mode, bundle: &BundleRef) -> Value {
    match mode {
        Mode::Verified => {
            json!({ "mode": "verified", "bundle": { "model_id": bundle.model_id, "version": bundle.version, "digest": cxr_bundle::hex::encode(&bundle.digest) } })
        }
        Mode::Developer => {
            json!({ "mode": "developer (loose model and params, not a verified bundle; never for patients)" })
        }
    }
}

/// One file, audited before its line is returned: the result line (with
/// `mode` and its audit sequence number) and its outcome. An error means
/// its record could not be written, and its result is withheld.
fn classify_file(
    study: &Study<'_>,
    auditor: &mut Auditor<'_>,
    file: &Path,
    mode: &Value,
) -> anyhow::Result<(Value, Outcome)> {
    let started = StdInstant::now();
    // Refuse the study, not the record, when the log is full.
    if let Err(e) = auditor.log.ensure_room() {
        let mut line = refused(file, e.code(), e.to_string()).line;
        merge(&mut line, mode.clone());
        return Ok((line, Outcome::Refused));
    }
    let (input, result) = match read_input(file) {
        Ok(bytes) => {
            // One bad study (a fault past ingest, even a panic) is
            // failed and audited; the studies after it still run.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                study.run(file, &bytes)
            }))
            .unwrap_or_else(|p| {
                failed(
                    file,
                    "STUDY_PANICKED",
                    format!(
                        "internal fault while processing this study: {} (fix: report this study to service)",
                        panic_text(p.as_ref())
                    ),
                )
            });
            (bytes, r)
        }
        Err((code, message)) => (Vec::new(), refused(file, &code, message)),
    };
    // No result is shown without its whole audit record.
    let (result, decision) = encode_record(file, result);
    let latency_us = started.elapsed().as_micros() as u64;
    // The record is on disk before the result is shown.
    let seq = auditor
        .record(&input, &result, decision, latency_us)
        .with_context(|| {
            format!(
                "writing the audit record for {}: its result is withheld",
                file.display()
            )
        })?;
    let mut line = result.line;
    merge(&mut line, mode.clone());
    merge(&mut line, json!({ "audit_seq": seq }));
    Ok((line, result.outcome))
}

/// The decision record's bytes for the audit log. A record that does not
/// encode fails its study: its numbers are neither logged nor shown.
pub(crate) fn encode_record(file: &Path, result: StudyResult) -> (StudyResult, Option<Vec<u8>>) {
    let Some(record) = &result.record else {
        return (result, None);
    };
    let mut buf = [0u8; 2048];
    match record.encode(&mut buf) {
        Ok(bytes) => {
            let bytes = bytes.to_vec();
            (result, Some(bytes))
        }
        Err(e) => (
            failed(
                file,
                e.code(),
                format!("the decision record does not encode: {e} (fix: report this to service)"),
            ),
            None,
        ),
    }
}

pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_board::BoardProfile;
    use cxr_core::{AbstentionReason, DecisionParams};
    use cxr_model::VitSpec;

    #[test]
    fn a_release_board_refuses_unknown_ages_the_bundle_lets_pass_and_never_loosens() {
        let spec = VitSpec::tiny();
        let mut params =
            ModelParams::neutral(spec, (0..spec.labels).map(|i| format!("L{i}")).collect());
        assert!(params.gate.allow_unknown_age, "the demo's policy");
        let release = BoardProfile::builtin("x86-release").unwrap_or_else(|e| panic!("{e}"));
        let dev = BoardProfile::builtin("dev-x86").unwrap_or_else(|e| panic!("{e}"));
        let check =
            |p: &DecisionParams<'_>| p.input_gate.check(InputClass::FrontalChest, None, None);
        assert_eq!(
            check(&tightened(params.decision_params(), dev.gate.require_age)),
            Ok(())
        );
        assert_eq!(
            check(&tightened(
                params.decision_params(),
                release.gate.require_age
            )),
            Err(AbstentionReason::AgeUnknown)
        );
        // A bundle that requires an age keeps requiring it on every board.
        params.gate.allow_unknown_age = false;
        assert_eq!(
            check(&tightened(params.decision_params(), dev.gate.require_age)),
            Err(AbstentionReason::AgeUnknown)
        );
    }
}
