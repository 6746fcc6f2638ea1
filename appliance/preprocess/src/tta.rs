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
