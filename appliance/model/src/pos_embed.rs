//! Position embeddings at another resolution: the patch grid part is
//! resampled bilinearly (half-pixel centres), the CLS position is kept.
//! timm resamples bicubically, so a checkpoint moved to a new size here
//! differs slightly from timm's; fine-tuning at the target size absorbs it.

use crate::ModelError;

/// Resample `[1, 1 + g*g, D]` to `[1, 1 + new_grid^2, D]`.
pub fn resample_pos_embed(
    data: &[f32],
    shape: &[usize],
    new_grid: usize,
) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
    let bad = |reason: String| ModelError::WeightShape {
        name: format!("pos_embed ({reason})"),
        expected: vec![1, 1 + new_grid * new_grid, 0],
        got: shape.to_vec(),
    };
    let [1, tokens, d] = shape[..] else {
        return Err(bad("not [1, T, D]".into()));
    };
    let g = (tokens.saturating_sub(1) as f64).sqrt().round() as usize;
    if g == 0 || g * g + 1 != tokens || data.len() != tokens * d || new_grid == 0 {
        return Err(bad(format!("{tokens} tokens is not 1 + a square grid")));
    }
    let mut out = Vec::with_capacity((1 + new_grid * new_grid) * d);
    out.extend_from_slice(&data[..d]);
    let scale = g as f64 / new_grid as f64;
    let at = |y: usize, x: usize, c: usize| data[(1 + y * g + x) * d + c];
    for y in 0..new_grid {
        let sy = ((y as f64 + 0.5) * scale - 0.5).clamp(0.0, (g - 1) as f64);
        let (y0, fy) = (sy.floor() as usize, sy - sy.floor());
        let y1 = (y0 + 1).min(g - 1);
        for x in 0..new_grid {
            let sx = ((x as f64 + 0.5) * scale - 0.5).clamp(0.0, (g - 1) as f64);
            let (x0, fx) = (sx.floor() as usize, sx - sx.floor());
            let x1 = (x0 + 1).min(g - 1);
            for c in 0..d {
                let top = f64::from(at(y0, x0, c)) * (1.0 - fx) + f64::from(at(y0, x1, c)) * fx;
                let bottom = f64::from(at(y1, x0, c)) * (1.0 - fx) + f64::from(at(y1, x1, c)) * fx;
                out.push((top * (1.0 - fy) + bottom * fy) as f32);
            }
        }
    }
    Ok((out, vec![1, 1 + new_grid * new_grid, d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_grid_is_identity_and_constants_stay_constant() {
        let data: Vec<f32> = (0..(1 + 4) * 3).map(|v| v as f32).collect();
        let (same, shape) = resample_pos_embed(&data, &[1, 5, 3], 2).unwrap();
        assert_eq!((same, shape), (data, vec![1, 5, 3]));
        let flat = vec![2.5f32; 10 * 2];
        let (up, shape) = resample_pos_embed(&flat, &[1, 10, 2], 5).unwrap();
        assert_eq!(shape, vec![1, 26, 2]);
        assert!(up.iter().all(|v| (v - 2.5).abs() < 1e-6));
        assert!(resample_pos_embed(&flat, &[1, 11, 2], 5).is_err());
    }

    #[test]
    fn a_linear_ramp_stays_linear_inside() {
        // 1 + 2x2 grid, one channel, value = column: [cls, 0, 1, 0, 1] -> 4x4.
        let (up, _) = resample_pos_embed(&[9.0, 0.0, 1.0, 0.0, 1.0], &[1, 5, 1], 4).unwrap();
        assert_eq!(up[0], 9.0);
        assert_eq!(&up[1..5], &[0.0, 0.25, 0.75, 1.0]);
    }
}
