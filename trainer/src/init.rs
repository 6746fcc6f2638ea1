//! Where a run's weights start: random (truncated normal 0.02), a
//! timm-named safetensors checkpoint (public ViT-B/16 or CXR-MAE weights,
//! channels and position grid adapted by `cxr-model`), or one of our own
//! ONNX checkpoints. A pretrained head with another label set is replaced by
//! a fresh one, as fine-tuning needs.
//!
//! PyTorch `.pth` files are pickles, which this tool does not execute or
//! parse; `trainer/tools/pth_to_safetensors.py` converts one offline.

use std::path::Path;

use cxr_model::{onnx, read_safetensors, weights_from_checkpoint, VitSpec, Weights};

use crate::checkpoint::read;
use crate::pretrain::MaeCheckpoint;
use crate::TrainerError;

pub use crate::config::Init;

fn bad(path: &Path, e: impl std::fmt::Display, hint: &'static str) -> TrainerError {
    TrainerError::invalid("init", format!("{}: {e}", path.display()), hint)
}

impl Init {
    /// The starting weights and a line for the log and the model card.
    pub fn weights(&self, spec: &VitSpec, seed: u64) -> Result<(Weights, String), TrainerError> {
        let random = Weights::random(spec, seed)
            .map_err(|e| TrainerError::invalid("model", e.to_string(), "fix the model section"))?;
        match self {
            Init::Random => Ok((
                random,
                format!("random (truncated normal 0.02, seed {seed})"),
            )),
            Init::Onnx { path } => {
                let w = onnx::read_weights(&read(path)?, spec)
                    .map_err(|e| bad(path, e, "the checkpoint must match the model section"))?;
                Ok((w, format!("our checkpoint {}", path.display())))
            }
            Init::Safetensors { path } => {
                let named = read_safetensors(&read(path)?)
                    .map_err(|e| bad(path, e, "re-export the checkpoint as safetensors"))?;
                let (w, note) = adopt(spec, &random, named, path)?;
                Ok((w, format!("safetensors {}{note}", path.display())))
            }
            Init::Mae { path } => {
                let mae = MaeCheckpoint::read(path)?;
                let m = mae.config.model;
                let same = |s: &VitSpec| {
                    (
                        s.patch,
                        s.width,
                        s.depth,
                        s.heads,
                        s.mlp_ratio,
                        s.in_channels,
                    )
                };
                if same(&m) != same(spec) {
                    return Err(bad(
                        path,
                        format!("pretrained for patch {}, width {}, depth {}, heads {}, mlp ratio {}, {} channel(s)", m.patch, m.width, m.depth, m.heads, m.mlp_ratio, m.in_channels),
                        "fine-tune the architecture that was pretrained (only the image size may differ)",
                    ));
                }
                // The decoder's tensors are left behind; the head is new.
                let (w, note) = adopt(spec, &random, mae.tensors, path)?;
                Ok((
                    w,
                    format!(
                        "MAE encoder {} (epoch {}, reconstruction loss {:.4}, mask ratio {}){note}",
                        path.display(),
                        mae.epoch + 1,
                        mae.loss,
                        mae.config.mae.mask_ratio
                    ),
                ))
            }
        }
    }
}

/// Weights for `spec` from a named checkpoint. A head for another label
/// set (or none, as after MAE pretraining) starts fresh from `random`, as
/// does a missing final norm; the note names them.
fn adopt(
    spec: &VitSpec,
    random: &Weights,
    mut named: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    path: &Path,
) -> Result<(Weights, String), TrainerError> {
    let mut fresh = Vec::new();
    for (name, shape, data) in random.iter() {
        let differs = named.get(name).is_none_or(|(s, _)| s != shape);
        if (name.starts_with("head.") || name.starts_with("norm.")) && differs {
            named.insert(name.to_owned(), (shape.to_vec(), data.to_vec()));
            fresh.push(name.to_owned());
        }
    }
    let w = weights_from_checkpoint(spec, named).map_err(|e| {
        bad(
            path,
            e,
            "the checkpoint's width, depth and patch must match the model section",
        )
    })?;
    let note = if fresh.is_empty() {
        String::new()
    } else {
        format!("; fresh: {}", fresh.join(", "))
    };
    Ok((w, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of every tensor of `w` in F32, plus a head of
    /// `other_labels` classes.
    fn checkpoint(w: &Weights, other_labels: usize) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        let mut put = |name: &str, shape: Vec<usize>, values: &[f32]| {
            let begin = data.len();
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            header.insert(
                name.to_owned(),
                serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()] }),
            );
        };
        for (name, shape, values) in w.iter() {
            if !name.starts_with("head.") {
                put(name, shape.to_vec(), values);
            }
        }
        let d = w.spec.width;
        put(
            "head.weight",
            vec![other_labels, d],
            &vec![0.5; other_labels * d],
        );
        put("head.bias", vec![other_labels], &vec![0.5; other_labels]);
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn safetensors_keeps_the_backbone_and_refreshes_a_foreign_head() {
        let spec = VitSpec::tiny();
        let pretrained = Weights::random(&spec, 7).unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("cxr-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("ckpt.safetensors");
        std::fs::write(&path, checkpoint(&pretrained, 1000)).unwrap_or_else(|e| panic!("{e}"));
        let (w, note) = Init::Safetensors { path: path.clone() }
            .weights(&spec, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let get = |w: &Weights, n: &str| w.get(n).map(<[f32]>::to_vec).unwrap_or_default();
        assert_eq!(
            get(&w, "blocks.0.attn.qkv.weight"),
            get(&pretrained, "blocks.0.attn.qkv.weight")
        );
        let fresh = Weights::random(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&w, "head.weight"), get(&fresh, "head.weight"));
        assert!(note.contains("head.weight"), "{note}");
        // A checkpoint of another width is refused with the hint.
        let wide = VitSpec {
            width: 2 * spec.width,
            heads: 2 * spec.heads,
            ..spec
        };
        let e = Init::Safetensors { path: path.clone() }
            .weights(&wide, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("must match the model section"), "{e}");
        let missing = Init::Safetensors {
            path: dir.join("absent.safetensors"),
        }
        .weights(&spec, 1);
        assert!(missing.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
