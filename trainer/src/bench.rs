//! Training throughput on synthetic data: whole optimisation steps (the
//! training loop's own step: forward, loss, backward, global-norm clip,
//! grouped AdamW, and the EMA every `ema_every` steps) of a model spec at a
//! batch size, and a forward-only baseline of the same model measured in the
//! same run, so machines can be compared by ratio. Used by
//! `cxr-trainer bench-step` (CPU or `--features cuda`) and `benches/`.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cxr_model::{VitSpec, Weights};
use serde::Serialize;

use crate::forward::{optimisation_step, StepInput};
use crate::groups::GroupedAdamW;
use crate::loader::Batch;
use crate::loss::LossKind;
use crate::optim::Ema;
use crate::rng::Rng;
use crate::vit::{BurnVit, Precision};
use crate::TrainerError;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTiming {
    pub backend: String,
    pub image_size: usize,
    pub width: usize,
    pub depth: usize,
    pub batch: usize,
    pub steps: usize,
    /// The EMA took the weights every this many steps (in the timing).
    pub ema_every: usize,
    /// The products' precision in the training step (the forward baseline
    /// is f32).
    pub precision: Precision,
    /// Mean over the timed steps (after one warm-up step): a mean, so
    /// that an EMA taken every k steps counts in full.
    pub ms_per_step: f64,
    pub images_per_second: f64,
    /// Median forward pass alone (no autodiff), same batch.
    pub forward_ms: f64,
    /// `ms_per_step / forward_ms`: a machine-independent shape of the cost.
    pub step_over_forward: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn sync<B: Backend>(device: &B::Device) -> Result<(), TrainerError> {
    B::sync(device).map_err(|e| {
        TrainerError::invalid("device", format!("{e:?}"), "check the GPU and its driver")
    })
}

/// Time `steps` training steps (plus one warm-up) and as many forwards.
pub fn time_train_steps<AB: AutodiffBackend>(
    backend: &str,
    spec: VitSpec,
    (batch, steps, ema_every, precision): (usize, usize, usize, Precision),
    device: &AB::Device,
) -> Result<StepTiming, TrainerError> {
    if batch == 0 || steps == 0 || ema_every == 0 {
        return Err(TrainerError::invalid(
            "bench",
            format!("batch {batch}, steps {steps}"),
            "use at least one image, one step and an EMA every step or more",
        ));
    }
    let weights = Weights::random(&spec, 1)
        .map_err(|e| TrainerError::invalid("model", e.to_string(), "use a valid spec"))?;
    if precision == Precision::Bf16 && !AB::supports_dtype(device, burn::tensor::DType::BF16) {
        return Err(TrainerError::invalid(
            "bench",
            format!("bf16 on {}", AB::name(device)),
            "time bf16 on --backend cuda or flex",
        ));
    }
    let mut model = BurnVit::<AB>::from_weights(&weights, device)?.with_precision(precision);
    let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
    let mut ema = Ema::new(weights, 0.999);
    let mut rng = Rng::new(7);
    let pixels = batch * spec.in_channels * spec.image_size * spec.image_size;
    let x: Vec<f32> = (0..pixels).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..batch * spec.labels)
        .map(|_| f32::from(u8::from(rng.uniform() < 0.2)))
        .collect();
    let dims = [batch, spec.in_channels, spec.image_size, spec.image_size];
    let mut step_ms = Vec::with_capacity(steps);
    for k in 0..=steps {
        let t = Instant::now();
        let input = StepInput {
            batch: Batch {
                size: batch,
                images: x.clone(),
                targets: y.clone(),
                mask: vec![1.0; y.len()],
            },
            spec,
            loss: LossKind::Bce,
            pos_weight: None,
            accumulate: 1,
            clip_norm: 1.0,
            lr: 1e-4,
        };
        let (stepped, _, _) = optimisation_step(model, &mut optimizer, input, device)?;
        model = stepped;
        if (k + 1) % ema_every == 0 {
            ema.update_after(&model.valid().to_weights()?, ema_every)?;
        }
        sync::<AB>(device)?;
        if k > 0 {
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let inner = model.valid();
    let dev = device.clone();
    let mut forward_ms = Vec::with_capacity(steps);
    for k in 0..=steps {
        let t = Instant::now();
        let images =
            Tensor::<AB::InnerBackend, 4>::from_data(TensorData::new(x.clone(), dims), &dev);
        let (logits, _) = inner.forward(images);
        let _ = logits.into_data();
        if k > 0 {
            forward_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let ms = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let fwd = median(forward_ms);
    Ok(StepTiming {
        backend: backend.to_owned(),
        image_size: spec.image_size,
        width: spec.width,
        depth: spec.depth,
        batch,
        steps,
        ema_every,
        precision,
        ms_per_step: ms,
        images_per_second: batch as f64 * 1e3 / ms,
        forward_ms: fwd,
        step_over_forward: ms / fwd,
    })
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;

    #[test]
    fn timing_reports_consistent_rates_and_refuses_empty_runs() {
        let spec = VitSpec {
            image_size: 32,
            patch: 8,
            width: 16,
            depth: 1,
            heads: 2,
            ..VitSpec::tiny()
        };
        let t = time_train_steps::<Autodiff<NdArray<f32>>>(
            "ndarray",
            spec,
            (2, 2, 1, Precision::F32),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(t.ms_per_step > 0.0 && t.forward_ms > 0.0);
        assert!((t.images_per_second - 2e3 / t.ms_per_step).abs() < 1e-9);
        assert!(time_train_steps::<Autodiff<NdArray<f32>>>(
            "ndarray",
            spec,
            (0, 2, 1, Precision::F32),
            &Default::default()
        )
        .is_err());
    }
}
