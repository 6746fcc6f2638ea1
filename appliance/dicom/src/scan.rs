//! Structural pre-scan: walk every element header of the file, before any DICOM
//! library sees it, and check each length against the bytes actually present.
//!
//! Why: dicom-rs 0.10 trusts element lengths, so a 1.6 KB file with a corrupt
//! length can make it allocate gigabytes. After this scan, every length in the
//! file is known to fit inside the input, the element count and nesting are
//! bounded, and the pixel data's layout (native or fragments) is known for the
//! codestream checks.

use std::io::Read;
use std::ops::Range;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::syntax::{classify, Encoding, Syntax};
use crate::{DicomError, ReadLimits};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Where the pixel data sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PixelLayout {
    /// Native pixel data: `len` bytes from `offset` of the scanned buffer
    /// (the inflated copy for the deflate syntax).
    Native { offset: usize, len: usize },
    /// Encapsulated fragments (the offset table excluded), as ranges into
    /// the input, and the Basic Offset Table's value (empty when absent).
    Encapsulated {
        fragments: Vec<Range<usize>>,
        offset_table: Range<usize>,
    },
}

/// What the scan learned.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub syntax: Syntax,
    pub pixel: Option<PixelLayout>,
}

/// Scan a Part 10 file: preamble, meta group, then the data set.
pub(crate) fn scan(bytes: &[u8], limits: &ReadLimits) -> Result<Layout, DicomError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(DicomError::InputTooLarge {
            size: bytes.len(),
            limit: limits.max_input_bytes,
        });
    }
    if !crate::has_part10_prefix(bytes) {
        return Err(DicomError::NotDicom {
            reason: "no DICM prefix after the 128-byte preamble".into(),
        });
    }
    let (uid, data_start) = scan_meta(bytes)?;
    let syntax = classify(&uid)?;
    let mut walker = Walker {
        big: syntax.encoding == Encoding::ExplicitBig,
        explicit: syntax.encoding != Encoding::ImplicitLittle,
        limits,
        elements: 0,
        pixel: None,
    };
    match syntax.encoding {
        Encoding::DeflatedExplicitLittle => {
            let inflated = inflate_bounded(&bytes[data_start..], limits.max_inflated_bytes)?;
            walker.walk_top(&inflated, 0)?;
            // The fragments would point into the inflated copy; deflate is only
            // defined with native pixel data, so keep only the native layout.
            if matches!(walker.pixel, Some(PixelLayout::Encapsulated { .. })) {
                return Err(DicomError::malformed(
                    data_start,
                    "encapsulated pixel data in a deflated data set",
                ));
            }
        }
        _ => walker.walk_top(bytes, data_start)?,
    }
    Ok(Layout {
        syntax,
        pixel: walker.pixel,
    })
}

fn inflate_bounded(data: &[u8], limit: usize) -> Result<Vec<u8>, DicomError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::DeflateDecoder::new(data)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| {
            DicomError::malformed(132, format!("deflated data set does not inflate: {e}"))
        })?;
    if out.len() > limit {
        return Err(DicomError::InputTooLarge {
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

fn u16_at(buf: &[u8], pos: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = buf.get(pos..pos + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn u32_at(buf: &[u8], pos: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// VRs whose explicit header has 2 reserved bytes and a 32-bit length.
fn has_long_length(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UR"
            | b"UT"
            | b"UN"
            | b"SV"
            | b"UV"
    )
}

fn is_standard_vr(vr: &[u8; 2]) -> bool {
    const STANDARD: [&[u8; 2]; 34] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
    ];
    STANDARD.contains(&vr)
}

fn is_text(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"ST"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UR"
            | b"UT"
    )
}

/// The file meta group (always explicit VR little endian). Returns the
/// transfer syntax UID and the offset where the data set starts.
fn scan_meta(bytes: &[u8]) -> Result<(String, usize), DicomError> {
    // dicom-rs walks the meta group by its declared length, so that length
    // must be right: otherwise it reads data-set bytes as meta elements.
    let declared = match (
        u16_at(bytes, 132, false),
        u16_at(bytes, 134, false),
        bytes.get(136..138),
        u16_at(bytes, 138, false),
    ) {
        (Some(0x0002), Some(0x0000), Some(b"UL"), Some(4)) => u32_at(bytes, 140, false),
        _ => None,
    }
    .ok_or_else(|| DicomError::NotDicom {
        reason: "file meta group does not start with its group length (0002,0000)".into(),
    })?;
    let mut pos = 144;
    let mut uid = None;
    while let Some(group) = u16_at(bytes, pos, false) {
        if group != 0x0002 {
            break;
        }
        let elem = u16_at(bytes, pos + 2, false).unwrap_or(0);
        let vr: [u8; 2] = bytes
            .get(pos + 4..pos + 6)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| DicomError::malformed(pos, "file meta element header truncated"))?;
        if !is_standard_vr(&vr) {
            return Err(DicomError::malformed(
                pos,
                format!("file meta element (0002,{elem:04X}) has an unknown VR"),
            ));
        }
        let (len, header) = if has_long_length(&vr) {
            (u32_at(bytes, pos + 8, false), 12)
        } else {
            (u16_at(bytes, pos + 6, false).map(u32::from), 8)
        };
        let len =
            len.ok_or_else(|| DicomError::malformed(pos, "file meta element header truncated"))?;
        let start = pos + header;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= bytes.len());
        let Some(end) = end else {
            return Err(DicomError::malformed(pos, format!("file meta element (0002,{elem:04X}) claims {len} bytes, past the end of the file")));
        };
        if elem == 0x0010 {
            let raw = &bytes[start..end];
            let text = String::from_utf8_lossy(raw);
            uid = Some(text.trim_end_matches(['\0', ' ']).trim().to_owned());
        }
        pos = end;
    }
    if u64::from(declared) != (pos - 144) as u64 {
        return Err(DicomError::malformed(
            140,
            format!(
                "file meta group length says {declared} bytes but the group is {} bytes",
                pos - 144
            ),
        ));
    }
    match uid {
        Some(u) if !u.is_empty() => Ok((u, pos)),
        _ => Err(DicomError::NotDicom {
            reason: "file meta group has no Transfer Syntax UID".into(),
        }),
    }
}

struct Walker<'l> {
    big: bool,
    explicit: bool,
    limits: &'l ReadLimits,
    elements: usize,
    pixel: Option<PixelLayout>,
}

/// Where a data set being walked ends.
#[derive(Clone, Copy)]
enum End {
    /// At the end of the buffer (the top-level data set).
    Buffer,
    /// At exactly this offset (a defined-length item).
    At(usize),
    /// At an item delimiter (an undefined-length item).
    ItemDelimiter,
}

impl Walker<'_> {
    fn count(&mut self, pos: usize) -> Result<(), DicomError> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(DicomError::malformed(
                pos,
                format!("more than {} elements", self.limits.max_elements),
            ));
        }
        Ok(())
    }

    fn walk_top(&mut self, buf: &[u8], start: usize) -> Result<(), DicomError> {
        self.walk_dataset(buf, start, End::Buffer, 0).map(|_| ())
    }

    /// Walk a data set from `pos`; returns the offset just after it.
    fn walk_dataset(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        end: End,
        depth: usize,
    ) -> Result<usize, DicomError> {
        if depth > self.limits.max_sequence_depth {
            return Err(DicomError::malformed(
                pos,
                format!(
                    "sequences nested deeper than {}",
                    self.limits.max_sequence_depth
                ),
            ));
        }
        let limit = match end {
            End::At(e) => e,
            _ => buf.len(),
        };
        loop {
            if pos == limit {
                return match end {
                    End::ItemDelimiter => Err(DicomError::malformed(
                        pos,
                        "item not terminated (file truncated?)",
                    )),
                    _ => Ok(pos),
                };
            }
            if limit - pos < 8 {
                return Err(DicomError::malformed(
                    pos,
                    format!(
                        "{} stray bytes where an element header should be (file truncated?)",
                        limit - pos
                    ),
                ));
            }
            let group = u16_at(buf, pos, self.big).unwrap_or(0);
            let elem = u16_at(buf, pos + 2, self.big).unwrap_or(0);
            self.count(pos)?;
            if (group, elem) == ITEM_END {
                if matches!(end, End::ItemDelimiter) {
                    return Ok(pos + 8);
                }
                return Err(DicomError::malformed(pos, "item delimiter outside an item"));
            }
            if group == 0xFFFE {
                return Err(DicomError::malformed(
                    pos,
                    format!("unexpected delimiter (FFFE,{elem:04X}) in a data set"),
                ));
            }
            pos = self.walk_element(buf, pos, limit, group, elem, depth)?;
        }
    }

    /// Walk one element at `pos` (its tag already read); returns the offset after it.
    fn walk_element(
        &mut self,
        buf: &[u8],
        pos: usize,
        limit: usize,
        group: u16,
        elem: u16,
        depth: usize,
    ) -> Result<usize, DicomError> {
        let (vr, len, header): (Option<[u8; 2]>, u32, usize) = if self.explicit {
            let vr: [u8; 2] = [buf[pos + 4], buf[pos + 5]];
            // Only the standard VRs: for anything else dicom-rs guesses the
            // header layout differently from us, and a length we never checked
            // would reach its allocator.
            if !is_standard_vr(&vr) {
                return Err(DicomError::malformed(
                    pos,
                    format!(
                        "element ({group:04X},{elem:04X}) has an unknown VR {:?}",
                        String::from_utf8_lossy(&vr)
                    ),
                ));
            }
            if has_long_length(&vr) {
                let len = u32_at(buf, pos + 8, self.big)
                    .filter(|_| pos + 12 <= limit)
                    .ok_or_else(|| DicomError::malformed(pos, "element header truncated"))?;
                (Some(vr), len, 12)
            } else {
                (
                    Some(vr),
                    u32::from(u16_at(buf, pos + 6, self.big).unwrap_or(0)),
                    8,
                )
            }
        } else {
            let vr = dictionary_vr(group, elem);
            (vr, u32_at(buf, pos + 4, self.big).unwrap_or(0), 8)
        };
        let start = pos + header;
        let is_sequence = vr == Some(*b"SQ")
            || (!self.explicit && len == UNDEFINED && (group, elem) != PIXEL_DATA);
        let top = depth == 0;

        if len == UNDEFINED {
            if (group, elem) == PIXEL_DATA {
                let (pixel, after) = self.walk_fragments(buf, start, limit)?;
                if top {
                    self.pixel = Some(pixel);
                }
                return Ok(after);
            }
            if vr == Some(*b"UN") {
                // UN with undefined length holds implicit VR little endian items.
                let saved = (self.explicit, self.big);
                (self.explicit, self.big) = (false, false);
                let after = self.walk_sequence(buf, start, None, depth + 1);
                (self.explicit, self.big) = saved;
                return after;
            }
            if is_sequence {
                return self.walk_sequence(buf, start, None, depth + 1);
            }
            return Err(DicomError::malformed(pos, format!("element ({group:04X},{elem:04X}) has an undefined length but is not a sequence")));
        }

        let len = len as usize;
        let Some(end) = start.checked_add(len).filter(|e| *e <= limit) else {
            return Err(DicomError::malformed(
                pos,
                format!(
                    "element ({group:04X},{elem:04X}) claims {len} bytes but only {} remain",
                    limit.saturating_sub(start)
                ),
            ));
        };
        if let Some(vr) = vr {
            if is_text(&vr) && len > self.limits.max_text_element_bytes {
                return Err(DicomError::malformed(
                    pos,
                    format!(
                        "text element ({group:04X},{elem:04X}) is {len} bytes, over {}",
                        self.limits.max_text_element_bytes
                    ),
                ));
            }
        }
        if is_sequence {
            self.walk_sequence(buf, start, Some(end), depth + 1)?;
        } else if top && (group, elem) == PIXEL_DATA {
            self.pixel = Some(PixelLayout::Native { offset: start, len });
        }
        Ok(end)
    }

    /// Walk sequence items from `pos`, up to `end` or the sequence delimiter.
    fn walk_sequence(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        end: Option<usize>,
        depth: usize,
    ) -> Result<usize, DicomError> {
        let limit = end.unwrap_or(buf.len());
        loop {
            if Some(pos) == end {
                return Ok(pos);
            }
            if limit.saturating_sub(pos) < 8 {
                return Err(DicomError::malformed(
                    pos,
                    "sequence not terminated (file truncated?)",
                ));
            }
            self.count(pos)?;
            let tag = (
                u16_at(buf, pos, self.big).unwrap_or(0),
                u16_at(buf, pos + 2, self.big).unwrap_or(0),
            );
            let len = u32_at(buf, pos + 4, self.big).unwrap_or(0);
            pos += 8;
            match tag {
                SEQUENCE_END if end.is_none() => return Ok(pos),
                ITEM if len == UNDEFINED => {
                    pos = self.walk_dataset(buf, pos, End::ItemDelimiter, depth)?;
                }
                ITEM => {
                    let Some(item_end) = pos.checked_add(len as usize).filter(|e| *e <= limit)
                    else {
                        return Err(DicomError::malformed(
                            pos - 8,
                            format!(
                                "sequence item claims {len} bytes but only {} remain",
                                limit - pos
                            ),
                        ));
                    };
                    pos = self.walk_dataset(buf, pos, End::At(item_end), depth)?;
                }
                (g, e) => {
                    return Err(DicomError::malformed(
                        pos - 8,
                        format!("expected a sequence item, found ({g:04X},{e:04X})"),
                    ));
                }
            }
        }
    }

    /// Walk encapsulated pixel data items; returns the fragments (offset table
    /// excluded) and the offset after the sequence delimiter.
    fn walk_fragments(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        limit: usize,
    ) -> Result<(PixelLayout, usize), DicomError> {
        let mut fragments = Vec::new();
        let mut offset_table = pos..pos;
        let mut first = true;
        loop {
            if limit.saturating_sub(pos) < 8 {
                return Err(DicomError::malformed(
                    pos,
                    "encapsulated pixel data not terminated (file truncated?)",
                ));
            }
            self.count(pos)?;
            let tag = (
                u16_at(buf, pos, self.big).unwrap_or(0),
                u16_at(buf, pos + 2, self.big).unwrap_or(0),
            );
            let len = u32_at(buf, pos + 4, self.big).unwrap_or(0);
            pos += 8;
            match tag {
                SEQUENCE_END => {
                    let pixel = PixelLayout::Encapsulated {
                        fragments,
                        offset_table,
                    };
                    return Ok((pixel, pos));
                }
                ITEM if len != UNDEFINED => {
                    let Some(end) = pos.checked_add(len as usize).filter(|e| *e <= limit) else {
                        return Err(DicomError::malformed(
                            pos - 8,
                            format!(
                                "pixel data fragment claims {len} bytes but only {} remain",
                                limit - pos
                            ),
                        ));
                    };
                    if first {
                        offset_table = pos..end;
                    } else {
                        fragments.push(pos..end);
                    }
                    first = false;
                    pos = end;
                }
                (g, e) => {
                    return Err(DicomError::malformed(
                        pos - 8,
                        format!(
                            "expected a pixel data fragment, found ({g:04X},{e:04X}) length {len}"
                        ),
                    ));
                }
            }
        }
    }
}

/// The VR the standard dictionary gives a tag (for implicit VR data sets).
fn dictionary_vr(group: u16, elem: u16) -> Option<[u8; 2]> {
    let entry = StandardDataDictionary.by_tag(Tag(group, elem))?;
    let vr = match entry.vr() {
        VirtualVr::Exact(vr) => vr,
        _ => return None,
    };
    let code = vr.to_bytes();
    (vr != VR::UN).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal explicit-LE file: preamble, meta with the TS, then `body`.
    fn file(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(8 + uid.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        out.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        out.extend_from_slice(&uid);
        out.extend_from_slice(body);
        out
    }

    fn explicit_short(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn accepts_a_well_formed_native_file() {
        let mut body = explicit_short(0x0008, 0x0060, b"CS", b"CR");
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        body.extend_from_slice(&4u32.to_le_bytes());
        body.extend_from_slice(&[1, 2, 3, 4]);
        let f = file(EXPLICIT, &body);
        let layout = scan(&f, &ReadLimits::default()).unwrap();
        let Some(PixelLayout::Native { offset, len: 4 }) = layout.pixel else {
            panic!("{:?}", layout.pixel)
        };
        assert_eq!(&f[offset..offset + 4], &[1, 2, 3, 4]);
    }

    #[test]
    fn refuses_a_length_past_the_end_before_any_allocation() {
        let mut body = explicit_short(0x0008, 0x0060, b"CS", b"CR");
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        body.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        body.extend_from_slice(&[1, 2, 3, 4]);
        let err = scan(&file(EXPLICIT, &body), &ReadLimits::default()).unwrap_err();
        assert_eq!(err.code(), "DICOM_MALFORMED", "{err}");
        assert!(err.to_string().contains("(7FE0,0010)"), "{err}");
    }

    /// Regression (found by the fuzzer): an unknown VR made dicom-rs read the
    /// length field differently from the scan and allocate over 1 GB.
    #[test]
    fn refuses_unknown_vrs() {
        let body = explicit_short(0x0008, 0x1090, b"LM", b"CR");
        let err = scan(&file(EXPLICIT, &body), &ReadLimits::default()).unwrap_err();
        assert!(err.to_string().contains("unknown VR"), "{err}");
        let body = explicit_short(0x0008, 0x1090, b"LO", b"CR");
        assert!(scan(&file(EXPLICIT, &body), &ReadLimits::default()).is_ok());
    }

    #[test]
    fn meta_group_length_must_match_the_group() {
        let mut f = file(EXPLICIT, &explicit_short(0x0008, 0x0060, b"CS", b"CR"));
        assert!(scan(&f, &ReadLimits::default()).is_ok());
        f[140] = f[140].wrapping_add(2);
        let err = scan(&f, &ReadLimits::default()).unwrap_err();
        assert!(err.to_string().contains("group length says"), "{err}");
    }

    #[test]
    fn refuses_missing_prefix_and_unknown_syntax() {
        assert_eq!(
            scan(b"hello", &ReadLimits::default()).unwrap_err().code(),
            "DICOM_NOT_PART10"
        );
        let err = scan(&file("1.2.3.4", &[]), &ReadLimits::default()).unwrap_err();
        assert_eq!(err.code(), "DICOM_UNSUPPORTED_TRANSFER_SYNTAX");
    }

    #[test]
    fn collects_fragments_without_the_offset_table() {
        let mut body = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]); // empty offset table
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0xAA, 0xBB]);
        body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let f = file("1.2.840.10008.1.2.4.50", &body);
        let layout = scan(&f, &ReadLimits::default()).unwrap();
        let Some(PixelLayout::Encapsulated {
            fragments,
            offset_table,
        }) = layout.pixel
        else {
            panic!("no fragments")
        };
        assert_eq!(fragments.len(), 1);
        assert_eq!(&f[fragments[0].clone()], &[0xAA, 0xBB]);
        assert!(offset_table.is_empty());
        // Truncate before the delimiter: refused.
        let cut = &f[..f.len() - 8];
        assert_eq!(
            scan(cut, &ReadLimits::default()).unwrap_err().code(),
            "DICOM_MALFORMED"
        );
    }

    #[test]
    fn bounds_nesting_depth() {
        // 40 nested undefined-length sequences, never closed properly.
        let mut body = Vec::new();
        for _ in 0..40 {
            body.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = scan(&file(EXPLICIT, &body), &ReadLimits::default()).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn bounds_element_count() {
        let mut body = Vec::new();
        for _ in 0..50 {
            body.extend_from_slice(&explicit_short(0x0009, 0x0010, b"LO", b"XX"));
        }
        let limits = ReadLimits {
            max_elements: 10,
            ..ReadLimits::default()
        };
        let err = scan(&file(EXPLICIT, &body), &limits).unwrap_err();
        assert!(err.to_string().contains("more than 10 elements"), "{err}");
    }
}
