//! The masked autoencoder (He et al., 2022) around our ViT: the encoder
//! sees a random subset of each image's patches; a small decoder, given the
//! encoded patches and a learnt mask token at every hidden position,
//! predicts the hidden patches' pixels. The loss is the mean squared error
//! over hidden patches only, against pixels normalised per patch (mean 0,
//! variance 1), which the MAE paper found gives better representations.
//!
//! The encoder is [`BurnVit`] itself, with the canonical names, so its
//! weights start a fine-tuning run unchanged (`init = { from = "mae" }`).
//! The decoder reuses the ViT's blocks, position embedding and final norm
//! (a second `BurnVit` whose patch embedding, CLS token and head stay
//! unused); its own parameters are the encoder-to-decoder projection, the
//! mask token and the pixel prediction.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use cxr_model::{VitSpec, Weights};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::vit::{linear, param_id, patchify, BurnVit, Precision};
use crate::TrainerError;

/// The masked autoencoder's own settings (`[mae]` in the pretraining
/// config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeConfig {
    /// The share of each image's patches hidden from the encoder (the
    /// paper's 0.75).
    pub mask_ratio: f64,
    pub decoder_width: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    /// Predict pixels normalised per patch (true, the default) or raw.
    #[serde(default = "yes")]
    pub norm_pix_loss: bool,
}

fn yes() -> bool {
    true
}

type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

impl MaeConfig {
    /// How many patches the encoder sees out of `patches`.
    pub fn visible(&self, patches: usize) -> usize {
        ((patches as f64 * (1.0 - self.mask_ratio)).round() as usize).clamp(1, patches)
    }

    /// The decoder as a ViT spec: the encoder's patch grid and channels,
    /// its own width, depth and heads.
    pub fn decoder_spec(&self, encoder: &VitSpec) -> VitSpec {
        VitSpec {
            width: self.decoder_width,
            depth: self.decoder_depth,
            heads: self.decoder_heads,
            labels: 1,
            ..*encoder
        }
    }

    pub fn validate(&self, encoder: &VitSpec) -> Result<(), TrainerError> {
        let bad = |what: String| TrainerError::invalid("mae", what, "fix the mae section");
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(bad(format!(
                "mask_ratio {} outside (0, 1)",
                self.mask_ratio
            )));
        }
        let patches = encoder.grid() * encoder.grid();
        if self.visible(patches) == patches {
            return Err(bad(format!(
                "mask_ratio {} hides none of the {patches} patches",
                self.mask_ratio
            )));
        }
        let pixels = encoder.in_channels * encoder.patch * encoder.patch;
        if self.norm_pix_loss && pixels < 2 {
            return Err(bad("norm_pix_loss needs patches of 2 pixels or more".into()));
        }
        self.decoder_spec(encoder)
            .validate()
            .map_err(|e| bad(format!("the decoder: {e}")))
    }
}

/// Which patches each image of a batch keeps, drawn on the host per step.
#[derive(Debug, Clone, PartialEq)]
pub struct Masking {
    pub batch: usize,
    pub patches: usize,
    pub visible: usize,
    /// `[batch, visible]`: the kept patches' grid indices, in draw order.
    pub keep: Vec<i64>,
    /// `[batch, patches]`: where each grid position sits in the draw order
    /// (kept first, then hidden), to put the decoder's input back in place.
    pub restore: Vec<i64>,
    /// `[batch, patches]`: 1 for a hidden patch, 0 for a kept one.
    pub hidden: Vec<f32>,
}

impl Masking {
    /// A fresh random mask per image: a permutation of the grid whose first
    /// `visible` positions are kept.
    pub fn draw(batch: usize, patches: usize, visible: usize, rng: &mut Rng) -> Self {
        let mut m = Masking {
            batch,
            patches,
            visible,
            keep: Vec::with_capacity(batch * visible),
            restore: vec![0; batch * patches],
            hidden: vec![0.0; batch * patches],
        };
        for b in 0..batch {
            let order = rng.permutation(patches);
            for (rank, &patch) in order.iter().enumerate() {
                m.restore[b * patches + patch] = rank as i64;
                if rank < visible {
                    m.keep.push(patch as i64);
                } else {
                    m.hidden[b * patches + patch] = 1.0;
                }
            }
        }
        m
    }
}

/// The encoder, the decoder and the decoder's own parameters.
#[derive(Module, Debug)]
pub struct Mae<B: Backend> {
    pub encoder: BurnVit<B>,
    decoder: BurnVit<B>,
    /// `[Dd, D]`: encoder width to decoder width.
    embed_w: Param<Tensor<B, 2>>,
    embed_b: Param<Tensor<B, 1>>,
    /// `[1, 1, Dd]`
    mask_token: Param<Tensor<B, 3>>,
    /// `[C·P·P, Dd]`: a patch's pixels from its decoded token.
    pred_w: Param<Tensor<B, 2>>,
    pred_b: Param<Tensor<B, 1>>,
    #[module(skip)]
    norm_pix_loss: bool,
}

/// The decoder's own tensors (names as in the MAE reference code) and
/// their shapes.
fn own_tensors(spec: &VitSpec, c: &MaeConfig) -> [(&'static str, Vec<usize>); 5] {
    let (d, dd) = (spec.width, c.decoder_width);
    let pixels = spec.in_channels * spec.patch * spec.patch;
    [
        ("decoder_embed.weight", vec![dd, d]),
        ("decoder_embed.bias", vec![dd]),
        ("mask_token", vec![1, 1, dd]),
        ("decoder_pred.weight", vec![pixels, dd]),
        ("decoder_pred.bias", vec![pixels]),
    ]
}

/// The decoder's parts that a checkpoint keeps (the rest of its ViT is
/// unused and starts fresh).
fn kept_by_decoder(name: &str) -> bool {
    name.starts_with("blocks.") || name.starts_with("norm.") || name == "pos_embed"
}

/// Fresh weights for a whole MAE: the encoder and decoder as timm
/// initialises a ViT, the projections Xavier-uniform, the mask token
/// normal(0.02), biases zero.
pub fn random_named(spec: &VitSpec, c: &MaeConfig, seed: u64) -> Result<Named, TrainerError> {
    let bad = |e: cxr_model::ModelError| {
        TrainerError::invalid("mae", e.to_string(), "fix the model and mae sections")
    };
    let mut named = Named::new();
    for (name, shape, data) in Weights::random(spec, seed).map_err(bad)?.iter() {
        if !name.starts_with("head.") {
            named.insert(name.to_owned(), (shape.to_vec(), data.to_vec()));
        }
    }
    let decoder = Weights::random(&c.decoder_spec(spec), seed ^ 0xDEC0).map_err(bad)?;
    for (name, shape, data) in decoder.iter().filter(|(n, _, _)| kept_by_decoder(n)) {
        named.insert(format!("decoder.{name}"), (shape.to_vec(), data.to_vec()));
    }
    let mut rng = Rng::new(seed ^ 0x4D41_4500);
    for (name, shape) in own_tensors(spec, c) {
        let n: usize = shape.iter().product();
        let data = match name {
            "mask_token" => (0..n).map(|_| (0.02 * rng.normal()) as f32).collect(),
            _ if name.ends_with(".bias") => vec![0.0; n],
            _ => {
                let limit = (6.0 / (shape[0] + shape[1]) as f64).sqrt();
                (0..n).map(|_| rng.range(-limit, limit) as f32).collect()
            }
        };
        named.insert(name.to_owned(), (shape, data));
    }
    Ok(named)
}

fn own_param<B: Backend, const D: usize>(
    (named, expected): (&Named, &[(&'static str, Vec<usize>)]),
    name: &str,
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>, TrainerError> {
    let (shape, data) = named.get(name).ok_or_else(|| {
        TrainerError::invalid(
            "mae",
            format!("no tensor {name}"),
            "use a checkpoint written by `cxr-trainer pretrain` with this config",
        )
    })?;
    let want = expected.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let whole = shape.iter().product::<usize>() == data.len();
    let dims: [usize; D] = match shape.clone().try_into() {
        Ok(dims) if want == Some(shape) && whole && data.iter().all(|v| v.is_finite()) => dims,
        _ => {
            return Err(TrainerError::invalid(
                "mae",
                format!("{name} has shape {shape:?} and {} values; this config needs {want:?} of finite values", data.len()),
                "use a checkpoint written by `cxr-trainer pretrain` with this config",
            ))
        }
    };
    Ok(Param::initialized(
        param_id(&format!("mae.{name}")),
        Tensor::from_data(TensorData::new(data.clone(), dims), device).require_grad(),
    ))
}

impl<B: Backend> Mae<B> {
    /// Build from named tensors: the encoder's canonical names (no head),
    /// `decoder.`-prefixed decoder names and the decoder's own tensors, as
    /// [`random_named`] and [`Mae::to_named`] give them.
    pub fn from_named(
        spec: &VitSpec,
        c: &MaeConfig,
        named: &Named,
        device: &B::Device,
    ) -> Result<Self, TrainerError> {
        let mismatch = |e: cxr_model::ModelError| {
            TrainerError::invalid(
                "mae",
                e.to_string(),
                "use a checkpoint of this model and mae config",
            )
        };
        if let Some(name) = named
            .iter()
            .find(|(_, (_, data))| data.iter().any(|v| !v.is_finite()))
            .map(|(name, _)| name)
        {
            return Err(TrainerError::invalid(
                "mae",
                format!("{name} holds a value that is not finite"),
                "use a checkpoint written by `cxr-trainer pretrain` before its loss diverged",
            ));
        }
        // The unused parts (the encoder's head, the decoder's patch
        // embedding, CLS token and head) come from fresh weights.
        let mut encoder = named.clone();
        let mut decoder = Named::new();
        let spare = |s: &VitSpec, seed| Weights::random(s, seed).map_err(mismatch);
        let dec_spec = c.decoder_spec(spec);
        for (name, shape, data) in spare(spec, 0)?.iter() {
            if name.starts_with("head.") {
                encoder.insert(name.to_owned(), (shape.to_vec(), data.to_vec()));
            }
        }
        // Every part a checkpoint keeps must be there: a decoder that
        // silently started fresh would not be the one pretrained.
        for (name, shape, data) in spare(&dec_spec, 0)?.iter() {
            let value = match named.get(&format!("decoder.{name}")) {
                Some(v) if kept_by_decoder(name) => v.clone(),
                None if kept_by_decoder(name) => {
                    return Err(TrainerError::invalid(
                        "mae",
                        format!("no tensor decoder.{name}"),
                        "use a checkpoint written by `cxr-trainer pretrain` with this config",
                    ))
                }
                _ => (shape.to_vec(), data.to_vec()),
            };
            decoder.insert(name.to_owned(), value);
        }
        let own = own_tensors(spec, c);
        let enc = Weights::from_tensors(spec, encoder).map_err(mismatch)?;
        let dec = Weights::from_tensors(&dec_spec, decoder).map_err(mismatch)?;
        Ok(Mae {
            encoder: BurnVit::from_weights(&enc, device)?,
            decoder: BurnVit::from_weights_with_ids(&dec, "mae.decoder.", device)?,
            embed_w: own_param((named, &own), "decoder_embed.weight", device)?,
            embed_b: own_param((named, &own), "decoder_embed.bias", device)?,
            mask_token: own_param((named, &own), "mask_token", device)?,
            pred_w: own_param((named, &own), "decoder_pred.weight", device)?,
            pred_b: own_param((named, &own), "decoder_pred.bias", device)?,
            norm_pix_loss: c.norm_pix_loss,
        })
    }

    /// Every tensor a checkpoint keeps, named as [`Mae::from_named`] reads
    /// them.
    pub fn to_named(&self) -> Result<Named, TrainerError> {
        let mut named = Named::new();
        for (name, shape, data) in self.encoder.to_weights()?.iter() {
            if !name.starts_with("head.") {
                named.insert(name.to_owned(), (shape.to_vec(), data.to_vec()));
            }
        }
        let decoder = self.decoder.to_weights()?;
        for (name, shape, data) in decoder.iter().filter(|(n, _, _)| kept_by_decoder(n)) {
            named.insert(format!("decoder.{name}"), (shape.to_vec(), data.to_vec()));
        }
        let mut own = |name: &str,
                       t: Tensor<B, 1>,
                       shape: Vec<usize>|
         -> Result<(), TrainerError> {
            let data = t
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| TrainerError::invalid("mae", format!("{e:?}"), "report this bug"))?;
            named.insert(name.to_owned(), (shape, data));
            Ok(())
        };
        let flat = |p: Vec<usize>| p.iter().product::<usize>();
        let w = self.embed_w.val();
        own(
            "decoder_embed.weight",
            w.clone().reshape([flat(w.dims().to_vec())]),
            w.dims().to_vec(),
        )?;
        own(
            "decoder_embed.bias",
            self.embed_b.val(),
            self.embed_b.dims().to_vec(),
        )?;
        let t = self.mask_token.val();
        own(
            "mask_token",
            t.clone().reshape([flat(t.dims().to_vec())]),
            t.dims().to_vec(),
        )?;
        let w = self.pred_w.val();
        own(
            "decoder_pred.weight",
            w.clone().reshape([flat(w.dims().to_vec())]),
            w.dims().to_vec(),
        )?;
        own(
            "decoder_pred.bias",
            self.pred_b.val(),
            self.pred_b.dims().to_vec(),
        )?;
        Ok(named)
    }

    /// The reconstruction loss of `images` `[B, C, S, S]` under `masking`:
    /// the mean squared error per hidden patch, averaged over the hidden
    /// patches.
    pub fn loss(&self, images: Tensor<B, 4>, masking: &Masking) -> Tensor<B, 1> {
        let target = patchify(images.clone(), self.encoder.spec().patch);
        let target = if self.norm_pix_loss {
            normalise_patches(target)
        } else {
            target
        };
        masked_mse(self.reconstruct(images, masking), target, masking)
    }

    /// The predicted pixels of every patch, `[B, N, C·P·P]`, from the
    /// kept patches of `images` only.
    pub fn reconstruct(&self, images: Tensor<B, 4>, masking: &Masking) -> Tensor<B, 3> {
        let device = images.device();
        let s = self.encoder.spec();
        let (bs, n, k) = (masking.batch, masking.patches, masking.visible);
        let (d, dd) = (s.width, self.mask_token.dims()[2]);
        let index = |v: &[i64], cols: usize| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), [bs, cols]), &device)
        };
        let keep = index(&masking.keep, k)
            .unsqueeze_dim::<3>(2)
            .expand([bs, k, d]);
        let visible = self.encoder.patch_tokens(images).gather(1, keep);
        let encoded = self
            .encoder
            .encode(Tensor::cat(vec![self.encoder.cls_token(bs), visible], 1));
        let y = linear(encoded, (&self.embed_w, &self.embed_b), Precision::F32);
        let hidden = self.mask_token.val().expand([bs, n - k, dd]);
        let in_draw_order = Tensor::cat(vec![y.clone().narrow(1, 1, k), hidden], 1);
        let restore = index(&masking.restore, n)
            .unsqueeze_dim::<3>(2)
            .expand([bs, n, dd]);
        let in_place = in_draw_order.gather(1, restore);
        let tokens = Tensor::cat(vec![y.narrow(1, 0, 1), in_place], 1) + self.decoder.position();
        let decoded = self.decoder.encode(tokens).narrow(1, 1, n);
        linear(decoded, (&self.pred_w, &self.pred_b), Precision::F32)
    }
}

/// The mean squared error per patch, averaged over the hidden patches.
fn masked_mse<B: Backend>(
    predicted: Tensor<B, 3>,
    target: Tensor<B, 3>,
    masking: &Masking,
) -> Tensor<B, 1> {
    let (bs, n) = (masking.batch, masking.patches);
    let per_patch = (predicted - target)
        .powi_scalar(2)
        .mean_dim(2)
        .reshape([bs, n]);
    let hidden = Tensor::<B, 2>::from_data(
        TensorData::new(masking.hidden.clone(), [bs, n]),
        &per_patch.device(),
    );
    let count = masking.hidden.iter().sum::<f32>().max(1.0);
    (per_patch * hidden).sum().div_scalar(count)
}

/// Each patch's pixels to mean 0 and variance 1 (unbiased, as the MAE
/// reference computes it), with 1e-6 added to the variance.
fn normalise_patches<B: Backend>(patches: Tensor<B, 3>) -> Tensor<B, 3> {
    let pixels = patches.dims()[2];
    let mean = patches.clone().mean_dim(2);
    let centred = patches - mean;
    let var = centred.clone().powi_scalar(2).sum_dim(2) / (pixels.max(2) - 1) as f64;
    centred / (var + 1e-6).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn masking_keeps_hides_and_restores_every_patch() {
        let m = Masking::draw(3, 16, 4, &mut Rng::new(5));
        assert_eq!(m.keep.len(), 3 * 4);
        for b in 0..3 {
            let row = |v: &[f32]| v[b * 16..(b + 1) * 16].to_vec();
            assert_eq!(row(&m.hidden).iter().sum::<f32>(), 12.0);
            // The draw order is kept patches first: position `restore[p]`
            // of it holds patch `p`.
            for (j, &p) in m.keep[b * 4..(b + 1) * 4].iter().enumerate() {
                assert_eq!(m.restore[b * 16 + p as usize], j as i64);
                assert_eq!(m.hidden[b * 16 + p as usize], 0.0);
            }
            let mut ranks: Vec<i64> = m.restore[b * 16..(b + 1) * 16].to_vec();
            ranks.sort_unstable();
            assert_eq!(ranks, (0..16).collect::<Vec<i64>>());
        }
        assert_ne!(m.keep[..4], m.keep[4..8], "each image draws its own mask");
    }

    fn config() -> MaeConfig {
        MaeConfig {
            mask_ratio: 0.75,
            decoder_width: 16,
            decoder_depth: 1,
            decoder_heads: 2,
            norm_pix_loss: true,
        }
    }

    #[test]
    fn the_config_is_checked() {
        let spec = VitSpec::tiny();
        assert!(config().validate(&spec).is_ok());
        for broken in [
            MaeConfig {
                mask_ratio: 1.0,
                ..config()
            },
            MaeConfig {
                mask_ratio: f64::NAN,
                ..config()
            },
            MaeConfig {
                mask_ratio: 0.01,
                ..config()
            },
            MaeConfig {
                decoder_heads: 3,
                ..config()
            },
        ] {
            assert!(broken.validate(&spec).is_err(), "{broken:?}");
        }
    }

    /// The loss is over hidden patches only: a prediction exact on them
    /// and wrong on every kept patch costs nothing; one wrong pixel in a
    /// hidden patch costs its square over the patch's pixels and the
    /// hidden count.
    #[test]
    fn the_loss_counts_hidden_patches_only() {
        type B = NdArray<f32>;
        let device = Default::default();
        let m = Masking::draw(2, 16, 4, &mut Rng::new(2));
        let target: Vec<f32> = (0..2 * 16 * 8).map(|i| (i % 5) as f32).collect();
        let mut predicted = target.clone();
        for (p, h) in m.hidden.iter().enumerate() {
            if *h == 0.0 {
                predicted[p * 8..(p + 1) * 8]
                    .iter_mut()
                    .for_each(|v| *v += 3.0);
            }
        }
        let t =
            |v: &[f32]| Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), [2, 16, 8]), &device);
        let loss = |pred: &[f32]| masked_mse(t(pred), t(&target), &m).into_scalar();
        assert_eq!(loss(&predicted), 0.0);
        let hidden = m.hidden.iter().position(|h| *h == 1.0).unwrap_or(0);
        predicted[hidden * 8] += 2.0;
        let expected = 4.0 / 8.0 / 24.0;
        assert!(
            (loss(&predicted) - expected).abs() < 1e-6,
            "{}",
            loss(&predicted)
        );
    }

    #[test]
    fn patches_normalise_to_mean_0_variance_1() {
        type B = NdArray<f32>;
        let x: Vec<f32> = (0..2 * 3 * 4).map(|i| (i * i) as f32).collect();
        let p = Tensor::<B, 3>::from_data(TensorData::new(x, [2, 3, 4]), &Default::default());
        let n = normalise_patches(p);
        let mean = n.clone().mean_dim(2).abs().max().into_scalar();
        let var = n.powi_scalar(2).sum_dim(2).div_scalar(3.0);
        assert!(mean < 1e-5, "{mean}");
        assert!((var.sub_scalar(1.0).abs().max().into_scalar()) < 1e-4);
    }

    #[test]
    fn the_named_tensors_round_trip() {
        type B = NdArray<f32>;
        let (spec, c) = (VitSpec::tiny(), config());
        let named = random_named(&spec, &c, 9).unwrap_or_default();
        let mae = Mae::<B>::from_named(&spec, &c, &named, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mae.to_named().unwrap_or_default(), named);
        assert!(named.contains_key("decoder.blocks.0.attn.qkv.weight"));
        assert!(!named.contains_key("head.weight") && !named.contains_key("decoder.head.weight"));
    }

    #[test]
    fn a_damaged_checkpoint_is_refused() {
        type B = NdArray<f32>;
        let (spec, c) = (VitSpec::tiny(), config());
        let named = random_named(&spec, &c, 9).unwrap_or_default();
        let build = |n: &Named| {
            Mae::<B>::from_named(&spec, &c, n, &Default::default())
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(build(&named), None);
        let mut missing = named.clone();
        missing.remove("decoder.blocks.0.mlp.fc1.weight");
        assert!(build(&missing)
            .is_some_and(|e| e.contains("no tensor decoder.blocks.0.mlp.fc1.weight")));
        let mut wide = named.clone();
        wide.insert("mask_token".into(), (vec![1, 1, 32], vec![0.0; 32]));
        assert!(build(&wide).is_some_and(|e| e.contains("mask_token has shape [1, 1, 32]")));
        let mut short = named.clone();
        short.insert("decoder_pred.bias".into(), (vec![64], vec![0.0; 10]));
        assert!(build(&short).is_some());
        let mut nan = named.clone();
        nan.insert("decoder_embed.bias".into(), (vec![16], vec![f32::NAN; 16]));
        assert!(build(&nan).is_some_and(|e| e.contains("finite")));
        let mut inf = named;
        if let Some((_, data)) = inf.get_mut("blocks.0.attn.qkv.weight") {
            data[3] = f32::INFINITY;
        }
        assert!(build(&inf).is_some_and(
            |e| e.contains("blocks.0.attn.qkv.weight holds a value that is not finite")
        ));
    }

    /// A few AdamW steps on a fixed batch bring the reconstruction loss
    /// down: the gradients reach every part through the gathers.
    #[test]
    fn a_few_steps_reduce_the_reconstruction_loss() {
        use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
        type AB = Autodiff<NdArray<f32>>;
        let (spec, c) = (VitSpec::tiny(), config());
        let device = Default::default();
        let named = random_named(&spec, &c, 4).unwrap_or_default();
        let mut mae =
            Mae::<AB>::from_named(&spec, &c, &named, &device).unwrap_or_else(|e| panic!("{e}"));
        let mut optim = AdamWConfig::new().init::<AB, Mae<AB>>();
        let mut rng = Rng::new(8);
        // Smooth images (a gradient per image), so that hidden patches
        // follow from visible ones.
        let images: Vec<f32> = (0..4)
            .flat_map(|i| (0..32 * 32).map(move |p| ((p % 32) as f32 * (i as f32 + 1.0)) / 32.0))
            .collect();
        let mut losses = Vec::new();
        for _ in 0..30 {
            let m = Masking::draw(4, 16, 4, &mut rng);
            let x = Tensor::<AB, 4>::from_data(
                TensorData::new(images.clone(), [4, 1, 32, 32]),
                &device,
            );
            let loss = mae.loss(x, &m);
            losses.push(loss.clone().into_scalar());
            let grads = GradientsParams::from_grads(loss.backward(), &mae);
            mae = optim.step(3e-3, mae, grads);
        }
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }
}
