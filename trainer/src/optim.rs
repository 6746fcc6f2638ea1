//! Optimisation pieces burn lacks or does differently: a global-norm gradient
//! clip (burn's `Norm` clipping is per parameter), the warmup + cosine
//! schedule, an exponential moving average of the weights and stochastic
//! weight averaging. Parameter
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

/// `a * x + b * y`, tensor by tensor, for weights of one spec.
fn mix(
    x: &Weights,
    y: &Weights,
    a: f32,
    b: f32,
    what: &str,
) -> Result<Weights, crate::TrainerError> {
    let bad = |e: String| {
        crate::TrainerError::invalid(
            "weight average",
            format!("{what}: {e}"),
            "use weights of one spec",
        )
    };
    let mut named = std::collections::BTreeMap::new();
    for (name, shape, xs) in x.iter() {
        let ys = y.get(name).map_err(|e| bad(e.to_string()))?;
        let mixed: Vec<f32> = xs.iter().zip(ys).map(|(p, q)| a * p + b * q).collect();
        named.insert(name.to_owned(), (shape.to_vec(), mixed));
    }
    Weights::from_tensors(&x.spec, named).map_err(|e| bad(e.to_string()))
}

/// An exponential moving average of the weights, kept on the host. Copying
/// the model to the host is the cost, so a run may update it every k steps
/// only, with the decay of k steps (`decay^k`): the same time constant.
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
        self.update_after(current, 1)
    }

    /// The update for `steps` steps at once: `d = decay^steps`, then
    /// `ema = d * ema + (1 - d) * current`. With the weights unchanged over
    /// those steps it equals `steps` single updates.
    pub fn update_after(
        &mut self,
        current: &Weights,
        steps: usize,
    ) -> Result<(), crate::TrainerError> {
        let d = self.decay.powi(i32::try_from(steps).unwrap_or(i32::MAX));
        self.weights = mix(&self.weights, current, d, 1.0 - d, "EMA")?;
        Ok(())
    }
}

/// Stochastic weight averaging: the mean of the weights taken at the end of
/// each epoch from a start epoch on (ViT has no batch norm to refit).
#[derive(Debug, Clone)]
pub struct Swa {
    pub weights: Weights,
    /// How many snapshots the mean holds.
    pub models: usize,
}

impl Swa {
    pub fn new(first: Weights) -> Self {
        Swa {
            weights: first,
            models: 1,
        }
    }

    /// Add a snapshot: `mean += (w - mean) / (n + 1)`.
    pub fn add(&mut self, current: &Weights) -> Result<(), crate::TrainerError> {
        let n = self.models as f32;
        self.weights = mix(
            &self.weights,
            current,
            n / (n + 1.0),
            1.0 / (n + 1.0),
            "SWA",
        )?;
        self.models += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(value: f32) -> Weights {
        let spec = cxr_model::VitSpec::tiny();
        let w = Weights::random(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
        let named = w
            .iter()
            .map(|(n, s, v)| (n.to_owned(), (s.to_vec(), vec![value; v.len()])))
            .collect();
        Weights::from_tensors(&spec, named).unwrap_or_else(|e| panic!("{e}"))
    }

    fn first(w: &Weights) -> f32 {
        w.iter().next().map_or(f32::NAN, |(_, _, v)| v[0])
    }

    #[test]
    fn an_ema_every_k_steps_has_the_decay_of_k_steps() {
        let (start, current) = (constant(0.0), constant(1.0));
        let mut every_step = Ema::new(start.clone(), 0.9);
        for _ in 0..5 {
            every_step
                .update(&current)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut every_fifth = Ema::new(start, 0.9);
        every_fifth
            .update_after(&current, 5)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = 1.0 - 0.9f32.powi(5);
        assert!((first(&every_step.weights) - want).abs() < 1e-6);
        assert!((first(&every_fifth.weights) - want).abs() < 1e-6);
    }

    #[test]
    fn swa_is_the_mean_of_its_snapshots() {
        let mut swa = Swa::new(constant(1.0));
        swa.add(&constant(2.0)).unwrap_or_else(|e| panic!("{e}"));
        swa.add(&constant(6.0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swa.models, 3);
        assert!((first(&swa.weights) - 3.0).abs() < 1e-6);
        assert!(swa
            .weights
            .iter()
            .all(|(_, _, v)| v.iter().all(|x| (x - 3.0).abs() < 1e-5)));
    }

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
