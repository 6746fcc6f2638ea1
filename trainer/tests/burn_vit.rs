//! The burn ViT against the f32 reference and tract (export parity), and a
//! few optimisation steps with the whole recipe's machinery on a task it
//! must learn.
#![allow(clippy::unwrap_used)]

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use cxr_bundle::rel_l2;
use cxr_engine::{Engine, TractVit};
use cxr_model::{onnx, reference, VitSpec, Weights};
use cxr_trainer::groups::GroupedAdamW;
use cxr_trainer::loss::{multilabel_loss, LossKind};
use cxr_trainer::optim::{clip_global_norm, warmup_cosine};
use cxr_trainer::vit::BurnVit;

type B = NdArray<f32>;
type AB = Autodiff<NdArray<f32>>;

fn spec(labels: usize) -> VitSpec {
    VitSpec {
        image_size: 32,
        labels,
        ..VitSpec::tiny()
    }
}

fn images(n: usize, s: &VitSpec, seed: u64) -> Vec<f32> {
    let mut state = seed.max(1);
    (0..n * s.in_channels * s.image_size * s.image_size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn to_vec<const D: usize, BB: burn::tensor::backend::Backend>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn burn_forward_matches_the_reference_and_tract_after_export() {
    let s = spec(3);
    let w = Weights::random(&s, 11).unwrap();
    let device = Default::default();
    let model = BurnVit::<B>::from_weights(&w, &device).unwrap();
    let n = 2;
    let x = images(n, &s, 5);
    let per = s.in_channels * s.image_size * s.image_size;
    let input = Tensor::<B, 4>::from_data(
        TensorData::new(x.clone(), [n, s.in_channels, s.image_size, s.image_size]),
        &device,
    );
    let (logits, features) = model.forward(input);
    let (logits, features) = (to_vec(logits), to_vec(features));
    for i in 0..n {
        let r = reference::forward(&w, &x[i * per..(i + 1) * per]).unwrap();
        let l = rel_l2(&logits[i * 3..(i + 1) * 3], &r.logits);
        let f = rel_l2(&features[i * s.width..(i + 1) * s.width], &r.features);
        assert!(
            l < 1e-4 && f < 1e-4,
            "image {i}: logits {l:e}, features {f:e}"
        );
    }
    // Export: the weights come back bit-exact, and tract runs the ONNX.
    let back = model.to_weights().unwrap();
    for (name, _, data) in w.iter() {
        assert_eq!(back.get(name).unwrap(), data, "{name}");
    }
    let tract = TractVit::load(&onnx::write(&back).unwrap(), s, 1).unwrap();
    let out = tract.infer(&x, n).unwrap();
    let l = rel_l2(&out.logits, &logits);
    let f = rel_l2(&out.features, &features);
    assert!(
        l < 1e-4 && f < 1e-4,
        "tract vs burn: logits {l:e}, features {f:e}"
    );
}

#[test]
fn the_recipe_machinery_learns_a_separable_task_and_exports_what_it_learned() {
    let s = spec(2);
    let device = Default::default();
    let mut model = BurnVit::<AB>::from_weights(&Weights::random(&s, 3).unwrap(), &device).unwrap();
    // Label 0: the left half is brighter; label 1: the top half is brighter.
    let n = 16;
    let size = s.image_size;
    let mut x = images(n, &s, 9);
    let mut y = Vec::new();
    for i in 0..n {
        let (left, top) = (i % 2 == 0, (i / 2) % 2 == 0);
        for r in 0..size {
            for c in 0..size {
                let v = &mut x[i * size * size + r * size + c];
                if (c < size / 2) == left {
                    *v += 1.0;
                }
                if (r < size / 2) == top {
                    *v += 1.0;
                }
            }
        }
        y.extend([f32::from(u8::from(left)), f32::from(u8::from(top))]);
    }
    let batch =
        || Tensor::<AB, 4>::from_data(TensorData::new(x.clone(), [n, 1, size, size]), &device);
    let targets = Tensor::<AB, 2>::from_data(TensorData::new(y.clone(), [n, 2]), &device);
    let mask = targets.ones_like();
    let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
    let steps = 100;
    let mut losses = Vec::new();
    for step in 0..steps {
        let (logits, _) = model.forward(batch());
        let loss = multilabel_loss(LossKind::Bce, logits, targets.clone(), mask.clone(), None);
        losses.push(to_vec(loss.clone())[0]);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm::<AB, _>(&model, &mut grads, 1.0);
        assert!(norm.is_finite());
        let lr = warmup_cosine(step, 5, steps, 3e-3, 1e-5);
        model = optimizer.step(lr, model, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.3 * first, "loss {first} -> {last}");
    // What was learned exports: the reference forward of the exported
    // weights gives the burn model's logits.
    let trained = model.valid();
    let w = trained.to_weights().unwrap();
    let (logits, _) = trained.forward(Tensor::<B, 4>::from_data(
        TensorData::new(x.clone(), [n, 1, size, size]),
        &device,
    ));
    let logits = to_vec(logits);
    let r = reference::forward(&w, &x[..size * size]).unwrap();
    assert!(rel_l2(&logits[..2], &r.logits) < 1e-4);
}
