//! The training run: data from a label table split by patient, the burn ViT
//! on the CPU (or CUDA) backend, AdamW with decay groups, warmup + cosine,
//! global-norm clipping, EMA, per-epoch validation of the raw and the EMA
//! weights by macro AUROC, checkpoints (ONNX through `cxr-model`'s writer
//! plus a JSON state), a progress line and a JSON Lines run log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cxr_model::{onnx, VitSpec, Weights};
use cxr_preprocess::{Channels, InputSpec, IntensityNorm};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::{
    read_chexpert, read_generic, read_mimic, read_nih_data_entry, read_nih_subset,
    split_by_patient, Dataset, Split, SplitFractions, UncertaintyPolicy,
};
use crate::eval::{auprc, auroc, Metric};
use crate::groups::GroupedAdamW;
use crate::init::Init;
use crate::loader::{Example, Loader};
use crate::loss::{multilabel_loss, LossKind, PosWeight};
use crate::optim::{clip_global_norm, warmup_cosine, Ema};
use crate::rng::Rng;
use crate::vit::BurnVit;
use crate::TrainerError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "format", deny_unknown_fields)]
pub enum DataSource {
    /// The shared subset's `labels.csv`.
    NihSubset { labels_csv: PathBuf },
    /// NIH ChestX-ray14's `Data_Entry_2017.csv` and its image folder.
    NihDataEntry { csv: PathBuf, images_dir: PathBuf },
    /// CheXpert `train.csv`/`valid.csv`; paths inside are relative to `root`.
    Chexpert { csv: PathBuf, root: PathBuf },
    /// MIMIC-CXR-JPG's metadata, split and CheXpert-label tables.
    Mimic {
        metadata: PathBuf,
        split: PathBuf,
        chexpert: PathBuf,
        root: PathBuf,
    },
    /// The documented generic CSV.
    Generic { csv: PathBuf, name: String },
}

impl DataSource {
    /// CheXpert and MIMIC leave a label blank when the report does not
    /// mention it, which their authors treat as negative; elsewhere a blank
    /// is unknown and masked out of the loss.
    pub fn blanks_are_negative(&self) -> bool {
        matches!(self, DataSource::Chexpert { .. } | DataSource::Mimic { .. })
    }

    pub fn read(&self) -> Result<Dataset, TrainerError> {
        match self {
            DataSource::NihSubset { labels_csv } => read_nih_subset(labels_csv),
            DataSource::NihDataEntry { csv, images_dir } => read_nih_data_entry(csv, images_dir),
            DataSource::Chexpert { csv, root } => read_chexpert(csv, root),
            DataSource::Mimic {
                metadata,
                split,
                chexpert,
                root,
            } => read_mimic(metadata, split, chexpert, root),
            DataSource::Generic { csv, name } => read_generic(csv, name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub source: DataSource,
    pub validation: f64,
    pub test: f64,
    /// Patients under 18 are held out of every split (an OOD check set).
    pub hold_out_pediatric: bool,
    /// The policy for uncertain labels...
    pub uncertainty: UncertaintyPolicy,
    /// ...and exceptions by label name (e.g. U-Ones for Atelectasis and
    /// U-Zeros for Cardiomegaly, as Irvin et al. found best).
    #[serde(default)]
    pub uncertainty_per_label: std::collections::BTreeMap<String, UncertaintyPolicy>,
}

impl DataConfig {
    /// One policy per label of the dataset; an unknown label name is refused.
    pub fn policies(&self, labels: &[String]) -> Result<Vec<UncertaintyPolicy>, TrainerError> {
        if let Some(name) = self
            .uncertainty_per_label
            .keys()
            .find(|n| !labels.contains(n))
        {
            return Err(TrainerError::invalid(
                "data.uncertainty_per_label",
                format!("unknown label `{name}`; the data has {}", labels.join(", ")),
                "name labels exactly as the data does",
            ));
        }
        Ok(labels
            .iter()
            .map(|l| {
                self.uncertainty_per_label
                    .get(l)
                    .copied()
                    .unwrap_or(self.uncertainty)
            })
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f32,
    pub clip_norm: f64,
    pub ema_decay: f32,
    /// Layer-wise learning-rate decay for fine-tuning: layer `l` of `top`
    /// trains at `lr * layer_decay^(top - l)`. 1.0 (the default) is off.
    #[serde(default = "no_layer_decay")]
    pub layer_decay: f64,
}

fn no_layer_decay() -> f64 {
    1.0
}

impl OptimConfig {
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |what: String| TrainerError::invalid("optim", what, "fix the optim section");
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return Err(bad(format!(
                "layer_decay {} outside (0, 1]",
                self.layer_decay
            )));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if self.batch_size == 0 || !positive(self.lr) || !positive(self.clip_norm) {
            return Err(bad("batch_size, lr and clip_norm must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(bad(format!("ema_decay {} outside [0, 1)", self.ema_decay)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    pub data: DataConfig,
    pub model: VitSpec,
    pub optim: OptimConfig,
    pub loss: LossKind,
    #[serde(default)]
    pub pos_weight: PosWeight,
    #[serde(default)]
    pub init: Init,
    #[serde(default)]
    pub augment: AugmentConfig,
    /// The input's intensity normalisation (percentile clip, mean, std);
    /// the appliance's default when absent. It ships in the bundle's
    /// `InputSpec`, so the device normalises exactly as training did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<IntensityNorm>,
    pub workers: usize,
    pub cache_mb: usize,
}

impl TrainConfig {
    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            size: self.model.image_size as u32,
            channels: if self.model.in_channels == 3 {
                Channels::Three
            } else {
                Channels::One
            },
            intensity: self.intensity.unwrap_or(InputSpec::default().intensity),
            ..InputSpec::default()
        }
    }
}

/// The dataset, its split and the held-out (pediatric) set.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dataset: Dataset,
    /// Per sample; `None` for held-out samples.
    pub split: Vec<Option<Split>>,
    /// Samples dropped because their stated view is not frontal.
    pub dropped_non_frontal: usize,
}

impl Prepared {
    pub fn load(c: &DataConfig, seed: u64) -> Result<Self, TrainerError> {
        let mut dataset = c.source.read()?;
        let dropped_non_frontal = dataset.keep_frontal();
        if dropped_non_frontal > 0 {
            eprintln!(
                "cxr-trainer: dropped {dropped_non_frontal} lateral, decubitus or other non-frontal views (the appliance classifies frontal films only)"
            );
        }
        let by_patient = split_by_patient(
            &dataset,
            SplitFractions {
                validation: c.validation,
                test: c.test,
            },
            seed,
        )?;
        let split = dataset
            .samples
            .iter()
            .zip(by_patient)
            .map(|(s, p)| {
                let child = s.age_years.is_some_and(|a| a < 18.0);
                if c.hold_out_pediatric && child {
                    None
                } else {
                    Some(s.given_split.unwrap_or(p))
                }
            })
            .collect();
        Ok(Prepared {
            dataset,
            split,
            dropped_non_frontal,
        })
    }

    pub fn indices(&self, which: Split) -> Vec<usize> {
        (0..self.split.len())
            .filter(|i| self.split[*i] == Some(which))
            .collect()
    }

    pub fn held_out(&self) -> Vec<usize> {
        (0..self.split.len())
            .filter(|i| self.split[*i].is_none())
            .collect()
    }

    /// Examples with targets and masks by each label's uncertainty policy
    /// and the source's convention for blanks.
    pub fn examples(
        &self,
        indices: &[usize],
        c: &DataConfig,
        seed: u64,
    ) -> Result<Vec<Example>, TrainerError> {
        let policies = c.policies(&self.dataset.labels)?;
        let blanks_negative = c.source.blanks_are_negative();
        let mut rng = Rng::new(seed);
        Ok(indices
            .iter()
            .map(|&i| {
                let s = &self.dataset.samples[i];
                let (targets, mask) = s
                    .labels
                    .iter()
                    .zip(&policies)
                    .map(|(v, policy)| {
                        let t = policy.target(*v, rng.uniform() as f32, blanks_negative);
                        (t.value, t.mask)
                    })
                    .unzip();
                Example {
                    image: s.image.clone(),
                    targets,
                    mask,
                }
            })
            .collect())
    }
}

/// Logits and pooled features `[n, labels]`, `[n, width]` of a model on
/// loaded examples, in chunks, without gradients.
pub fn predict<B: Backend>(
    model: &BurnVit<B>,
    loader: &Loader,
    indices: &[usize],
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
    let s = model.spec();
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    for chunk in indices.chunks(64) {
        let b = loader.batch(chunk, None, 0)?;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(
                b.images,
                [chunk.len(), s.in_channels, s.image_size, s.image_size],
            ),
            device,
        );
        let (l, f) = model.forward(x);
        logits.extend(to_vec(l)?);
        features.extend(to_vec(f)?);
    }
    Ok((logits, features))
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, TrainerError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainerError::invalid("tensor", format!("{e:?}"), "report this bug"))
}

/// Macro AUROC over the labels where it is defined (with its count).
pub fn macro_auroc(logits: &[f32], targets: &[f32], mask: &[f32], labels: usize) -> (f64, usize) {
    macro_metric(auroc, logits, targets, mask, labels)
}

/// Macro AUPRC over the labels where it is defined (with its count).
pub fn macro_auprc(logits: &[f32], targets: &[f32], mask: &[f32], labels: usize) -> (f64, usize) {
    macro_metric(auprc, logits, targets, mask, labels)
}

fn macro_metric(
    metric: Metric,
    logits: &[f32],
    targets: &[f32],
    mask: &[f32],
    labels: usize,
) -> (f64, usize) {
    let n = logits.len() / labels.max(1);
    let col = |a: &[f32], j: usize| -> Vec<f32> { (0..n).map(|i| a[i * labels + j]).collect() };
    let values: Vec<f64> = (0..labels)
        .filter_map(|j| metric(&col(logits, j), &col(targets, j), &col(mask, j)))
        .collect();
    if values.is_empty() {
        return (f64::NAN, 0);
    }
    (
        values.iter().sum::<f64>() / values.len() as f64,
        values.len(),
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub epoch: usize,
    pub step: usize,
    pub val_macro_auroc_raw: f64,
    pub val_macro_auroc_ema: f64,
    #[serde(default)]
    pub val_macro_auprc_raw: f64,
    #[serde(default)]
    pub val_macro_auprc_ema: f64,
    /// `raw` or `ema`: which weights the best checkpoint holds.
    pub source: String,
    pub config: TrainConfig,
}

impl Checkpoint {
    /// Read a checkpoint JSON written by `train`; `what` and `fix` name the
    /// caller's task in the error (resume, finalize).
    pub(crate) fn read(
        path: &Path,
        what: &'static str,
        fix: &'static str,
    ) -> Result<Self, TrainerError> {
        let bytes = std::fs::read(path).map_err(|e| TrainerError::io("reading", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainerError::invalid(what, e.to_string(), fix))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    pub best: Checkpoint,
    pub epochs_run: usize,
    pub steps: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub train_images: usize,
    pub validation_images: usize,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainerError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainerError::invalid("json", e.to_string(), "report this bug"))?;
    std::fs::write(path, text).map_err(|e| TrainerError::io("writing", path, e))
}

fn write_weights(path: &Path, w: &Weights) -> Result<(), TrainerError> {
    let bytes = onnx::write(w)
        .map_err(|e| TrainerError::invalid("export", e.to_string(), "report this bug"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| TrainerError::io("writing", path, e))
}

/// Train; writes `best.onnx`, `best.json`, `last.onnx`, `last-ema.onnx`,
/// `last.json`, the optimiser state `optimizer-K.bin` and `log.jsonl` into
/// `out`. With `resume`, continues from `last.*` (weights, EMA, AdamW
/// moments, epoch).
pub fn train<AB: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<TrainReport, TrainerError> {
    config.augment.validate()?;
    config.optim.validate()?;
    config
        .model
        .validate()
        .map_err(|e| TrainerError::invalid("model", e.to_string(), "fix the model section"))?;
    config.input_spec().validate().map_err(|e| {
        TrainerError::invalid("intensity", e.to_string(), "fix the intensity section")
    })?;
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let data = Prepared::load(&config.data, config.seed)?;
    if data.dataset.labels.len() != config.model.labels {
        return Err(TrainerError::invalid(
            "model",
            format!(
                "{} labels in the data, {} in the model",
                data.dataset.labels.len(),
                config.model.labels
            ),
            "set model.labels",
        ));
    }
    let (train_i, val_i) = (data.indices(Split::Train), data.indices(Split::Validation));
    let spec = config.input_spec();
    let budget = config.cache_mb << 20;
    let train_examples = data.examples(&train_i, &config.data, config.seed)?;
    let pos_weight = {
        let t: Vec<f32> = train_examples
            .iter()
            .flat_map(|e| e.targets.clone())
            .collect();
        let m: Vec<f32> = train_examples.iter().flat_map(|e| e.mask.clone()).collect();
        config.pos_weight.resolve(&data.dataset.labels, &t, &m)?
    };
    let train_l = Loader::new(train_examples, spec, config.workers, budget);
    let val_examples = data.examples(&val_i, &config.data, config.seed)?;
    let val_targets: Vec<f32> = val_examples
        .iter()
        .flat_map(|e| e.targets.clone())
        .collect();
    let val_mask: Vec<f32> = val_examples.iter().flat_map(|e| e.mask.clone()).collect();
    let val_l = Loader::new(val_examples, spec, config.workers, budget);
    let val_idx: Vec<usize> = (0..val_l.len()).collect();

    let mut start_epoch = 0;
    let (weights, init_note) = config.init.weights(&config.model, config.seed)?;
    let (mut weights, mut ema) = (weights, None);
    if resume {
        let state = Checkpoint::read(
            &out.join("last.json"),
            "resume",
            "resume from a run written by this trainer",
        )?;
        let read = |name: &str| -> Result<Weights, TrainerError> {
            let bytes = std::fs::read(out.join(name))
                .map_err(|e| TrainerError::io("reading", &out.join(name), e))?;
            onnx::read_weights(&bytes, &config.model).map_err(|e| {
                TrainerError::invalid(
                    "resume",
                    e.to_string(),
                    "the checkpoint does not match the config",
                )
            })
        };
        weights = read("last.onnx")?;
        ema = Some(read("last-ema.onnx")?);
        start_epoch = state.epoch + 1;
    }
    let mut model = BurnVit::<AB>::from_weights(&weights, device)?;
    let mut ema = Ema::new(ema.unwrap_or(weights), config.optim.ema_decay);
    let mut optimizer =
        GroupedAdamW::new(&model, config.optim.weight_decay, config.optim.layer_decay);
    if resume {
        optimizer = optimizer.load(out, device)?;
    }
    let pos_weight = pos_weight.map(|w| {
        let n = w.len();
        Tensor::<AB, 1>::from_data(TensorData::new(w, [n]), device)
    });
    let o = config.optim;
    let steps_per_epoch = train_l.len().div_ceil(o.batch_size).max(1);
    let total = steps_per_epoch * o.epochs;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("log.jsonl"))
        .map_err(|e| TrainerError::io("opening", &out.join("log.jsonl"), e))?;
    let mut best: Option<Checkpoint> = None;
    if resume {
        if let Ok(bytes) = std::fs::read(out.join("best.json")) {
            best = serde_json::from_slice(&bytes).ok();
        }
    }
    let _ = writeln!(
        log,
        "{}",
        serde_json::json!({ "event": "start", "resume": resume, "init": init_note, "config": config, "lr_groups": optimizer.lr_scales() })
    );
    let started = Instant::now();
    let mut images = 0usize;
    let mut step = start_epoch * steps_per_epoch;
    let s = config.model;
    for epoch in start_epoch..o.epochs {
        let order = train_l.epoch_order(config.seed, epoch as u64);
        let mut epoch_loss = 0.0;
        for (k, idx) in order.chunks(o.batch_size).enumerate() {
            let mut b = train_l.batch(
                idx,
                Some(&config.augment),
                config.seed ^ (step as u64) << 20,
            )?;
            config.augment.mix_batch(
                &mut b.images,
                &mut b.targets,
                &mut b.mask,
                b.size,
                s.image_size,
                &mut Rng::new(config.seed ^ step as u64),
            );
            let x = Tensor::<AB, 4>::from_data(
                TensorData::new(
                    b.images,
                    [b.size, s.in_channels, s.image_size, s.image_size],
                ),
                device,
            );
            let y =
                Tensor::<AB, 2>::from_data(TensorData::new(b.targets, [b.size, s.labels]), device);
            let m = Tensor::<AB, 2>::from_data(TensorData::new(b.mask, [b.size, s.labels]), device);
            let (logits, _) = model.forward(x);
            let loss = multilabel_loss(config.loss, logits, y, m, pos_weight.clone());
            let loss_value = f64::from(to_vec(loss.clone())?.first().copied().unwrap_or(f32::NAN));
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            let norm = clip_global_norm::<AB, _>(&model, &mut grads, o.clip_norm);
            let lr = warmup_cosine(step, o.warmup_steps, total, o.lr, o.min_lr);
            model = optimizer.step(lr, model, grads);
            ema.update(&model.valid().to_weights()?)?;
            images += b.size;
            epoch_loss += loss_value;
            step += 1;
            let ips = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if k % 5 == 0 || k + 1 == steps_per_epoch {
                eprint!("\repoch {}/{} step {}/{} loss {loss_value:.4} lr {lr:.2e} grad-norm {norm:.2} {ips:.1} img/s   ", epoch + 1, o.epochs, k + 1, steps_per_epoch);
            }
            let _ = writeln!(
                log,
                "{}",
                serde_json::json!({ "event": "step", "epoch": epoch, "step": step, "loss": loss_value, "lr": lr, "grad_norm": norm, "images_per_second": ips })
            );
        }
        // Validation: raw and EMA weights.
        let inner = model.valid();
        let raw_w = inner.to_weights()?;
        let dev = burn::tensor::Device::<AB::InnerBackend>::default();
        let raw = BurnVit::<AB::InnerBackend>::from_weights(&raw_w, &dev)?;
        let ema_m = BurnVit::<AB::InnerBackend>::from_weights(&ema.weights, &dev)?;
        let (raw_logits, _) = predict(&raw, &val_l, &val_idx, &dev)?;
        let (ema_logits, _) = predict(&ema_m, &val_l, &val_idx, &dev)?;
        let (a_raw, n_raw) = macro_auroc(&raw_logits, &val_targets, &val_mask, s.labels);
        let (a_ema, _) = macro_auroc(&ema_logits, &val_targets, &val_mask, s.labels);
        let (p_raw, _) = macro_auprc(&raw_logits, &val_targets, &val_mask, s.labels);
        let (p_ema, _) = macro_auprc(&ema_logits, &val_targets, &val_mask, s.labels);
        eprintln!("\repoch {}/{}: train loss {:.4}, val macro AUROC raw {a_raw:.4} ema {a_ema:.4}, AUPRC raw {p_raw:.4} ema {p_ema:.4} ({n_raw} labels defined)          ", epoch + 1, o.epochs, epoch_loss / steps_per_epoch as f64);
        let _ = writeln!(
            log,
            "{}",
            serde_json::json!({ "event": "epoch", "epoch": epoch, "train_loss": epoch_loss / steps_per_epoch as f64, "val_macro_auroc_raw": a_raw, "val_macro_auroc_ema": a_ema, "val_macro_auprc_raw": p_raw, "val_macro_auprc_ema": p_ema, "labels_defined": n_raw })
        );
        let use_ema = a_ema.is_finite() && (a_ema >= a_raw || !a_raw.is_finite());
        let state = Checkpoint {
            epoch,
            step,
            val_macro_auroc_raw: a_raw,
            val_macro_auroc_ema: a_ema,
            val_macro_auprc_raw: p_raw,
            val_macro_auprc_ema: p_ema,
            source: if use_ema { "ema".into() } else { "raw".into() },
            config: config.clone(),
        };
        write_weights(&out.join("last.onnx"), &raw_w)?;
        write_weights(&out.join("last-ema.onnx"), &ema.weights)?;
        optimizer.save(out)?;
        // last.json goes last: resume trusts the files it vouches for.
        write_json(&out.join("last.json"), &state)?;
        let score = a_raw.max(if a_ema.is_finite() {
            a_ema
        } else {
            f64::NEG_INFINITY
        });
        // f64::max ignores a NaN side; a NaN score never replaces the best.
        let better = best.as_ref().is_none_or(|b| {
            let prev = b.val_macro_auroc_raw.max(b.val_macro_auroc_ema);
            prev.is_nan() || score > prev
        });
        if better {
            write_weights(
                &out.join("best.onnx"),
                if use_ema { &ema.weights } else { &raw_w },
            )?;
            write_json(&out.join("best.json"), &state)?;
            best = Some(state);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let best = best.ok_or_else(|| {
        TrainerError::invalid(
            "training",
            "no epoch ran".into(),
            "set optim.epochs above the resumed epoch",
        )
    })?;
    Ok(TrainReport {
        best,
        epochs_run: o.epochs.saturating_sub(start_epoch),
        steps: step,
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        train_images: train_l.len(),
        validation_images: val_l.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_config(per_label: &str) -> DataConfig {
        toml::from_str(&format!(
            "source = {{ format = \"chexpert\", csv = \"t.csv\", root = \".\" }}\nvalidation = 0.1\ntest = 0.1\nhold_out_pediatric = false\nuncertainty = {{ policy = \"u_zeros\" }}\n{per_label}"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn uncertainty_policies_are_chosen_per_label() {
        let labels: Vec<String> = ["Atelectasis", "Cardiomegaly", "Edema"]
            .map(str::to_owned)
            .to_vec();
        let c = data_config(
            "uncertainty_per_label = { Atelectasis = { policy = \"u_ones\" }, Edema = { policy = \"ignore\" } }",
        );
        assert_eq!(
            c.policies(&labels).unwrap_or_default(),
            vec![
                UncertaintyPolicy::UOnes,
                UncertaintyPolicy::UZeros,
                UncertaintyPolicy::Ignore
            ]
        );
        assert!(c.source.blanks_are_negative());
        let typo = data_config("uncertainty_per_label = { Atelectasys = { policy = \"u_ones\" } }");
        let e = typo.policies(&labels).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("Atelectasys")));
    }

    #[test]
    fn optim_section_is_checked() {
        let mut o = OptimConfig {
            epochs: 1,
            batch_size: 8,
            lr: 1e-3,
            min_lr: 0.0,
            warmup_steps: 0,
            weight_decay: 0.05,
            clip_norm: 1.0,
            ema_decay: 0.99,
            layer_decay: 0.75,
        };
        assert!(o.validate().is_ok());
        o.layer_decay = 1.5;
        assert!(o.validate().is_err());
        o.layer_decay = 1.0;
        o.ema_decay = 1.0;
        assert!(o.validate().is_err());
    }
}
