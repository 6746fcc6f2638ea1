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
mod reduced;
mod scan;
mod syntax;
mod tags;
mod transcode;

use std::io::Read;
use std::path::Path;

pub use acquisition::{classify as input_class_from_tags, is_frontal_view};
pub use cxr_radiograph::{AcquisitionInfo, InputClass, Radiograph};
pub use error::DicomError;
pub use limits::ReadLimits;
pub use pixels::inside_decoder_guard;
pub use reduced::DecodeTarget;
pub use syntax::decodable_transfer_syntaxes;
pub use transcode::{data_set_in_implicit_vr_le, IMPLICIT_VR_LE};

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

/// Who an instance says it is: the UIDs a receiver files it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: Option<String>,
    /// The patient and study attributes a derived object (a result SR)
    /// repeats, as decoded text.
    pub study: StudyHeader,
    /// Modality (0008,0060), upper case.
    pub modality: Option<String>,
    /// The equipment that made or changed the object: the General Equipment
    /// module's, then each Contributing Equipment item's.
    pub equipment: Vec<Equipment>,
}

/// One piece of equipment an object names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equipment {
    pub manufacturer: Option<String>,
    pub model_name: Option<String>,
}

/// The General Equipment module's manufacturer and model, then those of
/// each Contributing Equipment Sequence item.
fn equipment(obj: &tags::Obj) -> Vec<Equipment> {
    use dicom_dictionary_std::tags as t;
    let one = |o: &tags::Obj| Equipment {
        manufacturer: tags::text(o, t::MANUFACTURER),
        model_name: tags::text(o, t::MANUFACTURER_MODEL_NAME),
    };
    let mut out = vec![one(obj)];
    if let Some(items) = obj
        .get(t::CONTRIBUTING_EQUIPMENT_SEQUENCE)
        .and_then(|e| e.items())
    {
        out.extend(items.iter().map(one));
    }
    out
}

pub use cxr_radiograph::StudyHeader;

/// Read only an instance's identity (SOP class, SOP instance and study
/// UIDs): the same structural scan as [`read_radiograph`], then the header
/// up to the pixel data, nothing decoded. A receiver calls it before it
/// acknowledges an instance, so that a data set it cannot parse is refused
/// while the sender can still act.
///
/// Never panics on any input.
pub fn read_identity(bytes: &[u8], limits: &ReadLimits) -> Result<InstanceIdentity, DicomError> {
    scan::scan(bytes, limits)?;
    let file = pixels::guarded(|| {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .from_reader(bytes)
    })
    .map_err(|p| {
        DicomError::malformed(
            0,
            format!("parser crashed: {}", pixels::panic_text(p.as_ref())),
        )
    })?
    .map_err(|e| DicomError::malformed(0, format!("parser: {e}")))?;
    let uid = |tag, name: &str| {
        tags::text(&file, tag).ok_or_else(|| DicomError::header(format!("{name} is missing")))
    };
    use dicom_dictionary_std::tags as t;
    Ok(InstanceIdentity {
        sop_class_uid: uid(t::SOP_CLASS_UID, "SOP Class UID")?,
        sop_instance_uid: uid(t::SOP_INSTANCE_UID, "SOP Instance UID")?,
        study_instance_uid: uid(t::STUDY_INSTANCE_UID, "Study Instance UID")?,
        series_instance_uid: tags::text(&file, t::SERIES_INSTANCE_UID),
        study: StudyHeader {
            patient_name: tags::text(&file, t::PATIENT_NAME),
            patient_id: tags::text(&file, t::PATIENT_ID),
            patient_birth_date: tags::text(&file, t::PATIENT_BIRTH_DATE),
            patient_sex: tags::text(&file, t::PATIENT_SEX),
            study_date: tags::text(&file, t::STUDY_DATE),
            study_time: tags::text(&file, t::STUDY_TIME),
            accession_number: tags::text(&file, t::ACCESSION_NUMBER),
            study_id: tags::text(&file, t::STUDY_ID),
            referring_physician_name: tags::text(&file, t::REFERRING_PHYSICIAN_NAME),
        },
        modality: tags::code(&file, t::MODALITY),
        equipment: equipment(&file),
    })
}

/// Read a DICOM Part 10 file from memory into a normalised radiograph.
/// A study whose modality is not a projection radiograph (CT, MR, US, NM, ...)
/// is refused before its pixels are decoded.
///
/// Never panics on any input: every failure is a [`DicomError`] with a code.
pub fn read_radiograph(bytes: &[u8], limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    read_image(bytes, limits, true, DecodeTarget::Full)
}

/// [`read_radiograph`] that decodes no more than `target` asks for: a JPEG
/// 2000 or DCT JPEG film may come back with fewer rows and columns than
/// stored (recorded as a [`cxr_radiograph::Step::ReducedResolution`], with
/// the pixel spacing scaled to match). It accepts whatever
/// [`read_radiograph`] accepts, and refuses the same files but one kind: a
/// JPEG 2000 codestream damaged only in the levels it does not decode.
pub fn read_radiograph_for(
    bytes: &[u8],
    limits: &ReadLimits,
    target: DecodeTarget,
) -> Result<Radiograph, DicomError> {
    read_image(bytes, limits, true, target)
}

/// [`read_radiograph`] without the modality refusal: the pixels of a CT, MR
/// or ultrasound image too. For fitting the content gate on what the
/// appliance must reject; the appliance's study path never calls it.
pub fn read_any_modality(bytes: &[u8], limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    read_image(bytes, limits, false, DecodeTarget::Full)
}

fn read_image(
    bytes: &[u8],
    limits: &ReadLimits,
    radiographs_only: bool,
    target: DecodeTarget,
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
    check_pixel_data(&layout, bytes, &header)?;
    let reduced = match &layout.pixel {
        Some(PixelLayout::Encapsulated {
            fragments,
            offset_table,
        }) if target != DecodeTarget::Full => {
            first_frame_bytes(bytes, fragments, offset_table, header.frames, syntax.codec)
                .and_then(|frame| reduced::decode(target, &syntax, &header, &frame))
        }
        _ => None,
    };
    let samples = match (reduced, direct) {
        (Some(samples), _) => samples,
        (None, Some(pixel_bytes)) => pixels::native_first_frame(pixel_bytes, &header, &syntax)?,
        (None, None) => pixels::decode_first_frame(&file, &header, &syntax)?,
    };
    normalise::build(&file, &header, samples, acquisition)
}

/// The pixel data against the header and transfer syntax, before any
/// decoder sees it: a native frame must be all there, a codestream must
/// declare the header's geometry.
fn check_pixel_data(
    layout: &scan::Layout,
    bytes: &[u8],
    header: &header::PixelHeader,
) -> Result<(), DicomError> {
    match (&layout.pixel, layout.syntax.codec) {
        (None, _) => Err(DicomError::MissingPixelData),
        (Some(PixelLayout::Native { len, .. }), Codec::Native) => {
            if *len < header.frame_bytes() {
                return Err(DicomError::header(format!(
                    "pixel data has {len} bytes but one {}x{} frame needs {}",
                    header.rows,
                    header.cols,
                    header.frame_bytes()
                )));
            }
            Ok(())
        }
        (Some(PixelLayout::Encapsulated { fragments, .. }), codec) if codec != Codec::Native => {
            let first = fragments.first().ok_or_else(|| {
                DicomError::malformed(0, "encapsulated pixel data has no fragments")
            })?;
            codestream::check(codec, &bytes[first.clone()], header)
        }
        (Some(_), _) => Err(DicomError::malformed(
            0,
            format!(
                "pixel data encoding does not match transfer syntax {}",
                layout.syntax.uid
            ),
        )),
    }
}

/// The codestream of frame 0, taken exactly as dicom-rs takes it for a full
/// decode: the first fragment when there is one per frame (or, for JPEG,
/// only one), else the fragments from the Basic Offset Table's first entry
/// up to its second.
fn first_frame_bytes<'a>(
    bytes: &'a [u8],
    fragments: &[std::ops::Range<usize>],
    offset_table: &std::ops::Range<usize>,
    frames: u32,
    codec: Codec,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    let n = fragments.len();
    if n == frames as usize || (codec == Codec::Jpeg && n == 1) {
        return bytes.get(fragments.first()?.clone()).map(Cow::Borrowed);
    }
    let entry = |k: usize| {
        let at = offset_table.start + 4 * k;
        (at + 4 <= offset_table.end)
            .then(|| bytes.get(at..at + 4))
            .flatten()
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (start, end) = (entry(0).unwrap_or(0), entry(1));
    let mut frame = Vec::new();
    let mut offset = 0usize;
    for f in fragments {
        if offset >= start {
            frame.extend_from_slice(bytes.get(f.clone())?);
        }
        offset += f.len() + 8;
        if end.is_some_and(|end| offset >= end) {
            break;
        }
    }
    Some(Cow::Owned(frame))
}

/// Read a file from disk, refusing it before reading if it is over the size limit.
pub fn read_radiograph_file(path: &Path, limits: &ReadLimits) -> Result<Radiograph, DicomError> {
    read_radiograph_file_for(path, limits, DecodeTarget::Full)
}

/// [`read_radiograph_file`] decoding no more than `target` asks for (see
/// [`read_radiograph_for`]).
pub fn read_radiograph_file_for(
    path: &Path,
    limits: &ReadLimits,
    target: DecodeTarget,
) -> Result<Radiograph, DicomError> {
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
    read_radiograph_for(&bytes, limits, target)
}
