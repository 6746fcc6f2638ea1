//! AdamW in parameter groups: one group per (layer, weight decay or not), so
//! that norms, biases and embeddings take no decay and, for fine-tuning,
//! each layer's learning rate is scaled by `layer_decay^(top - layer)`
//! (layer-wise learning-rate decay, as in BEiT/MAE fine-tuning).
//!
//! burn's optimiser takes one learning rate per step, and Adam is invariant
//! to gradient scale, so scaling gradients cannot stand in for a smaller
//! rate: each group is its own AdamW instance, stepped with its own rate.
//! Their moments are saved and loaded by parameter id (ids follow the
//! canonical names, see [`crate::vit::param_id`]), so resume keeps them.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::vit::BurnVit;
use crate::TrainerError;

type Adam<B> = OptimizerAdaptor<AdamW, BurnVit<B>, B>;

/// One group's optimiser and the factor on the base learning rate.
struct Group<B: AutodiffBackend> {
    optimizer: Adam<B>,
    lr_scale: f64,
    decay: bool,
    layer: usize,
}

/// AdamW over the ViT's parameter groups.
pub struct GroupedAdamW<B: AutodiffBackend> {
    groups: Vec<Group<B>>,
    /// Parameter id to index in `groups`.
    index: HashMap<ParamId, usize>,
}

impl<B: AutodiffBackend> std::fmt::Debug for GroupedAdamW<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedAdamW")
            .field("groups", &self.groups.len())
            .field("scales", &self.lr_scales())
            .finish()
    }
}

/// The learning-rate factor of `layer` out of `0..=top`.
pub fn layer_scale(layer: usize, top: usize, layer_decay: f64) -> f64 {
    layer_decay.powi(top.saturating_sub(layer) as i32)
}

impl<B: AutodiffBackend> GroupedAdamW<B> {
    /// Groups for `model`; `layer_decay` 1.0 gives every layer the base rate.
    pub fn new(model: &BurnVit<B>, weight_decay: f32, layer_decay: f64) -> Self {
        let places = model.places();
        let top = places.iter().map(|p| p.layer).max().unwrap_or(0);
        let mut groups: Vec<Group<B>> = Vec::new();
        let mut index = HashMap::new();
        for p in places {
            let k = match groups
                .iter()
                .position(|g| g.layer == p.layer && g.decay == p.decay)
            {
                Some(k) => k,
                None => {
                    groups.push(Group {
                        optimizer: AdamWConfig::new()
                            .with_weight_decay(if p.decay { weight_decay } else { 0.0 })
                            .init(),
                        lr_scale: layer_scale(p.layer, top, layer_decay),
                        decay: p.decay,
                        layer: p.layer,
                    });
                    groups.len() - 1
                }
            };
            index.insert(p.id, k);
        }
        GroupedAdamW { groups, index }
    }

    /// `(layer, decay, lr factor)` per group.
    pub fn lr_scales(&self) -> Vec<(usize, bool, f64)> {
        self.groups
            .iter()
            .map(|g| (g.layer, g.decay, g.lr_scale))
            .collect()
    }

    /// One step of every group at `lr` times its factor.
    pub fn step(&mut self, lr: f64, mut model: BurnVit<B>, grads: GradientsParams) -> BurnVit<B> {
        let mut split = Split::<B> {
            from: grads,
            index: &self.index,
            to: (0..self.groups.len())
                .map(|_| GradientsParams::new())
                .collect(),
            _b: std::marker::PhantomData,
        };
        model.visit(&mut split);
        for (g, grads) in self.groups.iter_mut().zip(split.to) {
            if !grads.is_empty() {
                model = g.optimizer.step(lr * g.lr_scale, model, grads);
            }
        }
        model
    }

    fn file(dir: &Path, k: usize) -> std::path::PathBuf {
        dir.join(format!("optimizer-{k}"))
    }

    /// Save every group's moments into `dir` (`optimizer-K.bin`).
    pub fn save(&self, dir: &Path) -> Result<(), TrainerError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        for (k, g) in self.groups.iter().enumerate() {
            recorder
                .record(g.optimizer.to_record(), Self::file(dir, k))
                .map_err(|e| TrainerError::io("writing", &Self::file(dir, k), e))?;
        }
        Ok(())
    }

    /// Load the moments saved by [`GroupedAdamW::save`] for the same model.
    pub fn load(mut self, dir: &Path, device: &B::Device) -> Result<Self, TrainerError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let mut groups = Vec::with_capacity(self.groups.len());
        for (k, mut g) in self.groups.drain(..).enumerate() {
            let record = recorder
                .load(Self::file(dir, k), device)
                .map_err(|e| TrainerError::Io {
 action: "reading",
path: Self::file(dir, k).with_extension("bin"),
 reason: format!("{e}; the run's optimiser state is missing or from another model, resume needs the files `train` wrote"),
                })?;
            g.optimizer = g.optimizer.load_record(record);
            groups.push(g);
        }
        self.groups = groups;
        Ok(self)
    }
}

/// Moves each gradient into its group's set.
struct Split<'a, B: AutodiffBackend> {
    from: GradientsParams,
    index: &'a HashMap<ParamId, usize>,
    to: Vec<GradientsParams>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let (Some(g), Some(k)) = (
            self.from.remove::<B::InnerBackend, D>(param.id),
            self.index.get(&param.id),
        ) {
            self.to[*k].register(param.id, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_scales_fall_geometrically_from_the_head() {
        assert_eq!(layer_scale(5, 5, 0.75), 1.0);
        assert!((layer_scale(4, 5, 0.75) - 0.75).abs() < 1e-12);
        assert!((layer_scale(0, 5, 0.75) - 0.75f64.powi(5)).abs() < 1e-12);
        assert_eq!(layer_scale(0, 5, 1.0), 1.0);
    }

    /// The decay reaches the weights: after one AdamW step from the same
    /// gradients, a parameter of layer `l` moves `decay^(top - l)` times as
    /// far as it does without decay (Adam's first step is about `lr` times
    /// the gradient's sign, so the ratio is the learning-rate factor).
    #[test]
    fn layer_decay_scales_each_layers_first_step() {
        use burn::backend::{Autodiff, NdArray};
        use burn::tensor::TensorData;
        type B = Autodiff<NdArray<f32>>;
        let spec = cxr_model::VitSpec {
            image_size: 16,
            patch: 8,
            width: 16,
            depth: 2,
            heads: 2,
            labels: 3,
            ..cxr_model::VitSpec::tiny()
        };
        let device = Default::default();
        let weights = cxr_model::Weights::random(&spec, 3).unwrap();
        let step = |decay: f64| -> cxr_model::Weights {
            let model = BurnVit::<B>::from_weights(&weights, &device).unwrap();
            let x: Vec<f32> = (0..16 * 16).map(|i| (i % 7) as f32 / 7.0).collect();
            let images = Tensor::<B, 4>::from_data(TensorData::new(x, [1, 1, 16, 16]), &device);
            let (logits, _) = model.forward(images);
            let grads = GradientsParams::from_grads(logits.sum().backward(), &model);
            let mut optim = GroupedAdamW::new(&model, 0.0, decay);
            optim.step(1e-3, model, grads).to_weights().unwrap()
        };
        let (plain, decayed) = (step(1.0), step(0.5));
        let moved = |w: &cxr_model::Weights, name: &str| -> f64 {
            let (a, b) = (w.get(name).unwrap(), weights.get(name).unwrap());
            a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum()
        };
        // Top = depth + 1 = 3: the head keeps the rate, block 1 (layer 2)
        // gets 0.5, the patch embedding (layer 0) 0.125.
        for (name, factor) in [
            ("head.weight", 1.0),
            ("blocks.1.mlp.fc1.weight", 0.5),
            ("patch_embed.proj.weight", 0.125),
        ] {
            let ratio = moved(&decayed, name) / moved(&plain, name);
            assert!(
                (ratio - factor).abs() < 0.02 * factor,
                "{name}: {ratio} vs {factor}"
            );
        }
    }
}
