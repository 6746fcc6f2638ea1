use std::io::Cursor;

use cxr_radiograph::Radiograph;
use half::{bf16, f16};

use crate::intensity::scale_to_unit;
use crate::resize::resize;
use crate::{AspectPolicy, ElementType, InputSpec, PreprocessError};

/// The tensor an engine takes for one view.
///
/// `data` is `[channels, size, size]`, row-major, f32. When the spec's element
/// type is f16 or bf16 the values are already rounded to that type, so what
/// the engine receives (see [`ModelInput::to_le_bytes`]) equals `data` exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
    pub spec: InputSpec,
}

impl ModelInput {
    /// The data as little-endian bytes in the spec's element type.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self.spec.element {
            ElementType::F32 => self.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ElementType::F16 => self
                .data
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            ElementType::Bf16 => self
                .data
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }

    /// Channel 0 as a `[height, width]` slice.
    pub fn plane(&self) -> &[f32] {
        &self.data[..self.height * self.width]
    }
}

pub(crate) fn round_to_element(data: &mut [f32], element: ElementType) {
    match element {
        ElementType::F32 => {}
        ElementType::F16 => data
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v).to_f32()),
        ElementType::Bf16 => data
            .iter_mut()
            .for_each(|v| *v = bf16::from_f32(*v).to_f32()),
    }
}

/// Radiograph to model input: aspect policy, antialiased resize, robust
/// intensity scaling on the content, `(x - mean) / std`, channel repeat.
///
/// Letterbox padding is 0 before normalisation, i.e. [`InputSpec::fill_value`] after.
pub fn prepare(r: &Radiograph, spec: &InputSpec) -> Result<ModelInput, PreprocessError> {
    spec.validate()?;
    let size = spec.size as usize;
    let (rows, cols) = (r.rows(), r.cols());
    let mut plane = vec![0.0f32; size * size];
    match spec.aspect {
        AspectPolicy::Letterbox => {
            let scale = size as f64 / rows.max(cols) as f64;
            let ch = ((rows as f64 * scale).round() as usize).clamp(1, size);
            let cw = ((cols as f64 * scale).round() as usize).clamp(1, size);
            let mut content = resize(r.pixels(), rows, cols, ch, cw, spec.antialias);
            scale_to_unit(&mut content, &spec.intensity);
            let (top, left) = ((size - ch) / 2, (size - cw) / 2);
            for y in 0..ch {
                plane[(top + y) * size + left..(top + y) * size + left + cw]
                    .copy_from_slice(&content[y * cw..(y + 1) * cw]);
            }
        }
        AspectPolicy::CenterCrop => {
            let side = rows.min(cols);
            let (top, left) = ((rows - side) / 2, (cols - side) / 2);
            let mut crop = Vec::with_capacity(side * side);
            for y in top..top + side {
                crop.extend_from_slice(&r.pixels()[y * cols + left..y * cols + left + side]);
            }
            plane = resize(&crop, side, side, size, size, spec.antialias);
            scale_to_unit(&mut plane, &spec.intensity);
        }
    }
    let (mean, std) = (spec.intensity.mean, spec.intensity.std);
    plane.iter_mut().for_each(|v| *v = (*v - mean) / std);
    round_to_element(&mut plane, spec.element);
    let channels = spec.channels.count();
    let mut data = Vec::with_capacity(channels * plane.len());
    for _ in 0..channels {
        data.extend_from_slice(&plane);
    }
    Ok(ModelInput {
        channels,
        height: size,
        width: size,
        data,
        spec: *spec,
    })
}

/// An 8-bit greyscale PNG of channel 0, undoing the mean/std so that `[0, 1]`
/// maps to black..white: a preview of exactly what the model sees.
pub fn preview_png(input: &ModelInput) -> Result<Vec<u8>, PreprocessError> {
    let (mean, std) = (input.spec.intensity.mean, input.spec.intensity.std);
    let pixels: Vec<u8> = input
        .plane()
        .iter()
        .map(|v| ((v * std + mean).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let image = image::GrayImage::from_raw(input.width as u32, input.height as u32, pixels)
        .ok_or_else(|| PreprocessError::Decode {
            reason: "preview buffer size".into(),
        })?;
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| PreprocessError::Decode {
            reason: format!("PNG encode: {e}"),
        })?;
    Ok(out.into_inner())
}
