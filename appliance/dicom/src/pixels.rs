//! Decoding the first frame into grey integer samples, with the decoder
//! isolated behind `catch_unwind` and its output length checked.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cxr_radiograph::Step;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

use crate::header::PixelHeader;
use crate::syntax::Syntax;
use crate::DicomError;

/// Grey stored values of one frame, row-major, before any modality transform.
#[derive(Debug)]
pub(crate) struct Samples {
    /// The decoded grid: the stored Rows/Columns, or fewer after a
    /// reduced-resolution decode.
    pub rows: u16,
    pub cols: u16,
    pub values: Vec<i32>,
    pub steps: Vec<Step>,
}

std::thread_local! {
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run third-party parsing or decoding code that may panic on malformed
/// input, catching the panic. While it runs, [`inside_decoder_guard`] is true
/// on this thread, so a panic hook can say truthfully that the fault is caught.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn std::any::Any + Send>> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_GUARD.with(|g| g.set(self.0));
        }
    }
    let _reset = Reset(IN_GUARD.with(|g| g.replace(true)));
    catch_unwind(AssertUnwindSafe(f))
}

/// Whether this thread is inside a guarded decoder call: a panic now is a
/// decoder fault that is caught and reported as the study's DICOM error.
pub fn inside_decoder_guard() -> bool {
    IN_GUARD.with(std::cell::Cell::get)
}

/// The text of a caught panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Byte order of 16-bit samples handed to [`raw_samples`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    Little,
    /// As dicom-rs hands decoded data over: the host's order.
    Host,
}

/// Frame 0 of native little-endian pixel data, read straight from the input
/// bytes (the scan proved they are there): no parser copy, no decoder.
pub(crate) fn native_first_frame(
    pixel_bytes: &[u8],
    header: &PixelHeader,
    syntax: &Syntax,
) -> Result<Samples, DicomError> {
    let frame =
        pixel_bytes
            .get(..header.frame_bytes())
            .ok_or(DicomError::DecodedLengthMismatch {
                expected: header.frame_bytes(),
                got: pixel_bytes.len(),
            })?;
    // Native colour data is never decoded into RGB, so the stored interpretation stands.
    to_grey(frame, header, "", ByteOrder::Little, syntax)
}

/// Decode frame 0 through dicom-pixeldata and return its grey samples.
pub(crate) fn decode_first_frame(
    file: &FileDicomObject<InMemDicomObject>,
    header: &PixelHeader,
    syntax: &Syntax,
) -> Result<Samples, DicomError> {
    let ts = syntax.name.to_owned();
    let decoded = guarded(|| {
        file.decode_pixel_data_frame(0).map(|d| {
            (
                d.photometric_interpretation().to_string(),
                d.bits_allocated(),
                d.into_data(),
            )
        })
    })
    .map_err(|p| DicomError::DecoderPanicked {
        transfer_syntax: ts.clone(),
        reason: panic_text(p.as_ref()),
    })?
    .map_err(|e| DicomError::DecodeFailed {
        transfer_syntax: ts.clone(),
        reason: e.to_string(),
    })?;
    let (photometric, bits_allocated, data) = decoded;
    if bits_allocated != header.bits_allocated {
        return Err(DicomError::DecodeFailed {
            transfer_syntax: ts,
            reason: format!(
                "decoder produced {bits_allocated}-bit samples for a {}-bit header",
                header.bits_allocated
            ),
        });
    }
    let expected = header.frame_bytes();
    if data.len() != expected {
        return Err(DicomError::DecodedLengthMismatch {
            expected,
            got: data.len(),
        });
    }
    to_grey(&data, header, &photometric, ByteOrder::Host, syntax)
}

/// Unpack one frame's bytes into grey samples, recording the steps.
fn to_grey(
    data: &[u8],
    header: &PixelHeader,
    photometric: &str,
    order: ByteOrder,
    syntax: &Syntax,
) -> Result<Samples, DicomError> {
    let mut steps = vec![Step::Decoded {
        transfer_syntax: syntax.uid.to_owned(),
    }];
    if header.frames > 1 {
        steps.push(Step::FirstFrameOnly {
            frames: header.frames,
        });
    }
    let raw = raw_samples(data, header, order);
    let values = if header.samples_per_pixel == 1 {
        raw
    } else {
        let grey = equal_channels_to_grey(&raw, header, photometric)?;
        steps.push(Step::EqualRgbToGrey);
        grey
    };
    Ok(Samples {
        rows: header.rows,
        cols: header.cols,
        values,
        steps,
    })
}

/// The stored value in one allocated word: mask to BitsStored below HighBit,
/// sign-extend if signed.
pub(crate) fn stored_value(h: &PixelHeader) -> impl Fn(u32) -> i32 + '_ {
    let shift = u32::from(h.high_bit + 1 - h.bits_stored);
    let mask: u32 = if h.bits_stored >= 32 {
        u32::MAX
    } else {
        (1u32 << h.bits_stored) - 1
    };
    let sign_bit = 1u32 << (h.bits_stored - 1);
    move |word: u32| -> i32 {
        let v = (word >> shift) & mask;
        if h.signed && v & sign_bit != 0 {
            v as i32 - (1i64 << h.bits_stored) as i32
        } else {
            v as i32
        }
    }
}

/// Unpack stored values of a whole frame.
fn raw_samples(data: &[u8], h: &PixelHeader, order: ByteOrder) -> Vec<i32> {
    let unpack = stored_value(h);
    if h.bits_allocated == 8 {
        data.iter().map(|b| unpack(u32::from(*b))).collect()
    } else {
        let word = match order {
            ByteOrder::Little => u16::from_le_bytes,
            ByteOrder::Host => u16::from_ne_bytes,
        };
        data.chunks_exact(2)
            .map(|c| unpack(u32::from(word([c[0], c[1]]))))
            .collect()
    }
}

/// Turn three equal channels into one; refuse a real colour image.
/// YBR_FULL grey has both chroma channels at the mid value.
fn equal_channels_to_grey(
    raw: &[i32],
    h: &PixelHeader,
    photometric: &str,
) -> Result<Vec<i32>, DicomError> {
    let n = usize::from(h.rows) * usize::from(h.cols);
    let sample = |pixel: usize, channel: usize| -> i32 {
        if h.planar {
            raw[channel * n + pixel]
        } else {
            raw[pixel * 3 + channel]
        }
    };
    let ybr = photometric.starts_with("YBR");
    let mid = 1i32 << (h.bits_stored - 1);
    let mut grey = Vec::with_capacity(n);
    for p in 0..n {
        let (a, b, c) = (sample(p, 0), sample(p, 1), sample(p, 2));
        let is_grey = if ybr {
            b == mid && c == mid
        } else {
            a == b && b == c
        };
        if !is_grey {
            return Err(DicomError::ColourImage {
                photometric: photometric.to_owned(),
            });
        }
        grey.push(a);
    }
    Ok(grey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bits_stored: u16, high_bit: u16, signed: bool, samples: u16) -> PixelHeader {
        PixelHeader {
            rows: 1,
            cols: 2,
            samples_per_pixel: samples,
            bits_allocated: 16,
            bits_stored,
            high_bit,
            signed,
            frames: 1,
            planar: false,
        }
    }

    #[test]
    fn masks_and_sign_extends() {
        let data: Vec<u8> = [0xF0FFu16, 0x0800]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        // 12 bits stored, unsigned: the top nibble is masked away.
        assert_eq!(
            raw_samples(&data, &header(12, 11, false, 1), ByteOrder::Little),
            vec![0x0FF, 0x800]
        );
        // 12 bits signed: 0x800 is -2048, 0x0FF is 255.
        assert_eq!(
            raw_samples(&data, &header(12, 11, true, 1), ByteOrder::Little),
            vec![0x0FF, -2048]
        );
        // High bit 15 with 12 bits stored: shift right by 4 first.
        assert_eq!(
            raw_samples(&data, &header(12, 15, false, 1), ByteOrder::Little),
            vec![0xF0F, 0x080]
        );
    }

    #[test]
    fn colour_is_refused_and_grey_rgb_accepted() {
        let h = header(8, 7, false, 3);
        assert_eq!(
            equal_channels_to_grey(&[5, 5, 5, 9, 9, 9], &h, "RGB").unwrap(),
            vec![5, 9]
        );
        assert!(matches!(
            equal_channels_to_grey(&[5, 5, 6, 9, 9, 9], &h, "RGB"),
            Err(DicomError::ColourImage { .. })
        ));
        assert_eq!(
            equal_channels_to_grey(&[5, 128, 128, 9, 128, 128], &h, "YBR_FULL").unwrap(),
            vec![5, 9]
        );
    }
}
