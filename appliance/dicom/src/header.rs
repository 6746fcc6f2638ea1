//! The image pixel description, read and sanity-checked before any decode.

use dicom_dictionary_std::tags;

use crate::tags::{code, uint, Obj};
use crate::{DicomError, ReadLimits};

/// The Image Pixel module values that decoding depends on, all checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelHeader {
    pub rows: u16,
    pub cols: u16,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    /// Pixel Representation 1: two's complement samples.
    pub signed: bool,
    pub frames: u32,
    /// Planar Configuration 1: colour planes stored one after another.
    pub planar: bool,
}

impl PixelHeader {
    pub fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    /// Bytes of one native frame.
    pub fn frame_bytes(&self) -> usize {
        usize::from(self.rows)
            * usize::from(self.cols)
            * usize::from(self.samples_per_pixel)
            * self.bytes_per_sample()
    }
}

fn required(value: Result<Option<u32>, String>, name: &str) -> Result<u32, DicomError> {
    value
        .map_err(DicomError::header)?
        .ok_or_else(|| DicomError::header(format!("{name} is missing")))
}

/// Read and check the pixel description.
pub(crate) fn read(obj: &Obj, limits: &ReadLimits) -> Result<PixelHeader, DicomError> {
    let rows = required(uint(obj, tags::ROWS, "Rows"), "Rows")?;
    let cols = required(uint(obj, tags::COLUMNS, "Columns"), "Columns")?;
    for (name, v) in [("Rows", rows), ("Columns", cols)] {
        if v == 0 || v > limits.max_dimension {
            return Err(DicomError::header(format!(
                "{name} is {v}, outside 1..={}",
                limits.max_dimension
            )));
        }
    }
    if u64::from(rows) * u64::from(cols) > limits.max_pixels {
        return Err(DicomError::header(format!(
            "{rows}x{cols} is over the {} pixel limit",
            limits.max_pixels
        )));
    }
    let bits_allocated = required(
        uint(obj, tags::BITS_ALLOCATED, "BitsAllocated"),
        "BitsAllocated",
    )?;
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(DicomError::header(format!(
            "BitsAllocated is {bits_allocated}, only 8 or 16 are radiographs"
        )));
    }
    let bits_stored = required(uint(obj, tags::BITS_STORED, "BitsStored"), "BitsStored")?;
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(DicomError::header(format!(
            "BitsStored is {bits_stored}, outside 1..={bits_allocated}"
        )));
    }
    let high_bit = uint(obj, tags::HIGH_BIT, "HighBit")
        .map_err(DicomError::header)?
        .unwrap_or(bits_stored - 1);
    if high_bit >= bits_allocated || high_bit + 1 < bits_stored {
        return Err(DicomError::header(format!(
            "HighBit {high_bit} is inconsistent with BitsStored {bits_stored} and BitsAllocated {bits_allocated}"
        )));
    }
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")
        .map_err(DicomError::header)?
        .unwrap_or(1);
    if samples != 1 && samples != 3 {
        return Err(DicomError::header(format!(
            "SamplesPerPixel is {samples}, expected 1 (or 3 for RGB)"
        )));
    }
    let photometric = code(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let grey = photometric == "MONOCHROME1" || photometric == "MONOCHROME2";
    if samples == 1 && !grey {
        return Err(DicomError::header(format!(
            "PhotometricInterpretation {photometric:?} with one sample per pixel"
        )));
    }
    if samples == 3 && grey {
        return Err(DicomError::header(format!(
            "PhotometricInterpretation {photometric} with three samples per pixel"
        )));
    }
    if samples == 3 && !(photometric == "RGB" || photometric.starts_with("YBR")) {
        return Err(DicomError::ColourImage { photometric });
    }
    let representation = uint(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")
        .map_err(DicomError::header)?
        .unwrap_or(0);
    if representation > 1 {
        return Err(DicomError::header(format!(
            "PixelRepresentation is {representation}, expected 0 or 1"
        )));
    }
    let frames = uint(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")
        .map_err(DicomError::header)?
        .unwrap_or(1);
    if frames == 0 {
        return Err(DicomError::header("NumberOfFrames is 0"));
    }
    let planar = uint(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")
        .map_err(DicomError::header)?
        .unwrap_or(0);
    Ok(PixelHeader {
        rows: rows as u16,
        cols: cols as u16,
        samples_per_pixel: samples as u16,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        high_bit: high_bit as u16,
        signed: representation == 1,
        frames,
        planar: planar == 1 && samples == 3,
    })
}
