//! Fitting the content gate: principal components of frontal thumbnails,
//! then a two-layer MLP head on the gate's features (softmax cross-entropy,
//! class-balanced, Adam), all in plain f32/f64 with a seeded generator.

use cxr_model::gate::{orthonormalise_rows, project, CONTENT_CLASSES};
use cxr_model::{GateSpec, GateWeights};

use crate::rng::Rng;
use crate::TrainerError;

/// Mean `[p]`, orthonormal basis `[k, p]` (rows) and eigenvalues `[k]` of
/// the rows of `x` (`[n, p]`), by subspace iteration on the covariance.
///
/// `x` must hold at least one row (the caller checks).
pub fn principal_components(x: &[Vec<f32>], k: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, p) = (x.len(), x.first().map_or(0, Vec::len));
    let mut mean = vec![0f64; p];
    for row in x {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; p * p];
    let mut centred = vec![0f64; p];
    for row in x {
        for j in 0..p {
            centred[j] = f64::from(row[j]) - mean[j];
        }
        for i in 0..p {
            let ci = centred[i];
            let line = &mut cov[i * p..(i + 1) * p];
            for (c, cj) in line.iter_mut().zip(&centred) {
                *c += ci * cj;
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= n as f64);
    let mut rng = Rng::new(seed);
    let mut basis: Vec<f32> = (0..k * p).map(|_| rng.normal() as f32).collect();
    orthonormalise_rows(&mut basis, k, p);
    let mut eigen = vec![0f32; k];
    for _ in 0..80 {
        let mut next = vec![0f32; k * p];
        for r in 0..k {
            let v = &basis[r * p..(r + 1) * p];
            for i in 0..p {
                let line = &cov[i * p..(i + 1) * p];
                next[r * p + i] = line
                    .iter()
                    .zip(v)
                    .map(|(c, b)| c * f64::from(*b))
                    .sum::<f64>() as f32;
            }
        }
        orthonormalise_rows(&mut next, k, p);
        basis = next;
    }
    // The eigenvalues of the basis returned: v^T C v for each row.
    for (r, e) in eigen.iter_mut().enumerate() {
        let v = &basis[r * p..(r + 1) * p];
        *e = (0..p)
            .map(|i| {
                let cv: f64 = cov[i * p..(i + 1) * p]
                    .iter()
                    .zip(v)
                    .map(|(c, b)| c * f64::from(*b))
                    .sum();
                f64::from(v[i]) * cv
            })
            .sum::<f64>() as f32;
    }
    (mean.iter().map(|m| *m as f32).collect(), basis, eigen)
}

/// Per-feature mean and inverse standard deviation (floored).
pub fn standardiser(features: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let (n, f) = (features.len() as f64, features.first().map_or(0, Vec::len));
    let mut mean = vec![0f64; f];
    for row in features {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n;
        }
    }
    let mut var = vec![0f64; f];
    for row in features {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    (
        mean.iter().map(|m| *m as f32).collect(),
        var.iter()
            .map(|v| (1.0 / v.sqrt().max(1e-3)) as f32)
            .collect(),
    )
}

/// The head's weights `[fc1.weight, fc1.bias, fc2.weight, fc2.bias]`.
pub struct Head {
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32, t: i32, decay: f32) {
        let (b1, b2) = (0.9f32, 0.999f32);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= lr * (self.m[i] / c1 / ((self.v[i] / c2).sqrt() + 1e-8) + decay * w[i]);
        }
    }
}

/// Train the head on standardised features `x` with classes `y`, each class
/// weighted by the inverse of its count. Returns the head and the final
/// mean training loss.
pub fn train_head(
    x: &[Vec<f32>],
    y: &[usize],
    hidden: usize,
    steps: usize,
    seed: u64,
) -> Result<(Head, f32), TrainerError> {
    let (n, c) = (x.len(), CONTENT_CLASSES.len());
    let f = x.first().map_or(0, Vec::len);
    let mut counts = vec![0usize; c];
    y.iter().for_each(|&k| counts[k] += 1);
    if let Some(k) = counts.iter().position(|&k| k == 0) {
        return Err(TrainerError::invalid(
            "content gate data",
            format!("no training example of class {}", CONTENT_CLASSES[k]),
            "give the gate examples of every class (see trainer/demo/README.md)",
        ));
    }
    let class_weight: Vec<f32> = counts.iter().map(|&k| n as f32 / (c * k) as f32).collect();
    let mut rng = Rng::new(seed);
    let mut head = Head {
        w1: (0..hidden * f)
            .map(|_| (rng.normal() * (2.0 / f as f64).sqrt()) as f32)
            .collect(),
        b1: vec![0.0; hidden],
        w2: (0..c * hidden)
            .map(|_| (rng.normal() * (1.0 / hidden as f64).sqrt()) as f32)
            .collect(),
        b2: vec![0.0; c],
    };
    let mut opt = [
        Adam::new(head.w1.len()),
        Adam::new(hidden),
        Adam::new(head.w2.len()),
        Adam::new(c),
    ];
    let batch = 256.min(n);
    let mut last = f32::NAN;
    for t in 1..=steps {
        let lr = 3e-3
            * (0.5 * (1.0 + (std::f64::consts::PI * t as f64 / steps as f64).cos())) as f32
            + 1e-4;
        let mut g = Head {
            w1: vec![0.0; head.w1.len()],
            b1: vec![0.0; hidden],
            w2: vec![0.0; head.w2.len()],
            b2: vec![0.0; c],
        };
        let mut loss = 0f32;
        for _ in 0..batch {
            let i = rng.below(n);
            loss += accumulate(&head, &x[i], y[i], class_weight[y[i]], &mut g, f, hidden);
        }
        let scale = 1.0 / batch as f32;
        for v in [&mut g.w1, &mut g.b1, &mut g.w2, &mut g.b2] {
            v.iter_mut().for_each(|x| *x *= scale);
        }
        opt[0].step(&mut head.w1, &g.w1, lr, t as i32, 1e-4);
        opt[1].step(&mut head.b1, &g.b1, lr, t as i32, 0.0);
        opt[2].step(&mut head.w2, &g.w2, lr, t as i32, 1e-4);
        opt[3].step(&mut head.b2, &g.b2, lr, t as i32, 0.0);
        let step_loss = loss * scale;
        last = if last.is_nan() {
            step_loss
        } else {
            0.95 * last + 0.05 * step_loss
        };
    }
    Ok((head, last))
}

/// Forward and backward for one example; adds its gradients to `g` and
/// returns its weighted loss.
fn accumulate(
    h: &Head,
    x: &[f32],
    y: usize,
    weight: f32,
    g: &mut Head,
    f: usize,
    hidden: usize,
) -> f32 {
    let c = h.b2.len();
    let z1: Vec<f32> = (0..hidden)
        .map(|o| {
            h.b1[o]
                + h.w1[o * f..(o + 1) * f]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
        })
        .collect();
    let a1: Vec<f32> = z1.iter().map(|v| v.max(0.0)).collect();
    let z2: Vec<f32> = (0..c)
        .map(|o| {
            h.b2[o]
                + h.w2[o * hidden..(o + 1) * hidden]
                    .iter()
                    .zip(&a1)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
        })
        .collect();
    let max = z2.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = z2.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let dz2: Vec<f32> = (0..c)
        .map(|o| weight * (exp[o] / sum - f32::from(u8::from(o == y))))
        .collect();
    let mut da1 = vec![0f32; hidden];
    for (o, d) in dz2.iter().enumerate() {
        g.b2[o] += d;
        for j in 0..hidden {
            g.w2[o * hidden + j] += d * a1[j];
            da1[j] += d * h.w2[o * hidden + j];
        }
    }
    for j in 0..hidden {
        if z1[j] <= 0.0 {
            continue;
        }
        g.b1[j] += da1[j];
        let row = &mut g.w1[j * f..(j + 1) * f];
        for (w, xi) in row.iter_mut().zip(x) {
            *w += da1[j] * xi;
        }
    }
    -weight * ((exp[y] / sum).max(1e-12)).ln()
}

/// The gate's weights from its fitted parts.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    spec: &GateSpec,
    mean: Vec<f32>,
    basis: Vec<f32>,
    eigen: &[f32],
    inv_residual: f32,
    feat: (Vec<f32>, Vec<f32>),
    head: Head,
) -> Result<GateWeights, TrainerError> {
    let inv_sd = eigen.iter().map(|l| 1.0 / l.max(1e-8).sqrt()).collect();
    GateWeights::from_parts(
        spec,
        vec![
            mean,
            basis,
            inv_sd,
            vec![inv_residual],
            feat.0,
            feat.1,
            head.w1,
            head.b1,
            head.w2,
            head.b2,
        ],
    )
    .map_err(|e| TrainerError::invalid("content gate", e.to_string(), "report this fit"))
}

/// Mean residual of thumbnails outside the components' span.
pub fn mean_residual(thumbs: &[Vec<f32>], mean: &[f32], basis: &[f32], k: usize) -> f32 {
    let total: f64 = thumbs
        .iter()
        .map(|t| f64::from(project(t, mean, basis, k).1))
        .sum();
    (total / thumbs.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_find_the_direction_of_largest_spread() {
        let mut rng = Rng::new(4);
        let x: Vec<Vec<f32>> = (0..400)
            .map(|_| {
                let a = rng.normal() as f32 * 3.0;
                let b = rng.normal() as f32 * 0.5;
                vec![a, a, b, 0.1 * rng.normal() as f32]
            })
            .collect();
        let (_, basis, eigen) = principal_components(&x, 2, 1);
        let first = &basis[..4];
        assert!(
            (first[0].abs() - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.02
                && (first[0] - first[1]).abs() < 0.02,
            "{first:?}"
        );
        assert!(eigen[0] > 15.0 && eigen[1] < 0.4, "{eigen:?}");
    }

    #[test]
    fn the_head_learns_separable_classes() {
        let mut rng = Rng::new(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..400 {
            let k = i % 4;
            let mut v = vec![0f32; 6];
            v[k] = 2.0;
            v.iter_mut().for_each(|e| *e += 0.3 * rng.normal() as f32);
            x.push(v);
            y.push(k);
        }
        let (head, loss) = train_head(&x, &y, 8, 300, 2).unwrap();
        assert!(loss < 0.2, "loss {loss}");
        let right = x
            .iter()
            .zip(&y)
            .filter(|(v, k)| {
                let hidden: Vec<f32> = (0..8)
                    .map(|o| {
                        (head.b1[o] + (0..6).map(|i| head.w1[o * 6 + i] * v[i]).sum::<f32>())
                            .max(0.0)
                    })
                    .collect();
                let logits: Vec<f32> = (0..4)
                    .map(|o| {
                        head.b2[o] + (0..8).map(|j| head.w2[o * 8 + j] * hidden[j]).sum::<f32>()
                    })
                    .collect();
                let best = (0..4)
                    .max_by(|a, b| logits[*a].total_cmp(&logits[*b]))
                    .unwrap_or(0);
                best == **k
            })
            .count();
        assert!(right >= 390, "{right} of 400 right");
        assert_eq!(head.b2.len(), 4);
        let missing: Vec<usize> = y.iter().map(|&k| k.min(2)).collect();
        assert!(
            train_head(&x, &missing, 8, 10, 2).is_err(),
            "a class without examples is refused"
        );
    }
}
