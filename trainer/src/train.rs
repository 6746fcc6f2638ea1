//! The training run: data from a label table split by patient, the burn ViT
//! on the CPU (or CUDA) backend, AdamW with decay groups, warmup + cosine,
//! global-norm clipping, EMA, per-epoch validation of the raw and the EMA
//! weights by macro AUROC, checkpoints (ONNX through `cxr-model`'s writer
//! plus a JSON state), a progress line and a JSON Lines run log.
//!
//! This module is the epoch loop and its data-parallel placement; the
//! config is [`crate::config`], the data as loaded [`crate::prepared`],
//! one step [`crate::forward`], what is kept on disk [`crate::checkpoint`].

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cxr_model::Weights;

use crate::checkpoint::{
    read_checkpoint_weights, write_json, write_weights, Checkpoint, TrainReport,
};
use crate::config::{Keep, TrainConfig};
use crate::data::Split;
use crate::eval::{macro_auprc, macro_auroc};
use crate::forward::{check_precision, optimisation_step, predict, replica, StepInput};
use crate::groups::GroupedAdamW;
use crate::loader::Loader;
use crate::optim::{warmup_cosine, Ema, Swa};
use crate::prepared::Prepared;
use crate::rng::Rng;
use crate::vit::BurnVit;
use crate::TrainerError;

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

/// A step that failed part-way lost the model it had taken.
fn lost_model() -> TrainerError {
    TrainerError::invalid(
        "training",
        "a failed step left no model".into(),
        "resume from the last checkpoint",
    )
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
