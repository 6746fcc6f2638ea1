//! After training: TTA-merged outputs on the validation, test and held-out
//! sets (the appliance's views and merge), post-hoc fitting on validation,
//! evaluation on test with patient-bootstrap intervals before and after
//! calibration, an OOD check on the held-out set, and the files `lock` takes:
//! `model.onnx`, `params.toml`, `model-card.md`, `report.json`, `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cxr_bundle::ModelParams;
use cxr_core::calibration::calibrated_probability;
use cxr_core::tta::merge_views;
use cxr_model::onnx;
use cxr_preprocess::tta_view;
use serde::Serialize;

use crate::data::{load_input, Split};
use crate::eval::{auprc, auroc, bootstrap_by_patient, brier, ece, WithCi};
use crate::fit::{fit_params, FitReport, ThresholdRule};
use crate::train::{Checkpoint, Prepared};
use crate::vit::BurnVit;
use crate::TrainerError;

/// Merged logits `[n, labels]` and identity-view features `[n, width]`.
struct Outputs {
    logits: Vec<f32>,
    features: Vec<f32>,
}

fn outputs<B: Backend>(
    model: &BurnVit<B>,
    params: &ModelParams,
    data: &Prepared,
    indices: &[usize],
    device: &B::Device,
) -> Result<Outputs, TrainerError> {
    let paths: Vec<&Path> = indices
        .iter()
        .map(|&i| data.dataset.samples[i].image.as_path())
        .collect();
    outputs_of(model, params, &paths, device)
}

fn outputs_of<B: Backend>(
    model: &BurnVit<B>,
    params: &ModelParams,
    paths: &[&Path],
    device: &B::Device,
) -> Result<Outputs, TrainerError> {
    let s = model.spec();
    let views = params.tta.len();
    let mut out = Outputs {
        logits: Vec::new(),
        features: Vec::new(),
    };
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
        let (l, f) = model.forward(x);
        let l: Vec<f32> =
            l.into_data().convert::<f32>().to_vec().map_err(|e| {
                TrainerError::invalid("tensor", format!("{e:?}"), "report this bug")
            })?;
        let f: Vec<f32> =
            f.into_data().convert::<f32>().to_vec().map_err(|e| {
                TrainerError::invalid("tensor", format!("{e:?}"), "report this bug")
            })?;
        let merged = merge_views(&l, views, s.labels)
            .map_err(|e| TrainerError::invalid("merge", format!("{e:?}"), "report this bug"))?;
        out.logits.extend(merged.mean.iter());
        out.features.extend_from_slice(&f[..s.width]);
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelMetrics {
    pub label: String,
    pub positives: usize,
    pub auroc: Option<WithCi>,
    pub auprc: Option<WithCi>,
    pub ece_before: Option<f64>,
    pub ece_after: Option<f64>,
    pub brier_before: Option<f64>,
    pub brier_after: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checkpoint: Checkpoint,
    pub images: SplitCounts,
    pub fit: FitReport,
    pub test: Vec<LabelMetrics>,
    pub macro_auroc: Option<f64>,
    pub macro_auprc: Option<f64>,
    /// AUROC of telling held-out (pediatric) images from adult test images,
    /// per OOD score (higher = better separation).
    pub ood_auroc: Vec<(String, Option<f64>)>,
    /// Extra OOD files: scored ones (energy, Mahalanobis) and those the
    /// guarded ingest refused before any model saw them.
    pub ood_files: Vec<OodFile>,
    /// AUROC of telling the scored extra files from adult test images.
    pub ood_files_auroc: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OodFile {
    pub file: String,
    /// `scored` or the refusal's message.
    pub outcome: String,
    pub joint_energy: Option<f32>,
    pub mahalanobis: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitCounts {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub held_out: usize,
    pub patients: usize,
}

fn column(a: &[f32], k: usize, j: usize) -> Vec<f32> {
    a.chunks(k).map(|r| r[j]).collect()
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Finalize a training run in `run` (reads `best.json`, `best.onnx`) into `out`.
pub fn finalize<B: Backend>(
    run: &Path,
    out: &Path,
    extra_ood: &[std::path::PathBuf],
    device: &B::Device,
) -> Result<Report, TrainerError> {
    let state = Checkpoint::read(
        &run.join("best.json"),
        "run",
        "finalize a run written by `cxr-trainer train`",
    )?;
    let config = &state.config;
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
    let data = Prepared::load(&config.data, config.seed)?;
    let mut params = ModelParams::neutral(config.model, data.dataset.labels.clone());
    params.input = config.input_spec();
    let (val_i, test_i, held_i) = (
        data.indices(Split::Validation),
        data.indices(Split::Test),
        data.held_out(),
    );
    let targets = |idx: &[usize]| -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
        let ex = data.examples(idx, &config.data, config.seed)?;
        Ok((
            ex.iter().flat_map(|e| e.targets.clone()).collect(),
            ex.iter().flat_map(|e| e.mask.clone()).collect(),
        ))
    };
    let k = params.labels.len();
    let val = outputs(&model, &params, &data, &val_i, device)?;
    let (val_y, val_m) = targets(&val_i)?;
    let fit = fit_params(
        &mut params,
        &val.logits,
        &val_y,
        &val_m,
        &val.features,
        ThresholdRule::MaxF1,
        0.95,
    )?;

    let test = outputs(&model, &params, &data, &test_i, device)?;
    let (test_y, test_m) = targets(&test_i)?;
    let mut patients = std::collections::HashMap::new();
    let groups: Vec<usize> = test_i
        .iter()
        .map(|&i| {
            let n = patients.len();
            *patients
                .entry(data.dataset.samples[i].patient.clone())
                .or_insert(n)
        })
        .collect();
    let mut per_label = Vec::new();
    for j in 0..k {
        let (z, y, m) = (
            column(&test.logits, k, j),
            column(&test_y, k, j),
            column(&test_m, k, j),
        );
        let p0: Vec<f32> = z.iter().map(|v| calibrated_probability(*v, 1.0)).collect();
        let p1: Vec<f32> = z
            .iter()
            .map(|v| calibrated_probability(*v, params.temperatures[j]))
            .collect();
        per_label.push(LabelMetrics {
            label: params.labels[j].clone(),
            positives: y
                .iter()
                .zip(&m)
                .filter(|(y, m)| **y >= 0.5 && **m > 0.0)
                .count(),
            auroc: bootstrap_by_patient(&z, &y, &m, &groups, auroc, 1000, config.seed),
            auprc: bootstrap_by_patient(&z, &y, &m, &groups, auprc, 1000, config.seed),
            ece_before: ece(&p0, &y, &m, 15),
            ece_after: ece(&p1, &y, &m, 15),
            brier_before: brier(&p0, &y, &m),
            brier_after: brier(&p1, &y, &m),
        });
    }
    let held = outputs(&model, &params, &data, &held_i, device)?;
    let dp = params.decision_params();
    let score = |o: &Outputs| -> Vec<cxr_core::ood::OodScores> {
        o.logits
            .chunks(k)
            .zip(o.features.chunks(config.model.width))
            .filter_map(|(z, f)| {
                cxr_core::ood::scores(z, f, dp.odin_temperature, dp.feature_stats.as_ref()).ok()
            })
            .collect()
    };
    let (s_in, s_out) = (score(&test), score(&held));
    let ood = |f: &dyn Fn(&cxr_core::ood::OodScores) -> f32| -> Option<f64> {
        // Positive class: held out; score oriented so that higher = more OOD.
        let scores: Vec<f32> = s_out.iter().chain(&s_in).map(f).collect();
        let labels: Vec<f32> = s_out
            .iter()
            .map(|_| 1.0)
            .chain(s_in.iter().map(|_| 0.0))
            .collect();
        auroc(&scores, &labels, &vec![1.0; scores.len()])
    };
    let ood_auroc = vec![
        ("joint_energy".to_owned(), ood(&|s| -s.joint_energy)),
        ("max_logit".to_owned(), ood(&|s| -s.max_logit)),
        ("odin_t".to_owned(), ood(&|s| -s.odin_t)),
        (
            "mahalanobis".to_owned(),
            ood(&|s| s.mahalanobis.unwrap_or(f32::NAN)),
        ),
    ];
    let mut ood_files = Vec::new();
    let mut extra_scores = Vec::new();
    for path in extra_ood {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match outputs_of(&model, &params, &[path.as_path()], device) {
            Ok(o) => {
                let sc = score(&o);
                let first = sc.first().copied();
                ood_files.push(OodFile {
                    file: name,
                    outcome: "scored".into(),
                    joint_energy: first.map(|s| s.joint_energy),
                    mahalanobis: first.and_then(|s| s.mahalanobis),
                });
                extra_scores.extend(sc);
            }
            // A refusal at ingest is a result (CT, MR, US never reach the
            // model); a file that cannot be read is listed as such, so a
            // typo does not read as the reader doing its job.
            Err(e) => ood_files.push(OodFile {
                file: name,
                outcome: match e {
                    TrainerError::ImageRefused { code, reason, .. } => {
                        format!("refused at ingest ({code}): {reason}")
                    }
                    e => format!("not read: {e}"),
                },
                joint_energy: None,
                mahalanobis: None,
            }),
        }
    }
    let vs_in = |f: &dyn Fn(&cxr_core::ood::OodScores) -> f32| -> Option<f64> {
        let scores: Vec<f32> = extra_scores.iter().chain(&s_in).map(f).collect();
        let labels: Vec<f32> = extra_scores
            .iter()
            .map(|_| 1.0)
            .chain(s_in.iter().map(|_| 0.0))
            .collect();
        auroc(&scores, &labels, &vec![1.0; scores.len()])
    };
    let ood_files_auroc = vec![
        ("joint_energy".to_owned(), vs_in(&|s| -s.joint_energy)),
        (
            "mahalanobis".to_owned(),
            vs_in(&|s| s.mahalanobis.unwrap_or(f32::NAN)),
        ),
    ];
    let report = Report {
        checkpoint: state.clone(),
        images: SplitCounts {
            train: data.indices(Split::Train).len(),
            validation: val_i.len(),
            test: test_i.len(),
            held_out: held_i.len(),
            patients: data.dataset.patients().len(),
        },
        fit,
        macro_auroc: mean(per_label.iter().filter_map(|l| l.auroc.map(|a| a.value))),
        macro_auprc: mean(per_label.iter().filter_map(|l| l.auprc.map(|a| a.value))),
        test: per_label,
        ood_auroc,
        ood_files,
        ood_files_auroc,
    };
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes)
            .map_err(|e| TrainerError::io("writing", &out.join(name), e))
    };
    write("model.onnx", &onnx_bytes)?;
    write(
        "params.toml",
        toml::to_string(&params)
            .map_err(|e| TrainerError::invalid("params", e.to_string(), "report this bug"))?
            .as_bytes(),
    )?;
    write(
        "report.json",
        serde_json::to_string_pretty(&report)
            .map_err(|e| TrainerError::invalid("report", e.to_string(), "report this bug"))?
            .as_bytes(),
    )?;
    let body = markdown(&report, &params);
    write("report.md", body.as_bytes())?;
    write(
        "model-card.md",
        model_card(&report, &params, &body).as_bytes(),
    )?;
    Ok(report)
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
    let _ = writeln!(s, "- Split by patient with seed {} ({} patients): {} train, {} validation, {} test images; {} images of patients under 18 held out of every split (OOD check).", c.seed, r.images.patients, r.images.train, r.images.validation, r.images.test, r.images.held_out);
    let _ = writeln!(
        s,
        "- Uncertainty policy: {:?}; per label: {:?}.\n",
        c.data.uncertainty, c.data.uncertainty_per_label
    );
    let _ = writeln!(s, "## Model and training\n");
    let _ = writeln!(s, "- ViT: patch {}, width {}, depth {}, heads {}, MLP ×{}, input {}×{}, {} channel(s), {} labels.", m.patch, m.width, m.depth, m.heads, m.mlp_ratio, m.image_size, m.image_size, m.in_channels, m.labels);
    let _ = writeln!(s, "- {} epochs, batch {}, AdamW lr {} (warmup {} steps, cosine to {}), weight decay {} (none on norms, biases, embeddings), global-norm clip {}, EMA {}; loss {:?}; augmentation {:?}.", c.optim.epochs, c.optim.batch_size, c.optim.lr, c.optim.warmup_steps, c.optim.min_lr, c.optim.weight_decay, c.optim.clip_norm, c.optim.ema_decay, c.loss, c.augment);
    let _ = writeln!(s, "- Selected checkpoint: epoch {} ({} weights), validation macro AUROC raw {:.3}, EMA {:.3}.\n", r.checkpoint.epoch + 1, r.checkpoint.source, r.checkpoint.val_macro_auroc_raw, r.checkpoint.val_macro_auroc_ema);
    let _ = writeln!(
        s,
        "## Test metrics ({} TTA views merged; 95% CIs from 1,000 patient bootstrap resamples)\n",
        params.tta.len()
    );
    let _ = writeln!(
        s,
        "Macro AUROC {} and macro AUPRC {} over the labels with test positives.\n",
        opt(r.macro_auroc),
        opt(r.macro_auprc)
    );
    let _ = writeln!(s, "| label | test positives | AUROC | AUPRC | ECE before → after | Brier before → after | temperature | threshold |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (j, l) in r.test.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} → {} | {} → {} | {:.3} | {:.3} |",
            l.label,
            l.positives,
            ci(&l.auroc),
            ci(&l.auprc),
            opt(l.ece_before),
            opt(l.ece_after),
            opt(l.brier_before),
            opt(l.brier_after),
            params.temperatures[j],
            params.thresholds[j]
        );
    }
    let _ = writeln!(s, "\n## Calibration and OOD\n");
    let _ = writeln!(s, "- Temperatures by validation NLL; thresholds at maximum validation F1 (labels without validation positives keep 0.5: {:?}).", r.fit.thresholds_kept);
    let _ = writeln!(s, "- OOD cut-offs at {:.0}% in-distribution TPR on validation: {:?}; Mahalanobis shrinkage {:?}.", r.fit.tpr * 100.0, r.fit.cutoffs, r.fit.shrinkage);
    let _ = writeln!(
        s,
        "- Held-out (paediatric) vs adult test images, AUROC per OOD score: {}.",
        r.ood_auroc
            .iter()
            .map(|(n, v)| format!("{n} {}", opt(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.ood_files.is_empty() {
        let auc: Vec<String> = r
            .ood_files_auroc
            .iter()
            .map(|(n, v)| format!("{n} {}", opt(*v)))
            .collect();
        let _ = writeln!(
            s,
            "- Other studies vs adult test images, AUROC: {}.",
            auc.join(", ")
        );
        for f in &r.ood_files {
            let scores = match (f.joint_energy, f.mahalanobis) {
                (Some(e), Some(m)) => format!(" (energy {e:.3}, Mahalanobis {m:.2})"),
                _ => String::new(),
            };
            let _ = writeln!(s, "  - `{}`: {}{scores}", f.file, f.outcome);
        }
    }
    s
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
    let _ = writeln!(s, "- The input gate refuses patients under 18, non-chest and lateral images; the OOD gates are fitted on {} validation images only.", r.images.validation);
    s
}
