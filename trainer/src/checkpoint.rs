//! What a run keeps on disk: the checkpoint JSON and its scores, the ONNX
//! weights, the report, and the bounded read of a checkpoint's bytes.

use std::path::Path;

use cxr_model::{onnx, Weights};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::TrainerError;

/// A score as JSON writes it: a NaN (no label defined) becomes `null`,
/// which reads back as NaN.
pub(crate) fn score_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
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
    pub(crate) fn score(&self) -> f64 {
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
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainerError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainerError::invalid("json", e.to_string(), "report this bug"))?;
    cxr_fsio::write_atomically(path, text.as_bytes(), 0o666)
        .map_err(|f| TrainerError::io(f.action, path, f.error))
}

pub(crate) fn write_weights(path: &Path, w: &Weights) -> Result<(), TrainerError> {
    let bytes = onnx::write(w)
        .map_err(|e| TrainerError::invalid("export", e.to_string(), "report this bug"))?;
    cxr_fsio::write_atomically(path, &bytes, 0o666)
        .map_err(|f| TrainerError::io(f.action, path, f.error))
}

pub(crate) fn read_checkpoint_weights(
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

/// The largest checkpoint read whole (ViT-L/16 in f32 is about 1.2 GB).
pub(crate) const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// A checkpoint's bytes, refused before reading when it is larger than
/// [`MAX_CHECKPOINT_BYTES`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TrainerError> {
    let size = std::fs::metadata(path)
        .map_err(|e| TrainerError::io("reading", path, e))?
        .len();
    if size > MAX_CHECKPOINT_BYTES {
        return Err(TrainerError::invalid(
            "init",
            format!(
                "{}: {size} bytes, over the {MAX_CHECKPOINT_BYTES}-byte limit",
                path.display()
            ),
            "use a checkpoint of a model up to ViT-L/16 in f32",
        ));
    }
    std::fs::read(path).map_err(|e| TrainerError::io("reading", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
