//! Decoding no more pixels than the reader needs.
//!
//! A model that resizes a 2000-pixel film to 512 throws away three quarters
//! of a full decode. JPEG 2000 can stop its inverse wavelet transform at a
//! lower resolution level, and a DCT JPEG can run a smaller inverse DCT, so
//! both skip that work instead of doing it and averaging it away. Every
//! other codec, colour images and unusual frame layouts decode in full.
//!
//! A reduced decode that fails for any reason is not an error here: the
//! caller decodes in full, so whatever a full decode accepts is accepted.
//! The converse has one exception: a JPEG 2000 codestream damaged only in
//! the resolution levels a reduced decode skips is read from its intact
//! levels, where a full decode refuses it.

use cxr_radiograph::Step;

use crate::codestream::{j2k_levels, J2kLevels};
use crate::header::PixelHeader;
use crate::pixels::{guarded, stored_value, Samples};
use crate::syntax::{Codec, Syntax};

/// How much of the stored resolution a reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeTarget {
    /// Every stored pixel: inspection, previews, `pixel_sha256`, training.
    #[default]
    Full,
    /// At least this many pixels on the short side: enough for a model (or
    /// gate) whose input is this size. Fewer are decoded where the codec
    /// allows it; the result records a [`Step::ReducedResolution`].
    ShortSideAtLeast(u32),
}

/// The most JPEG 2000 resolution levels dropped (a divisor of 256).
const MAX_J2K_REDUCE: u32 = 8;

/// dicom-rs refuses to allocate a decoded frame of this size or more when
/// the compressed frame is under 1/[`MAX_COMPRESSION_RATIO`] of it; the
/// reduced path keeps the same refusal (by falling back to the full path).
const LARGE_FRAME_BYTES: usize = 16 * 1024 * 1024;
const MAX_COMPRESSION_RATIO: usize = 64;

/// DCT JPEG transfer syntaxes whose 8-bit frames jpeg-decoder can scale.
const SCALABLE_JPEG: &[&str] = &["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];

/// Whether dicom-rs would allocate the full frame for this codestream: the
/// reduced path decodes only what a full decode would have agreed to.
pub(crate) fn within_compression_limit(full_bytes: usize, compressed: usize) -> bool {
    full_bytes < LARGE_FRAME_BYTES || compressed >= full_bytes / MAX_COMPRESSION_RATIO
}

/// JPEG 2000 resolution levels to drop: the most that still leave `min`
/// pixels on the short side, within the codestream's decomposition levels.
pub(crate) fn j2k_reduce(short: u32, min: u32, levels: u8) -> u32 {
    let limit = u32::from(levels).min(MAX_J2K_REDUCE);
    (0..=limit).rev().find(|r| short >> r >= min).unwrap_or(0)
}

/// The JPEG IDCT scale, as eighths: the smallest of 1/8, 2/8 and 4/8 that
/// still leaves `min` pixels on the short side, else 8 (full size).
pub(crate) fn jpeg_eighths(short: u32, min: u32) -> u32 {
    [1u32, 2, 4]
        .into_iter()
        .find(|k| short * k / 8 >= min)
        .unwrap_or(8)
}

/// Frame 0 at reduced resolution, or `None` when the target, the codec or the
/// frame does not allow it (or the reduced decode failed): then the caller
/// decodes in full.
pub(crate) fn decode(
    target: DecodeTarget,
    syntax: &Syntax,
    header: &PixelHeader,
    frame: &[u8],
) -> Option<Samples> {
    let DecodeTarget::ShortSideAtLeast(min) = target else {
        return None;
    };
    let plausible = within_compression_limit(header.frame_bytes(), frame.len());
    if header.samples_per_pixel != 1 || min == 0 || !plausible {
        return None;
    }
    let short = u32::from(header.rows.min(header.cols));
    let (values, rows, cols, method, divisor) = match syntax.codec {
        Codec::Jpeg2000 => {
            let layout = j2k_levels(frame)?;
            let reduce = j2k_reduce(short, min, layout.levels);
            if reduce == 0 {
                return None;
            }
            let (values, rows, cols) = jpeg2000(frame, header, &layout, reduce)?;
            (values, rows, cols, "jpeg2000-resolution-level", 1 << reduce)
        }
        Codec::Jpeg if header.bits_allocated == 8 && SCALABLE_JPEG.contains(&syntax.uid) => {
            let eighths = jpeg_eighths(short, min);
            if eighths == 8 {
                return None;
            }
            let (values, rows, cols) = jpeg_scaled(frame, header, eighths)?;
            (values, rows, cols, "jpeg-idct-scaling", 8 / eighths)
        }
        _ => return None,
    };
    let mut steps = vec![Step::Decoded {
        transfer_syntax: syntax.uid.to_owned(),
    }];
    if header.frames > 1 {
        steps.push(Step::FirstFrameOnly {
            frames: header.frames,
        });
    }
    steps.push(Step::ReducedResolution {
        method: method.to_owned(),
        divisor,
        stored_rows: header.rows.into(),
        stored_cols: header.cols.into(),
        rows: rows.into(),
        cols: cols.into(),
    });
    Some(Samples {
        rows,
        cols,
        values,
        steps,
    })
}

/// OpenJPEG with `reduce` resolution levels dropped. Only a codestream whose
/// one component has exactly the header's bits and sign (and HighBit one
/// below BitsStored) is reduced: then its samples are the stored values a
/// full decode unpacks, with no truncation to wrap a filter overshoot. The
/// size must be the standard's reduced size of the image area.
fn jpeg2000(
    frame: &[u8],
    header: &PixelHeader,
    layout: &J2kLevels,
    reduce: u32,
) -> Option<(Vec<i32>, u16, u16)> {
    if header.high_bit + 1 != header.bits_stored {
        return None;
    }
    let params = jpeg2k::DecodeParameters::new().reduce(reduce);
    let image = guarded(|| jpeg2k::Image::from_bytes_with(frame, params))
        .ok()?
        .ok()?;
    let [component] = image.components() else {
        return None;
    };
    let (cols, rows) = (component.width(), component.height());
    let data = component.data();
    let same_samples = component.precision() == u32::from(header.bits_stored)
        && component.is_signed() == header.signed;
    if !same_samples
        || (rows, cols) != layout.reduced_size(reduce)
        || data.len() != rows as usize * cols as usize
        || rows == 0
        || cols == 0
    {
        return None;
    }
    let bits = u32::from(header.bits_stored);
    let (lo, hi) = if header.signed {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (0, (1i64 << bits) - 1)
    };
    let values = data
        .iter()
        .map(|v| i64::from(*v).clamp(lo, hi) as i32)
        .collect();
    Some((values, u16::try_from(rows).ok()?, u16::try_from(cols).ok()?))
}

/// jpeg-decoder with its inverse DCT scaled to `eighths`/8 of each side.
fn jpeg_scaled(frame: &[u8], header: &PixelHeader, eighths: u32) -> Option<(Vec<i32>, u16, u16)> {
    let scaled = |n: u16| u16::try_from((u32::from(n) * eighths).div_ceil(8)).ok();
    let (want_rows, want_cols) = (scaled(header.rows)?, scaled(header.cols)?);
    let decoded = guarded(|| {
        let mut decoder = jpeg_decoder::Decoder::new(frame);
        let (cols, rows) = decoder.scale(want_cols, want_rows).ok()?;
        let pixels = decoder.decode().ok()?;
        let format = decoder.info()?.pixel_format;
        Some((pixels, rows, cols, format))
    })
    .ok()??;
    let (pixels, rows, cols, format) = decoded;
    if format != jpeg_decoder::PixelFormat::L8
        || (rows, cols) != (want_rows, want_cols)
        || pixels.len() != usize::from(rows) * usize::from(cols)
    {
        return None;
    }
    let unpack = stored_value(header);
    let values = pixels.iter().map(|b| unpack(u32::from(*b))).collect();
    Some((values, rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn j2k_keeps_the_short_side_at_or_above_the_target() {
        // RG1: 1841 on the short side, 5 decomposition levels.
        assert_eq!(j2k_reduce(1841, 512, 5), 1);
        assert_eq!(j2k_reduce(1841, 128, 5), 3);
        assert_eq!(j2k_reduce(1841, 224, 5), 3);
        // Never more than the codestream has levels.
        assert_eq!(j2k_reduce(4096, 16, 2), 2);
        // A film already at or under the target is not reduced.
        assert_eq!(j2k_reduce(500, 512, 5), 0);
        assert_eq!(j2k_reduce(512, 512, 5), 0);
        assert_eq!(j2k_reduce(1024, 512, 5), 1);
    }

    #[test]
    fn a_tiny_codestream_for_a_huge_frame_is_not_decoded() {
        // 4096 x 4096 x 16 bits from 125 kB: dicom-rs refuses it, so must we.
        assert!(!within_compression_limit(4096 * 4096 * 2, 125_000));
        // RG1: 7.2 MB from 4.6 MB.
        assert!(within_compression_limit(1955 * 1841 * 2, 4_600_000));
        // Small frames are never refused by ratio.
        assert!(within_compression_limit(1024 * 1024, 100));
    }

    #[test]
    fn jpeg_scale_keeps_the_short_side_at_or_above_the_target() {
        assert_eq!(jpeg_eighths(1024, 512), 4);
        assert_eq!(jpeg_eighths(1024, 128), 1);
        assert_eq!(jpeg_eighths(1024, 129), 2);
        assert_eq!(jpeg_eighths(1000, 512), 8);
    }
}
