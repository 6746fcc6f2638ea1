//! Separable resampling with a triangle (linear) filter. When shrinking with
//! antialiasing, the filter widens by the shrink factor, so every source pixel
//! contributes (as PIL's antialiased bilinear does); otherwise it is plain
//! bilinear interpolation. Pixel centres sit at `i + 0.5`.

/// Weights of the source pixels that make one output pixel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Taps {
    pub first: usize,
    pub weights: Vec<f32>,
}

/// Taps for resampling an axis of `src` pixels to `dst` pixels.
pub(crate) fn axis_taps(src: usize, dst: usize, antialias: bool) -> Vec<Taps> {
    let scale = src as f64 / dst as f64;
    let support = if antialias && scale > 1.0 { scale } else { 1.0 };
    (0..dst)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale - 0.5;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src - 1);
            let raw: Vec<f64> = (lo..=hi)
                .map(|j| (1.0 - (j as f64 - center).abs() / support).max(0.0))
                .collect();
            let sum: f64 = raw.iter().sum();
            Taps {
                first: lo,
                weights: raw.iter().map(|w| (w / sum) as f32).collect(),
            }
        })
        .collect()
}

/// Resize a row-major `[sh, sw]` image to `[dh, dw]`.
pub(crate) fn resize(
    src: &[f32],
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    antialias: bool,
) -> Vec<f32> {
    let htaps = axis_taps(sw, dw, antialias);
    let vtaps = axis_taps(sh, dh, antialias);
    let mut tmp = vec![0.0f32; sh * dw];
    for y in 0..sh {
        let row = &src[y * sw..(y + 1) * sw];
        for (x, t) in htaps.iter().enumerate() {
            tmp[y * dw + x] = t
                .weights
                .iter()
                .enumerate()
                .map(|(k, w)| w * row[t.first + k])
                .sum();
        }
    }
    let mut out = vec![0.0f32; dh * dw];
    for (y, t) in vtaps.iter().enumerate() {
        let dst = &mut out[y * dw..(y + 1) * dw];
        for (k, w) in t.weights.iter().enumerate() {
            let src_row = &tmp[(t.first + k) * dw..(t.first + k + 1) * dw];
            for (d, s) in dst.iter_mut().zip(src_row) {
                *d += w * s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_with_antialias_uses_a_wide_triangle() {
        // 4 -> 2: centre of output 0 is at source 0.5; support 2; in-range taps
        // j=0,1,2 with weights 0.75, 0.75, 0.25 (j=-1 is outside), normalised by 1.75.
        let taps = axis_taps(4, 2, true);
        assert_eq!(taps[0].first, 0);
        let w: Vec<f32> = taps[0].weights.iter().map(|w| w * 1.75).collect();
        assert!(
            (w[0] - 0.75).abs() < 1e-6 && (w[1] - 0.75).abs() < 1e-6 && (w[2] - 0.25).abs() < 1e-6,
            "{w:?}"
        );
        // Row [0, 4, 8, 12] -> [(0*.75 + 4*.75 + 8*.25)/1.75, (4*.25 + 8*.75 + 12*.75)/1.75]
        let out = resize(&[0.0, 4.0, 8.0, 12.0], 1, 4, 1, 2, true);
        assert!((out[0] - 5.0 / 1.75).abs() < 1e-5, "{out:?}");
        assert!((out[1] - 16.0 / 1.75).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn halving_without_antialias_is_bilinear() {
        // Centres at 0.5 and 2.5: the mean of the two neighbours.
        let out = resize(&[0.0, 4.0, 8.0, 12.0], 1, 4, 1, 2, false);
        assert_eq!(out, vec![2.0, 10.0]);
    }

    #[test]
    fn same_size_is_identity_and_constants_stay_constant() {
        let img: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize(&img, 3, 4, 3, 4, true), img);
        let flat = vec![7.0f32; 30 * 20];
        assert!(resize(&flat, 30, 20, 7, 11, true)
            .iter()
            .all(|v| (v - 7.0).abs() < 1e-4));
    }
}
