//! `classify`: a study from DICOM to a gated, calibrated decision on one line
//! of JSON. Exit code: 0 decisions only, 3 if any study abstained, 2 if any
//! input was refused by ingest (2 wins over 3).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant as StdInstant;

use anyhow::Context;
use cxr_core::ood::FeatureStats;
use cxr_core::{decide, gate_input, Call, Decision, DecisionParams, StudyFacts};
use cxr_dicom::{read_radiograph_file, ReadLimits};
use cxr_engine::{select_engine, EnginePreference, Selection};
use cxr_preprocess::{prepare, tta_view};
use embassy_time::{Duration, Instant};
use serde_json::{json, Value};

use crate::params::ClassifyParams;

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
    /// The model (developer mode; the signed bundle replaces this).
    #[arg(long)]
    model: PathBuf,
    /// Decision parameters and model spec, TOML (developer mode).
    #[arg(long)]
    params: PathBuf,
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    engine: EngineChoice,
    /// Matrix-multiply threads for the CPU engine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print JSON lines (the default and, for now, only format).
    #[arg(long)]
    json: bool,
}

/// The injected clock: embassy-time instants counted from process start.
struct Clock(StdInstant);

impl Clock {
    fn now(&self) -> Instant {
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

fn decision_json(d: &Decision, params: &ClassifyParams) -> Value {
    let labels: Vec<Value> = d
        .labels
        .iter()
        .zip(&params.labels)
        .map(|(l, name)| json!({ "label": name, "probability": l.probability, "spread": l.spread, "call": l.call.map(call_name) }))
        .collect();
    json!({
        "labels": labels,
        "ood": d.ood.map(|s| json!({
            "joint_energy": s.joint_energy, "max_logit": s.max_logit, "odin_t": s.odin_t, "mahalanobis": s.mahalanobis,
        })),
        "gates": {
            "input": d.gates.input.map(|r| r.code()),
            "ood": { "joint_energy": d.gates.ood.joint_energy, "max_logit": d.gates.ood.max_logit, "odin_t": d.gates.ood.odin_t, "mahalanobis": d.gates.ood.mahalanobis },
            "uncertainty": d.gates.uncertainty,
            "deadline": d.gates.deadline,
        },
        "abstention": d.abstention.map(|a| json!({ "code": a.reason.code(), "message": a.reason.operator_message() })),
    })
}

/// How one study ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Decided,
    Abstained,
    Refused,
}

struct Study<'a> {
    selection: &'a Selection,
    params: &'a ClassifyParams,
    decision_params: DecisionParams<'a>,
    clock: &'a Clock,
}

impl Study<'_> {
    fn run(&self, file: &Path) -> anyhow::Result<(Outcome, Value)> {
        let received = self.clock.now();
        let engine_json =
            json!({ "name": self.selection.engine.name(), "reasons": self.selection.reasons });
        let t = StdInstant::now();
        let radiograph = match read_radiograph_file(file, &ReadLimits::default()) {
            Ok(r) => r,
            Err(e) => {
                let line = json!({ "file": file.display().to_string(), "outcome": "refused", "error": { "code": e.code(), "message": e.to_string() } });
                return Ok((Outcome::Refused, line));
            }
        };
        let decode_ms = ms(t);
        let a = &radiograph.acquisition;
        let facts = StudyFacts {
            input_class: a.input_class,
            age_years: a.age_years,
            received,
        };
        let base = json!({ "file": file.display().to_string(), "input_class": a.input_class.code(), "engine": engine_json });
        if let Some(d) = gate_input(&facts, &self.decision_params) {
            let mut line = base;
            merge(
                &mut line,
                json!({ "outcome": "abstention", "decision": decision_json(&d, self.params), "timings_ms": { "decode": decode_ms } }),
            );
            return Ok((Outcome::Abstained, line));
        }
        let t = StdInstant::now();
        let input =
            prepare(&radiograph, &self.params.input).context("preparing the model input")?;
        let mut batch = Vec::with_capacity(input.data.len() * self.params.tta.len());
        for view in &self.params.tta {
            batch.extend_from_slice(&tta_view(&input, view).data);
        }
        let preprocess_ms = ms(t);
        let t = StdInstant::now();
        let views = self.params.tta.len();
        let out = self
            .selection
            .engine
            .infer(&batch, views)
            .context("running the engine")?;
        let inference_ms = ms(t);
        let t = StdInstant::now();
        // The identity view (the first) feeds Mahalanobis.
        let features = &out.features[..self.params.model.width];
        let d = decide(
            &out.logits,
            views,
            features,
            &facts,
            &self.decision_params,
            self.clock.now(),
        )
        .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
        let decision_ms = ms(t);
        let outcome = if d.abstention.is_some() {
            Outcome::Abstained
        } else {
            Outcome::Decided
        };
        let mut line = base;
        merge(
            &mut line,
            json!({
                "outcome": if outcome == Outcome::Decided { "decision" } else { "abstention" },
                "decision": decision_json(&d, self.params),
                "timings_ms": { "decode": decode_ms, "preprocess": preprocess_ms, "inference_per_view": inference_ms / views as f64, "decision": decision_ms },
            }),
        );
        Ok((outcome, line))
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let clock = Clock(StdInstant::now());
    let params = ClassifyParams::read(&args.params)?;
    let onnx =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let preference = match args.engine {
        EngineChoice::Auto => EnginePreference::Auto,
        EngineChoice::Tract => EnginePreference::Tract,
    };
    let selection = select_engine(&onnx, params.model, preference, args.threads)?;
    let stats = params.feature_stats.as_ref().map(|s| FeatureStats {
        mean: &s.mean,
        cholesky_lower: &s.cholesky_lower,
    });
    let decision_params = DecisionParams {
        temperatures: &params.temperatures,
        thresholds: &params.thresholds,
        uncertainty_band: params.uncertainty_band,
        max_tta_spread: params.max_tta_spread,
        odin_temperature: params.odin_temperature,
        ood_cutoffs: params.ood,
        feature_stats: stats,
        input_gate: params.gate,
        budget: Duration::from_millis(params.budget_ms),
    };
    let study = Study {
        selection: &selection,
        params: &params,
        decision_params,
        clock: &clock,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut worst = Outcome::Decided;
    for file in &args.files {
        let (outcome, mut line) = study.run(file)?;
        merge(
            &mut line,
            json!({ "mode": "developer (loose model and params, not a verified bundle)" }),
        );
        writeln!(out, "{line}")?;
        worst = match (worst, outcome) {
            (Outcome::Refused, _) | (_, Outcome::Refused) => Outcome::Refused,
            (Outcome::Abstained, _) | (_, Outcome::Abstained) => Outcome::Abstained,
            _ => Outcome::Decided,
        };
    }
    out.flush()?;
    Ok(ExitCode::from(match worst {
        Outcome::Decided => 0,
        Outcome::Refused => 2,
        Outcome::Abstained => 3,
    }))
}
