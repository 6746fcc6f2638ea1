//! Dataset images (PNG, JPEG) into a `Radiograph`, for the trainer.

use std::io::Cursor;
use std::path::Path;

use cxr_radiograph::{AcquisitionInfo, Radiograph, Step};
use image::{DynamicImage, ImageReader, Limits};

use crate::PreprocessError;

/// Largest side and decode allocation accepted for a dataset image.
const MAX_SIDE: u32 = 16384;
const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// Load a PNG or JPEG (8/16-bit grey, or RGB/RGBA with equal channels and an
/// opaque alpha) into a radiograph. Values keep their stored scale, so the
/// range is `0..=255` or `0..=65535`. Dataset images are already display
/// oriented and in MONOCHROME2 sense.
pub fn load_image(bytes: &[u8]) -> Result<Radiograph, PreprocessError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Decode {
            reason: e.to_string(),
        })?;
    let format = reader
        .format()
        .map(|f| format!("{f:?}").to_ascii_lowercase())
        .unwrap_or_else(|| "unknown".into());
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| PreprocessError::Decode {
        reason: e.to_string(),
    })?;
    let (cols, rows) = (image.width() as usize, image.height() as usize);
    let (values, bit_depth, high): (Vec<f32>, u8, f32) = match image {
        DynamicImage::ImageLuma8(img) => (
            img.into_raw().into_iter().map(f32::from).collect(),
            8,
            255.0,
        ),
        DynamicImage::ImageLuma16(img) => (
            img.into_raw().into_iter().map(f32::from).collect(),
            16,
            65535.0,
        ),
        DynamicImage::ImageLumaA8(img) => (grey_from(&img.into_raw(), 2, 255.0)?, 8, 255.0),
        DynamicImage::ImageLumaA16(img) => (grey_from(&img.into_raw(), 2, 65535.0)?, 16, 65535.0),
        DynamicImage::ImageRgb8(img) => (grey_from(&img.into_raw(), 3, 255.0)?, 8, 255.0),
        DynamicImage::ImageRgba8(img) => (grey_from(&img.into_raw(), 4, 255.0)?, 8, 255.0),
        DynamicImage::ImageRgb16(img) => (grey_from(&img.into_raw(), 3, 65535.0)?, 16, 65535.0),
        DynamicImage::ImageRgba16(img) => (grey_from(&img.into_raw(), 4, 65535.0)?, 16, 65535.0),
        other => {
            return Err(PreprocessError::UnsupportedLayout {
                layout: format!("{:?}", other.color()),
            })
        }
    };
    let mut r = Radiograph::new(rows, cols, values, (0.0, high), AcquisitionInfo::untagged())?;
    r.steps.push(Step::LoadedImageFile { format, bit_depth });
    Ok(r)
}

/// [`load_image`] from a path.
pub fn load_image_file(path: &Path) -> Result<Radiograph, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|e| PreprocessError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    load_image(&bytes)
}

/// Grey values from interleaved pixels of `stride` samples: grey (+alpha) or
/// RGB (+alpha). Colour must be equal across channels and alpha fully opaque.
fn grey_from<T: Copy + Into<f32> + PartialEq>(
    raw: &[T],
    stride: usize,
    opaque: f32,
) -> Result<Vec<f32>, PreprocessError> {
    let colour = stride >= 3;
    let alpha = stride == 2 || stride == 4;
    let mut out = Vec::with_capacity(raw.len() / stride);
    for px in raw.chunks_exact(stride) {
        if colour && (px[0] != px[1] || px[1] != px[2]) {
            return Err(PreprocessError::ColourImage);
        }
        if alpha && Into::<f32>::into(px[stride - 1]) != opaque {
            return Err(PreprocessError::Transparent);
        }
        out.push(px[0].into());
    }
    Ok(out)
}
