//! The model on batches: predictions without gradients, and one
//! optimisation step (gradient accumulation in micro-batches, the clip,
//! AdamW) with the replica it runs on.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use cxr_model::{VitSpec, Weights};

use crate::config::TrainConfig;
use crate::groups::GroupedAdamW;
use crate::loader::Loader;
use crate::loss::{multilabel_loss, LossKind};
use crate::optim::clip_global_norm;
use crate::vit::{BurnVit, Precision};
use crate::TrainerError;

/// Logits and pooled features `[n, labels]`, `[n, width]` of a model on
/// loaded examples, in chunks, without gradients.
pub fn predict<B: Backend>(
    model: &BurnVit<B>,
    loader: &Loader,
    indices: &[usize],
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>), TrainerError> {
    let s = model.spec();
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    for chunk in indices.chunks(64) {
        let b = loader.batch(chunk, None, 0)?;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(
                b.images,
                [chunk.len(), s.in_channels, s.image_size, s.image_size],
            ),
            device,
        );
        let (l, f) = model.forward(x);
        logits.extend(to_vec(l)?);
        features.extend(to_vec(f)?);
    }
    Ok((logits, features))
}

pub(crate) fn to_vec<B: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<Vec<f32>, TrainerError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainerError::invalid("tensor", format!("{e:?}"), "report this bug"))
}

/// The model to train from `weights` on `device`, in the config's
/// precision; a precision the backend cannot compute in is refused.
pub(crate) fn replica<AB: AutodiffBackend>(
    weights: &Weights,
    config: &TrainConfig,
    device: &AB::Device,
) -> Result<BurnVit<AB>, TrainerError> {
    check_precision::<AB>(config, device)?;
    Ok(BurnVit::from_weights(weights, device)?.with_precision(config.optim.precision))
}

/// The config's precision must be one the backend computes in.
pub(crate) fn check_precision<AB: AutodiffBackend>(
    config: &TrainConfig,
    device: &AB::Device,
) -> Result<(), TrainerError> {
    if config.optim.precision == Precision::Bf16
        && !AB::supports_dtype(device, burn::tensor::DType::BF16)
    {
        return Err(TrainerError::invalid(
            "optim.precision",
            format!("bf16 on a backend without bf16 ({})", AB::name(device)),
            "train with --backend cuda (or flex on the CPU), or set precision = \"f32\"",
        ));
    }
    Ok(())
}

/// What one optimisation step works on.
#[derive(Debug)]
pub struct StepInput<'t, B: Backend> {
    pub batch: crate::loader::Batch,
    pub spec: VitSpec,
    pub loss: LossKind,
    pub pos_weight: Option<&'t Tensor<B, 1>>,
    /// Micro-batches (gradient accumulation); 1 is the whole batch at once.
    pub accumulate: usize,
    pub clip_norm: f64,
    pub lr: f64,
}

/// One step: the loss and gradients of the whole batch, in `accumulate`
/// micro-batches whose losses are weighted by their share of the batch's
/// defined labels (the loss is a mean over them), so that the summed
/// gradients are the whole batch's; then the global-norm clip and AdamW.
/// Returns the new model, the batch's loss and the norm before clipping.
pub fn optimisation_step<AB: AutodiffBackend>(
    model: BurnVit<AB>,
    optimizer: &mut GroupedAdamW<AB>,
    input: StepInput<'_, AB>,
    device: &AB::Device,
) -> Result<(BurnVit<AB>, f64, f64), TrainerError> {
    let defined = input.batch.mask.iter().sum::<f32>().max(1.0);
    let (mut grads, loss) = batch_gradients(&model, &input, defined, device)?;
    let norm = clip_global_norm::<AB, _>(&model, &mut grads, input.clip_norm);
    let model = optimizer.step(input.lr, model, grads);
    Ok((model, loss, norm))
}

/// The gradients of `input`'s batch, in `accumulate` micro-batches, each
/// micro-batch's loss weighted by its defined labels over `defined` (the
/// labels defined in the whole step's batch, which a data-parallel worker
/// holds only part of), and the weighted loss.
pub(crate) fn batch_gradients<AB: AutodiffBackend>(
    model: &BurnVit<AB>,
    input: &StepInput<'_, AB>,
    defined: f32,
    device: &AB::Device,
) -> Result<(GradientsParams, f64), TrainerError> {
    let (b, s) = (&input.batch, input.spec);
    let pixels = s.in_channels * s.image_size * s.image_size;
    if b.images.len() != b.size * pixels
        || b.targets.len() != b.size * s.labels
        || b.mask.len() != b.size * s.labels
    {
        return Err(TrainerError::invalid(
            "batch",
            format!(
                "{} images in {} pixel values, {} targets and {} mask values for {} labels",
                b.size,
                b.images.len(),
                b.targets.len(),
                b.mask.len(),
                s.labels
            ),
            "report this bug: a batch's arrays must match its size",
        ));
    }
    let micro = b.size.div_ceil(input.accumulate.max(1)).max(1);
    let whole = micro >= b.size && b.mask.iter().sum::<f32>().max(1.0) == defined;
    let mut accumulator = GradientsAccumulator::<BurnVit<AB>>::new();
    let mut loss_value = 0.0;
    for start in (0..b.size).step_by(micro) {
        let n = micro.min(b.size - start);
        let rows = |v: &[f32], width: usize| v[start * width..(start + n) * width].to_vec();
        let x = Tensor::<AB, 4>::from_data(
            TensorData::new(
                rows(&b.images, pixels),
                [n, s.in_channels, s.image_size, s.image_size],
            ),
            device,
        );
        let y = Tensor::<AB, 2>::from_data(
            TensorData::new(rows(&b.targets, s.labels), [n, s.labels]),
            device,
        );
        let mask = rows(&b.mask, s.labels);
        let share = mask.iter().sum::<f32>().max(1.0) / defined;
        let m = Tensor::<AB, 2>::from_data(TensorData::new(mask, [n, s.labels]), device);
        // Each micro-batch runs on fresh leaves (same parameter ids, no data
        // copied): burn-autodiff 0.21 forgets the leaves a backward pass
        // used, and another thread's backward can then sweep the half-built
        // graph of a leaf reused after one, silently dropping its gradient
        // (the next micro-batch, or a step after a skipped update; the other
        // thread a data-parallel worker or any training in the process).
        let model = &model.clone().fork(device);
        let (logits, _) = model.forward(x);
        let mut loss = multilabel_loss(input.loss, logits, y, m, input.pos_weight.cloned());
        if !whole {
            loss = loss.mul_scalar(share);
        }
        loss_value += f64::from(to_vec(loss.clone())?.first().copied().unwrap_or(f32::NAN));
        accumulator.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    Ok((accumulator.grads(), loss_value))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::Rng;
    use burn::module::AutodiffModule;

    pub(crate) fn tiny_batch(size: usize, spec: VitSpec) -> crate::loader::Batch {
        let mut rng = Rng::new(7);
        let pixels = spec.in_channels * spec.image_size * spec.image_size;
        let images = (0..size * pixels)
            .map(|_| rng.uniform() as f32 - 0.5)
            .collect();
        let targets = (0..size * spec.labels)
            .map(|i| (i % 3 == 0) as u8 as f32)
            .collect();
        // Some labels undefined, unevenly across the batch, and the second
        // image with none defined at all.
        let mask = (0..size * spec.labels)
            .map(|i| (i % 7 != 0 && i > 2 && i / spec.labels != 1) as u8 as f32)
            .collect();
        crate::loader::Batch {
            size,
            images,
            targets,
            mask,
        }
    }

    /// The tests' step on a batch of the tiny model: BCE, an active clip
    /// (0.5), lr 1e-3, in `accumulate` micro-batches.
    pub(crate) fn tiny_step<'t, B: Backend>(
        batch: crate::loader::Batch,
        accumulate: usize,
    ) -> StepInput<'t, B> {
        StepInput {
            batch,
            spec: VitSpec::tiny(),
            loss: LossKind::Bce,
            pos_weight: None,
            accumulate,
            clip_norm: 0.5,
            lr: 1e-3,
        }
    }

    /// Two steps on one batch, whole or in `accumulate` micro-batches.
    fn weights_after_steps(accumulate: usize) -> (Vec<f32>, Vec<f64>) {
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        steps_in::<AB>(Precision::F32, accumulate, 2)
    }

    /// The weights after `steps` steps in `precision` with `accumulate`
    /// micro-batches on backend `AB`, and the losses.
    fn steps_in<AB: AutodiffBackend>(
        precision: Precision,
        accumulate: usize,
        steps: usize,
    ) -> (Vec<f32>, Vec<f64>) {
        let spec = VitSpec::tiny();
        let device = Default::default();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let mut model = BurnVit::<AB>::from_weights(&init, &device)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_precision(precision);
        let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
        let mut losses = Vec::new();
        for step in 0..steps {
            let input = tiny_step(tiny_batch(6 + step, spec), accumulate);
            let (m, loss, _) = optimisation_step(model, &mut optimizer, input, &device)
                .unwrap_or_else(|e| panic!("{e}"));
            model = m;
            losses.push(loss);
        }
        let w = model.valid().to_weights().unwrap_or_else(|e| panic!("{e}"));
        (w.iter().flat_map(|(_, _, v)| v.to_vec()).collect(), losses)
    }

    /// bf16 mixed precision on burn's Flex backend (the CPU backend with
    /// bf16) tracks f32 training on the same backend over a few steps: the
    /// weights within rel L2 2e-3, each step's loss within 1e-3 (measured:
    /// 2.7e-4 and 4.9e-5); and it is not f32 in disguise (the weights
    /// differ).
    #[test]
    fn bf16_mixed_precision_tracks_f32_training() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let (f32_weights, f32_loss) = steps_in::<AB>(Precision::F32, 1, 5);
        let (bf16_weights, bf16_loss) = steps_in::<AB>(Precision::Bf16, 1, 5);
        let gap = cxr_bundle::rel_l2(&f32_weights, &bf16_weights);
        let loss_gap = f32_loss
            .iter()
            .zip(&bf16_loss)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "bf16 vs f32 after 5 steps: weights rel L2 {gap:.3e}, largest loss gap {loss_gap:.3e}"
        );
        assert!(gap < 2e-3, "bf16 vs f32 weights: rel L2 {gap:.3e}");
        assert!(gap > 1e-7, "bf16 gave the f32 weights exactly: no cast ran");
        for (a, b) in f32_loss.iter().zip(&bf16_loss) {
            assert!((a - b).abs() < 1e-3, "loss f32 {a} vs bf16 {b}");
        }
        // The same model in f32 on ndarray gives Flex's f32 result.
        type Nd = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let (nd_weights, _) = steps_in::<Nd>(Precision::F32, 1, 5);
        assert!(cxr_bundle::rel_l2(&nd_weights, &f32_weights) < 1e-5);
    }

    #[test]
    fn bf16_is_refused_on_a_backend_without_it() {
        type Nd = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let mut config: TrainConfig = toml::from_str(include_str!("../configs/demo-nih.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let w = Weights::random(&config.model, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(replica::<Nd>(&w, &config, &Default::default()).is_ok());
        config.optim.precision = Precision::Bf16;
        let e = replica::<Nd>(&w, &config, &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("bf16 on a backend without bf16"), "{e}");
    }

    /// Regression: burn-autodiff 0.21 forgets the leaves a backward pass
    /// used, and a backward pass on another thread could then sweep the
    /// half-built graph of a leaf reused by the next micro-batch, silently
    /// dropping part of its gradient (seen as a two-worker run drifting
    /// from the one-worker run under load). With other threads running
    /// backward passes throughout, accumulated steps stay those of a quiet
    /// run, bit for bit.
    #[test]
    fn micro_batches_keep_their_gradients_while_other_threads_run_backward() {
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let quiet = steps_in::<AB>(Precision::F32, 3, 2);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let device = Default::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let x = Tensor::<AB, 1>::ones([64], &device).require_grad();
                        let _ = x.sum().backward();
                    }
                });
            }
            let busy: Vec<_> = (0..12)
                .map(|_| steps_in::<AB>(Precision::F32, 3, 2))
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for (round, run) in busy.iter().enumerate() {
                assert!(
                    run == &quiet,
                    "round {round}: steps beside other backward passes differ from the quiet run"
                );
            }
        });
    }

    #[test]
    fn gradient_accumulation_matches_the_whole_batch() {
        let (whole, whole_loss) = weights_after_steps(1);
        let (micro, micro_loss) = weights_after_steps(3);
        let gap = cxr_bundle::rel_l2(&whole, &micro);
        assert!(gap < 1e-5, "whole vs 3 micro-batches: rel L2 {gap:.3e}");
        for (a, b) in whole_loss.iter().zip(&micro_loss) {
            assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        }
        // One image per micro-batch, some with no defined label at all.
        let (singles, _) = weights_after_steps(6);
        assert!(cxr_bundle::rel_l2(&whole, &singles) < 1e-5);
    }
}
