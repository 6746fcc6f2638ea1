use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AcquisitionInfo, Step};

/// A VOI window read from the file. Used for previews only: the model sees the
/// linear range unless the bundle says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VoiWindow {
    pub center: f64,
    pub width: f64,
}

/// Why a [`Radiograph`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RadiographError {
    #[error("pixel buffer has {got} values but {rows}x{cols} needs {expected}; fix: pass rows*cols values")]
    LengthMismatch {
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("image is empty ({rows}x{cols}); fix: rows and columns must both be at least 1")]
    Empty { rows: usize, cols: usize },
    #[error("pixel {index} is not finite; fix: check the modality LUT or rescale values")]
    NonFinite { index: usize },
}

/// A single-channel radiograph in linear units and MONOCHROME2 sense.
///
/// Pixels are row-major, `rows * cols` values, shape `[rows, cols]`, all finite.
/// `value_range` is the range the stored values can map to (not the observed
/// min/max); inversions are taken over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Radiograph {
    rows: usize,
    cols: usize,
    pixels: Vec<f32>,
    value_range: (f32, f32),
    /// Facts from the tags.
    pub acquisition: AcquisitionInfo,
    /// What was done to the pixels, in order.
    pub steps: Vec<Step>,
    /// The first VOI window in the file, for previews.
    pub voi_window: Option<VoiWindow>,
    /// Burned In Annotation (0028,0301): `Some(true)` means text is in the pixels.
    pub burned_in_annotation: Option<bool>,
}

impl Radiograph {
    /// Build a radiograph, checking the buffer length and that every value is finite.
    pub fn new(
        rows: usize,
        cols: usize,
        pixels: Vec<f32>,
        value_range: (f32, f32),
        acquisition: AcquisitionInfo,
    ) -> Result<Self, RadiographError> {
        check(rows, cols, &pixels)?;
        Ok(Radiograph {
            rows,
            cols,
            pixels,
            value_range,
            acquisition,
            steps: Vec::new(),
            voi_window: None,
            burned_in_annotation: None,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major pixels, shape `[rows, cols]`.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// The range stored values can map to, `(low, high)`.
    pub fn value_range(&self) -> (f32, f32) {
        self.value_range
    }

    /// Value at `(row, col)`, or `None` outside the image.
    pub fn at(&self, row: usize, col: usize) -> Option<f32> {
        if row < self.rows && col < self.cols {
            self.pixels.get(row * self.cols + col).copied()
        } else {
            None
        }
    }

    /// SHA-256 of the pixel buffer as little-endian f32, hex. Identifies the
    /// normalised image (before any resizing) in logs and tests.
    pub fn pixel_sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for v in &self.pixels {
            hasher.update(v.to_le_bytes());
        }
        cxr_fsio::hex(&hasher.finalize())
    }

    /// Replace the pixels with a same-sized buffer (after a flip, say).
    /// Changing the shape goes through [`Radiograph::reshape`].
    pub fn map_pixels(&mut self, f: impl FnOnce(&mut [f32])) {
        f(&mut self.pixels);
    }

    /// Swap in a buffer with a new shape (after a transpose, say), keeping
    /// everything else; the same checks as [`Radiograph::new`] apply.
    pub fn reshape(
        &mut self,
        rows: usize,
        cols: usize,
        pixels: Vec<f32>,
    ) -> Result<(), RadiographError> {
        check(rows, cols, &pixels)?;
        self.rows = rows;
        self.cols = cols;
        self.pixels = pixels;
        Ok(())
    }
}

fn check(rows: usize, cols: usize, pixels: &[f32]) -> Result<(), RadiographError> {
    if rows == 0 || cols == 0 {
        return Err(RadiographError::Empty { rows, cols });
    }
    let expected = rows.saturating_mul(cols);
    if pixels.len() != expected {
        return Err(RadiographError::LengthMismatch {
            rows,
            cols,
            expected,
            got: pixels.len(),
        });
    }
    if let Some(index) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(RadiographError::NonFinite { index });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Radiograph {
        Radiograph::new(
            2,
            3,
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            (0.0, 5.0),
            AcquisitionInfo::untagged(),
        )
        .unwrap()
    }

    #[test]
    fn rejects_wrong_length_and_nan() {
        let e = Radiograph::new(2, 2, vec![0.0; 3], (0.0, 1.0), AcquisitionInfo::untagged());
        assert!(matches!(
            e,
            Err(RadiographError::LengthMismatch {
                expected: 4,
                got: 3,
                ..
            })
        ));
        let e = Radiograph::new(
            1,
            2,
            vec![0.0, f32::NAN],
            (0.0, 1.0),
            AcquisitionInfo::untagged(),
        );
        assert_eq!(e.unwrap_err(), RadiographError::NonFinite { index: 1 });
        let e = Radiograph::new(0, 2, vec![], (0.0, 1.0), AcquisitionInfo::untagged());
        assert!(matches!(e, Err(RadiographError::Empty { .. })));
    }

    #[test]
    fn indexing_is_row_major() {
        let r = tiny();
        assert_eq!(r.at(1, 0), Some(3.0));
        assert_eq!(r.at(0, 2), Some(2.0));
        assert_eq!(r.at(2, 0), None);
    }

    #[test]
    fn sha_depends_on_every_pixel() {
        let a = tiny();
        let mut b = tiny();
        b.map_pixels(|p| p[5] = 5.5);
        assert_ne!(a.pixel_sha256(), b.pixel_sha256());
        assert_eq!(a.pixel_sha256().len(), 64);
    }
}
