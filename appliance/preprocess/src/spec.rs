use serde::{Deserialize, Serialize};

use crate::PreprocessError;

/// One or three input channels (three repeats the grey channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    One,
    Three,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::One => 1,
            Channels::Three => 3,
        }
    }
}

/// How a non-square radiograph becomes a square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AspectPolicy {
    /// Fit the whole image, pad the rest (nothing of the anatomy is lost).
    Letterbox,
    /// Fill the square from the centre, cutting the longer side.
    CenterCrop,
}

/// The element type the engine takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    F32,
    F16,
    Bf16,
}

/// Intensity normalisation: clip to robust percentiles of the image content,
/// scale to `[0, 1]`, then `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityNorm {
    /// Lower clip percentile, 0..100.
    pub low_percentile: f32,
    /// Upper clip percentile, 0..100.
    pub high_percentile: f32,
    pub mean: f32,
    pub std: f32,
}

/// Everything that defines the model input. Comes from the verified bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Side of the square input, pixels.
    pub size: u32,
    pub channels: Channels,
    /// Low-pass filter scaled to the downsampling factor when shrinking.
    pub antialias: bool,
    pub aspect: AspectPolicy,
    pub intensity: IntensityNorm,
    pub element: ElementType,
}

impl Default for InputSpec {
    /// 512 px, one channel, antialiased, letterboxed, 0.5–99.5 percentile clip,
    /// mean 0.5 / std 0.25, f32.
    fn default() -> Self {
        InputSpec {
            size: 512,
            channels: Channels::One,
            antialias: true,
            aspect: AspectPolicy::Letterbox,
            intensity: IntensityNorm {
                low_percentile: 0.5,
                high_percentile: 99.5,
                mean: 0.5,
                std: 0.25,
            },
            element: ElementType::F32,
        }
    }
}

impl InputSpec {
    /// Check the numbers make sense before any work is done.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |reason: String| Err(PreprocessError::BadSpec { reason });
        let n = &self.intensity;
        if !(8..=4096).contains(&self.size) {
            return bad(format!("size {} outside 8..=4096", self.size));
        }
        let ordered = (0.0..100.0).contains(&n.low_percentile)
            && n.low_percentile < n.high_percentile
            && n.high_percentile <= 100.0;
        if !ordered {
            return bad(format!(
                "percentiles {}..{} must satisfy 0 <= low < high <= 100",
                n.low_percentile, n.high_percentile
            ));
        }
        if !(n.std.is_finite() && n.std > 0.0 && n.mean.is_finite()) {
            return bad(format!(
                "mean {} / std {} must be finite with std > 0",
                n.mean, n.std
            ));
        }
        Ok(())
    }

    /// The value padding takes after normalisation (0 before it).
    pub fn fill_value(&self) -> f32 {
        (0.0 - self.intensity.mean) / self.intensity.std
    }
}
