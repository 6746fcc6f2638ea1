//! Checks on compressed codestreams against the DICOM header, done before a
//! decoder sees them: the decoders in dicom-rs 0.10 panic or over-allocate when
//! the codestream's own dimensions disagree with Rows/Columns.

use crate::header::PixelHeader;
use crate::syntax::Codec;
use crate::DicomError;

/// Dimensions a codestream declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Declared {
    rows: u32,
    cols: u32,
    components: u16,
    precision: u16,
}

/// Check the first frame's codestream (`first`: the first fragment).
pub(crate) fn check(codec: Codec, first: &[u8], header: &PixelHeader) -> Result<(), DicomError> {
    match codec {
        Codec::Native | Codec::EncapsulatedUncompressed => Ok(()),
        Codec::Rle => check_rle(first, header),
        Codec::Jpeg => compare(jpeg_frame(first, false)?, header, "JPEG"),
        Codec::JpegLs => compare(jpeg_frame(first, true)?, header, "JPEG-LS"),
        Codec::Jpeg2000 => compare(j2k_siz(first)?, header, "JPEG 2000"),
    }
}

fn compare(d: Declared, h: &PixelHeader, what: &str) -> Result<(), DicomError> {
    if d.rows != u32::from(h.rows) || d.cols != u32::from(h.cols) {
        return Err(DicomError::codestream(format!(
            "{what} codestream is {}x{} but Rows/Columns say {}x{}",
            d.rows, d.cols, h.rows, h.cols
        )));
    }
    if d.components != h.samples_per_pixel {
        return Err(DicomError::codestream(format!(
            "{what} codestream has {} components but SamplesPerPixel is {}",
            d.components, h.samples_per_pixel
        )));
    }
    if d.precision == 0 || d.precision > h.bits_allocated {
        return Err(DicomError::codestream(format!(
            "{what} codestream precision {} does not fit BitsAllocated {}",
            d.precision, h.bits_allocated
        )));
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Find the start-of-frame segment of a JPEG (or JPEG-LS, SOF55) stream.
fn jpeg_frame(s: &[u8], jpeg_ls: bool) -> Result<Declared, DicomError> {
    let bad = |why: &str| DicomError::codestream(format!("JPEG stream: {why}"));
    if be16(s, 0) != Some(0xFFD8) {
        return Err(bad("does not start with SOI"));
    }
    let mut pos = 2;
    loop {
        // Skip fill bytes before a marker.
        while s.get(pos) == Some(&0xFF) && s.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let marker = be16(s, pos).ok_or_else(|| bad("no frame header before the end"))?;
        if marker >> 8 != 0xFF {
            return Err(bad("marker expected"));
        }
        let m = (marker & 0xFF) as u8;
        let is_sof = if jpeg_ls {
            m == 0xF7
        } else {
            matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)
        };
        if m == 0xD9 || m == 0xDA {
            return Err(bad("scan data before any frame header"));
        }
        let len = usize::from(be16(s, pos + 2).ok_or_else(|| bad("truncated segment"))?);
        if len < 2 {
            return Err(bad("segment length under 2"));
        }
        if is_sof {
            let precision = u16::from(
                *s.get(pos + 4)
                    .ok_or_else(|| bad("truncated frame header"))?,
            );
            let rows = be16(s, pos + 5).ok_or_else(|| bad("truncated frame header"))?;
            let cols = be16(s, pos + 7).ok_or_else(|| bad("truncated frame header"))?;
            let components = u16::from(
                *s.get(pos + 9)
                    .ok_or_else(|| bad("truncated frame header"))?,
            );
            if len < 8 + 3 * usize::from(components) || pos + 2 + len > s.len() {
                return Err(bad("frame header shorter than its components"));
            }
            return Ok(Declared {
                rows: rows.into(),
                cols: cols.into(),
                components,
                precision,
            });
        }
        pos += 2 + len;
    }
}

/// Most JPEG 2000 tiles accepted in one frame.
const MAX_J2K_TILES: u64 = 4096;

/// Read the SIZ segment of a JPEG 2000 codestream (or of the `jp2c` box of a JP2 file).
fn j2k_siz(s: &[u8]) -> Result<Declared, DicomError> {
    let bad = |why: &str| DicomError::codestream(format!("JPEG 2000 stream: {why}"));
    // A JP2 wrapper: find the codestream start (SOC then SIZ) in the first bytes.
    let start = s
        .windows(4)
        .take(4096)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .ok_or_else(|| bad("no SOC+SIZ marker pair at the start"))?;
    let siz = start + 2;
    let lsiz = usize::from(be16(s, siz + 2).ok_or_else(|| bad("truncated SIZ"))?);
    let get32 = |off: usize| be32(s, siz + off).ok_or_else(|| bad("truncated SIZ"));
    let (xsiz, ysiz, xosiz, yosiz) = (get32(6)?, get32(10)?, get32(14)?, get32(18)?);
    let components = be16(s, siz + 38).ok_or_else(|| bad("truncated SIZ"))?;
    if components == 0 || lsiz != 38 + 3 * usize::from(components) || siz + 2 + lsiz > s.len() {
        return Err(bad("SIZ length disagrees with its component count"));
    }
    if xosiz >= xsiz || yosiz >= ysiz {
        return Err(bad("image offset outside the image"));
    }
    // A grey radiograph has one full-resolution component: a subsampled
    // one would not fill Rows x Columns.
    for c in 0..usize::from(components) {
        let (xrsiz, yrsiz) = (s.get(siz + 41 + 3 * c), s.get(siz + 42 + 3 * c));
        if xrsiz != Some(&1) || yrsiz != Some(&1) {
            return Err(bad("a component is subsampled (XRsiz or YRsiz is not 1)"));
        }
    }
    // OpenJPEG allocates per-tile state up front, so a tiny tile size on a
    // large image is a memory bomb. Real radiographs use one or a few tiles.
    let (xtsiz, ytsiz, xtosiz, ytosiz) = (get32(22)?, get32(26)?, get32(30)?, get32(34)?);
    if xtsiz == 0 || ytsiz == 0 || xtosiz > xosiz || ytosiz > yosiz {
        return Err(bad("tile grid outside the image"));
    }
    let tiles =
        u64::from((xsiz - xtosiz).div_ceil(xtsiz)) * u64::from((ysiz - ytosiz).div_ceil(ytsiz));
    if tiles > MAX_J2K_TILES {
        return Err(bad(&format!(
            "{tiles} tiles, over the limit of {MAX_J2K_TILES}"
        )));
    }
    let mut precision = 0;
    for c in 0..usize::from(components) {
        let ssiz = s[siz + 40 + 3 * c];
        let p = u16::from(ssiz & 0x7F) + 1;
        if c > 0 && p != precision {
            return Err(bad("components differ in precision"));
        }
        precision = p;
    }
    Ok(Declared {
        rows: ysiz - yosiz,
        cols: xsiz - xosiz,
        components,
        precision,
    })
}

/// What a reduced JPEG 2000 decode needs from the main header: the image
/// area on the reference grid and the wavelet decomposition levels of the
/// COD segment (a decoder can drop up to that many resolution levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct J2kLevels {
    pub levels: u8,
    /// XOsiz, Xsiz, YOsiz, Ysiz.
    pub x0: u32,
    pub x1: u32,
    pub y0: u32,
    pub y1: u32,
}

impl J2kLevels {
    /// Rows and columns after dropping `reduce` resolution levels (ISO
    /// 15444-1 B.5: ceil(x1 / 2^r) - ceil(x0 / 2^r)).
    pub fn reduced_size(&self, reduce: u32) -> (u32, u32) {
        let at = |a: u32, b: u32| b.div_ceil(1 << reduce) - a.div_ceil(1 << reduce);
        (at(self.y0, self.y1), at(self.x0, self.x1))
    }
}

/// The main header's [`J2kLevels`]. `None` when the main header has no
/// readable COD before the first tile, or when a COC may override it for
/// some component.
pub(crate) fn j2k_levels(s: &[u8]) -> Option<J2kLevels> {
    let start = s
        .windows(4)
        .take(4096)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let siz = start + 2;
    let area = |off: usize| be32(s, siz + off);
    let (x1, y1, x0, y0) = (area(6)?, area(10)?, area(14)?, area(18)?);
    let mut pos = siz;
    let mut levels = None;
    // The main header is a chain of length-prefixed segments up to SOT.
    for _ in 0..256 {
        let marker = be16(s, pos)?;
        if marker == 0xFF90 {
            return levels.map(|levels| J2kLevels {
                levels,
                x0,
                x1,
                y0,
                y1,
            });
        }
        let len = usize::from(be16(s, pos + 2)?);
        if marker >> 8 != 0xFF || len < 2 {
            return None;
        }
        match marker {
            // COD: Lcod, Scod, progression order, layers (2), MCT, then levels.
            0xFF52 => levels = Some(*s.get(pos + 9)?),
            // COC: a per-component override; be conservative and reduce nothing.
            0xFF53 => return None,
            _ => {}
        }
        pos += 2 + len;
    }
    None
}

/// The RLE header: segment count and offsets inside the fragment.
fn check_rle(s: &[u8], h: &PixelHeader) -> Result<(), DicomError> {
    let bad = |why: String| DicomError::codestream(format!("RLE frame: {why}"));
    if s.len() < 64 {
        return Err(bad(format!(
            "{} bytes, shorter than the 64-byte header",
            s.len()
        )));
    }
    let le32 = |i: usize| {
        u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]) as usize
    };
    let segments = le32(0);
    let expected = usize::from(h.samples_per_pixel) * usize::from(h.bits_allocated / 8);
    if segments != expected {
        return Err(bad(format!(
            "{segments} segments, expected {expected} for the header"
        )));
    }
    let mut previous = 63;
    for i in 1..=segments {
        let offset = le32(i);
        if offset <= previous || offset >= s.len() {
            return Err(bad(format!(
                "segment {i} offset {offset} is out of order or past the fragment"
            )));
        }
        previous = offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rows: u16, cols: u16) -> PixelHeader {
        PixelHeader {
            rows,
            cols,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 12,
            high_bit: 11,
            signed: false,
            frames: 1,
            planar: false,
        }
    }

    fn sof(rows: u16, cols: u16, precision: u8) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xC3, 0, 11, precision];
        s.extend_from_slice(&rows.to_be_bytes());
        s.extend_from_slice(&cols.to_be_bytes());
        s.extend_from_slice(&[1, 1, 0x11, 0]);
        s
    }

    #[test]
    fn jpeg_dimensions_must_match() {
        assert!(check(Codec::Jpeg, &sof(10, 20, 12), &header(10, 20)).is_ok());
        let err = check(Codec::Jpeg, &sof(10, 21, 12), &header(10, 20)).unwrap_err();
        assert!(err.to_string().contains("10x21"), "{err}");
        assert!(check(Codec::Jpeg, &sof(10, 20, 17), &header(10, 20)).is_err());
        assert!(check(Codec::Jpeg, &[0xFF, 0xD8, 0xFF], &header(10, 20)).is_err());
    }

    #[test]
    fn j2k_siz_is_read() {
        let mut s = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [20u32, 10, 0, 0, 20, 10, 0, 0] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        s.extend_from_slice(&[0, 1, 11, 1, 1]);
        assert!(check(Codec::Jpeg2000, &s, &header(10, 20)).is_ok());
        let mut subsampled = s.clone();
        subsampled[43] = 2;
        let err = check(Codec::Jpeg2000, &subsampled, &header(10, 20)).unwrap_err();
        assert!(err.to_string().contains("subsampled"), "{err}");
        // One-pixel tiles: 200 tiles is fine, but the same on 8192 x 8192 is not.
        let mut tiny_tiles = s.clone();
        tiny_tiles[24..32].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        assert!(check(Codec::Jpeg2000, &tiny_tiles, &header(10, 20)).is_ok());
        let mut bomb = tiny_tiles.clone();
        bomb[8..16].copy_from_slice(&[0, 0, 0x20, 0, 0, 0, 0x20, 0]);
        let err = check(Codec::Jpeg2000, &bomb, &header(8192, 8192)).unwrap_err();
        assert!(err.to_string().contains("tiles"), "{err}");
        let err = check(Codec::Jpeg2000, &s, &header(20, 10)).unwrap_err();
        assert_eq!(err.code(), "DICOM_CODESTREAM_MISMATCH");
    }

    #[test]
    fn j2k_levels_come_from_the_main_header_cod() {
        // SOC, a minimal SIZ (one component), COD with 5 levels, then SOT.
        let mut s = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [20u32, 10, 0, 0, 20, 10, 0, 0] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        s.extend_from_slice(&[0, 1, 11, 1, 1]);
        let cod = [0xFF, 0x52, 0, 12, 0, 0, 0, 1, 0, 5, 4, 4, 0, 1];
        let sot = [0xFF, 0x90, 0, 10];
        let with_cod: Vec<u8> = [&s[..], &cod, &sot].concat();
        let levels = j2k_levels(&with_cod).unwrap();
        assert_eq!((levels.levels, levels.x1, levels.y1), (5, 20, 10));
        // 20 x 10 one level down: 10 x 5; two levels: 5 x 3 (ceil).
        assert_eq!(levels.reduced_size(1), (5, 10));
        assert_eq!(levels.reduced_size(2), (3, 5));
        let coc = [0xFF, 0x53, 0, 9, 0, 0, 2, 4, 4, 0, 1];
        let with_coc: Vec<u8> = [&s[..], &cod, &coc, &sot].concat();
        assert_eq!(j2k_levels(&with_coc), None);
        assert_eq!(j2k_levels(&[&s[..], &sot].concat()), None);
        assert_eq!(j2k_levels(&with_cod[..with_cod.len() - 8]), None);
    }

    #[test]
    fn rle_offsets_must_be_inside() {
        let mut s = vec![0u8; 80];
        s[0] = 2;
        s[4] = 64;
        s[8] = 70;
        assert!(check(Codec::Rle, &s, &header(1, 1)).is_ok());
        s[8] = 200;
        assert!(check(Codec::Rle, &s, &header(1, 1)).is_err());
        s[0] = 3;
        assert!(check(Codec::Rle, &s, &header(1, 1)).is_err());
    }
}
