//! The training run's configuration (TOML): the data source and its split,
//! the optimisation, the model, and the input spec derived from them.

use std::path::PathBuf;

use cxr_model::VitSpec;
use cxr_preprocess::{Channels, InputSpec, IntensityNorm};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::{
    read_chexpert, read_generic, read_kermany_subset, read_mimic, read_nih_data_entry,
    read_nih_subset, Dataset, UncertaintyPolicy,
};
use crate::loss::{LossKind, PosWeight};
use crate::vit::Precision;
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

/// Where a run's weights start (resolved into weights by `Init::weights`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "from", deny_unknown_fields)]
pub enum Init {
    #[default]
    Random,
    /// timm names (`blocks.0.attn.qkv.weight`, ...), F32/F16/BF16.
    Safetensors { path: PathBuf },
    /// A checkpoint this trainer wrote (`best.onnx`, `last.onnx`).
    Onnx { path: PathBuf },
    /// The encoder of a `cxr-trainer pretrain` run (`mae.safetensors`):
    /// the same patch, width, depth, heads and channels; the position grid
    /// is resampled to another image size; the head starts fresh.
    Mae { path: PathBuf },
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
