use serde::{Deserialize, Serialize};

use crate::prepare::round_to_element;
use crate::ModelInput;

/// One test-time view: a small rotation and scaling about the centre, and a
/// horizontal flip only when asked for (laterality matters in a chest film).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TtaView {
    /// Counter-clockwise, degrees.
    pub rotation_deg: f32,
    /// Above 1 zooms in.
    pub scale: f32,
    #[serde(default)]
    pub hflip: bool,
}

impl TtaView {
    pub const IDENTITY: TtaView = TtaView {
        rotation_deg: 0.0,
        scale: 1.0,
        hflip: false,
    };

    fn is_identity(&self) -> bool {
        self.rotation_deg == 0.0 && self.scale == 1.0 && !self.hflip
    }
}

/// Apply a view to a prepared input: bilinear interpolation, and the spec's
/// fill value (black padding after normalisation) where the view looks outside.
pub fn tta_view(input: &ModelInput, view: &TtaView) -> ModelInput {
    if view.is_identity() {
        return input.clone();
    }
    resample(input, view)
}

/// The general path of [`tta_view`]: bilinear resampling under the view's
/// rotation, scale and flip (the identity shortcut above skips it).
fn resample(input: &ModelInput, view: &TtaView) -> ModelInput {
    let (h, w) = (input.height, input.width);
    let fill = input.spec.fill_value();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (sin, cos) = view.rotation_deg.to_radians().sin_cos();
    let inv_scale = 1.0 / view.scale;
    let mut data = Vec::with_capacity(input.data.len());
    for plane in input.data.chunks_exact(h * w) {
        let at = |y: isize, x: isize| -> f32 {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                fill
            } else {
                plane[y as usize * w + x as usize]
            }
        };
        for y in 0..h {
            for x in 0..w {
                let mut dx = x as f32 - cx;
                let dy = y as f32 - cy;
                if view.hflip {
                    dx = -dx;
                }
                // Inverse map: un-rotate, then un-scale (y grows downwards).
                let sx = cx + (cos * dx - sin * dy) * inv_scale;
                let sy = cy + (sin * dx + cos * dy) * inv_scale;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
                let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
                data.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    round_to_element(&mut data, input.spec.element);
    ModelInput {
        data,
        ..input.clone()
    }
}

#[cfg(test)]
mod resample_tests {
    use super::*;
    use crate::{prepare, InputSpec};
    use cxr_radiograph::{AcquisitionInfo, Radiograph};

    #[test]
    fn resampling_at_the_identity_reproduces_the_input_and_a_quarter_turn_rotates_it() {
        let (rows, cols) = (9usize, 9usize);
        let pixels: Vec<f32> = (0..rows * cols).map(|i| ((i * 37) % 101) as f32).collect();
        let radiograph = Radiograph::new(
            rows,
            cols,
            pixels,
            (0.0, 100.0),
            AcquisitionInfo::untagged(),
        )
        .unwrap();
        let spec = InputSpec {
            size: 9,
            ..InputSpec::default()
        };
        let input = prepare(&radiograph, &spec).unwrap();
        // The sampling geometry itself (centre, pixel convention), not the
        // shortcut: at the identity every pixel lands on itself.
        let same = resample(&input, &TtaView::IDENTITY);
        let worst = same
            .data
            .iter()
            .zip(&input.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "identity resampling moved a pixel by {worst}");
        // A quarter turn counter-clockwise: out(y, x) = in(x, n-1-y).
        let turned = resample(
            &input,
            &TtaView {
                rotation_deg: 90.0,
                scale: 1.0,
                hflip: false,
            },
        );
        let n = 9;
        for y in 0..n {
            for x in 0..n {
                let expected = input.data[x * n + (n - 1 - y)];
                let got = turned.data[y * n + x];
                assert!(
                    (got - expected).abs() < 1e-4,
                    "({y}, {x}): {got} vs {expected}"
                );
            }
        }
    }
}
