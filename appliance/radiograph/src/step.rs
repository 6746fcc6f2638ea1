use serde::{Deserialize, Serialize};

/// One thing that was done to the pixels (or deliberately not done) on the way
/// from stored values to the linear, MONOCHROME2-sense image.
///
/// Kept in order on the [`crate::Radiograph`] so that a reviewer can see exactly
/// how the model's input was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Pixel data decoded from the named transfer syntax.
    Decoded { transfer_syntax: String },
    /// Only the first of several frames was used.
    FirstFrameOnly { frames: u32 },
    /// Decoded at a lower resolution than stored, because the reader asked
    /// for no more than the model needs: each side divided by about
    /// `divisor` (JPEG 2000 resolution levels, or JPEG IDCT scaling).
    ReducedResolution {
        method: String,
        divisor: u32,
        stored_rows: u32,
        stored_cols: u32,
        rows: u32,
        cols: u32,
    },
    /// RGB with equal channels turned into one grey channel.
    EqualRgbToGrey,
    /// Modality LUT by Rescale Slope and Intercept.
    ModalityRescale { slope: f64, intercept: f64 },
    /// Modality LUT by the Modality LUT Sequence (0028,3000).
    ModalityLutSequence {
        entries: u32,
        first_mapped: i32,
        bits: u16,
    },
    /// No modality transform present: stored values are the linear values.
    ModalityIdentity,
    /// MONOCHROME1 inverted into MONOCHROME2 sense over the value range.
    InvertedMonochrome1 { low: f32, high: f32 },
    /// Presentation LUT Shape INVERSE on a MONOCHROME2 image honoured.
    InvertedPresentationLut { low: f32, high: f32 },
    /// VOI window present but not applied: the model sees the linear range.
    VoiNotApplied { center: f64, width: f64 },
    /// Flipped left-right for standard display.
    FlippedHorizontally,
    /// Flipped top-bottom for standard display.
    FlippedVertically,
    /// Rows and columns swapped for standard display.
    Transposed,
    /// Patient Orientation absent or not interpretable: image left as stored.
    OrientationAssumed { reason: String },
    /// Overlay planes (60xx) present and ignored.
    OverlaysIgnored { groups: u32 },
    /// Loaded from a PNG or JPEG file.
    LoadedImageFile { format: String, bit_depth: u8 },
}
