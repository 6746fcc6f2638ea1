//! The training run: data from a label table split by patient, the burn ViT
//! on the CPU (or CUDA) backend, AdamW with decay groups, warmup + cosine,
//! global-norm clipping, EMA, per-epoch validation of the raw and the EMA
//! weights by macro AUROC, checkpoints (ONNX through `cxr-model`'s writer
//! plus a JSON state), a progress line and a JSON Lines run log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cxr_model::{onnx, VitSpec, Weights};
use cxr_preprocess::{Channels, InputSpec, IntensityNorm};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::{
    read_chexpert, read_generic, read_kermany_subset, read_mimic, read_nih_data_entry,
    read_nih_subset, split_by_patient, Dataset, Split, SplitFractions, UncertaintyPolicy,
};
use crate::eval::{auprc, auroc, Metric};
use crate::groups::GroupedAdamW;
use crate::init::Init;
use crate::loader::{Example, Loader};
use crate::loss::{multilabel_loss, LossKind, PosWeight};
use crate::optim::{clip_global_norm, warmup_cosine, Ema, Swa};
use crate::rng::Rng;
use crate::vit::{BurnVit, Precision};
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
    /// The shared Kermany paediatric subset's `labels.csv` (Pneumonia only;
    /// for pretraining on its films).
    KermanySubset { labels_csv: PathBuf },
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
            DataSource::KermanySubset { labels_csv } => read_kermany_subset(labels_csv),
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
    /// The seed of the patient split, when it must differ from the run's
    /// `seed` (ensemble members: other initialisations and orders, the
    /// same split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
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
    /// Update the EMA every this many steps, with the decay of that many
    /// steps (copying the model to the host is its cost); 1, the default,
    /// is every step.
    #[serde(default = "one")]
    pub ema_every: usize,
    /// Stochastic weight averaging: the mean of the end-of-epoch weights
    /// from this epoch (0-based) on, validated beside the raw and EMA
    /// weights; absent, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa_start_epoch: Option<usize>,
    /// Gradient accumulation: each step's `batch_size` images go through
    /// the model in this many micro-batches, their gradients summed with
    /// the weights that make the step equal to one whole batch; 1, the
    /// default, is off.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// `f32` (the default) or `bf16`: the matrix products in bf16 with f32
    /// master weights ([`Precision`]), on a backend with bf16 (CUDA; on
    /// the CPU, `flex`).
    #[serde(default)]
    pub precision: Precision,
    /// Which weights `best.onnx` keeps: `validation` (the default: raw,
    /// EMA or SWA, whichever validates best) or `swa` (the SWA mean as of
    /// the last epoch run, as SWA is meant to be used; needs
    /// `swa_start_epoch`).
    #[serde(default)]
    pub keep: Keep,
}

/// See [`OptimConfig::keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    #[default]
    Validation,
    Swa,
}

fn no_layer_decay() -> f64 {
    1.0
}

fn one() -> usize {
    1
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
        if self.ema_every == 0 || !(1..=self.batch_size).contains(&self.accumulate) {
            return Err(bad(format!(
                "ema_every {} must be at least 1 and accumulate {} from 1 to batch_size",
                self.ema_every, self.accumulate
            )));
        }
        if self.keep == Keep::Swa && self.swa_start_epoch.is_none() {
            return Err(bad("keep = \"swa\" needs swa_start_epoch".into()));
        }
        if self.swa_start_epoch.is_some_and(|e| e >= self.epochs) {
            return Err(bad(format!(
                "swa_start_epoch {:?} is not before the last epoch ({})",
                self.swa_start_epoch, self.epochs
            )));
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
        input_spec(&self.model, self.intensity)
    }
}

/// The model's input: its size and channels, and the intensity
/// normalisation (the appliance's default when `None`).
pub fn input_spec(model: &VitSpec, intensity: Option<IntensityNorm>) -> InputSpec {
    InputSpec {
        size: model.image_size as u32,
        channels: if model.in_channels == 3 {
            Channels::Three
        } else {
            Channels::One
        },
        intensity: intensity.unwrap_or(InputSpec::default().intensity),
        ..InputSpec::default()
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
            c.split_seed.unwrap_or(seed),
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

/// A score as JSON writes it: a NaN (no label defined) becomes `null`,
/// which reads back as NaN.
fn score_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub epoch: usize,
    pub step: usize,
    #[serde(deserialize_with = "score_or_nan")]
    pub val_macro_auroc_raw: f64,
    #[serde(deserialize_with = "score_or_nan")]
    pub val_macro_auroc_ema: f64,
    #[serde(default, deserialize_with = "score_or_nan")]
    pub val_macro_auprc_raw: f64,
    #[serde(default, deserialize_with = "score_or_nan")]
    pub val_macro_auprc_ema: f64,
    /// The SWA weights' scores, once SWA has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_macro_auroc_swa: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_macro_auprc_swa: Option<f64>,
    /// How many end-of-epoch snapshots the SWA mean holds.
    #[serde(default)]
    pub swa_models: usize,
    /// `raw`, `ema` or `swa`: which weights the best checkpoint holds.
    pub source: String,
    pub config: TrainConfig,
}

impl Checkpoint {
    /// The best validation macro AUROC of its weights (NaN when none is
    /// defined).
    fn score(&self) -> f64 {
        [
            self.val_macro_auroc_raw,
            self.val_macro_auroc_ema,
            self.val_macro_auroc_swa.unwrap_or(f64::NAN),
        ]
        .into_iter()
        .filter(|a| a.is_finite())
        .fold(f64::NAN, f64::max)
    }
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

/// Written whole, then renamed into place: a crash leaves the previous
/// file, never half of the new one.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainerError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainerError::invalid("json", e.to_string(), "report this bug"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| TrainerError::io("writing", path, e))
}

fn write_weights(path: &Path, w: &Weights) -> Result<(), TrainerError> {
    let bytes = onnx::write(w)
        .map_err(|e| TrainerError::invalid("export", e.to_string(), "report this bug"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| TrainerError::io("writing", path, e))
}

/// Train; writes `best.onnx`, `best.json`, `last.onnx`, `last-ema.onnx`
/// (and `last-swa.onnx` once SWA has started), `last.json`, the optimiser
/// state `optimizer-K.bin` and `log.jsonl` into `out`. With `resume`,
/// continues from `last.*` (weights, EMA, SWA, AdamW moments, epoch).
pub fn train<AB: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<TrainReport, TrainerError> {
    train_on::<AB>(config, out, resume, std::slice::from_ref(device))
}

/// [`train`] on several devices, data-parallel through burn's collective
/// all-reduce ([`crate::parallel`]): `optim.batch_size` is the whole
/// step's batch, shared among the devices, so the run takes the steps one
/// device would. The first device loads data, validates and saves.
pub fn train_on<AB: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    devices: &[AB::Device],
) -> Result<TrainReport, TrainerError> {
    train_across::<AB>(config, out, resume, devices, None)
}

/// [`train_on`] as one node of a multi-node run (one process per node):
/// every node takes the same global batch, each worker its share by its
/// global rank. Each node writes its own run folder; they hold the same
/// weights, and node 0's is the one to finalize.
pub fn train_across<AB: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    devices: &[AB::Device],
    cluster: Option<&crate::parallel::Cluster>,
) -> Result<TrainReport, TrainerError> {
    validate(config)?;
    if let Some(c) = cluster {
        c.validate()?;
    }
    let device = devices.first().ok_or_else(|| {
        TrainerError::invalid("devices", "none".into(), "train on one device or more")
    })?;
    // Before any data is read.
    check_precision::<AB>(config, device)?;
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let inputs = Inputs::load(config)?;
    let placement = Placement {
        devices,
        cluster,
        pos_weight: inputs.pos_weight.clone(),
        data: inputs.fingerprint,
    };
    let mut run = Run::<AB>::start(config, out, resume, placement)?;
    let o = config.optim;
    let steps_per_epoch = inputs.train.len().div_ceil(o.batch_size).max(1);
    let total = steps_per_epoch * o.epochs;
    run.step = run.start_epoch * steps_per_epoch;
    let pos_weight = inputs.pos_weight.clone().map(|w| {
        let n = w.len();
        Tensor::<AB, 1>::from_data(TensorData::new(w, [n]), device)
    });
    let started = Instant::now();
    let start_epoch = run.start_epoch;
    for epoch in start_epoch..o.epochs {
        let order = inputs.train.epoch_order(config.seed, epoch as u64);
        let mut epoch_loss = 0.0;
        for (k, idx) in order.chunks(o.batch_size).enumerate() {
            let lr = warmup_cosine(run.step, o.warmup_steps, total, o.lr, o.min_lr);
            let (loss, norm) = run.step_on(&inputs, idx, lr, pos_weight.as_ref())?;
            epoch_loss += loss;
            let ips = run.images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if k % 5 == 0 || k + 1 == steps_per_epoch {
                eprint!("\repoch {}/{} step {}/{} loss {loss:.4} lr {lr:.2e} grad-norm {norm:.2} {ips:.1} img/s   ", epoch + 1, o.epochs, k + 1, steps_per_epoch);
            }
            run.log(serde_json::json!({ "event": "step", "epoch": epoch, "step": run.step, "loss": loss, "lr": lr, "grad_norm": norm, "images_per_second": ips }));
        }
        run.end_epoch(&inputs, epoch, epoch_loss / steps_per_epoch as f64)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(helpers) = run.helpers.take() {
        helpers.finish::<AB::InnerBackend>()?;
    }
    let best = run.best.clone().ok_or_else(|| {
        TrainerError::invalid(
            "training",
            "no epoch ran".into(),
            "set optim.epochs above the resumed epoch",
        )
    })?;
    Ok(TrainReport {
        best,
        epochs_run: o.epochs.saturating_sub(start_epoch),
        steps: run.step,
        seconds,
        images_per_second: run.images as f64 / seconds.max(1e-9),
        train_images: inputs.train.len(),
        validation_images: inputs.val.len(),
    })
}

fn validate(config: &TrainConfig) -> Result<(), TrainerError> {
    config.augment.validate()?;
    config.optim.validate()?;
    config
        .model
        .validate()
        .map_err(|e| TrainerError::invalid("model", e.to_string(), "fix the model section"))?;
    config
        .input_spec()
        .validate()
        .map_err(|e| TrainerError::invalid("intensity", e.to_string(), "fix the intensity section"))
}

/// The run's data: the training and validation loaders, the validation
/// targets, and the positive weights of the loss.
struct Inputs<'c> {
    config: &'c TrainConfig,
    train: Loader,
    val: Loader,
    val_targets: Vec<f32>,
    val_mask: Vec<f32>,
    pos_weight: Option<Vec<f32>>,
    /// The data as loaded, digested: what the nodes of a cluster check
    /// they share (each reads its own copy).
    fingerprint: [u8; 32],
}

impl<'c> Inputs<'c> {
    fn load(config: &'c TrainConfig) -> Result<Self, TrainerError> {
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
        let t: Vec<f32> = train_examples
            .iter()
            .flat_map(|e| e.targets.clone())
            .collect();
        let m: Vec<f32> = train_examples.iter().flat_map(|e| e.mask.clone()).collect();
        let pos_weight = config.pos_weight.resolve(&data.dataset.labels, &t, &m)?;
        let val_examples = data.examples(&val_i, &config.data, config.seed)?;
        let val_targets = val_examples
            .iter()
            .flat_map(|e| e.targets.clone())
            .collect();
        let val_mask = val_examples.iter().flat_map(|e| e.mask.clone()).collect();
        let fingerprint = data_fingerprint(&train_examples, &val_examples, pos_weight.as_deref());
        Ok(Inputs {
            config,
            train: Loader::new(train_examples, spec, config.workers, budget),
            val: Loader::new(val_examples, spec, config.workers, budget),
            val_targets,
            val_mask,
            pos_weight,
            fingerprint,
        })
    }
}

/// The training and validation examples (image file names, targets and
/// masks, in order) and the loss's positive weights, digested.
fn data_fingerprint(
    train: &[crate::loader::Example],
    val: &[crate::loader::Example],
    pos_weight: Option<&[f32]>,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for split in [train, val] {
        h.update((split.len() as u64).to_le_bytes());
        for e in split {
            let name = e.image.file_name().unwrap_or_default();
            h.update(name.as_encoded_bytes());
            h.update([0]);
            for v in e.targets.iter().chain(&e.mask) {
                h.update(v.to_le_bytes());
            }
        }
    }
    for v in pos_weight.unwrap_or_default() {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Where a run's workers are: this node's devices, the cluster when there
/// are several nodes; and what they all need: the loss's positive
/// weights, and the data's fingerprint to check they share it.
struct Placement<'a, D> {
    devices: &'a [D],
    cluster: Option<&'a crate::parallel::Cluster>,
    pos_weight: Option<Vec<f32>>,
    data: [u8; 32],
}

/// The state of a run between steps: the model, its optimiser and weight
/// averages, the best checkpoint so far, and where the run stands.
struct Run<'a, AB: AutodiffBackend> {
    config: &'a TrainConfig,
    out: &'a Path,
    device: &'a AB::Device,
    /// Taken for the length of a step (AdamW consumes and returns it).
    model: Option<BurnVit<AB>>,
    optimizer: GroupedAdamW<AB>,
    ema: Ema,
    /// Steps since the EMA last took the weights.
    ema_behind: usize,
    swa: Option<Swa>,
    /// The other devices' workers, when the run is data-parallel.
    helpers: Option<crate::parallel::Helpers>,
    best: Option<Checkpoint>,
    start_epoch: usize,
    step: usize,
    images: usize,
    log: std::fs::File,
}

impl<'a, AB: AutodiffBackend> Run<'a, AB> {
    /// A fresh run from the configured init, or the state `last.json`
    /// vouches for.
    fn start(
        config: &'a TrainConfig,
        out: &'a Path,
        resume: bool,
        placement: Placement<'a, AB::Device>,
    ) -> Result<Self, TrainerError> {
        let (devices, cluster) = (placement.devices, placement.cluster);
        let device = &devices[0];
        let (weights, init_note) = config.init.weights(&config.model, config.seed)?;
        let (mut weights, mut ema, mut swa, mut start_epoch) = (weights, None, None, 0);
        let mut best: Option<Checkpoint> = None;
        if resume {
            let state = Checkpoint::read(
                &out.join("last.json"),
                "resume",
                "resume from a run written by this trainer",
            )?;
            weights = read_checkpoint_weights(out, "last.onnx", config)?;
            ema = Some(read_checkpoint_weights(out, "last-ema.onnx", config)?);
            // SWA carries on only while the config still asks for it.
            if state.swa_models > 0 && config.optim.swa_start_epoch.is_some() {
                swa = Some(Swa {
                    weights: read_checkpoint_weights(out, "last-swa.onnx", config)?,
                    models: state.swa_models,
                });
            }
            start_epoch = state.epoch + 1;
            best = std::fs::read(out.join("best.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        }
        let model = replica::<AB>(&weights, config, device)?;
        let mut optimizer =
            GroupedAdamW::new(&model, config.optim.weight_decay, config.optim.layer_decay);
        if resume {
            optimizer = optimizer.load(out, device)?;
        }
        let helpers = if devices.len() > 1 || cluster.is_some() {
            let start = crate::parallel::HelperStart {
                weights: &weights,
                config,
                resume_from: resume.then_some(out),
                pos_weight: placement.pos_weight,
                cluster,
                data: placement.data,
            };
            Some(crate::parallel::Helpers::start::<AB>(devices, start)?)
        } else {
            None
        };
        let log_path = out.join("log.jsonl");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| TrainerError::io("opening", &log_path, e))?;
        let mut run = Run {
            config,
            out,
            device,
            ema: Ema::new(
                ema.unwrap_or_else(|| weights.clone()),
                config.optim.ema_decay,
            ),
            ema_behind: 0,
            swa,
            helpers,
            model: Some(model),
            optimizer,
            best,
            start_epoch,
            step: 0,
            images: 0,
            log,
        };
        run.log(serde_json::json!({ "event": "start", "resume": resume, "init": init_note, "config": config, "devices": devices.len(), "nodes": cluster.map_or(1, |c| c.nodes), "node_rank": cluster.map_or(0, |c| c.node_rank), "lr_groups": run.optimizer.lr_scales() }));
        Ok(run)
    }

    /// The model, taken for a step.
    fn model(&mut self) -> Result<BurnVit<AB>, TrainerError> {
        self.model.take().ok_or_else(lost_model)
    }

    fn log(&mut self, line: serde_json::Value) {
        let _ = writeln!(self.log, "{line}");
    }

    /// One optimisation step on the examples `idx`: forward and backward
    /// in `accumulate` micro-batches, clip, AdamW, and the EMA when due.
    /// Returns the batch's loss and the gradient norm before clipping.
    fn step_on(
        &mut self,
        inputs: &Inputs<'_>,
        idx: &[usize],
        lr: f64,
        pos_weight: Option<&Tensor<AB, 1>>,
    ) -> Result<(f64, f64), TrainerError> {
        let (c, s) = (self.config, self.config.model);
        let mut b = inputs
            .train
            .batch(idx, Some(&c.augment), c.seed ^ (self.step as u64) << 20)?;
        c.augment.mix_batch(
            &mut b.images,
            &mut b.targets,
            &mut b.mask,
            b.size,
            s.image_size,
            &mut Rng::new(c.seed ^ self.step as u64),
        );
        let images = b.size;
        let model = self.model()?;
        let input = StepInput {
            batch: b,
            spec: s,
            loss: c.loss,
            pos_weight,
            accumulate: c.optim.accumulate,
            clip_norm: c.optim.clip_norm,
            lr,
        };
        let (model, loss, norm) = match &self.helpers {
            Some(h) => h.step(model, &mut self.optimizer, input, self.device)?,
            None => optimisation_step(model, &mut self.optimizer, input, self.device)?,
        };
        if !(loss.is_finite() && norm.is_finite()) {
            return Err(TrainerError::invalid(
                "training",
                format!("the loss is {loss} and the gradient norm {norm} at step {}", self.step),
                "lower optim.lr (or raise optim.warmup_steps) and resume from the last checkpoint, which this step did not touch",
            ));
        }
        self.model = Some(model);
        self.step += 1;
        self.images += images;
        self.ema_behind += 1;
        if self.ema_behind >= c.optim.ema_every {
            let current = self.model.as_ref().map(|m| m.valid().to_weights());
            if let Some(current) = current {
                self.ema.update_after(&current?, self.ema_behind)?;
            }
            self.ema_behind = 0;
        }
        Ok((loss, norm))
    }

    /// After an epoch: the SWA snapshot when due, validation of each set of
    /// weights, the `last.*` files, and `best.*` when it improved.
    fn end_epoch(
        &mut self,
        inputs: &Inputs<'_>,
        epoch: usize,
        train_loss: f64,
    ) -> Result<(), TrainerError> {
        let o = self.config.optim;
        let raw_w = match &self.model {
            Some(m) => m.valid().to_weights()?,
            None => return Err(lost_model()),
        };
        // The EMA takes the steps it has not seen yet, so that what is
        // validated and saved is the EMA of this epoch's end.
        if self.ema_behind > 0 {
            self.ema.update_after(&raw_w, self.ema_behind)?;
            self.ema_behind = 0;
        }
        if o.swa_start_epoch.is_some_and(|start| epoch >= start) {
            match &mut self.swa {
                Some(swa) => swa.add(&raw_w)?,
                None => self.swa = Some(Swa::new(raw_w.clone())),
            }
        }
        let swa = self.swa.as_ref().map(|s| &s.weights);
        let scores = Scores::of::<AB::InnerBackend>(inputs, [&raw_w, &self.ema.weights], swa)?;
        eprintln!("\repoch {}/{}: train loss {train_loss:.4}, val macro AUROC raw {:.4} ema {:.4}{} (AUPRC raw {:.4} ema {:.4}{}; {} labels defined)          ", epoch + 1, o.epochs, scores.auroc[0], scores.auroc[1], scores.auroc.get(2).map_or(String::new(), |a| format!(" swa {a:.4}")), scores.auprc[0], scores.auprc[1], scores.auprc.get(2).map_or(String::new(), |a| format!(" swa {a:.4}")), scores.labels_defined);
        self.log(serde_json::json!({ "event": "epoch", "epoch": epoch, "train_loss": train_loss, "val_macro_auroc_raw": scores.auroc[0], "val_macro_auroc_ema": scores.auroc[1], "val_macro_auroc_swa": scores.auroc.get(2), "val_macro_auprc_raw": scores.auprc[0], "val_macro_auprc_ema": scores.auprc[1], "val_macro_auprc_swa": scores.auprc.get(2), "labels_defined": scores.labels_defined }));
        let keep_swa = o.keep == Keep::Swa && self.swa.is_some();
        let source = if keep_swa {
            "swa"
        } else {
            scores.best_source()
        };
        let state = Checkpoint {
            epoch,
            step: self.step,
            val_macro_auroc_raw: scores.auroc[0],
            val_macro_auroc_ema: scores.auroc[1],
            val_macro_auprc_raw: scores.auprc[0],
            val_macro_auprc_ema: scores.auprc[1],
            val_macro_auroc_swa: scores.auroc.get(2).copied(),
            val_macro_auprc_swa: scores.auprc.get(2).copied(),
            swa_models: self.swa.as_ref().map_or(0, |s| s.models),
            source: source.into(),
            config: self.config.clone(),
        };
        write_weights(&self.out.join("last.onnx"), &raw_w)?;
        write_weights(&self.out.join("last-ema.onnx"), &self.ema.weights)?;
        if let Some(swa) = &self.swa {
            write_weights(&self.out.join("last-swa.onnx"), &swa.weights)?;
        }
        self.optimizer.save(self.out)?;
        // last.json goes last: resume trusts the files it vouches for.
        write_json(&self.out.join("last.json"), &state)?;
        // A NaN score never replaces the best; kept SWA weights replace
        // it every epoch, so that the last mean is kept.
        let score = state.score();
        let better = keep_swa
            || o.keep == Keep::Validation
                && self.best.as_ref().is_none_or(|b| {
                    let prev = b.score();
                    prev.is_nan() || score > prev
                });
        if better {
            let chosen = match source {
                "swa" => self.swa.as_ref().map_or(&raw_w, |s| &s.weights),
                "ema" => &self.ema.weights,
                _ => &raw_w,
            };
            write_weights(&self.out.join("best.onnx"), chosen)?;
            write_json(&self.out.join("best.json"), &state)?;
            self.best = Some(state);
        }
        Ok(())
    }
}

/// The model to train from `weights` on `device`, in the config's
/// precision; a precision the backend cannot compute in is refused.
pub(crate) fn replica<AB: AutodiffBackend>(
    weights: &Weights,
    config: &TrainConfig,
    device: &AB::Device,
) -> Result<BurnVit<AB>, TrainerError> {
    check_precision::<AB>(config, device)?;
    Ok(BurnVit::from_weights(weights, device)?.with_precision(config.optim.precision))
}

/// The config's precision must be one the backend computes in.
fn check_precision<AB: AutodiffBackend>(
    config: &TrainConfig,
    device: &AB::Device,
) -> Result<(), TrainerError> {
    if config.optim.precision == Precision::Bf16
        && !AB::supports_dtype(device, burn::tensor::DType::BF16)
    {
        return Err(TrainerError::invalid(
            "optim.precision",
            format!("bf16 on a backend without bf16 ({})", AB::name(device)),
            "train with --backend cuda (or flex on the CPU), or set precision = \"f32\"",
        ));
    }
    Ok(())
}

/// A step that failed part-way lost the model it had taken.
fn lost_model() -> TrainerError {
    TrainerError::invalid(
        "training",
        "a failed step left no model".into(),
        "resume from the last checkpoint",
    )
}

fn read_checkpoint_weights(
    out: &Path,
    name: &str,
    config: &TrainConfig,
) -> Result<Weights, TrainerError> {
    let bytes = std::fs::read(out.join(name))
        .map_err(|e| TrainerError::io("reading", &out.join(name), e))?;
    onnx::read_weights(&bytes, &config.model).map_err(|e| {
        TrainerError::invalid(
            "resume",
            e.to_string(),
            "the checkpoint does not match the config",
        )
    })
}

/// Validation macro AUROC and AUPRC of the raw, EMA and (once started)
/// SWA weights, in that order.
struct Scores {
    auroc: Vec<f64>,
    auprc: Vec<f64>,
    labels_defined: usize,
}

impl Scores {
    fn of<B: Backend>(
        inputs: &Inputs<'_>,
        [raw, ema]: [&Weights; 2],
        swa: Option<&Weights>,
    ) -> Result<Self, TrainerError> {
        let labels = inputs.config.model.labels;
        let val_idx: Vec<usize> = (0..inputs.val.len()).collect();
        let dev = burn::tensor::Device::<B>::default();
        let mut scores = Scores {
            auroc: Vec::new(),
            auprc: Vec::new(),
            labels_defined: 0,
        };
        for (k, w) in [Some(raw), Some(ema), swa]
            .into_iter()
            .flatten()
            .enumerate()
        {
            let model = BurnVit::<B>::from_weights(w, &dev)?;
            let (logits, _) = predict(&model, &inputs.val, &val_idx, &dev)?;
            let (a, n) = macro_auroc(&logits, &inputs.val_targets, &inputs.val_mask, labels);
            let (p, _) = macro_auprc(&logits, &inputs.val_targets, &inputs.val_mask, labels);
            if k == 0 {
                scores.labels_defined = n;
            }
            scores.auroc.push(a);
            scores.auprc.push(p);
        }
        Ok(scores)
    }

    /// The weights to keep: the EMA when it is at least as good as the raw
    /// weights, SWA when it is at least as good as both; NaN never wins.
    fn best_source(&self) -> &'static str {
        let mut best = ("raw", self.auroc[0]);
        for (name, a) in ["ema", "swa"].into_iter().zip(self.auroc.iter().skip(1)) {
            if a.is_finite() && (!best.1.is_finite() || *a >= best.1) {
                best = (name, *a);
            }
        }
        best.0
    }
}

/// What one optimisation step works on.
#[derive(Debug)]
pub struct StepInput<'t, B: Backend> {
    pub batch: crate::loader::Batch,
    pub spec: VitSpec,
    pub loss: LossKind,
    pub pos_weight: Option<&'t Tensor<B, 1>>,
    /// Micro-batches (gradient accumulation); 1 is the whole batch at once.
    pub accumulate: usize,
    pub clip_norm: f64,
    pub lr: f64,
}

/// One step: the loss and gradients of the whole batch, in `accumulate`
/// micro-batches whose losses are weighted by their share of the batch's
/// defined labels (the loss is a mean over them), so that the summed
/// gradients are the whole batch's; then the global-norm clip and AdamW.
/// Returns the new model, the batch's loss and the norm before clipping.
pub fn optimisation_step<AB: AutodiffBackend>(
    model: BurnVit<AB>,
    optimizer: &mut GroupedAdamW<AB>,
    input: StepInput<'_, AB>,
    device: &AB::Device,
) -> Result<(BurnVit<AB>, f64, f64), TrainerError> {
    let defined = input.batch.mask.iter().sum::<f32>().max(1.0);
    let (mut grads, loss) = batch_gradients(&model, &input, defined, device)?;
    let norm = clip_global_norm::<AB, _>(&model, &mut grads, input.clip_norm);
    let model = optimizer.step(input.lr, model, grads);
    Ok((model, loss, norm))
}

/// The gradients of `input`'s batch, in `accumulate` micro-batches, each
/// micro-batch's loss weighted by its defined labels over `defined` (the
/// labels defined in the whole step's batch, which a data-parallel worker
/// holds only part of), and the weighted loss.
pub(crate) fn batch_gradients<AB: AutodiffBackend>(
    model: &BurnVit<AB>,
    input: &StepInput<'_, AB>,
    defined: f32,
    device: &AB::Device,
) -> Result<(GradientsParams, f64), TrainerError> {
    let (b, s) = (&input.batch, input.spec);
    let pixels = s.in_channels * s.image_size * s.image_size;
    if b.images.len() != b.size * pixels
        || b.targets.len() != b.size * s.labels
        || b.mask.len() != b.size * s.labels
    {
        return Err(TrainerError::invalid(
            "batch",
            format!(
                "{} images in {} pixel values, {} targets and {} mask values for {} labels",
                b.size,
                b.images.len(),
                b.targets.len(),
                b.mask.len(),
                s.labels
            ),
            "report this bug: a batch's arrays must match its size",
        ));
    }
    let micro = b.size.div_ceil(input.accumulate.max(1)).max(1);
    let whole = micro >= b.size && b.mask.iter().sum::<f32>().max(1.0) == defined;
    let mut accumulator = GradientsAccumulator::<BurnVit<AB>>::new();
    let mut loss_value = 0.0;
    for start in (0..b.size).step_by(micro) {
        let n = micro.min(b.size - start);
        let rows = |v: &[f32], width: usize| v[start * width..(start + n) * width].to_vec();
        let x = Tensor::<AB, 4>::from_data(
            TensorData::new(
                rows(&b.images, pixels),
                [n, s.in_channels, s.image_size, s.image_size],
            ),
            device,
        );
        let y = Tensor::<AB, 2>::from_data(
            TensorData::new(rows(&b.targets, s.labels), [n, s.labels]),
            device,
        );
        let mask = rows(&b.mask, s.labels);
        let share = mask.iter().sum::<f32>().max(1.0) / defined;
        let m = Tensor::<AB, 2>::from_data(TensorData::new(mask, [n, s.labels]), device);
        let (logits, _) = model.forward(x);
        let mut loss = multilabel_loss(input.loss, logits, y, m, input.pos_weight.cloned());
        if !whole {
            loss = loss.mul_scalar(share);
        }
        loss_value += f64::from(to_vec(loss.clone())?.first().copied().unwrap_or(f32::NAN));
        accumulator.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    Ok((accumulator.grads(), loss_value))
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

    fn tiny_batch(size: usize, spec: VitSpec) -> crate::loader::Batch {
        let mut rng = Rng::new(7);
        let pixels = spec.in_channels * spec.image_size * spec.image_size;
        let images = (0..size * pixels)
            .map(|_| rng.uniform() as f32 - 0.5)
            .collect();
        let targets = (0..size * spec.labels)
            .map(|i| (i % 3 == 0) as u8 as f32)
            .collect();
        // Some labels undefined, unevenly across the batch, and the second
        // image with none defined at all.
        let mask = (0..size * spec.labels)
            .map(|i| (i % 7 != 0 && i > 2 && i / spec.labels != 1) as u8 as f32)
            .collect();
        crate::loader::Batch {
            size,
            images,
            targets,
            mask,
        }
    }

    /// The tests' step on a batch of the tiny model: BCE, an active clip
    /// (0.5), lr 1e-3, in `accumulate` micro-batches.
    fn tiny_step<'t, B: Backend>(
        batch: crate::loader::Batch,
        accumulate: usize,
    ) -> StepInput<'t, B> {
        StepInput {
            batch,
            spec: VitSpec::tiny(),
            loss: LossKind::Bce,
            pos_weight: None,
            accumulate,
            clip_norm: 0.5,
            lr: 1e-3,
        }
    }

    /// Two steps on one batch, whole or in `accumulate` micro-batches.
    fn weights_after_steps(accumulate: usize) -> (Vec<f32>, Vec<f64>) {
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        steps_in::<AB>(Precision::F32, accumulate, 2)
    }

    /// burn's collective is one per process and backend: the tests that
    /// join it take turns.
    fn collective_in_use() -> std::sync::MutexGuard<'static, ()> {
        static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        COLLECTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A tiny model after `steps` steps on one worker with whole batches,
    /// or on `workers` workers (threads) each with its share: the weights
    /// and the EMA after every step, and the losses.
    fn trained(workers: usize, steps: usize) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
        use crate::parallel::{data_parallel_step, shard, Worker};
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let spec = VitSpec::tiny();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let run = |rank: usize| {
            let device = Default::default();
            let worker = Worker { rank, workers };
            let collective =
                crate::parallel::collective_config(workers, None).unwrap_or_else(|e| panic!("{e}"));
            let worker = (workers > 1).then(|| {
                worker.join::<burn::backend::NdArray<f32>>(&device, &collective, &[7; 32])
            });
            let mut model =
                BurnVit::<AB>::from_weights(&init, &device).unwrap_or_else(|e| panic!("{e}"));
            let mut optimizer = GroupedAdamW::new(&model, 0.05, 0.8);
            let mut ema = Ema::new(init.clone(), 0.9);
            let mut losses = Vec::new();
            for step in 0..steps {
                // The last step has one image: the second worker gets a
                // padding image with no label defined.
                let size = if step + 1 == steps { 1 } else { 6 + step };
                let mut batch = tiny_batch(size, spec);
                if let Some(Ok(w)) = &worker {
                    let pixels = spec.in_channels * spec.image_size * spec.image_size;
                    batch = shard(*w, &batch, pixels);
                }
                let input = tiny_step(batch, 1);
                let (m, loss, _) = match &worker {
                    Some(Ok(w)) => data_parallel_step(*w, model, &mut optimizer, input, &device),
                    Some(Err(e)) => panic!("{e}"),
                    None => optimisation_step(model, &mut optimizer, input, &device),
                }
                .unwrap_or_else(|e| panic!("{e}"));
                model = m;
                losses.push(loss);
                ema.update(&model.valid().to_weights().unwrap_or_else(|e| panic!("{e}")))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            if let Some(Ok(w)) = worker {
                w.leave::<burn::backend::NdArray<f32>>()
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let flat = |w: &Weights| {
                w.iter()
                    .flat_map(|(_, _, v)| v.to_vec())
                    .collect::<Vec<f32>>()
            };
            (
                flat(&model.valid().to_weights().unwrap_or_else(|e| panic!("{e}"))),
                flat(&ema.weights),
                losses,
            )
        };
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|rank| s.spawn(move || run(rank)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("a worker panicked")))
                .collect()
        });
        for other in &results[1..] {
            assert_eq!(other.0, results[0].0, "the replicas drifted apart");
        }
        results.into_iter().next().unwrap_or_default()
    }

    /// Two workers with half-batches end where one worker with the whole
    /// batches does: AdamW with layer decay, an active clip, the EMA,
    /// unevenly defined labels (the second image has none), and a last
    /// batch of one image.
    #[test]
    fn data_parallel_two_workers_match_one_worker() {
        let _one_at_a_time = collective_in_use();
        let (one, one_ema, one_loss) = trained(1, 4);
        let (two, two_ema, two_loss) = trained(2, 4);
        let gap = cxr_bundle::rel_l2(&one, &two);
        assert!(gap < 1e-5, "1 vs 2 workers: rel L2 {gap:.3e}");
        let gap = cxr_bundle::rel_l2(&one_ema, &two_ema);
        assert!(gap < 1e-5, "EMA, 1 vs 2 workers: rel L2 {gap:.3e}");
        let init = Weights::random(&VitSpec::tiny(), 3).unwrap_or_else(|e| panic!("{e}"));
        let start: Vec<f32> = init.iter().flat_map(|(_, _, v)| v.to_vec()).collect();
        assert!(
            cxr_bundle::rel_l2(&start, &two) > 1e-3,
            "the steps moved the weights"
        );
        for (a, b) in one_loss.iter().zip(&two_loss) {
            assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        }
    }

    /// The weights after `steps` steps in `precision` with `accumulate`
    /// micro-batches on backend `AB`, and the losses.
    fn steps_in<AB: AutodiffBackend>(
        precision: Precision,
        accumulate: usize,
        steps: usize,
    ) -> (Vec<f32>, Vec<f64>) {
        let spec = VitSpec::tiny();
        let device = Default::default();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let mut model = BurnVit::<AB>::from_weights(&init, &device)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_precision(precision);
        let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
        let mut losses = Vec::new();
        for step in 0..steps {
            let input = tiny_step(tiny_batch(6 + step, spec), accumulate);
            let (m, loss, _) = optimisation_step(model, &mut optimizer, input, &device)
                .unwrap_or_else(|e| panic!("{e}"));
            model = m;
            losses.push(loss);
        }
        let w = model.valid().to_weights().unwrap_or_else(|e| panic!("{e}"));
        (w.iter().flat_map(|(_, _, v)| v.to_vec()).collect(), losses)
    }

    /// bf16 mixed precision on burn's Flex backend (the CPU backend with
    /// bf16) tracks f32 training on the same backend over a few steps: the
    /// weights within rel L2 2e-3, each step's loss within 1e-3 (measured:
    /// 2.7e-4 and 4.9e-5); and it is not f32 in disguise (the weights
    /// differ).
    #[test]
    fn bf16_mixed_precision_tracks_f32_training() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let (f32_weights, f32_loss) = steps_in::<AB>(Precision::F32, 1, 5);
        let (bf16_weights, bf16_loss) = steps_in::<AB>(Precision::Bf16, 1, 5);
        let gap = cxr_bundle::rel_l2(&f32_weights, &bf16_weights);
        let loss_gap = f32_loss
            .iter()
            .zip(&bf16_loss)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "bf16 vs f32 after 5 steps: weights rel L2 {gap:.3e}, largest loss gap {loss_gap:.3e}"
        );
        assert!(gap < 2e-3, "bf16 vs f32 weights: rel L2 {gap:.3e}");
        assert!(gap > 1e-7, "bf16 gave the f32 weights exactly: no cast ran");
        for (a, b) in f32_loss.iter().zip(&bf16_loss) {
            assert!((a - b).abs() < 1e-3, "loss f32 {a} vs bf16 {b}");
        }
        // The same model in f32 on ndarray gives Flex's f32 result.
        type Nd = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let (nd_weights, _) = steps_in::<Nd>(Precision::F32, 1, 5);
        assert!(cxr_bundle::rel_l2(&nd_weights, &f32_weights) < 1e-5);
    }

    #[test]
    fn bf16_is_refused_on_a_backend_without_it() {
        type Nd = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let mut config: TrainConfig = toml::from_str(include_str!("../configs/demo-nih.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let w = Weights::random(&config.model, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(replica::<Nd>(&w, &config, &Default::default()).is_ok());
        config.optim.precision = Precision::Bf16;
        let e = replica::<Nd>(&w, &config, &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("bf16 on a backend without bf16"), "{e}");
    }

    /// A worker whose step fails (here: a damaged batch) makes both
    /// return the error at that step, naming it, instead of leaving the
    /// other waiting for its gradients.
    #[test]
    fn a_failing_worker_stops_every_worker() {
        use crate::parallel::{data_parallel_step, Worker};
        let _one_at_a_time = collective_in_use();
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let spec = VitSpec::tiny();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let (done, results) = std::sync::mpsc::channel();
        for rank in 0..2 {
            let (init, done) = (init.clone(), done.clone());
            std::thread::spawn(move || {
                let device = Default::default();
                let collective =
                    crate::parallel::collective_config(2, None).unwrap_or_else(|e| panic!("{e}"));
                let outcome = Worker { rank, workers: 2 }
                    .join::<burn::backend::NdArray<f32>>(&device, &collective, &[7; 32])
                    .and_then(|w| {
                        let model = BurnVit::<AB>::from_weights(&init, &device)?;
                        let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
                        let mut batch = tiny_batch(3, spec);
                        if rank == 1 {
                            batch.images.truncate(10);
                        }
                        let stepped = data_parallel_step(
                            w,
                            model,
                            &mut optimizer,
                            tiny_step(batch, 1),
                            &device,
                        );
                        let left = w.leave::<burn::backend::NdArray<f32>>();
                        stepped.map(|_| ()).and(left)
                    });
                let _ = done.send((rank, outcome.err().map(|e| e.to_string())));
            });
        }
        let mut errors = [None, None];
        for _ in 0..2 {
            let (rank, e) = results
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("a worker is still waiting"));
            errors[rank] = e;
        }
        let [first, second] = errors;
        assert!(
            second.is_some_and(|e| e.contains("pixel values")),
            "worker 1's own error"
        );
        assert!(first.is_some_and(
            |e| e.contains("another worker failed this step") && e.contains("worker(s) 1 of 2")
        ));
    }

    /// Workers (nodes, in a cluster) that start from different configs or
    /// weights are all refused on joining, before any step.
    #[test]
    fn workers_with_different_starts_are_refused_on_joining() {
        use crate::parallel::{collective_config, Worker};
        let _one_at_a_time = collective_in_use();
        let (done, results) = std::sync::mpsc::channel();
        for rank in 0..2 {
            let done = done.clone();
            std::thread::spawn(move || {
                let device = Default::default();
                let mut digest = [9u8; 32];
                digest[31] = rank as u8;
                let outcome = Worker { rank, workers: 2 }.join::<burn::backend::NdArray<f32>>(
                    &device,
                    &collective_config(2, None).unwrap_or_else(|e| panic!("{e}")),
                    &digest,
                );
                let _ = done.send(outcome.err().map(|e| e.to_string()));
            });
        }
        for _ in 0..2 {
            let e = results
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("a worker is still waiting"));
            assert!(
                e.is_some_and(|e| e.contains("different configs, data or weights")),
                "both workers refuse"
            );
        }
    }

    /// The nodes' workers hold the global ranks 0..nodes*devices, each once.
    #[test]
    fn the_ranks_of_every_node_tile_the_run() {
        use crate::parallel::{node_ranks, Cluster};
        assert_eq!(node_ranks(None, 3), 0..3);
        let mut seen = Vec::new();
        for node_rank in 0..3 {
            let cluster = Cluster {
                nodes: 3,
                node_rank,
                orchestrator: "ws://10.0.0.1:4500".into(),
                node_address: "ws://10.0.0.2:4501".into(),
                data_port: 4501,
                join_timeout: std::time::Duration::from_secs(60),
            };
            seen.extend(node_ranks(Some(&cluster), 4));
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_cluster_needs_two_nodes_a_rank_among_them_and_ws_addresses() {
        let good = crate::parallel::Cluster {
            nodes: 2,
            node_rank: 1,
            orchestrator: "ws://10.0.0.1:4500".into(),
            node_address: "ws://10.0.0.2:4501".into(),
            data_port: 4501,
            join_timeout: std::time::Duration::from_secs(60),
        };
        assert!(good.validate().is_ok());
        let bad = [
            crate::parallel::Cluster {
                nodes: 1,
                node_rank: 0,
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_rank: 2,
                ..good.clone()
            },
            crate::parallel::Cluster {
                orchestrator: "10.0.0.1:4500".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_address: "ws://10.0.0.2".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_address: "ws://:4501".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                data_port: 4502,
                ..good.clone()
            },
            crate::parallel::Cluster {
                join_timeout: std::time::Duration::ZERO,
                ..good.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn gradient_accumulation_matches_the_whole_batch() {
        let (whole, whole_loss) = weights_after_steps(1);
        let (micro, micro_loss) = weights_after_steps(3);
        let gap = cxr_bundle::rel_l2(&whole, &micro);
        assert!(gap < 1e-5, "whole vs 3 micro-batches: rel L2 {gap:.3e}");
        for (a, b) in whole_loss.iter().zip(&micro_loss) {
            assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        }
        // One image per micro-batch, some with no defined label at all.
        let (singles, _) = weights_after_steps(6);
        assert!(cxr_bundle::rel_l2(&whole, &singles) < 1e-5);
    }

    #[test]
    fn a_nan_score_survives_the_round_trip_through_json() {
        let json = r#"{"epoch":0,"step":1,"val_macro_auroc_raw":null,"val_macro_auroc_ema":0.5,"val_macro_auprc_raw":null,"val_macro_auprc_ema":null,"source":"ema","config":CONFIG}"#;
        let config = include_str!("../configs/demo-nih.toml");
        let config: TrainConfig = toml::from_str(config).unwrap_or_else(|e| panic!("{e}"));
        let json = json.replace(
            "CONFIG",
            &serde_json::to_string(&config).unwrap_or_default(),
        );
        let c: Checkpoint = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.val_macro_auroc_raw.is_nan() && c.val_macro_auroc_ema == 0.5);
        assert_eq!(c.score(), 0.5);
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
            ema_every: 4,
            swa_start_epoch: Some(0),
            accumulate: 2,
            precision: Precision::Bf16,
            keep: Keep::Swa,
        };
        assert!(o.validate().is_ok());
        for broken in [
            OptimConfig { ema_every: 0, ..o },
            OptimConfig { accumulate: 0, ..o },
            OptimConfig { accumulate: 9, ..o },
            OptimConfig {
                swa_start_epoch: Some(1),
                ..o
            },
            OptimConfig {
                swa_start_epoch: None,
                ..o
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
        o.layer_decay = 1.5;
        assert!(o.validate().is_err());
        o.layer_decay = 1.0;
        o.ema_decay = 1.0;
        assert!(o.validate().is_err());
    }
}
