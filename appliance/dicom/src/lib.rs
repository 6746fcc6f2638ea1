//! `cxr-dicom`: DICOM bytes to a normalised [`Radiograph`], or a typed refusal.
//!
//! It owns the guarded read path: a structural pre-scan of every element
//! length, header sanity checks, codestream checks, decoding behind
//! `catch_unwind`, then the modality transform, MONOCHROME1 inversion and
//! orientation. It must not know models, engines or HTTP.
//!
//! ```text
//! bytes ─► scan (lengths, counts, depth, fragments) ─► dicom-object parse
//!       ─► acquisition facts + InputClass ─► pixel header checks
//!       ─► codestream checks ─► decode frame 0 (catch_unwind) ─► length check
//!       ─► modality LUT ─► MONOCHROME1 / INVERSE ─► orientation ─► Radiograph
//! ```

mod acquisition;
mod codestream;
mod error;
mod header;
mod limits;
mod normalise;
mod pixels;
mod scan;
mod syntax;
mod tags;

use std::io::Read;
use std::path::Path;

pub use acquisition::{classify as input_class_from_tags, is_frontal_view};
pub use cxr_radiograph::{AcquisitionInfo, InputClass, Radiograph};
pub use error::DicomError;
pub use limits::ReadLimits;
pub use pixels::inside_decoder_guard;

use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;

use crate::scan::PixelLayout;
use crate::syntax::{Codec, Encoding};

/// A DICOM Part 10 file starts with a 128-byte preamble and `DICM`: the
/// one test of "is this DICOM" (the readers refuse anything else), so
/// callers can route a file by its bytes, not by its name.
pub fn has_part10_prefix(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM".as_slice())
}

/// Read a DICOM Part 10 file from memory into a normalised radiograph.
/// A study whose modality is not a projection radiograph (CT, MR, US, NM, ...)
/// is refused before its pixels are decoded.
///
/// Never panics on any input: every failure is a [`DicomError`] with a code.
pub fn read_radiograph(bytes: &[u8], limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    read_image(bytes, limits, true)
}

/// [`read_radiograph`] without the modality refusal: the pixels of a CT, MR
/// or ultrasound image too. For fitting the content gate on what the
/// appliance must reject; the appliance's study path never calls it.
pub fn read_any_modality(bytes: &[u8], limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    read_image(bytes, limits, false)
}

fn read_image(
    bytes: &[u8],
    limits: &ReadLimits,
    radiographs_only: bool,
) -> Result<Radiograph, DicomError> {
    let layout = scan::scan(bytes, limits)?;
    let syntax = layout.syntax;
    // Native little-endian pixels are read straight from `bytes`, so the parser
    // stops before them; everything else needs the parser's copy for decoding.
    let direct = match (&layout.pixel, syntax.encoding) {
        (
            Some(PixelLayout::Native { offset, len }),
            Encoding::ImplicitLittle | Encoding::ExplicitLittle,
        ) => Some(&bytes[*offset..*offset + *len]),
        _ => None,
    };
    let file = pixels::guarded(|| {
        let options = OpenFileOptions::new().read_preamble(ReadPreamble::Always);
        match direct {
            Some(_) => options
                .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
                .from_reader(bytes),
            None => options.from_reader(bytes),
        }
    })
    .map_err(|p| {
        DicomError::malformed(
            0,
            format!("parser crashed: {}", pixels::panic_text(p.as_ref())),
        )
    })?
    .map_err(|e| DicomError::malformed(0, format!("parser: {e}")))?;

    let acquisition = acquisition::read(&file, syntax.uid);
    if let Some(modality) = acquisition.modality.as_deref().filter(|_| radiographs_only) {
        if acquisition::is_non_radiograph(modality) {
            return Err(DicomError::NotARadiograph {
                modality: modality.to_owned(),
            });
        }
    }
    let header = header::read(&file, limits)?;
    match (&layout.pixel, syntax.codec) {
        (None, _) => return Err(DicomError::MissingPixelData),
        (Some(PixelLayout::Native { len, .. }), Codec::Native) => {
            if *len < header.frame_bytes() {
                return Err(DicomError::header(format!(
                    "pixel data has {len} bytes but one {}x{} frame needs {}",
                    header.rows,
                    header.cols,
                    header.frame_bytes()
                )));
            }
        }
        (Some(PixelLayout::Encapsulated { fragments }), codec) if codec != Codec::Native => {
            let first = fragments.first().ok_or_else(|| {
                DicomError::malformed(0, "encapsulated pixel data has no fragments")
            })?;
            codestream::check(codec, &bytes[first.clone()], &header)?;
        }
        (Some(_), _) => {
            return Err(DicomError::malformed(
                0,
                format!(
                    "pixel data encoding does not match transfer syntax {}",
                    syntax.uid
                ),
            ));
        }
    }
    let samples = match direct {
        Some(pixel_bytes) => pixels::native_first_frame(pixel_bytes, &header, &syntax)?,
        None => pixels::decode_first_frame(&file, &header, &syntax)?,
    };
    normalise::build(&file, &header, samples.values, samples.steps, acquisition)
}

/// Read a file from disk, refusing it before reading if it is over the size limit.
pub fn read_radiograph_file(path: &Path, limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    let io = |e: std::io::Error| DicomError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limits.max_input_bytes as u64 {
        return Err(DicomError::InputTooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: limits.max_input_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_input_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    read_radiograph(&bytes, limits)
}
