//! Optimisation pieces burn lacks or does differently: a global-norm gradient
//! clip (burn's `Norm` clipping is per parameter), the warmup + cosine
//! schedule, and an exponential moving average of the weights. Parameter
//! groups (decay, layer-wise learning rates) are in [`crate::groups`].

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use cxr_model::Weights;

/// Learning rate at `step`: linear warmup from 0 over `warmup` steps, then
/// cosine decay to `min_lr` at `total`.
pub fn warmup_cosine(step: usize, warmup: usize, total: usize, peak: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    min_lr + 0.5 * (peak - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f32 = g.powi_scalar(2).sum().into_scalar().elem();
            self.total += f64::from(s);
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// Scale all gradients together so that their global L2 norm is at most
/// `max_norm`; returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut n = SquaredNorm::<B> {
        grads,
        total: 0.0,
        _b: std::marker::PhantomData,
    };
    module.visit(&mut n);
    let norm = n.total.sqrt();
    if norm > max_norm && norm.is_finite() {
        let mut s = Scale::<B> {
            grads,
            factor: max_norm / (norm + 1e-6),
            _b: std::marker::PhantomData,
        };
        module.visit(&mut s);
    }
    norm
}

/// An exponential moving average of the weights, kept on the host.
#[derive(Debug, Clone)]
pub struct Ema {
    pub weights: Weights,
    pub decay: f32,
}

impl Ema {
    pub fn new(initial: Weights, decay: f32) -> Self {
        Ema {
            weights: initial,
            decay,
        }
    }

    /// `ema = decay * ema + (1 - decay) * current`.
    pub fn update(&mut self, current: &Weights) -> Result<(), crate::TrainerError> {
        let d = self.decay;
        let mut named = std::collections::BTreeMap::new();
        for (name, shape, old) in self.weights.iter() {
            let new = current.get(name).map_err(|e| {
                crate::TrainerError::invalid("EMA", e.to_string(), "use weights of one spec")
            })?;
            let mixed: Vec<f32> = old
                .iter()
                .zip(new)
                .map(|(o, n)| d * o + (1.0 - d) * n)
                .collect();
            named.insert(name.to_owned(), (shape.to_vec(), mixed));
        }
        self.weights = Weights::from_tensors(&self.weights.spec, named).map_err(|e| {
            crate::TrainerError::invalid("EMA", e.to_string(), "use weights of one spec")
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s| warmup_cosine(s, 10, 110, 1e-3, 1e-5);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-9);
        assert!((lr(110) - 1e-5).abs() < 1e-12);
        assert!((lr(500) - 1e-5).abs() < 1e-12);
        assert!((1..110).all(|s| lr(s) <= 1e-3 + 1e-12));
    }
}
