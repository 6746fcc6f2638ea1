//! Where the content gate's examples come from: the shared chest films
//! (through the appliance's own loaders), real non-chest DICOMs and images
//! from registry packages, hemithorax crops as a lateral stand-in, and the
//! synthetic kinds. Every image ends as the gate's `prepare` output.

use std::path::{Path, PathBuf};

use cxr_preprocess::{prepare, InputSpec};
use cxr_radiograph::{AcquisitionInfo, Radiograph};

use super::synthetic;
use crate::data::{load_input, patient_position};
use crate::rng::Rng;
use crate::TrainerError;

/// One prepared example.
#[derive(Debug, Clone)]
pub struct GateExample {
    /// `[S, S]`, the gate's input.
    pub input: Vec<f32>,
    /// Index into `cxr_model::gate::CONTENT_CLASSES`.
    pub class: usize,
    /// Where it came from, for the report (e.g. `pydicom-data CT`).
    pub source: String,
}

fn refused(path: &Path, e: impl ToString) -> TrainerError {
    TrainerError::ImageRefused {
        path: path.to_owned(),
        code: "GATE_SOURCE_UNREADABLE",
        reason: e.to_string(),
    }
}

/// A prepared input from raw grey pixels.
pub fn from_pixels(rows: usize, cols: usize, px: Vec<f32>, spec: &InputSpec) -> Option<Vec<f32>> {
    let (lo, hi) = px
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let r = Radiograph::new(
        rows,
        cols,
        px,
        (lo, hi.max(lo + 1e-3)),
        AcquisitionInfo::untagged(),
    )
    .ok()?;
    prepare(&r, spec).ok().map(|m| m.data)
}

/// A chest film through the appliance's loaders (`load_input`).
pub fn chest(path: &Path, spec: &InputSpec) -> Result<Vec<f32>, TrainerError> {
    load_input(path, spec).map(|m| m.data)
}

/// One half of a frontal film (the left or right hemithorax) stretched to
/// the whole frame: one lung field with the mediastinum at an edge, the
/// lateral stand-in this data allows (no real laterals are available).
pub fn hemithorax(path: &Path, left: bool, spec: &InputSpec) -> Result<Vec<f32>, TrainerError> {
    let img = image::open(path)
        .map_err(|e| refused(path, e))?
        .to_luma32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let half = w / 2;
    let start = if left { 0 } else { w - half };
    let mut px = Vec::with_capacity(half * h);
    for y in 0..h {
        for x in start..start + half {
            px.push(img.get_pixel(x as u32, y as u32).0[0]);
        }
    }
    // Stretch to the full width so the letterbox does not give it away.
    let stretched: Vec<f32> = (0..h)
        .flat_map(|y| {
            let row = &px[y * half..(y + 1) * half];
            (0..w).map(move |x| row[(x * half / w).min(half - 1)])
        })
        .collect();
    from_pixels(h, w, stretched, spec).ok_or_else(|| refused(path, "cannot prepare"))
}

/// A negative image file: DICOM through the appliance's reader (its tag
/// class decides radiograph or not; chest films are skipped), PNG/JPEG in
/// grey (colour photos are converted: the appliance sees grey DICOMs).
pub fn negative(path: &Path, spec: &InputSpec) -> Option<GateExample> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let group = path.file_stem()?.to_str()?.split('_').next()?.to_owned();
    if ext == "dcm" {
        let bytes = std::fs::read(path).ok()?;
        let r = cxr_dicom::read_any_modality(&bytes, &cxr_dicom::ReadLimits::default()).ok()?;
        let modality = r.acquisition.modality.clone().unwrap_or_default();
        let class = match r.acquisition.input_class {
            cxr_core::InputClass::NotRadiograph => 3,
            cxr_core::InputClass::NonChestRadiograph => 2,
            _ => return None,
        };
        let input = prepare(&r, spec).ok()?.data;
        return Some(GateExample {
            input,
            class,
            source: format!("pydicom-data {modality} ({group})"),
        });
    }
    if !matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        return None;
    }
    let img = image::open(path).ok()?.to_luma32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let input = from_pixels(h, w, img.into_raw(), spec)?;
    Some(GateExample {
        input,
        class: 3,
        source: format!("scikit-image {group}"),
    })
}

/// Every file under `dirs` (not recursive), sorted.
pub fn files_in(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, TrainerError> {
    let mut out = Vec::new();
    for d in dirs {
        let entries = std::fs::read_dir(d).map_err(|e| TrainerError::io("listing", d, e))?;
        for e in entries.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a source group (a file-name stem) is held out for the report.
pub fn held_out_group(seed: u64, group: &str) -> bool {
    patient_position(seed ^ 0x6A7E, group) < 0.3
}

/// `count` synthetic examples of `kind`.
pub fn synthetic(kind: usize, count: usize, rng: &mut Rng, spec: &InputSpec) -> Vec<GateExample> {
    let (name, class) = synthetic::KINDS[kind];
    (0..count)
        .filter_map(|_| {
            let px = synthetic::draw(kind, rng);
            from_pixels(synthetic::SIDE, synthetic::SIDE, px, spec).map(|input| GateExample {
                input,
                class,
                source: name.to_owned(),
            })
        })
        .collect()
}

/// A random geometric and intensity variation of a prepared input: small
/// rotation, separate x and y scales (films come letterboxed, squashed or
/// cropped), a shift, a mirror image, contrast and brightness, noise.
pub fn augment(input: &[f32], side: usize, fill: f32, rng: &mut Rng) -> Vec<f32> {
    let angle = rng.range(-12.0, 12.0).to_radians();
    let (sx, sy) = (rng.range(0.8, 1.2), rng.range(0.8, 1.2));
    let (tx, ty) = (
        rng.range(-0.07, 0.07) * side as f64,
        rng.range(-0.07, 0.07) * side as f64,
    );
    let flip = rng.uniform() < 0.5;
    let (contrast, brightness) = (rng.range(0.85, 1.15) as f32, rng.range(-0.3, 0.3) as f32);
    let (sin, cos) = angle.sin_cos();
    let c = (side as f64 - 1.0) / 2.0;
    let mut out = vec![fill; side * side];
    for y in 0..side {
        for x in 0..side {
            let (mut u, v) = (x as f64 - c - tx, y as f64 - c - ty);
            if flip {
                u = -u;
            }
            let (su, sv) = ((u * cos + v * sin) / sx + c, (-u * sin + v * cos) / sy + c);
            if su < 0.0 || sv < 0.0 || su > side as f64 - 1.0 || sv > side as f64 - 1.0 {
                continue;
            }
            let (x0, y0) = (su.floor() as usize, sv.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
            let (fx, fy) = ((su - x0 as f64) as f32, (sv - y0 as f64) as f32);
            let at = |yy: usize, xx: usize| input[yy * side + xx];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out[y * side + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    for p in &mut out {
        *p = *p * contrast + brightness + (rng.normal() * 0.03) as f32;
    }
    out
}
