//! The ViT in burn, generic over the backend, with `cxr-model`'s canonical
//! (timm) parameter names and shapes, so that import and export go through
//! `cxr_model::Weights` and the ONNX writer without renaming.
//!
//! Shapes: images `[B, C, S, S]`; tokens `[B, T, D]` with `T = 1 + (S/P)^2`;
//! logits `[B, labels]`; pooled features (final-normed CLS) `[B, D]`.

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use cxr_model::{VitSpec, Weights};
use serde::{Deserialize, Serialize};

use crate::TrainerError;

const LN_EPS: f64 = 1e-6;

/// The dtype of the matrix products in training: f32, or bf16 (mixed
/// precision). burn has no autocast, so the casts are explicit: under
/// bf16 the weights stay f32 (the optimiser's master copy) and each product
/// casts its two operands to bf16 and its result back to f32; layer norms,
/// softmax, GELU, residuals, biases and the loss stay f32. bf16 keeps f32's
/// exponent range, so no loss scaling is needed (f16 would need it, and is
/// not offered). Validation and export always run in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// `a · b` in the given precision, the result in f32.
pub(crate) fn product<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    precision: Precision,
) -> Tensor<B, D> {
    match precision {
        Precision::F32 => a.matmul(b),
        Precision::Bf16 => a
            .cast(FloatDType::BF16)
            .matmul(b.cast(FloatDType::BF16))
            .cast(FloatDType::F32),
    }
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm1_w: Param<Tensor<B, 1>>,
    norm1_b: Param<Tensor<B, 1>>,
    /// `[3D, D]`
    qkv_w: Param<Tensor<B, 2>>,
    qkv_b: Param<Tensor<B, 1>>,
    proj_w: Param<Tensor<B, 2>>,
    proj_b: Param<Tensor<B, 1>>,
    norm2_w: Param<Tensor<B, 1>>,
    norm2_b: Param<Tensor<B, 1>>,
    fc1_w: Param<Tensor<B, 2>>,
    fc1_b: Param<Tensor<B, 1>>,
    fc2_w: Param<Tensor<B, 2>>,
    fc2_b: Param<Tensor<B, 1>>,
}

#[derive(Module, Debug)]
pub struct BurnVit<B: Backend> {
    /// `[D, C, P, P]`
    patch_w: Param<Tensor<B, 4>>,
    patch_b: Param<Tensor<B, 1>>,
    /// `[1, 1, D]`
    cls: Param<Tensor<B, 3>>,
    /// `[1, T, D]`
    pos: Param<Tensor<B, 3>>,
    blocks: Vec<Block<B>>,
    norm_w: Param<Tensor<B, 1>>,
    norm_b: Param<Tensor<B, 1>>,
    /// `[labels, D]`
    head_w: Param<Tensor<B, 2>>,
    head_b: Param<Tensor<B, 1>>,
    #[module(skip)]
    spec: VitSpec,
    #[module(skip)]
    precision: Precision,
}

/// `x W^T + b` for `[B, N, in]` with PyTorch-layout `W` `[out, in]`.
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 3>,
    (w, b): (&Param<Tensor<B, 2>>, &Param<Tensor<B, 1>>),
    precision: Precision,
) -> Tensor<B, 3> {
    let [bs, n, d_in] = x.dims();
    let d_out = w.dims()[0];
    let y = product(x.reshape([bs * n, d_in]), w.val().transpose(), precision);
    (y + b.val().unsqueeze::<2>()).reshape([bs, n, d_out])
}

pub(crate) fn layer_norm<B: Backend>(
    x: Tensor<B, 3>,
    w: &Param<Tensor<B, 1>>,
    b: &Param<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(2);
    let normed = centred / (var + LN_EPS).sqrt();
    normed * w.val().unsqueeze::<3>() + b.val().unsqueeze::<3>()
}

impl<B: Backend> Block<B> {
    pub(crate) fn forward(&self, x: Tensor<B, 3>, heads: usize, p: Precision) -> Tensor<B, 3> {
        let [bs, t, d] = x.dims();
        let hd = d / heads;
        let h = layer_norm(x.clone(), &self.norm1_w, &self.norm1_b);
        let qkv = linear(h, (&self.qkv_w, &self.qkv_b), p)
            .reshape([bs, t, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]); // [3, B, H, T, hd]
        let take = |i: usize| qkv.clone().narrow(0, i, 1).reshape([bs, heads, t, hd]);
        let (q, k, v) = (take(0), take(1), take(2));
        let scores = product(q, k.swap_dims(2, 3), p) * (1.0 / (hd as f64).sqrt());
        let attended = product(softmax(scores, 3), v, p)
            .swap_dims(1, 2)
            .reshape([bs, t, d]);
        let x = x + linear(attended, (&self.proj_w, &self.proj_b), p);
        let h = layer_norm(x.clone(), &self.norm2_w, &self.norm2_b);
        let h = linear(
            gelu(linear(h, (&self.fc1_w, &self.fc1_b), p)),
            (&self.fc2_w, &self.fc2_b),
            p,
        );
        x + h
    }
}

fn param<B: Backend, const D: usize>(
    (w, ids): (&Weights, &str),
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>, TrainerError> {
    let data = w
        .get(name)
        .map_err(|e| TrainerError::invalid("weights", e.to_string(), "use weights of this spec"))?;
    // The id follows from the name, so optimiser state saved by one run
    // finds its parameters again on resume.
    Ok(Param::initialized(
        param_id(&format!("{ids}{name}")),
        Tensor::from_data(TensorData::new(data.to_vec(), shape), device).require_grad(),
    ))
}

/// A stable parameter id from its canonical name (FNV-1a).
pub fn param_id(name: &str) -> ParamId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    ParamId::from(h)
}

/// Where a parameter sits, for layer-wise learning-rate decay and the
/// weight-decay groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamPlace {
    pub id: ParamId,
    /// 0: patch, CLS and position embeddings; `1..=depth`: the blocks;
    /// `depth + 1`: the final norm and the head.
    pub layer: usize,
    /// Matrices and the patch kernel take weight decay; biases, norm scales
    /// and the embeddings do not.
    pub decay: bool,
}

fn values<B: Backend, const D: usize>(
    p: &Param<Tensor<B, D>>,
) -> Result<(Vec<usize>, Vec<f32>), TrainerError> {
    let t = p.val();
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainerError::invalid("weights", format!("{e:?}"), "report this bug"))?;
    Ok((shape, data))
}

impl<B: Backend> BurnVit<B> {
    /// Build from canonical weights (random, a checkpoint, or an ONNX file).
    pub fn from_weights(w: &Weights, device: &B::Device) -> Result<Self, TrainerError> {
        Self::from_weights_with_ids(w, "", device)
    }

    /// As [`BurnVit::from_weights`], with parameter ids taken from
    /// `ids_prefix` + name, so that two ViTs in one module (the MAE's
    /// encoder and decoder) keep apart in the optimiser.
    pub fn from_weights_with_ids(
        weights: &Weights,
        ids_prefix: &str,
        device: &B::Device,
    ) -> Result<Self, TrainerError> {
        let s = weights.spec;
        let w = (weights, ids_prefix);
        let (d, c, p, h, t) = (s.width, s.in_channels, s.patch, s.hidden(), s.tokens());
        let mut blocks = Vec::with_capacity(s.depth);
        for i in 0..s.depth {
            let n = |x: &str| format!("blocks.{i}.{x}");
            blocks.push(Block {
                norm1_w: param(w, &n("norm1.weight"), [d], device)?,
                norm1_b: param(w, &n("norm1.bias"), [d], device)?,
                qkv_w: param(w, &n("attn.qkv.weight"), [3 * d, d], device)?,
                qkv_b: param(w, &n("attn.qkv.bias"), [3 * d], device)?,
                proj_w: param(w, &n("attn.proj.weight"), [d, d], device)?,
                proj_b: param(w, &n("attn.proj.bias"), [d], device)?,
                norm2_w: param(w, &n("norm2.weight"), [d], device)?,
                norm2_b: param(w, &n("norm2.bias"), [d], device)?,
                fc1_w: param(w, &n("mlp.fc1.weight"), [h, d], device)?,
                fc1_b: param(w, &n("mlp.fc1.bias"), [h], device)?,
                fc2_w: param(w, &n("mlp.fc2.weight"), [d, h], device)?,
                fc2_b: param(w, &n("mlp.fc2.bias"), [d], device)?,
            });
        }
        Ok(BurnVit {
            patch_w: param(w, "patch_embed.proj.weight", [d, c, p, p], device)?,
            patch_b: param(w, "patch_embed.proj.bias", [d], device)?,
            cls: param(w, "cls_token", [1, 1, d], device)?,
            pos: param(w, "pos_embed", [1, t, d], device)?,
            blocks,
            norm_w: param(w, "norm.weight", [d], device)?,
            norm_b: param(w, "norm.bias", [d], device)?,
            head_w: param(w, "head.weight", [s.labels, d], device)?,
            head_b: param(w, "head.bias", [s.labels], device)?,
            spec: s,
            precision: Precision::F32,
        })
    }

    /// The same model computing its products in `precision` (training).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Back to canonical weights (for the ONNX writer and checkpoints).
    pub fn to_weights(&self) -> Result<Weights, TrainerError> {
        let mut named = BTreeMap::new();
        let mut put = |name: String, v: (Vec<usize>, Vec<f32>)| {
            named.insert(name, v);
        };
        put("patch_embed.proj.weight".into(), values(&self.patch_w)?);
        put("patch_embed.proj.bias".into(), values(&self.patch_b)?);
        put("cls_token".into(), values(&self.cls)?);
        put("pos_embed".into(), values(&self.pos)?);
        for (i, b) in self.blocks.iter().enumerate() {
            let n = |x: &str| format!("blocks.{i}.{x}");
            put(n("norm1.weight"), values(&b.norm1_w)?);
            put(n("norm1.bias"), values(&b.norm1_b)?);
            put(n("attn.qkv.weight"), values(&b.qkv_w)?);
            put(n("attn.qkv.bias"), values(&b.qkv_b)?);
            put(n("attn.proj.weight"), values(&b.proj_w)?);
            put(n("attn.proj.bias"), values(&b.proj_b)?);
            put(n("norm2.weight"), values(&b.norm2_w)?);
            put(n("norm2.bias"), values(&b.norm2_b)?);
            put(n("mlp.fc1.weight"), values(&b.fc1_w)?);
            put(n("mlp.fc1.bias"), values(&b.fc1_b)?);
            put(n("mlp.fc2.weight"), values(&b.fc2_w)?);
            put(n("mlp.fc2.bias"), values(&b.fc2_b)?);
        }
        put("norm.weight".into(), values(&self.norm_w)?);
        put("norm.bias".into(), values(&self.norm_b)?);
        put("head.weight".into(), values(&self.head_w)?);
        put("head.bias".into(), values(&self.head_b)?);
        Weights::from_tensors(&self.spec, named)
            .map_err(|e| TrainerError::invalid("weights", e.to_string(), "report this bug"))
    }

    pub fn spec(&self) -> VitSpec {
        self.spec
    }

    /// Every parameter with its layer and decay group.
    pub fn places(&self) -> Vec<ParamPlace> {
        let at = |id, layer, decay| ParamPlace { id, layer, decay };
        let mut out = vec![
            at(self.patch_w.id, 0, true),
            at(self.patch_b.id, 0, false),
            at(self.cls.id, 0, false),
            at(self.pos.id, 0, false),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let l = i + 1;
            out.extend([
                at(b.norm1_w.id, l, false),
                at(b.norm1_b.id, l, false),
                at(b.qkv_w.id, l, true),
                at(b.qkv_b.id, l, false),
                at(b.proj_w.id, l, true),
                at(b.proj_b.id, l, false),
                at(b.norm2_w.id, l, false),
                at(b.norm2_b.id, l, false),
                at(b.fc1_w.id, l, true),
                at(b.fc1_b.id, l, false),
                at(b.fc2_w.id, l, true),
                at(b.fc2_b.id, l, false),
            ]);
        }
        let top = self.blocks.len() + 1;
        out.extend([
            at(self.norm_w.id, top, false),
            at(self.norm_b.id, top, false),
            at(self.head_w.id, top, true),
            at(self.head_b.id, top, false),
        ]);
        out
    }

    /// `images` `[B, C, S, S]` → (logits `[B, labels]`, features `[B, D]`).
    pub fn forward(&self, images: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let tokens = self.patch_tokens(images);
        let bs = tokens.dims()[0];
        let x = self.encode(Tensor::cat(vec![self.cls_token(bs), tokens], 1));
        let features = x.narrow(1, 0, 1).reshape([bs, self.spec.width]);
        let logits = features.clone().matmul(self.head_w.val().transpose())
            + self.head_b.val().unsqueeze::<2>();
        (logits, features)
    }

    /// The patch tokens with their position embeddings, `[B, N, D]`, in
    /// row-major grid order.
    pub(crate) fn patch_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let s = self.spec;
        let (p, g, d, c) = (s.patch, s.grid(), s.width, s.in_channels);
        let bs = images.dims()[0];
        // Patch embedding as a matmul over flattened patches, the (c, ky, kx)
        // order of the convolution weight.
        let w = self.patch_w.val().reshape([d, c * p * p]);
        let patches = patchify(images, p).reshape([bs * g * g, c * p * p]);
        let tokens =
            product(patches, w.transpose(), self.precision) + self.patch_b.val().unsqueeze::<2>();
        tokens.reshape([bs, g * g, d]) + self.pos.val().narrow(1, 1, g * g)
    }

    /// The position embeddings `[1, T, D]` (the decoder's, in the MAE).
    pub(crate) fn position(&self) -> Tensor<B, 3> {
        self.pos.val()
    }

    /// The CLS token with its position embedding, `[B, 1, D]`.
    pub(crate) fn cls_token(&self, batch: usize) -> Tensor<B, 3> {
        let d = self.spec.width;
        (self.cls.val() + self.pos.val().narrow(1, 0, 1)).expand([batch, 1, d])
    }

    /// The blocks and the final norm over a token sequence `[B, T', D]`.
    pub(crate) fn encode(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        for b in &self.blocks {
            x = b.forward(x, self.spec.heads, self.precision);
        }
        layer_norm(x, &self.norm_w, &self.norm_b)
    }
}

/// Images `[B, C, S, S]` as flattened patches `[B, N, C·P·P]`, row-major
/// over the grid, each patch in (c, ky, kx) order.
pub(crate) fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [bs, c, size, _] = images.dims();
    let (p, g) = (patch, size / patch);
    images
        .reshape([bs, c, g, p, g, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([bs, g * g, c * p * p])
}
