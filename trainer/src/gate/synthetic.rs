//! Synthetic negatives for the content gate, drawn from a seed: pictures
//! with the layout of things that are not frontal chest films (CT, MR and
//! ultrasound slices, documents, screenshots, smooth natural-like fields,
//! limb and abdomen radiographs, and a lateral-chest outline). They are raw
//! grey images in `[0, 1]`, `SIDE x SIDE`, which go through the same
//! `prepare` as every real image.

use crate::rng::Rng;

pub const SIDE: usize = 128;

/// The kinds, with the content class each stands for (see
/// `cxr_model::gate::CONTENT_CLASSES`).
pub const KINDS: [(&str, usize); 9] = [
    ("synthetic-ct", 3),
    ("synthetic-mr", 3),
    ("synthetic-ultrasound", 3),
    ("synthetic-document", 3),
    ("synthetic-screenshot", 3),
    ("synthetic-smooth-field", 3),
    ("synthetic-limb-radiograph", 2),
    ("synthetic-abdomen-radiograph", 2),
    ("synthetic-lateral-chest", 1),
];

struct Canvas {
    px: Vec<f32>,
}

impl Canvas {
    fn new(value: f32) -> Self {
        Canvas {
            px: vec![value; SIDE * SIDE],
        }
    }

    /// Set every pixel inside a rotated ellipse (centre, radii, angle).
    fn ellipse(&mut self, cx: f64, cy: f64, rx: f64, ry: f64, angle: f64, value: f32) {
        let (s, c) = angle.sin_cos();
        for y in 0..SIDE {
            for x in 0..SIDE {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                if (u / rx).powi(2) + (v / ry).powi(2) <= 1.0 {
                    self.px[y * SIDE + x] = value;
                }
            }
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, value: f32) {
        for y in y0.min(SIDE)..y1.min(SIDE) {
            for x in x0.min(SIDE)..x1.min(SIDE) {
                self.px[y * SIDE + x] = value;
            }
        }
    }

    /// A band of half-width `w` along the segment (x0,y0)-(x1,y1).
    #[allow(clippy::too_many_arguments)]
    fn band(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, w: f64, value: f32) {
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let t = (((x as f64 - x0) * dx + (y as f64 - y0) * dy) / len2).clamp(0.0, 1.0);
                let (px, py) = (x0 + t * dx, y0 + t * dy);
                if (x as f64 - px).powi(2) + (y as f64 - py).powi(2) <= w * w {
                    self.px[y * SIDE + x] = value;
                }
            }
        }
    }

    fn noise(&mut self, rng: &mut Rng, sd: f64) {
        for p in &mut self.px {
            *p += (rng.normal() * sd) as f32;
        }
    }

    /// A box blur of radius `r` (soft edges, film-like unsharpness).
    fn blur(&mut self, r: usize) {
        let src = self.px.clone();
        for y in 0..SIDE {
            for x in 0..SIDE {
                let (mut sum, mut n) = (0f32, 0f32);
                for yy in y.saturating_sub(r)..(y + r + 1).min(SIDE) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(SIDE) {
                        sum += src[yy * SIDE + xx];
                        n += 1.0;
                    }
                }
                self.px[y * SIDE + x] = sum / n;
            }
        }
    }

    fn finish(mut self) -> Vec<f32> {
        for p in &mut self.px {
            *p = p.clamp(0.0, 1.0);
        }
        self.px
    }
}

fn r(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    rng.range(lo, hi)
}

fn ct(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(0.0);
    let (cx, cy) = (64.0 + r(rng, -6.0, 6.0), 60.0 + r(rng, -6.0, 6.0));
    let (rx, ry) = (r(rng, 40.0, 60.0), r(rng, 28.0, 46.0));
    c.ellipse(cx, cy, rx, ry, 0.0, 0.35);
    c.ellipse(cx, cy, rx - 4.0, ry - 4.0, 0.0, 0.5);
    if rng.uniform() < 0.6 {
        // Thorax: two lungs, heart, spine.
        let lung = r(rng, 0.02, 0.15) as f32;
        c.ellipse(cx - rx * 0.45, cy - 2.0, rx * 0.35, ry * 0.7, 0.2, lung);
        c.ellipse(cx + rx * 0.45, cy - 2.0, rx * 0.35, ry * 0.7, -0.2, lung);
        c.ellipse(cx + 4.0, cy, rx * 0.22, ry * 0.35, 0.5, 0.6);
    } else {
        // Abdomen or head: organs of different density.
        for _ in 0..rng.below(4) + 2 {
            let v = r(rng, 0.4, 0.7) as f32;
            c.ellipse(
                cx + r(rng, -20.0, 20.0),
                cy + r(rng, -15.0, 15.0),
                r(rng, 5.0, 18.0),
                r(rng, 5.0, 14.0),
                r(rng, 0.0, 3.0),
                v,
            );
        }
    }
    c.ellipse(cx, cy + ry * 0.75, 6.0, 6.0, 0.0, 0.95);
    c.rect(
        10,
        (cy + ry + 4.0) as usize,
        118,
        (cy + ry + 7.0) as usize,
        0.6,
    );
    c.noise(rng, 0.03);
    c
}

fn mr(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(0.02);
    let (cx, cy) = (64.0 + r(rng, -5.0, 5.0), 64.0 + r(rng, -5.0, 5.0));
    let (rx, ry) = (r(rng, 35.0, 52.0), r(rng, 40.0, 56.0));
    c.ellipse(cx, cy, rx, ry, 0.0, 0.8);
    c.ellipse(cx, cy, rx - 4.0, ry - 4.0, 0.0, 0.15);
    c.ellipse(cx, cy, rx - 7.0, ry - 7.0, 0.0, 0.55);
    for _ in 0..rng.below(5) + 3 {
        let v = r(rng, 0.2, 0.9) as f32;
        c.ellipse(
            cx + r(rng, -20.0, 20.0),
            cy + r(rng, -25.0, 25.0),
            r(rng, 3.0, 12.0),
            r(rng, 3.0, 12.0),
            r(rng, 0.0, 3.0),
            v,
        );
    }
    c.noise(rng, 0.05);
    c.blur(1);
    c
}

fn ultrasound(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(0.0);
    let (ax, ay) = (64.0 + r(rng, -8.0, 8.0), r(rng, 4.0, 16.0));
    let half = r(rng, 0.45, 0.8);
    let (r0, r1) = (r(rng, 5.0, 20.0), r(rng, 90.0, 120.0));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (dx, dy) = (x as f64 - ax, y as f64 - ay);
            let (dist, ang) = ((dx * dx + dy * dy).sqrt(), dx.atan2(dy));
            if dist >= r0 && dist <= r1 && ang.abs() <= half {
                let speckle = -rng.uniform().max(1e-6).ln() * 0.25;
                c.px[y * SIDE + x] = (0.15 + speckle) as f32;
            }
        }
    }
    c.blur(1);
    c.rect(2, 2, 30, 6, 0.9);
    c
}

fn document(rng: &mut Rng) -> Canvas {
    let paper = r(rng, 0.85, 1.0) as f32;
    let mut c = Canvas::new(paper);
    let (margin, line) = (r(rng, 6.0, 16.0) as usize, r(rng, 5.0, 10.0) as usize);
    let mut y = margin;
    while y + line < SIDE - margin {
        let mut x = margin;
        let end = SIDE - margin - rng.below(30);
        while x < end {
            let w = 2 + rng.below(12);
            c.rect(x, y, (x + w).min(end), y + line / 2 + 1, 0.1);
            x += w + 2 + rng.below(3);
        }
        y += line + rng.below(3) * usize::from(rng.uniform() < 0.2) * line;
    }
    c
}

fn screenshot(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(r(rng, 0.1, 0.9) as f32);
    c.rect(0, 0, SIDE, 8, r(rng, 0.0, 1.0) as f32);
    for _ in 0..rng.below(8) + 3 {
        let (x0, y0) = (rng.below(SIDE), rng.below(SIDE));
        let (w, h) = (8 + rng.below(60), 6 + rng.below(50));
        let v = r(rng, 0.0, 1.0) as f32;
        c.rect(x0, y0, x0 + w, y0 + h, v);
        c.rect(x0, y0, x0 + w, y0 + 1, 1.0 - v);
        for k in 0..h / 6 {
            let tw = 4 + rng.below(w.max(5));
            c.rect(
                x0 + 2,
                y0 + 3 + k * 6,
                x0 + 2 + tw.min(w),
                y0 + 5 + k * 6,
                1.0 - v,
            );
        }
    }
    c
}

fn smooth_field(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(0.0);
    let (gx, gy) = (r(rng, -0.5, 0.5), r(rng, -0.5, 0.5));
    let blobs: Vec<(f64, f64, f64, f64)> = (0..rng.below(10) + 3)
        .map(|_| {
            (
                r(rng, 0.0, 128.0),
                r(rng, 0.0, 128.0),
                r(rng, 5.0, 40.0),
                r(rng, -0.6, 0.6),
            )
        })
        .collect();
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (u, v) = (x as f64 / 128.0, y as f64 / 128.0);
            let mut value = 0.5 + gx * (u - 0.5) + gy * (v - 0.5);
            for (bx, by, s, a) in &blobs {
                value += a
                    * (-((x as f64 - bx).powi(2) + (y as f64 - by).powi(2)) / (2.0 * s * s)).exp();
            }
            c.px[y * SIDE + x] = value as f32;
        }
    }
    let sd = r(rng, 0.0, 0.08);
    c.noise(rng, sd);
    c
}

fn limb(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(r(rng, 0.0, 0.15) as f32);
    let angle = r(rng, -0.5, 0.5)
        + if rng.uniform() < 0.5 {
            0.0
        } else {
            std::f64::consts::FRAC_PI_2
        };
    let (s, co) = angle.sin_cos();
    let (cx, cy) = (64.0 + r(rng, -10.0, 10.0), 64.0 + r(rng, -10.0, 10.0));
    let len = r(rng, 60.0, 90.0);
    let (x0, y0, x1, y1) = (cx - s * len, cy - co * len, cx + s * len, cy + co * len);
    c.band(x0, y0, x1, y1, r(rng, 14.0, 30.0), 0.35);
    let bones = 1 + rng.below(2);
    for b in 0..bones {
        let off = (b as f64 - (bones as f64 - 1.0) / 2.0) * r(rng, 8.0, 12.0);
        let (ox, oy) = (co * off, -s * off);
        let w = r(rng, 3.0, 7.0);
        c.band(x0 + ox, y0 + oy, x1 + ox, y1 + oy, w, 0.9);
        c.band(x0 + ox, y0 + oy, x1 + ox, y1 + oy, w * 0.5, 0.65);
    }
    if rng.uniform() < 0.5 {
        c.ellipse(cx, cy, r(rng, 6.0, 12.0), r(rng, 6.0, 12.0), 0.0, 0.85);
    }
    c.noise(rng, 0.02);
    c.blur(1);
    c
}

fn abdomen(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(0.05);
    c.ellipse(64.0, 64.0, r(rng, 50.0, 62.0), 70.0, 0.0, 0.5);
    for _ in 0..rng.below(8) + 4 {
        c.ellipse(
            r(rng, 25.0, 103.0),
            r(rng, 20.0, 100.0),
            r(rng, 3.0, 12.0),
            r(rng, 3.0, 9.0),
            r(rng, 0.0, 3.0),
            0.25,
        );
    }
    c.band(64.0, 0.0, 64.0, 100.0, 5.0, 0.75);
    // The pelvis: a bright arc low in the image.
    for k in 0..40 {
        let t = k as f64 / 39.0 * std::f64::consts::PI;
        let (x, y) = (64.0 + 45.0 * t.cos(), 118.0 - 25.0 * t.sin());
        c.ellipse(x, y, 4.0, 4.0, 0.0, 0.85);
    }
    c.noise(rng, 0.03);
    c.blur(2);
    c
}

/// An outline of a lateral chest film: one large lung field, the spine as a
/// bright column near the back, the heart forward and low, the diaphragm,
/// arms raised in front of the upper chest.
fn lateral(rng: &mut Rng) -> Canvas {
    let mut c = Canvas::new(r(rng, 0.0, 0.1) as f32);
    let facing_left = rng.uniform() < 0.5;
    let mirror = |x: f64| if facing_left { x } else { 128.0 - x };
    c.ellipse(mirror(62.0), 64.0, r(rng, 48.0, 60.0), 66.0, 0.0, 0.55);
    c.ellipse(
        mirror(64.0),
        56.0,
        r(rng, 30.0, 38.0),
        r(rng, 34.0, 44.0),
        0.0,
        0.2,
    );
    let spine_x = mirror(r(rng, 92.0, 104.0));
    c.band(
        spine_x,
        0.0,
        spine_x + r(rng, -6.0, 6.0),
        128.0,
        r(rng, 5.0, 8.0),
        0.85,
    );
    c.ellipse(
        mirror(r(rng, 40.0, 50.0)),
        r(rng, 72.0, 84.0),
        r(rng, 14.0, 22.0),
        r(rng, 14.0, 20.0),
        0.4,
        0.55,
    );
    c.ellipse(mirror(64.0), r(rng, 104.0, 112.0), 52.0, 14.0, 0.0, 0.7);
    if rng.uniform() < 0.6 {
        c.band(mirror(30.0), 0.0, mirror(20.0), 40.0, 9.0, 0.6);
    }
    c.noise(rng, 0.03);
    c.blur(2);
    c
}

/// One synthetic image of `kind` (an index into [`KINDS`]), raw grey `[0, 1]`.
pub fn draw(kind: usize, rng: &mut Rng) -> Vec<f32> {
    let canvas = match kind {
        0 => ct(rng),
        1 => mr(rng),
        2 => ultrasound(rng),
        3 => document(rng),
        4 => screenshot(rng),
        5 => smooth_field(rng),
        6 => limb(rng),
        7 => abdomen(rng),
        _ => lateral(rng),
    };
    canvas.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_draws_a_bounded_image_that_varies_with_the_seed() {
        for (kind, (name, _)) in KINDS.iter().enumerate() {
            let a = draw(kind, &mut Rng::new(1));
            let b = draw(kind, &mut Rng::new(2));
            assert_eq!(a.len(), SIDE * SIDE);
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
            assert_ne!(a, b, "{name}");
            let mean = a.iter().sum::<f32>() / a.len() as f32;
            let spread = a.iter().map(|v| (v - mean).abs()).sum::<f32>() / a.len() as f32;
            assert!(spread > 0.01, "{name} is flat");
        }
    }
}
