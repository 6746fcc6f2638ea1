//! `cxr-trainer pretrain`: masked-autoencoder pretraining ([`crate::mae`])
//! of the ViT encoder on unlabelled chest films, for a fine-tuning run to
//! start from (`init = { from = "mae", path = ".../mae.safetensors" }`).
//!
//! Films come from any data source the trainer reads; labels are ignored.
//! A source may name the training config whose held-out films must stay
//! out (its test split and the patients it holds out), so that pretraining
//! never sees the films a fine-tuned model is tested on.
//!
//! Each epoch ends with `mae.safetensors` (the encoder under the canonical
//! names, the decoder under `decoder.`, and the epoch in its metadata) and
//! the optimiser's moments; `--resume` continues from them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use cxr_model::VitSpec;
use cxr_preprocess::IntensityNorm;
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::config::{input_spec, DataSource, TrainConfig};
use crate::data::Split;
use crate::loader::{Example, Loader};
use crate::mae::{random_named, Mae, MaeConfig, Masking};
use crate::optim::{clip_global_norm, warmup_cosine};
use crate::prepared::Prepared;
use crate::rng::Rng;
use crate::TrainerError;

/// The metadata `format` of a checkpoint `pretrain` wrote.
pub const MAE_FORMAT: &str = "cxr-mae";
/// The checkpoint's file name in the run folder.
pub const MAE_CHECKPOINT: &str = "mae.safetensors";
/// The optimiser state saved with epoch `epoch`'s checkpoint (the
/// recorder adds `.bin`): one file per epoch, so that the checkpoint on
/// disk always has its own.
fn optimizer_file(epoch: usize) -> String {
    format!("mae-optimizer-{epoch}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub seed: u64,
    /// The encoder: the fine-tuning run's model section (its `labels` is
    /// not used here).
    pub model: VitSpec,
    pub mae: MaeConfig,
    pub optim: PretrainOptim,
    /// Where the films come from; at least one source.
    pub films: Vec<FilmSource>,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<IntensityNorm>,
    pub workers: usize,
    pub cache_mb: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainOptim {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f32,
    pub clip_norm: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilmSource {
    pub source: DataSource,
    /// A training config over the same source: only the films of its
    /// training and validation splits are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_held_out_of: Option<PathBuf>,
}

impl PretrainConfig {
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |what: String| TrainerError::invalid("pretrain", what, "fix the config");
        self.model
            .validate()
            .map_err(|e| bad(format!("model: {e}")))?;
        self.mae.validate(&self.model)?;
        self.augment.validate()?;
        let o = self.optim;
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if o.epochs == 0 || o.batch_size == 0 || !positive(o.lr) || !positive(o.clip_norm) {
            return Err(bad(
                "epochs, batch_size, lr and clip_norm must be positive".into()
            ));
        }
        if !(o.min_lr.is_finite() && o.weight_decay.is_finite()) {
            return Err(bad("min_lr and weight_decay must be finite".into()));
        }
        if self.augment.mixup_prob > 0.0 || self.augment.cutmix_prob > 0.0 {
            return Err(bad(
                "mixup and cutmix mix labels; pretraining has none (set their probabilities to 0)"
                    .into(),
            ));
        }
        if self.films.is_empty() {
            return Err(bad("no film source".into()));
        }
        Ok(())
    }
}

impl FilmSource {
    /// The source's frontal films, without the held-out ones when asked.
    pub fn films(&self) -> Result<Vec<PathBuf>, TrainerError> {
        films_of(self)
    }
}

fn films_of(f: &FilmSource) -> Result<Vec<PathBuf>, TrainerError> {
    let Some(path) = &f.exclude_held_out_of else {
        let mut dataset = f.source.read()?;
        dataset.keep_frontal();
        return Ok(dataset.samples.into_iter().map(|s| s.image).collect());
    };
    let text = std::fs::read_to_string(path).map_err(|e| TrainerError::io("reading", path, e))?;
    let train: TrainConfig = toml::from_str(&text).map_err(|e| {
        TrainerError::invalid(
            "pretrain.exclude_held_out_of",
            format!("{}: {e}", path.display()),
            "name a training config",
        )
    })?;
    if train.data.source != f.source {
        return Err(TrainerError::invalid(
            "pretrain.exclude_held_out_of",
            format!("{} reads another source", path.display()),
            "name the training config of this very source",
        ));
    }
    let prepared = Prepared::load(&train.data, train.seed)?;
    Ok(prepared
        .dataset
        .samples
        .into_iter()
        .zip(prepared.split)
        .filter(|(_, s)| matches!(s, Some(Split::Train | Split::Validation)))
        .map(|(s, _)| s.image)
        .collect())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainReport {
    /// Films per source, in config order.
    pub films: Vec<usize>,
    pub epochs_run: usize,
    pub steps: usize,
    /// The mean reconstruction loss of the first and last epoch run.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    pub seconds: f64,
    pub images_per_second: f64,
    pub checkpoint: PathBuf,
}

type Adam<AB> = OptimizerAdaptor<AdamW, Mae<AB>, AB>;

/// Pretrain; writes `mae.safetensors`, the optimiser state
/// (`mae-optimizer-E.bin`, named in the checkpoint) and
/// `pretrain-log.jsonl` into `out`. With `resume`, continues after the
/// epoch `mae.safetensors` records, with the same films and batches.
pub fn pretrain<AB: AutodiffBackend>(
    config: &PretrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<PretrainReport, TrainerError> {
    config.validate()?;
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let (loader, films) = film_loader(config)?;
    let (mut model, mut optimizer, start_epoch, recorded_step) =
        start::<AB>(config, out, resume, device)?;
    let o = config.optim;
    let steps_per_epoch = loader.len().div_ceil(o.batch_size);
    if resume && recorded_step != start_epoch * steps_per_epoch {
        return Err(TrainerError::invalid(
            "resume",
            format!(
                "the checkpoint is at step {recorded_step}, but {start_epoch} epochs of these films make {}",
                start_epoch * steps_per_epoch
            ),
            "resume with the films and batch size the run started with",
        ));
    }
    let mut progress = Progress {
        step: start_epoch * steps_per_epoch,
        total: steps_per_epoch * o.epochs,
        images: 0,
        started: Instant::now(),
        log: open_log(out)?,
    };
    let mut epoch_losses = Vec::new();
    for epoch in start_epoch..o.epochs {
        let (m, mean) = run_epoch(
            model,
            &mut optimizer,
            (&loader, epoch),
            (config, &mut progress),
            device,
        )?;
        model = m;
        epoch_losses.push(mean);
        save(
            &model.valid(),
            &optimizer,
            config,
            out,
            (epoch, progress.step, mean),
        )?;
    }
    let seconds = progress.started.elapsed().as_secs_f64();
    Ok(PretrainReport {
        films,
        epochs_run: epoch_losses.len(),
        steps: progress.step,
        first_epoch_loss: epoch_losses.first().copied().unwrap_or(f64::NAN),
        last_epoch_loss: epoch_losses.last().copied().unwrap_or(f64::NAN),
        seconds,
        images_per_second: progress.images as f64 / seconds.max(1e-9),
        checkpoint: out.join(MAE_CHECKPOINT),
    })
}

/// Every source's films in one loader, and the count per source.
fn film_loader(config: &PretrainConfig) -> Result<(Loader, Vec<usize>), TrainerError> {
    let per_source: Vec<Vec<PathBuf>> = config
        .films
        .iter()
        .map(films_of)
        .collect::<Result<_, _>>()?;
    let examples: Vec<Example> = per_source
        .iter()
        .flatten()
        .map(|image| Example {
            image: image.clone(),
            targets: Vec::new(),
            mask: Vec::new(),
        })
        .collect();
    if examples.is_empty() {
        return Err(TrainerError::invalid(
            "pretrain",
            "the sources hold no frontal film".into(),
            "check the films sections",
        ));
    }
    let loader = Loader::new(
        examples,
        input_spec(&config.model, config.intensity),
        config.workers,
        config.cache_mb << 20,
    );
    Ok((loader, per_source.iter().map(Vec::len).collect()))
}

/// Where a pretraining run stands between steps.
struct Progress {
    step: usize,
    total: usize,
    images: usize,
    started: Instant,
    log: std::fs::File,
}

/// One epoch's steps; returns the model and the epoch's mean loss.
fn run_epoch<AB: AutodiffBackend>(
    mut model: Mae<AB>,
    optimizer: &mut Adam<AB>,
    (loader, epoch): (&Loader, usize),
    (config, p): (&PretrainConfig, &mut Progress),
    device: &AB::Device,
) -> Result<(Mae<AB>, f64), TrainerError> {
    let o = config.optim;
    let (mut sum, mut steps) = (0.0, 0usize);
    for idx in loader
        .epoch_order(config.seed, epoch as u64)
        .chunks(o.batch_size)
    {
        let lr = warmup_cosine(p.step, o.warmup_steps, p.total, o.lr, o.min_lr);
        let (m, loss, norm) = pretrain_step(
            model,
            optimizer,
            (loader, idx),
            (config, p.step, lr),
            device,
        )?;
        model = m;
        (p.step, p.images, sum, steps) = (p.step + 1, p.images + idx.len(), sum + loss, steps + 1);
        let ips = p.images as f64 / p.started.elapsed().as_secs_f64().max(1e-9);
        eprint!("\rpretrain epoch {}/{} step {} loss {loss:.4} lr {lr:.2e} grad-norm {norm:.2} {ips:.1} img/s   ", epoch + 1, o.epochs, p.step);
        let _ = writeln!(
            p.log,
            "{}",
            serde_json::json!({ "event": "step", "epoch": epoch, "step": p.step, "loss": loss, "lr": lr, "grad_norm": norm, "images_per_second": ips })
        );
    }
    let mean = sum / steps.max(1) as f64;
    eprintln!(
        "\rpretrain epoch {}/{}: reconstruction loss {mean:.4}                    ",
        epoch + 1,
        o.epochs
    );
    let _ = writeln!(
        p.log,
        "{}",
        serde_json::json!({ "event": "epoch", "epoch": epoch, "loss": mean })
    );
    Ok((model, mean))
}

fn open_log(out: &Path) -> Result<std::fs::File, TrainerError> {
    let path = out.join("pretrain-log.jsonl");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TrainerError::io("opening", &path, e))
}

/// The model, its optimiser, the first epoch to run and the step the
/// checkpoint recorded: fresh, or what the run folder's checkpoint vouches
/// for.
fn start<AB: AutodiffBackend>(
    config: &PretrainConfig,
    out: &Path,
    resume: bool,
    device: &AB::Device,
) -> Result<(Mae<AB>, Adam<AB>, usize, usize), TrainerError> {
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.optim.weight_decay)
        .init::<AB, Mae<AB>>();
    if !resume {
        let named = random_named(&config.model, &config.mae, config.seed)?;
        return Ok((
            Mae::from_named(&config.model, &config.mae, &named, device)?,
            optimizer,
            0,
            0,
        ));
    }
    let checkpoint = MaeCheckpoint::read(&out.join(MAE_CHECKPOINT))?;
    if checkpoint.config.model != config.model || checkpoint.config.mae != config.mae {
        return Err(TrainerError::invalid(
            "resume",
            "the checkpoint's model or mae section differs from the config".into(),
            "resume with the config the run started with",
        ));
    }
    let model = Mae::from_named(&config.model, &config.mae, &checkpoint.tensors, device)?;
    let file = out.join(optimizer_file(checkpoint.epoch));
    let record = BinFileRecorder::<FullPrecisionSettings>::new()
        .load(file.clone(), device)
        .map_err(|e| TrainerError::io("reading", &file.with_extension("bin"), e))?;
    optimizer = optimizer.load_record(record);
    Ok((model, optimizer, checkpoint.epoch + 1, checkpoint.step))
}

/// One step: a batch of augmented films, a fresh mask per film, the
/// reconstruction loss, the global-norm clip and AdamW. Returns the model,
/// the loss and the gradient norm before clipping.
fn pretrain_step<AB: AutodiffBackend>(
    model: Mae<AB>,
    optimizer: &mut Adam<AB>,
    (loader, idx): (&Loader, &[usize]),
    (config, step, lr): (&PretrainConfig, usize, f64),
    device: &AB::Device,
) -> Result<(Mae<AB>, f64, f64), TrainerError> {
    let s = config.model;
    let b = loader.batch(
        idx,
        Some(&config.augment),
        config.seed ^ (step as u64) << 20,
    )?;
    let x = Tensor::<AB, 4>::from_data(
        TensorData::new(
            b.images,
            [b.size, s.in_channels, s.image_size, s.image_size],
        ),
        device,
    );
    let patches = s.grid() * s.grid();
    let mut rng = Rng::new(config.seed ^ 0x4D41_534B ^ (step as u64).wrapping_mul(0x9E37_79B9));
    let masking = Masking::draw(b.size, patches, config.mae.visible(patches), &mut rng);
    let loss = model.loss(x, &masking);
    let value = f64::from(loss.clone().into_scalar().elem::<f32>());
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let norm = clip_global_norm::<AB, _>(&model, &mut grads, config.optim.clip_norm);
    if !(value.is_finite() && norm.is_finite()) {
        return Err(TrainerError::invalid(
            "pretrain",
            format!(
                "the reconstruction loss is {value} and the gradient norm {norm} at step {step}"
            ),
            "lower optim.lr and resume from the last checkpoint, which this step did not touch",
        ));
    }
    Ok((optimizer.step(lr, model, grads), value, norm))
}

/// The optimiser's moments, then the checkpoint that vouches for them
/// (written whole, then renamed into place).
fn save<AB: AutodiffBackend>(
    model: &Mae<AB::InnerBackend>,
    optimizer: &Adam<AB>,
    config: &PretrainConfig,
    out: &Path,
    (epoch, step, loss): (usize, usize, f64),
) -> Result<(), TrainerError> {
    let file = out.join(optimizer_file(epoch));
    BinFileRecorder::<FullPrecisionSettings>::new()
        .record(optimizer.to_record(), file.clone())
        .map_err(|e| TrainerError::io("writing", &file.with_extension("bin"), e))?;
    let named = model.to_named()?;
    let json = |v: serde_json::Value| v.to_string();
    let metadata = BTreeMap::from([
        ("format".to_owned(), MAE_FORMAT.to_owned()),
        ("epoch".to_owned(), epoch.to_string()),
        ("step".to_owned(), step.to_string()),
        ("loss".to_owned(), format!("{loss}")),
        ("config".to_owned(), json(serde_json::json!(config))),
    ]);
    let bytes = cxr_model::write_safetensors(
        named
            .iter()
            .map(|(n, (s, d))| (n.as_str(), s.as_slice(), d.as_slice())),
        &metadata,
    )
    .map_err(|e| TrainerError::invalid("pretrain", e.to_string(), "report this bug"))?;
    let path = out.join(MAE_CHECKPOINT);
    cxr_fsio::write_atomically(&path, &bytes, 0o666)
        .map_err(|f| TrainerError::io(f.action, &path, f.error))?;
    // The previous epoch's state is no checkpoint's any more.
    if let Some(previous) = epoch.checked_sub(1) {
        let _ = std::fs::remove_file(out.join(optimizer_file(previous)).with_extension("bin"));
    }
    Ok(())
}

/// A checkpoint `pretrain` wrote: its tensors, epoch and config.
#[derive(Debug, Clone)]
pub struct MaeCheckpoint {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
    pub config: PretrainConfig,
}

impl MaeCheckpoint {
    /// Read and check the format; anything else is refused.
    pub fn read(path: &Path) -> Result<Self, TrainerError> {
        let bytes = crate::checkpoint::read(path)?;
        let not_ours = |why: String| {
            TrainerError::invalid(
                "mae checkpoint",
                format!("{}: {why}", path.display()),
                "use the mae.safetensors `cxr-trainer pretrain` wrote (other safetensors checkpoints go in as init = { from = \"safetensors\" })",
            )
        };
        let meta = cxr_model::safetensors_metadata(&bytes).map_err(|e| not_ours(e.to_string()))?;
        if meta.get("format").map(String::as_str) != Some(MAE_FORMAT) {
            return Err(not_ours(format!("its metadata format is not {MAE_FORMAT}")));
        }
        let field = |k: &str| meta.get(k).cloned().unwrap_or_default();
        let epoch = field("epoch")
            .parse()
            .map_err(|_| not_ours("no epoch".into()))?;
        let step = field("step")
            .parse()
            .map_err(|_| not_ours("no step".into()))?;
        let loss = field("loss")
            .parse()
            .map_err(|_| not_ours("no loss".into()))?;
        let config = serde_json::from_str(&field("config"))
            .map_err(|e| not_ours(format!("its config: {e}")))?;
        let tensors = cxr_model::read_safetensors(&bytes).map_err(|e| not_ours(e.to_string()))?;
        Ok(MaeCheckpoint {
            tensors,
            epoch,
            step,
            loss,
            config,
        })
    }
}
