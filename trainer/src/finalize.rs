//! After training: TTA-merged outputs on the training, validation, test and
//! held-out sets (the appliance's views and merge); temperatures and
//! operating points fitted on validation; Mahalanobis statistics on
//! training features and the OOD gate's cut-off on validation, keeping only
//! the scores that tell held-out unusual studies from adult test films better
//! than chance; evaluation on test with patient-bootstrap intervals, and the
//! deployed rule itself (`cxr_core::decide`) on the test patients: coverage,
//! and each label's sensitivity, specificity and Uncertain share. Writes the
//! files `lock` takes: `model.onnx`, `params.toml`, `model-card.md`,
//! `report.json`, `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cxr_bundle::ModelParams;
use cxr_core::tta::merge_views;
use cxr_model::onnx;
use cxr_preprocess::tta_view;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::checkpoint::Checkpoint;
use crate::data::{load_input, Split};
use crate::eval::WithCi;
use crate::evaluate::{summarise, write_report, EvaluationReport, StudyRow, Subject};
use crate::fit::{fit_calibration, fit_ood, LabelFit, OodFit, OutputsRef};
use crate::prepared::Prepared;
use crate::vit::BurnVit;
use crate::TrainerError;

/// Merged logits `[n, labels]`, per-view logits `[n, views, labels]` and
/// identity-view features `[n, width]`.
#[derive(Default)]
struct Outputs {
    logits: Vec<f32>,
    view_logits: Vec<f32>,
    features: Vec<f32>,
}

impl Outputs {
    fn as_ref(&self) -> OutputsRef<'_> {
        OutputsRef {
            logits: &self.logits,
            features: &self.features,
        }
    }

    fn extend(&mut self, other: &Outputs) {
        self.logits.extend_from_slice(&other.logits);
        self.view_logits.extend_from_slice(&other.view_logits);
        self.features.extend_from_slice(&other.features);
    }
}

/// What the outputs come from: one model, or an ensemble whose members'
/// logits are calibrated with their own temperatures, probabilities
/// averaged and features averaged, as the appliance's ensemble engine
/// does (`cxr_core::ensemble::combine_members`).
struct Predictor<'a, B: Backend> {
    models: &'a [BurnVit<B>],
    /// `[models, labels]`; empty for one model.
    temperatures: &'a [f32],
}

impl<B: Backend> Clone for Predictor<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Predictor<'_, B> {}

fn outputs<B: Backend>(
    predictor: Predictor<'_, B>,
    params: &ModelParams,
    data: &Prepared,
    indices: &[usize],
    device: &B::Device,
) -> Result<Outputs, TrainerError> {
    let paths: Vec<&Path> = indices
        .iter()
        .map(|&i| data.dataset.samples[i].image.as_path())
        .collect();
    outputs_of(predictor, params, &paths, device)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, TrainerError> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| TrainerError::invalid("tensor", format!("{e:?}"), "report this bug"))
}

/// Per-view logits `[views, labels]` and per-view features `[views, width]`
/// of one study's views.
fn predict<B: Backend>(
    predictor: Predictor<'_, B>,
    x: Tensor<B, 4>,
    views: usize,
) -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
    let bug = |e: cxr_core::CoreError| {
        TrainerError::invalid("ensemble", e.to_string(), "report this bug")
    };
    let [model, ..] = predictor.models else {
        return Err(TrainerError::invalid(
            "ensemble",
            "no model".into(),
            "report this bug",
        ));
    };
    if predictor.models.len() == 1 {
        let (l, f) = model.forward(x);
        return Ok((to_vec(l)?, to_vec(f)?));
    }
    let (k, width) = (predictor.models.len(), model.spec().width);
    let mut member_logits = Vec::new();
    let mut features = vec![0.0f32; views * width];
    for m in predictor.models {
        let (l, f) = m.forward(x.clone());
        member_logits.extend(to_vec(l)?);
        features
            .iter_mut()
            .zip(to_vec(f)?)
            .for_each(|(s, v)| *s += v);
    }
    features.iter_mut().for_each(|v| *v /= k as f32);
    let mut logits = vec![0.0f32; member_logits.len() / k];
    cxr_core::ensemble::combine_members(&member_logits, k, predictor.temperatures, &mut logits)
        .map_err(bug)?;
    Ok((logits, features))
}

fn outputs_of<B: Backend>(
    predictor: Predictor<'_, B>,
    params: &ModelParams,
    paths: &[&Path],
    device: &B::Device,
) -> Result<Outputs, TrainerError> {
    let s = params.model;
    let views = params.tta.len();
    let mut out = Outputs::default();
    for path in paths {
        let input = load_input(path, &params.input)?;
        let mut batch = Vec::with_capacity(input.data.len() * views);
        for v in &params.tta {
            batch.extend_from_slice(&tta_view(&input, v).data);
        }
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(batch, [views, s.in_channels, s.image_size, s.image_size]),
            device,
        );
        let (l, f) = predict(predictor, x, views)?;
        let merged = merge_views(&l, views, s.labels)
            .map_err(|e| TrainerError::invalid("merge", format!("{e:?}"), "report this bug"))?;
        out.logits.extend(merged.mean.iter());
        out.view_logits.extend_from_slice(&l);
        out.features.extend_from_slice(&f[..s.width]);
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checkpoint: Checkpoint,
    pub images: SplitCounts,
    /// Temperatures and operating points, fitted on validation.
    pub calibration: Vec<LabelFit>,
    /// The OOD gate: every candidate score, kept or not, and why.
    pub ood: OodFit,
    /// The deployed rule (`cxr_core::decide` with the fitted parameters)
    /// on the adult test patients, summarised by `evaluate`'s code.
    pub test: EvaluationReport,
    pub macro_auroc: Option<f64>,
    pub macro_auprc: Option<f64>,
    /// Extra OOD files: scored ones and those the guarded ingest refused
    /// before any model saw them.
    pub ood_files: Vec<OodFile>,
    /// The ensemble's models with their own calibration; empty for one model.
    pub ensemble: Vec<EnsembleFileMember>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OodFile {
    pub file: String,
    /// `scored` or the refusal's message.
    pub outcome: String,
    /// The combined OOD score and whether the gate tripped (scored files).
    pub combined: Option<f32>,
    pub abstained: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitCounts {
    /// Samples whose stated view was not frontal, dropped before splitting.
    pub dropped_non_frontal: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub held_out: usize,
    pub patients: usize,
}

impl SplitCounts {
    fn of(data: &Prepared) -> Self {
        SplitCounts {
            dropped_non_frontal: data.dropped_non_frontal,
            train: data.indices(Split::Train).len(),
            validation: data.indices(Split::Validation).len(),
            test: data.indices(Split::Test).len(),
            held_out: data.held_out().len(),
            patients: data.dataset.patients().len(),
        }
    }
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Most validation studies a label's operating point may leave Uncertain.
pub const MAX_UNCERTAIN: f64 = 0.3;
/// Share of in-distribution validation studies the OOD gate passes.
pub const OOD_COVERAGE: f64 = 0.975;
/// The name of the test patients' evaluation in the output folder
/// (`NAME.md`, `NAME.json`, pictures in `NAME/`).
pub const TEST_REPORT: &str = "test-evaluation";

/// Outputs of the extra OOD files that reach the model, and one line per
/// file (a refusal at ingest is a result: CT, MR, US never reach the model;
/// a file that cannot be read is listed as such, so a typo does not read as
/// the reader doing its job).
fn extra_outputs<B: Backend>(
    predictor: Predictor<'_, B>,
    params: &ModelParams,
    files: &[std::path::PathBuf],
    device: &B::Device,
) -> Result<(Outputs, Vec<OodFile>), TrainerError> {
    let mut all = Outputs::default();
    let mut lines = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let outcome = match outputs_of(predictor, params, &[path.as_path()], device) {
            Ok(o) => {
                all.extend(&o);
                "scored".to_owned()
            }
            Err(TrainerError::ImageRefused { code, reason, .. }) => {
                format!("refused at ingest ({code}): {reason}")
            }
            Err(e) => format!("not read: {e}"),
        };
        lines.push(OodFile {
            file,
            outcome,
            combined: None,
            abstained: None,
        });
    }
    Ok((all, lines))
}

/// The shipped rule over the test studies, one row each, as `evaluate`
/// records a study (adult frontal films as the tags would say; the content
/// gate is fitted and locked later, so it is not part of this run).
fn test_rows(
    params: &ModelParams,
    data: &Prepared,
    indices: &[usize],
    test: &Outputs,
    y: &[f32],
    m: &[f32],
) -> Vec<StudyRow> {
    use cxr_core::{decide, InputClass, StudyFacts};
    use embassy_time::Instant;
    let (k, views, width) = (params.labels.len(), params.tta.len(), params.model.width);
    let dp = params.decision_params();
    let facts = StudyFacts {
        input_class: InputClass::FrontalChest,
        content: None,
        age_years: None,
        received: Instant::from_ticks(0),
    };
    indices
        .iter()
        .enumerate()
        .map(|(i, &sample)| {
            let truth = (0..k)
                .map(|j| (m[i * k + j] > 0.0).then_some(y[i * k + j]))
                .collect();
            let mut row = StudyRow::new(&data.dataset.samples[sample], truth);
            let z = &test.view_logits[i * views * k..(i + 1) * views * k];
            let x = &test.features[i * width..(i + 1) * width];
            match decide(z, views, x, &facts, &dp, Instant::from_ticks(0)) {
                Ok(d) => row.record(&d, &params.temperatures),
                Err(e) => {
                    row.outcome = "failed";
                    row.code = Some(e.code().to_owned());
                    row.detail = Some(e.to_string());
                }
            }
            row
        })
        .collect()
}

/// The test patients through `evaluate`'s summary, written as
/// `TEST_REPORT.{md,json}` with its pictures.
fn test_evaluation(
    params: &ModelParams,
    data: &Prepared,
    test_i: &[usize],
    test: &Outputs,
    (y, m): (&[f32], &[f32]),
    onnx_bytes: &[u8],
    out: &Path,
) -> Result<EvaluationReport, TrainerError> {
    let rows = test_rows(params, data, test_i, test, y, m);
    let subject = Subject {
        bundle: "this run's model.onnx (before lock; an ensemble's first model)".into(),
        bundle_sha256: cxr_bundle::hex::encode(&sha2::Sha256::digest(onnx_bytes)),
        data: format!("{}: the adult test patients", data.dataset.name),
        tags: "frontal chest, adult (no content gate yet)".into(),
    };
    let mut report = summarise(subject, &params.labels, rows);
    write_report(
        &mut report,
        &params.thresholds,
        &params.labels,
        out,
        TEST_REPORT,
    )?;
    Ok(report)
}

/// The selected checkpoint's ONNX bytes and the burn model built from them.
fn load_best<B: Backend>(
    run: &Path,
    config: &crate::config::TrainConfig,
    device: &B::Device,
) -> Result<(Vec<u8>, BurnVit<B>), TrainerError> {
    let onnx_bytes = std::fs::read(run.join("best.onnx"))
        .map_err(|e| TrainerError::io("reading", &run.join("best.onnx"), e))?;
    let weights = onnx::read_weights(&onnx_bytes, &config.model).map_err(|e| {
        TrainerError::invalid(
            "run",
            e.to_string(),
            "the checkpoint does not match its config",
        )
    })?;
    let model = BurnVit::<B>::from_weights(&weights, device)?;
    Ok((onnx_bytes, model))
}

/// Each scored extra file's combined OOD score under the fitted gate, and
/// whether the gate trips on it.
fn score_extra_files(params: &ModelParams, extra: &Outputs, files: &mut [OodFile]) {
    let dp = params.decision_params();
    let mut scored = extra
        .logits
        .chunks(params.labels.len())
        .zip(extra.features.chunks(params.model.width));
    for f in files.iter_mut().filter(|f| f.outcome == "scored") {
        if let Some((z, x)) = scored.next() {
            let s = cxr_core::ood::scores(z, x, dp.feature_stats.as_ref(), dp.ood.terms).ok();
            f.combined = s.and_then(|s| s.combined);
            f.abstained = s.map(|s| cxr_core::ood::trips(&s, &dp.ood));
        }
    }
}

/// One model of an ensemble as `finalize` writes it (`ensemble.toml`) and
/// `lock --ensemble` reads it: its graph file beside the TOML, its run, and
/// its own calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleFileMember {
    pub onnx: String,
    /// SHA-256 of the graph file, hex.
    pub sha256: String,
    pub run: String,
    pub temperatures: Vec<f32>,
    pub calibrated: Vec<bool>,
}

/// `ensemble.toml`: every model of an ensemble, in member order, and the
/// digest of the `params.toml` fitted for exactly these models (`lock`
/// refuses other parameters with them, and these parameters without them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleFile {
    pub params_sha256: String,
    pub member: Vec<EnsembleFileMember>,
}

/// The ensemble's file name in `finalize`'s output folder.
pub const ENSEMBLE_FILE: &str = EnsembleFile::NAME;

impl EnsembleFile {
    pub const NAME: &'static str = "ensemble.toml";
}

/// Finalize a training run in `run` (reads `best.json`, `best.onnx`) into `out`.
pub fn finalize<B: Backend>(
    run: &Path,
    out: &Path,
    extra_ood: &[std::path::PathBuf],
    device: &B::Device,
) -> Result<Report, TrainerError> {
    finalize_runs::<B>(&[run.to_owned()], out, extra_ood, device)
}

/// A run's selected model.
struct RunModel<B: Backend> {
    run: std::path::PathBuf,
    state: Checkpoint,
    onnx: Vec<u8>,
    model: BurnVit<B>,
}

fn ensemble_refused(problem: String) -> TrainerError {
    TrainerError::invalid(
        "ensemble",
        problem,
        "train every member from configs that differ only in `seed`, with the same `data` (pin `data.split_seed`), model and input",
    )
}

/// Every run's selected model and the shared data split: members of an
/// ensemble must share their model, input and patient split, or the
/// validation set that calibrates the ensemble would hold some member's
/// training patients.
fn load_runs<B: Backend>(
    runs: &[std::path::PathBuf],
    device: &B::Device,
) -> Result<(Vec<RunModel<B>>, Prepared), TrainerError> {
    let most = cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS;
    if runs.is_empty() || runs.len() > most {
        return Err(ensemble_refused(format!(
            "{} runs: finalize takes 1 run, or 2 to {most} for an ensemble",
            runs.len()
        )));
    }
    let mut members = Vec::new();
    let mut data: Option<Prepared> = None;
    for run in runs {
        let state = Checkpoint::read(
            &run.join("best.json"),
            "run",
            "finalize a run written by `cxr-trainer train`",
        )?;
        let c = &state.config;
        let (onnx, model) = load_best::<B>(run, c, device)?;
        let split = Prepared::load(&c.data, c.seed)?;
        if let (Some(first), Some(d)) = (members.first(), &data) {
            let f: &RunModel<B> = first;
            let fc = &f.state.config;
            // `split_seed` may differ: the split itself is compared next.
            let unpinned = |d: &crate::config::DataConfig| crate::config::DataConfig {
                split_seed: None,
                ..d.clone()
            };
            if c.model != fc.model
                || c.input_spec() != fc.input_spec()
                || unpinned(&c.data) != unpinned(&fc.data)
            {
                return Err(ensemble_refused(format!(
                    "{} differs from {} in its model, input or data",
                    run.display(),
                    f.run.display()
                )));
            }
            if split.split != d.split {
                return Err(ensemble_refused(format!(
                    "{} was trained on another patient split than {}",
                    run.display(),
                    f.run.display()
                )));
            }
        } else {
            data = Some(split);
        }
        members.push(RunModel {
            run: run.clone(),
            state,
            onnx,
            model,
        });
    }
    let data = data.ok_or_else(|| ensemble_refused("no run".into()))?;
    Ok((members, data))
}

/// Each member's own temperatures, fitted on validation for that member
/// alone (none for one model).
fn fit_members<B: Backend>(
    members: &[RunModel<B>],
    models: &[BurnVit<B>],
    params: &ModelParams,
    data: &Prepared,
    val_i: &[usize],
    (val_y, val_m): (&[f32], &[f32]),
    device: &B::Device,
) -> Result<Vec<EnsembleFileMember>, TrainerError> {
    if members.len() == 1 {
        return Ok(Vec::new());
    }
    let mut fitted = Vec::new();
    for (i, (member, model)) in members.iter().zip(models).enumerate() {
        let alone = Predictor {
            models: std::slice::from_ref(model),
            temperatures: &[],
        };
        let val = outputs(alone, params, data, val_i, device)?;
        let mut own = params.clone();
        fit_calibration(&mut own, &val.logits, val_y, val_m, MAX_UNCERTAIN)?;
        fitted.push(EnsembleFileMember {
            onnx: cxr_bundle::model_member_name(i),
            sha256: cxr_bundle::hex::encode(&sha2::Sha256::digest(&member.onnx)),
            run: member.run.display().to_string(),
            temperatures: own.temperatures,
            calibrated: own.calibrated,
        });
    }
    Ok(fitted)
}

/// Finalize one run, or an ensemble of several (each member calibrated
/// alone on validation, then the ensemble as a whole: its calibration,
/// operating points and OOD gate are fitted on the ensemble's outputs).
pub fn finalize_runs<B: Backend>(
    runs: &[std::path::PathBuf],
    out: &Path,
    extra_ood: &[std::path::PathBuf],
    device: &B::Device,
) -> Result<Report, TrainerError> {
    let (members, data) = load_runs::<B>(runs, device)?;
    let config = &members[0].state.config;
    let mut params = ModelParams::neutral(config.model, data.dataset.labels.clone());
    params.input = config.input_spec();
    let (val_i, test_i) = (data.indices(Split::Validation), data.indices(Split::Test));
    let targets = |idx: &[usize]| -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
        let ex = data.examples(idx, &config.data, config.seed)?;
        Ok((
            ex.iter().flat_map(|e| e.targets.clone()).collect(),
            ex.iter().flat_map(|e| e.mask.clone()).collect(),
        ))
    };
    let (val_y, val_m) = targets(&val_i)?;
    let models: Vec<BurnVit<B>> = members.iter().map(|m| m.model.clone()).collect();
    let ensemble = fit_members(
        &members,
        &models,
        &params,
        &data,
        &val_i,
        (&val_y, &val_m),
        device,
    )?;
    let temperatures: Vec<f32> = ensemble
        .iter()
        .flat_map(|m| m.temperatures.clone())
        .collect();
    let predictor = Predictor {
        models: &models,
        temperatures: &temperatures,
    };
    let val = outputs(predictor, &params, &data, &val_i, device)?;
    let calibration = fit_calibration(&mut params, &val.logits, &val_y, &val_m, MAX_UNCERTAIN)?;

    let test = outputs(predictor, &params, &data, &test_i, device)?;
    let (test_y, test_m) = targets(&test_i)?;
    let (ood, mut ood_files, extra) = fit_ood_gate(
        predictor,
        &mut params,
        &data,
        (&val, &test),
        extra_ood,
        config.seed,
        device,
    )?;
    let test_report = test_evaluation(
        &params,
        &data,
        &test_i,
        &test,
        (&test_y, &test_m),
        &members[0].onnx,
        out,
    )?;
    score_extra_files(&params, &extra, &mut ood_files);
    let report = Report {
        checkpoint: members[0].state.clone(),
        images: SplitCounts::of(&data),
        calibration,
        ood,
        macro_auroc: mean(
            test_report
                .labels
                .iter()
                .filter_map(|l| l.auroc.map(|a| a.value)),
        ),
        macro_auprc: mean(
            test_report
                .labels
                .iter()
                .filter_map(|l| l.auprc.map(|a| a.value)),
        ),
        test: test_report,
        ood_files,
        ensemble,
    };
    let onnx: Vec<&[u8]> = members.iter().map(|m| &m.onnx[..]).collect();
    write_outputs(out, &onnx, &params, &report)?;
    Ok(report)
}

/// The OOD gate, fitted on the predictor's outputs: Mahalanobis on the
/// training features, the cut-off on validation, judged against the
/// held-out (paediatric) patients and the extra files that reach the model.
/// Also returns the extra files' lines and outputs, to score them later.
#[allow(clippy::type_complexity)]
fn fit_ood_gate<B: Backend>(
    predictor: Predictor<'_, B>,
    params: &mut ModelParams,
    data: &Prepared,
    (val, test): (&Outputs, &Outputs),
    extra_ood: &[std::path::PathBuf],
    seed: u64,
    device: &B::Device,
) -> Result<(OodFit, Vec<OodFile>, Outputs), TrainerError> {
    let (held_i, test_i) = (data.held_out(), data.indices(Split::Test));
    let train_out = outputs(predictor, params, data, &data.indices(Split::Train), device)?;
    let mut unusual = outputs(predictor, params, data, &held_i, device)?;
    let (extra, ood_files) = extra_outputs(predictor, params, extra_ood, device)?;
    unusual.extend(&extra);
    // Patients, for resampling: each extra file is a patient of its own.
    let patient = |i: &usize| data.dataset.samples[*i].patient.clone();
    let patients: Vec<String> = held_i
        .iter()
        .map(patient)
        .chain(
            ood_files
                .iter()
                .filter(|f| f.outcome == "scored")
                .map(|f| format!("extra file {}", f.file)),
        )
        .chain(test_i.iter().map(patient))
        .collect();
    let ood = fit_ood(
        params,
        train_out.as_ref(),
        val.as_ref(),
        test.as_ref(),
        unusual.as_ref(),
        &patients,
        OOD_COVERAGE,
        seed,
    )?;
    Ok((ood, ood_files, extra))
}

/// The files `lock` takes: the model, its parameters, the report (JSON
/// and Markdown) and the model card.
fn write_outputs(
    out: &Path,
    onnx: &[&[u8]],
    params: &ModelParams,
    report: &Report,
) -> Result<(), TrainerError> {
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes)
            .map_err(|e| TrainerError::io("writing", &out.join(name), e))
    };
    for (i, bytes) in onnx.iter().enumerate() {
        write(&cxr_bundle::model_member_name(i), bytes)?;
    }
    // A single model's folder must not keep an earlier ensemble's list;
    // an ensemble's list is written after the parameters it names.
    let ensemble = out.join(ENSEMBLE_FILE);
    if ensemble.exists() {
        std::fs::remove_file(&ensemble).map_err(|e| TrainerError::io("removing", &ensemble, e))?;
    }
    let params_toml = toml::to_string(params)
        .map_err(|e| TrainerError::invalid("params", e.to_string(), "report this bug"))?;
    write("params.toml", params_toml.as_bytes())?;
    if !report.ensemble.is_empty() {
        let file = EnsembleFile {
            params_sha256: cxr_bundle::hex::encode(&sha2::Sha256::digest(params_toml.as_bytes())),
            member: report.ensemble.clone(),
        };
        write(
            ENSEMBLE_FILE,
            toml::to_string(&file)
                .map_err(|e| TrainerError::invalid("ensemble", e.to_string(), "report this bug"))?
                .as_bytes(),
        )?;
    }
    write(
        "report.json",
        serde_json::to_string_pretty(report)
            .map_err(|e| TrainerError::invalid("report", e.to_string(), "report this bug"))?
            .as_bytes(),
    )?;
    let body = markdown(report, params);
    write("report.md", body.as_bytes())?;
    write(
        "model-card.md",
        model_card(report, params, &body).as_bytes(),
    )?;
    Ok(())
}

fn ci(v: &Option<WithCi>) -> String {
    match v {
        Some(w) if w.low.is_finite() => format!("{:.3} ({:.3}–{:.3})", w.value, w.low, w.high),
        Some(w) => format!("{:.3}", w.value),
        None => "n/a".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// The evaluation as Markdown (also the metrics section of the model card).
pub fn markdown(r: &Report, params: &ModelParams) -> String {
    let c = &r.checkpoint.config;
    let m = c.model;
    let mut s = String::new();
    let _ = writeln!(s, "## Data and splits\n");
    let _ = writeln!(s, "- Source: `{:?}`", c.data.source);
    let _ = writeln!(s, "- Split by patient with seed {} ({} patients): {} train, {} validation, {} test images; {} images of patients under 18 held out of every split (OOD check); {} samples whose stated view was not frontal (laterals, decubitus) dropped before splitting.", c.seed, r.images.patients, r.images.train, r.images.validation, r.images.test, r.images.held_out, r.images.dropped_non_frontal);
    let _ = writeln!(
        s,
        "- Uncertainty policy: {:?}; per label: {:?}.\n",
        c.data.uncertainty, c.data.uncertainty_per_label
    );
    let _ = writeln!(s, "## Model and training\n");
    let _ = writeln!(s, "- ViT: patch {}, width {}, depth {}, heads {}, MLP ×{}, input {}×{}, {} channel(s), {} labels.", m.patch, m.width, m.depth, m.heads, m.mlp_ratio, m.image_size, m.image_size, m.in_channels, m.labels);
    let _ = writeln!(s, "- {} epochs, batch {}, AdamW lr {} (warmup {} steps, cosine to {}), weight decay {} (none on norms, biases, embeddings), global-norm clip {}, EMA {}; loss {:?}; augmentation {:?}.", c.optim.epochs, c.optim.batch_size, c.optim.lr, c.optim.warmup_steps, c.optim.min_lr, c.optim.weight_decay, c.optim.clip_norm, c.optim.ema_decay, c.loss, c.augment);
    let swa = r.checkpoint.val_macro_auroc_swa.map_or(String::new(), |a| {
        format!(", SWA {a:.3} ({} epochs)", r.checkpoint.swa_models)
    });
    let _ = writeln!(s, "- Selected checkpoint: epoch {} ({} weights), validation macro AUROC raw {:.3}, EMA {:.3}{swa}.", r.checkpoint.epoch + 1, r.checkpoint.source, r.checkpoint.val_macro_auroc_raw, r.checkpoint.val_macro_auroc_ema);
    if !r.ensemble.is_empty() {
        let runs: Vec<&str> = r.ensemble.iter().map(|m| m.run.as_str()).collect();
        let _ = writeln!(s, "- An ensemble of {} runs ({}); the settings above are the first's, the others differ in their seed. Each model was calibrated alone on validation; the appliance averages their calibrated probabilities, and every parameter and metric below is the ensemble's (recalibrated as a whole).", r.ensemble.len(), runs.join(", "));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "## Test metrics ({} TTA views merged; 95% CIs from 500 resamples of patients, shown with at least 5 positive and 5 negative patients)\n",
        params.tta.len()
    );
    let _ = writeln!(s, "Computed by `cxr-trainer evaluate`'s code over the deployed rule's outcome for each test study; its full report, with ROC curves, reliability diagrams, the coverage-risk curve and the subgroup audit, is `{TEST_REPORT}.md` beside this run's outputs.\n");
    let _ = writeln!(
        s,
        "Macro AUROC {} and macro AUPRC {} over the labels with test positives.\n",
        opt(r.macro_auroc),
        opt(r.macro_auprc)
    );
    let _ = writeln!(
        s,
        "| label | test positives | AUROC | AUPRC | ECE before → after | Brier before → after |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for l in &r.test.labels {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} → {} | {} → {} |",
            l.label,
            l.positives,
            ci(&l.auroc),
            ci(&l.auprc),
            opt(l.ece_uncalibrated),
            opt(l.ece),
            opt(l.brier_uncalibrated),
            opt(l.brier),
        );
    }
    operating_points(&mut s, r, params);
    ood_section(&mut s, r, params);
    s
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{:.1}%", v * 100.0))
}

/// The shipped calls: each label's fitted operating point and what it did
/// on the adult test patients.
fn operating_points(s: &mut String, r: &Report, params: &ModelParams) {
    let d = &r.test;
    let _ = writeln!(s, "\n## Operating points as deployed\n");
    let _ = writeln!(s, "Temperature fitted by validation NLL only for labels with at least {min} validation studies of each class (otherwise 1, marked uncalibrated). Threshold and Uncertain band fitted together on validation for the rule that ships (`cxr_core::calibration::call`: Positive at or above `logit(threshold) + band`, Negative below `logit(threshold) - band`), maximising Youden's J of the decided calls with at most {:.0}% of validation studies Uncertain per label; the other labels have no operating point (an infinitely wide band: always Uncertain), since a handful of positives only fits noise.\n", MAX_UNCERTAIN * 100.0, min = crate::fit::MIN_CLASS_COUNT);
    let undecided = d.outcomes.get("undecided").copied().unwrap_or(0);
    let _ = writeln!(s, "On the {} adult test studies, `cxr_core::decide` with these parameters: **coverage {:.1}%** (studies not abstained), {} undecided (every label Uncertain). Sensitivity and specificity count the decided calls; Uncertain is the share of labelled, not-abstained studies left Uncertain.\n", d.studies, d.coverage * 100.0, undecided);
    let _ = writeln!(s, "| label | calibrated | temperature | threshold | band (logits) | test positives / scored | sensitivity | specificity | uncertain |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for (j, label) in params.labels.iter().enumerate() {
        let l = d.labels.iter().find(|l| l.label == *label);
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
            label,
            if params.calibrated[j] { "yes" } else { "no" },
            params.temperatures[j],
            if params.bands[j].is_finite() {
                format!("{:.4}", params.thresholds[j])
            } else {
                "none".into()
            },
            if params.bands[j].is_finite() {
                format!("{:.2}", params.bands[j])
            } else {
                "none (always Uncertain)".into()
            },
            l.map_or("-".into(), |l| format!("{} / {}", l.positives, l.scored)),
            pct(l.and_then(|l| l.sensitivity)),
            pct(l.and_then(|l| l.specificity)),
            pct(l.and_then(|l| l.uncertain)),
        );
    }
}

fn ood_section(s: &mut String, r: &Report, params: &ModelParams) {
    let o = &r.ood;
    let _ = writeln!(s, "\n## OOD gate\n");
    let _ = writeln!(s, "Candidate scores, each oriented higher = more unusual, judged on telling {} unusual studies (the held-out patients under 18, and the extra files below that reach the model) from the adult test films; a score is kept only if the lower end of its 95% interval (1,000 resamples of whole patients) is above 0.5. Mahalanobis statistics from training-split features (Ledoit-Wolf shrinkage {}); each kept score's centre and scale, and the cut-off on their mean, from validation at {:.1}% coverage.\n", o.unusual_studies, o.shrinkage.map_or("n/a".into(), |v| format!("{v:.4}")), o.coverage * 100.0);
    let _ = writeln!(s, "| score | AUROC (95% CI) | kept | note |");
    let _ = writeln!(s, "|---|---|---|---|");
    for c in &o.candidates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.kind.name(),
            ci(&c.auroc),
            if c.kept { "yes" } else { "no" },
            c.note
        );
    }
    let _ = writeln!(s, "\n- The gate: {}.", params.ood_gate_summary());
    for f in &r.ood_files {
        let scores = match (f.combined, f.abstained) {
            (Some(c), Some(a)) => format!(
                " (combined {c:.2}: {})",
                if a { "abstains" } else { "passes" }
            ),
            (None, Some(a)) => format!(" ({})", if a { "abstains" } else { "passes: no OOD gate" }),
            _ => String::new(),
        };
        let _ = writeln!(s, "  - `{}`: {}{scores}", f.file, f.outcome);
    }
}

/// The model card `lock` embeds: intended use, the evaluation, limitations.
pub fn model_card(r: &Report, params: &ModelParams, evaluation: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Model card: chest X-ray ViT (demo)\n");
    let _ = writeln!(s, "**Intended use: research demonstration, not for clinical use.** It exists so that the appliance's whole path (DICOM, preprocessing, engine, calibrated and gated decision, audit) runs on a fresh checkout. It must never inform a patient's care.\n");
    let _ = writeln!(s, "- Labels: {}.", params.labels.join(", "));
    let _ = writeln!(s, "- Input: {}×{} grey, letterboxed, percentile-clipped and normalised by `cxr-preprocess` (the appliance's own path); {} test-time views.\n", params.input.size, params.input.size, params.tta.len());
    s.push_str(evaluation);
    let _ = writeln!(s, "\n## Limitations\n");
    let _ = writeln!(s, "- Trained on {} images of a 1,000-image NIH ChestX-ray14 subset selected as 500 normal and 500 pneumonia studies: every other finding appears only with pneumonia and most have a handful of examples, so their scores carry little information and their intervals are wide or undefined.", r.images.train);
    let _ = writeln!(s, "- NIH labels were mined from reports by NLP and are noisy; no external validation set was available here.");
    let _ = writeln!(s, "- 8-bit PNGs at 256 px from one institution: other scanners, DICOM dynamic range and portable AP films may behave differently.");
    let _ = writeln!(s, "- The input gate: {}.", params.input_gate_summary());
    let _ = writeln!(s, "- The OOD gate's cut-off is fitted on {} validation images, and its scores judged on {} unusual studies only; no lateral films or CT slices were available to fit or test it.", r.images.validation, r.ood.unusual_studies);
    s
}
