//! From stored values to a linear, MONOCHROME2-sense, display-oriented image.
//!
//! Order: modality transform (LUT sequence, else rescale), then inversion
//! (MONOCHROME1, or Presentation LUT Shape INVERSE), then orientation. VOI is
//! deliberately not applied: the model sees the linearised range, and the
//! first window is kept on the `Radiograph` for previews only.

use cxr_radiograph::{AcquisitionInfo, Radiograph, Step, VoiWindow};
use dicom_core::VR;
use dicom_dictionary_std::tags;

use crate::header::PixelHeader;
use crate::pixels::Samples;
use crate::tags::{code, decimals, single_decimal, text, Obj};
use crate::DicomError;

/// A modality transform and the range its output can take.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ModalityTransform {
    Identity,
    Rescale {
        slope: f64,
        intercept: f64,
    },
    Lut {
        first_mapped: i32,
        data: Vec<f32>,
        bits: u16,
    },
}

impl ModalityTransform {
    fn apply(&self, stored: i32) -> f32 {
        match self {
            ModalityTransform::Identity => stored as f32,
            ModalityTransform::Rescale { slope, intercept } => {
                (f64::from(stored) * slope + intercept) as f32
            }
            ModalityTransform::Lut {
                first_mapped, data, ..
            } => {
                let index =
                    (i64::from(stored) - i64::from(*first_mapped)).clamp(0, data.len() as i64 - 1);
                data[index as usize]
            }
        }
    }

    /// The output range for stored values in `[lo, hi]`.
    fn range(&self, lo: i32, hi: i32) -> (f32, f32) {
        match self {
            ModalityTransform::Lut { data, .. } => {
                let min = data.iter().copied().fold(f32::INFINITY, f32::min);
                let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                (min, max)
            }
            _ => {
                let (a, b) = (self.apply(lo), self.apply(hi));
                (a.min(b), a.max(b))
            }
        }
    }

    fn step(&self) -> Step {
        match self {
            ModalityTransform::Identity => Step::ModalityIdentity,
            ModalityTransform::Rescale { slope, intercept } => Step::ModalityRescale {
                slope: *slope,
                intercept: *intercept,
            },
            ModalityTransform::Lut {
                first_mapped,
                data,
                bits,
            } => Step::ModalityLutSequence {
                entries: data.len() as u32,
                first_mapped: *first_mapped,
                bits: *bits,
            },
        }
    }
}

fn lut_error(reason: impl Into<String>) -> DicomError {
    DicomError::BadModalityLut {
        reason: reason.into(),
    }
}

/// Read the modality transform: the Modality LUT Sequence wins over rescale values.
pub(crate) fn modality_transform(
    obj: &Obj,
    header: &PixelHeader,
) -> Result<ModalityTransform, DicomError> {
    if let Some(seq) = obj.get(tags::MODALITY_LUT_SEQUENCE) {
        let item = seq
            .items()
            .and_then(|i| i.first())
            .ok_or_else(|| lut_error("Modality LUT Sequence has no item"))?;
        return lut_from_item(item, header);
    }
    let slope =
        single_decimal(obj, tags::RESCALE_SLOPE, "RescaleSlope").map_err(DicomError::header)?;
    let intercept = single_decimal(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept")
        .map_err(DicomError::header)?;
    match (slope, intercept) {
        (None, None) => Ok(ModalityTransform::Identity),
        (Some(s), _) if s.abs() < f64::MIN_POSITIVE => Err(DicomError::header("RescaleSlope is 0")),
        (s, i) => Ok(ModalityTransform::Rescale {
            slope: s.unwrap_or(1.0),
            intercept: i.unwrap_or(0.0),
        }),
    }
}

fn lut_from_item(item: &Obj, header: &PixelHeader) -> Result<ModalityTransform, DicomError> {
    let descriptor = item
        .get(tags::LUT_DESCRIPTOR)
        .ok_or_else(|| lut_error("LUT Descriptor missing"))?
        .to_multi_int::<i64>()
        .map_err(|e| lut_error(format!("LUT Descriptor unreadable: {e}")))?;
    let [entries, first, bits] = descriptor[..] else {
        return Err(lut_error(format!(
            "LUT Descriptor has {} values, expected 3",
            descriptor.len()
        )));
    };
    let entries = if entries == 0 {
        65536
    } else {
        entries & 0xFFFF
    } as usize;
    // The first mapped value is signed when the pixels are (the VR may say US anyway).
    let first = if header.signed {
        i64::from((first & 0xFFFF) as u16 as i16)
    } else {
        first & 0xFFFF
    } as i32;
    if !(8..=16).contains(&bits) {
        return Err(lut_error(format!(
            "LUT Descriptor says {bits} bits per entry, expected 8 to 16"
        )));
    }
    let element = item
        .get(tags::LUT_DATA)
        .ok_or_else(|| lut_error("LUT Data missing"))?;
    let data: Vec<f32> = if element.vr() == VR::OW || element.vr() == VR::OB {
        let bytes = element
            .to_bytes()
            .map_err(|e| lut_error(format!("LUT Data unreadable: {e}")))?;
        bytes
            .chunks_exact(2)
            .map(|c| f32::from(u16::from_ne_bytes([c[0], c[1]])))
            .collect()
    } else {
        element
            .to_multi_int::<u16>()
            .map_err(|e| lut_error(format!("LUT Data unreadable: {e}")))?
            .into_iter()
            .map(f32::from)
            .collect()
    };
    if data.len() != entries {
        return Err(lut_error(format!(
            "LUT Data has {} entries, the descriptor says {entries}",
            data.len()
        )));
    }
    Ok(ModalityTransform::Lut {
        first_mapped: first,
        data,
        bits: bits as u16,
    })
}

/// Build the radiograph from stored samples: modality, inversion, VOI record,
/// overlays, orientation.
pub(crate) fn build(
    obj: &Obj,
    header: &PixelHeader,
    samples: Samples,
    mut acquisition: AcquisitionInfo,
) -> Result<Radiograph, DicomError> {
    let Samples {
        rows,
        cols,
        values: stored,
        mut steps,
    } = samples;
    // A reduced decode spans the same film with fewer, larger pixels.
    if let Some([row_mm, col_mm]) = acquisition.pixel_spacing_mm {
        acquisition.pixel_spacing_mm = Some([
            row_mm * f64::from(header.rows) / f64::from(rows),
            col_mm * f64::from(header.cols) / f64::from(cols),
        ]);
    }
    let transform = modality_transform(obj, header)?;
    let (lo_stored, hi_stored) = if header.signed {
        (
            -(1i32 << (header.bits_stored - 1)),
            (1i32 << (header.bits_stored - 1)) - 1,
        )
    } else {
        (0, ((1i64 << header.bits_stored) - 1) as i32)
    };
    let (low, high) = transform.range(lo_stored, hi_stored);
    steps.push(transform.step());
    let mut linear: Vec<f32> = stored.into_iter().map(|v| transform.apply(v)).collect();

    let photometric = code(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let inverse_shape = code(obj, tags::PRESENTATION_LUT_SHAPE).as_deref() == Some("INVERSE");
    if photometric == "MONOCHROME1" || inverse_shape {
        // MONOCHROME1 + INVERSE is the DX norm and means the same thing: invert once.
        for v in &mut linear {
            *v = low + high - *v;
        }
        steps.push(if photometric == "MONOCHROME1" {
            Step::InvertedMonochrome1 { low, high }
        } else {
            Step::InvertedPresentationLut { low, high }
        });
    }

    let voi_window = match (
        decimals(obj, tags::WINDOW_CENTER),
        decimals(obj, tags::WINDOW_WIDTH),
    ) {
        (Some(c), Some(w)) if !c.is_empty() && !w.is_empty() && w[0] > 0.0 => Some(VoiWindow {
            center: c[0],
            width: w[0],
        }),
        _ => None,
    };
    if let Some(w) = voi_window {
        steps.push(Step::VoiNotApplied {
            center: w.center,
            width: w.width,
        });
    }
    let overlay_groups = obj
        .iter()
        .filter(|e| e.header().tag.group() & 0xFF01 == 0x6000 && e.header().tag.element() == 0x3000)
        .count() as u32;
    if overlay_groups > 0 {
        steps.push(Step::OverlaysIgnored {
            groups: overlay_groups,
        });
    }

    let mut radiograph = Radiograph::new(
        usize::from(rows),
        usize::from(cols),
        linear,
        (low, high),
        acquisition,
    )?;
    radiograph.steps = steps;
    radiograph.voi_window = voi_window;
    radiograph.burned_in_annotation =
        code(obj, tags::BURNED_IN_ANNOTATION).and_then(|v| match v.as_str() {
            "YES" => Some(true),
            "NO" => Some(false),
            _ => None,
        });
    orient(
        &mut radiograph,
        text(obj, tags::PATIENT_ORIENTATION).as_deref(),
    )?;
    Ok(radiograph)
}

/// Flip or transpose so that rows run towards the patient's left (L) and
/// columns towards the feet (F): standard display of a frontal radiograph.
pub(crate) fn orient(r: &mut Radiograph, orientation: Option<&str>) -> Result<(), DicomError> {
    let Some(orientation) = orientation else {
        r.steps.push(Step::OrientationAssumed {
            reason: "Patient Orientation absent; left as stored".into(),
        });
        return Ok(());
    };
    let parts: Vec<&str> = orientation.split('\\').map(str::trim).collect();
    let primary = |s: &str| s.chars().next().map(|c| c.to_ascii_uppercase());
    let (mut row, mut col) = match parts[..] {
        [a, b] => (primary(a), primary(b)),
        _ => (None, None),
    };
    let lateral_axis = |c: Option<char>| matches!(c, Some('L' | 'R'));
    let long_axis = |c: Option<char>| matches!(c, Some('H' | 'F'));
    if long_axis(row) && lateral_axis(col) {
        transpose(r)?;
        r.steps.push(Step::Transposed);
        std::mem::swap(&mut row, &mut col);
    }
    if !(lateral_axis(row) && long_axis(col)) {
        r.steps.push(Step::OrientationAssumed {
            reason: format!("Patient Orientation {orientation:?} is not frontal; left as stored"),
        });
        return Ok(());
    }
    if row == Some('R') {
        let cols = r.cols();
        r.map_pixels(|p| p.chunks_exact_mut(cols).for_each(<[f32]>::reverse));
        r.steps.push(Step::FlippedHorizontally);
    }
    if col == Some('H') {
        let (rows, cols) = (r.rows(), r.cols());
        r.map_pixels(|p| {
            for top in 0..rows / 2 {
                let bottom = rows - 1 - top;
                let (head, tail) = p.split_at_mut(bottom * cols);
                head[top * cols..(top + 1) * cols].swap_with_slice(&mut tail[..cols]);
            }
        });
        r.steps.push(Step::FlippedVertically);
    }
    Ok(())
}

fn transpose(r: &mut Radiograph) -> Result<(), DicomError> {
    let (rows, cols) = (r.rows(), r.cols());
    let src = r.pixels();
    let mut out = vec![0.0f32; rows * cols];
    for y in 0..rows {
        for x in 0..cols {
            out[x * rows + y] = src[y * cols + x];
        }
    }
    r.reshape(cols, rows, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Radiograph {
        // 2 rows x 3 cols: 0 1 2 / 3 4 5
        Radiograph::new(
            2,
            3,
            (0..6).map(|v| v as f32).collect(),
            (0.0, 5.0),
            AcquisitionInfo::untagged(),
        )
        .unwrap()
    }

    #[test]
    fn standard_orientation_is_left_alone() {
        let mut r = grid();
        orient(&mut r, Some("L\\F")).unwrap();
        assert_eq!(r.pixels(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn right_and_head_flip() {
        let mut r = grid();
        orient(&mut r, Some("R\\H")).unwrap();
        assert_eq!(r.pixels(), &[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
        assert!(r.steps.contains(&Step::FlippedHorizontally));
        assert!(r.steps.contains(&Step::FlippedVertically));
    }

    #[test]
    fn swapped_axes_transpose() {
        let mut r = grid();
        orient(&mut r, Some("F\\L")).unwrap();
        assert_eq!((r.rows(), r.cols()), (3, 2));
        assert_eq!(r.pixels(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn lateral_and_absent_are_recorded() {
        let mut r = grid();
        orient(&mut r, Some("A\\F")).unwrap();
        orient(&mut r, None).unwrap();
        assert_eq!(r.pixels(), grid().pixels());
        assert_eq!(
            r.steps
                .iter()
                .filter(|s| matches!(s, Step::OrientationAssumed { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn lut_clamps_outside_its_domain() {
        let lut = ModalityTransform::Lut {
            first_mapped: 10,
            data: vec![100.0, 200.0, 300.0],
            bits: 16,
        };
        assert_eq!(lut.apply(5), 100.0);
        assert_eq!(lut.apply(11), 200.0);
        assert_eq!(lut.apply(99), 300.0);
        assert_eq!(lut.range(0, 4095), (100.0, 300.0));
        let rescale = ModalityTransform::Rescale {
            slope: -2.0,
            intercept: 1.0,
        };
        assert_eq!(rescale.range(0, 10), (-19.0, 1.0));
    }
}
