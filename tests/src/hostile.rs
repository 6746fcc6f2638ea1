//! Hostile DICOM variants made from real files: truncations, byte flips in
//! header and pixel data, huge element lengths, header values that disagree
//! with the pixel data or codestream, and damaged RLE / JPEG / JPEG 2000 data.
//!
//! Every variant is deterministic (a fixed-seed xorshift), so a failure names
//! a reproducible file.

/// One corrupted file.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A real file to corrupt, with what its pixel data is.
#[derive(Debug, Clone)]
pub struct Base {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Data set in explicit VR big endian (only generic mutations apply).
    pub big_endian: bool,
}

/// Deterministic xorshift64*.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Where an element sits: header start, value start, value length, VR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub header: usize,
    pub value: usize,
    pub len: usize,
    pub long: bool,
}

fn long_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR" | b"OD" | b"OL" | b"OV"
    )
}

/// Find the first explicit-VR element with this tag after the preamble.
pub fn find(bytes: &[u8], group: u16, elem: u16, big: bool) -> Option<Found> {
    let tag: Vec<u8> = if big {
        [group.to_be_bytes(), elem.to_be_bytes()].concat()
    } else {
        [group.to_le_bytes(), elem.to_le_bytes()].concat()
    };
    let mut from = 132;
    while let Some(rel) = bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == tag.as_slice())
    {
        let at = from + rel;
        let vr = bytes.get(at + 4..at + 6)?;
        if vr.iter().all(u8::is_ascii_uppercase) {
            let rd16 = |p: usize| -> Option<usize> {
                let b: [u8; 2] = bytes.get(p..p + 2)?.try_into().ok()?;
                Some(usize::from(if big {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                }))
            };
            let rd32 = |p: usize| -> Option<usize> {
                let b: [u8; 4] = bytes.get(p..p + 4)?.try_into().ok()?;
                Some(
                    (if big {
                        u32::from_be_bytes(b)
                    } else {
                        u32::from_le_bytes(b)
                    }) as usize,
                )
            };
            return if long_vr(vr) {
                Some(Found {
                    header: at,
                    value: at + 12,
                    len: rd32(at + 8)?,
                    long: true,
                })
            } else {
                Some(Found {
                    header: at,
                    value: at + 8,
                    len: rd16(at + 6)?,
                    long: false,
                })
            };
        }
        from = at + 1;
    }
    None
}

/// Overwrite a US value (little endian).
pub fn set_us(bytes: &[u8], group: u16, elem: u16, value: u16) -> Option<Vec<u8>> {
    let f = find(bytes, group, elem, false)?;
    let mut out = bytes.to_vec();
    out[f.value..f.value + 2].copy_from_slice(&value.to_le_bytes());
    Some(out)
}

/// Replace a short-VR text value, resizing the element (padded to even length).
pub fn set_text(bytes: &[u8], group: u16, elem: u16, text: &str) -> Option<Vec<u8>> {
    set_text_in(bytes, group, elem, text, false)
}

/// [`set_text`] for little (`big: false`) or big endian data sets.
pub fn set_text_in(bytes: &[u8], group: u16, elem: u16, text: &str, big: bool) -> Option<Vec<u8>> {
    let f = find(bytes, group, elem, big)?;
    if f.long {
        return None;
    }
    let mut value = text.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(b' ');
    }
    let mut out = bytes[..f.header + 6].to_vec();
    let len = value.len() as u16;
    out.extend_from_slice(&if big {
        len.to_be_bytes()
    } else {
        len.to_le_bytes()
    });
    out.extend_from_slice(&value);
    out.extend_from_slice(&bytes[f.value + f.len..]);
    Some(out)
}

/// The same file under a made-up transfer syntax UID of the same length
/// (digits after the DICOM root become 9s), so the meta group stays consistent.
pub fn unknown_syntax(bytes: &[u8]) -> Option<Vec<u8>> {
    let f = find(bytes, 0x0002, 0x0010, false)?;
    let mut out = bytes.to_vec();
    for c in &mut out[f.value + 14..f.value + f.len] {
        if c.is_ascii_digit() {
            *c = b'9';
        }
    }
    Some(out)
}

/// Overwrite an element's VR (the header layout stays as it was).
pub fn set_vr(bytes: &[u8], group: u16, elem: u16, vr: [u8; 2]) -> Option<Vec<u8>> {
    let f = find(bytes, group, elem, false)?;
    let mut out = bytes.to_vec();
    out[f.header + 4..f.header + 6].copy_from_slice(&vr);
    Some(out)
}

/// Overwrite an element's length field with `len` (the bytes stay as they are).
pub fn set_length(bytes: &[u8], group: u16, elem: u16, len: u32) -> Option<Vec<u8>> {
    let f = find(bytes, group, elem, false)?;
    let mut out = bytes.to_vec();
    if f.long {
        out[f.header + 8..f.header + 12].copy_from_slice(&len.to_le_bytes());
    } else {
        out[f.header + 6..f.header + 8].copy_from_slice(&(len.min(0xFFFF) as u16).to_le_bytes());
    }
    Some(out)
}

/// The first encapsulated fragment (after the offset table): (item header offset, data range).
pub fn first_fragment(bytes: &[u8]) -> Option<(usize, std::ops::Range<usize>)> {
    let px = find(bytes, 0x7FE0, 0x0010, false)?;
    if px.len != 0xFFFF_FFFF {
        return None;
    }
    let le32 = |p: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(p..p + 4)?.try_into().ok()?) as usize)
    };
    let bot_len = le32(px.value + 4)?;
    let item = px.value + 8 + bot_len;
    let len = le32(item + 4)?;
    let start = item + 8;
    (start + len <= bytes.len()).then_some((item, start..start + len))
}

fn flip(bytes: &[u8], range: std::ops::Range<usize>, count: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if range.is_empty() {
        return out;
    }
    for _ in 0..count {
        let p = range.start + rng.below(range.len());
        out[p] ^= 1 << rng.below(8);
        if rng.below(4) == 0 {
            out[p] = 0xFF;
        }
    }
    out
}

fn pixel_start(b: &Base) -> usize {
    find(&b.bytes, 0x7FE0, 0x0010, b.big_endian)
        .map(|f| f.value)
        .unwrap_or(b.bytes.len() / 2)
}

/// All variants of all bases. Names are `<base>/<mutation>`.
pub fn variants(bases: &[Base]) -> Vec<Variant> {
    let mut out = Vec::new();
    let mut rng = Rng::new(0x00C0_FFEE);
    for base in bases {
        let b = &base.bytes;
        let mut push = |what: &str, bytes: Option<Vec<u8>>| {
            if let Some(bytes) = bytes {
                out.push(Variant {
                    name: format!("{}/{what}", base.name),
                    bytes,
                });
            }
        };
        // Truncations.
        for pct in [50usize, 90, 99] {
            push(
                &format!("truncated-{pct}pct"),
                Some(b[..b.len() * pct / 100].to_vec()),
            );
        }
        push("truncated-200-bytes", Some(b[..200.min(b.len())].to_vec()));
        push(
            "truncated-in-preamble",
            Some(b[..100.min(b.len())].to_vec()),
        );
        push("truncated-1-byte-short", Some(b[..b.len() - 1].to_vec()));
        // Byte flips.
        let px = pixel_start(base);
        for i in 0..4 {
            push(
                &format!("header-flips-{i}"),
                Some(flip(b, 132..px, 6, &mut rng)),
            );
        }
        for i in 0..2 {
            push(
                &format!("pixel-flips-{i}"),
                Some(flip(b, px..b.len(), 64, &mut rng)),
            );
        }
        if base.big_endian {
            continue;
        }
        // Huge lengths: a 1.6 KB file that claims 4 GB, and the full file likewise.
        let huge = match first_fragment(b) {
            Some((item, _)) => {
                let mut v = b.clone();
                v[item + 4..item + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
                Some(v)
            }
            None => set_length(b, 0x7FE0, 0x0010, 0xFFFF_FFF0),
        };
        push("pixel-length-4GB", huge.clone());
        push(
            "tiny-file-claims-4GB",
            huge.map(|v| v[..1600.min(v.len())].to_vec()),
        );
        push(
            "patient-name-length-64K",
            set_length(b, 0x0010, 0x0010, 0xFFFF),
        );
        // Header values that disagree with the data.
        let rows = find(b, 0x0028, 0x0010, false)
            .map(|f| u16::from_le_bytes([b[f.value], b[f.value + 1]]));
        let cols = find(b, 0x0028, 0x0011, false)
            .map(|f| u16::from_le_bytes([b[f.value], b[f.value + 1]]));
        if let (Some(r), Some(c)) = (rows, cols) {
            push(
                "rows-plus-one",
                set_us(b, 0x0028, 0x0010, r.wrapping_add(1)),
            );
            push(
                "columns-doubled",
                set_us(b, 0x0028, 0x0011, c.wrapping_mul(2)),
            );
            push(
                "rows-and-columns-swapped",
                set_us(b, 0x0028, 0x0010, c).and_then(|v| set_us(&v, 0x0028, 0x0011, r)),
            );
            push("columns-halved", set_us(b, 0x0028, 0x0011, c / 2));
        }
        push("rows-zero", set_us(b, 0x0028, 0x0010, 0));
        push("rows-9000", set_us(b, 0x0028, 0x0010, 9000));
        push("bits-stored-0", set_us(b, 0x0028, 0x0101, 0));
        push("bits-stored-33", set_us(b, 0x0028, 0x0101, 33));
        push("bits-allocated-32", set_us(b, 0x0028, 0x0100, 32));
        push("bits-allocated-1", set_us(b, 0x0028, 0x0100, 1));
        push("high-bit-20", set_us(b, 0x0028, 0x0102, 20));
        push("samples-per-pixel-3", set_us(b, 0x0028, 0x0002, 3));
        push("samples-per-pixel-0", set_us(b, 0x0028, 0x0002, 0));
        // Regression (fuzzer): an unknown VR made dicom-rs read a length the scan never checked.
        for (tag, vr) in [((0x0008u16, 0x0016u16), *b"WI"), ((0x0008, 0x1090), *b"LM")] {
            push(
                &format!("unknown-vr-{}", String::from_utf8_lossy(&vr)),
                set_vr(b, tag.0, tag.1, vr),
            );
        }
        push("photometric-rgb", set_text(b, 0x0028, 0x0004, "RGB"));
        push("transfer-syntax-unknown", unknown_syntax(b));
        if let Some(meta) = find(b, 0x0002, 0x0000, false) {
            let declared =
                u32::from_le_bytes(b[meta.value..meta.value + 4].try_into().unwrap_or([0; 4]));
            for (what, value) in [
                ("meta-group-length-plus-200", declared.wrapping_add(200)),
                ("meta-group-length-huge", 0xFFFF_FFF0),
            ] {
                let mut v = b.clone();
                v[meta.value..meta.value + 4].copy_from_slice(&value.to_le_bytes());
                push(what, Some(v));
            }
        }
        // Codec-specific damage.
        if let Some((item, frag)) = first_fragment(b) {
            let f = &b[frag.clone()];
            if f.starts_with(&[0xFF, 0xD8]) {
                jpeg_damage(b, item, frag.clone(), &mut rng, &mut push);
            } else if f
                .windows(4)
                .take(4096)
                .any(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            {
                j2k_damage(b, frag.clone(), &mut push);
                // Header and codestream agree on a huge image the data cannot fill.
                for side in [4800u32, 8000] {
                    push(
                        &format!("j2k-and-header-claim-{side}x{side}"),
                        j2k_claims(b, frag.clone(), side),
                    );
                }
            } else if f.len() >= 64 {
                rle_damage(b, frag.clone(), &mut rng, &mut push);
            }
        }
    }
    out
}

fn jpeg_damage(
    b: &[u8],
    _item: usize,
    frag: std::ops::Range<usize>,
    rng: &mut Rng,
    push: &mut impl FnMut(&str, Option<Vec<u8>>),
) {
    let f = &b[frag.clone()];
    if let Some(sof) = f
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC3))
    {
        let at = frag.start + sof;
        let mut v = b.to_vec();
        v[at + 5] ^= 0x01; // height high byte
        push("jpeg-sof-height-changed", Some(v));
        let mut v = b.to_vec();
        v[at + 9] = 3; // component count
        push("jpeg-sof-components-3", Some(v));
    }
    if let Some(dht) = f.windows(2).position(|w| w == [0xFF, 0xC4]) {
        push(
            "jpeg-huffman-table-damaged",
            Some(flip(
                b,
                frag.start + dht + 4..frag.start + dht + 40,
                12,
                rng,
            )),
        );
    }
    if let Some(sos) = f.windows(2).position(|w| w == [0xFF, 0xDA]) {
        let mut v = b.to_vec();
        let mid = frag.start + sos + (frag.end - frag.start - sos) / 2;
        v[mid..(mid + 4096).min(frag.end)].fill(0);
        push("jpeg-scan-zeroed", Some(v));
        let mut v = b.to_vec();
        v[frag.start + sos + 20..frag.end].fill(0xFF);
        push("jpeg-scan-all-ff", Some(v));
    }
    let mut v = b.to_vec();
    v[frag.end - 2..frag.end].fill(0);
    push("jpeg-no-eoi", Some(v));
}

fn j2k_damage(
    b: &[u8],
    frag: std::ops::Range<usize>,
    push: &mut impl FnMut(&str, Option<Vec<u8>>),
) {
    let f = &b[frag.clone()];
    let Some(soc) = f.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51]) else {
        return;
    };
    let siz = frag.start + soc + 2;
    let mut v = b.to_vec();
    v[siz + 9] = v[siz + 9].wrapping_add(7); // Xsiz low byte
    push("j2k-siz-width-changed", Some(v));
    let mut v = b.to_vec();
    v[siz + 12] = v[siz + 12].wrapping_add(1); // Ysiz
    push("j2k-siz-height-changed", Some(v));
    let mut v = b.to_vec();
    v[siz + 39] = 3; // Csiz
    push("j2k-siz-components-3", Some(v));
    let mut v = b.to_vec();
    let mid = frag.start + (frag.end - frag.start) / 2;
    v[mid..frag.end].fill(0);
    push("j2k-second-half-zeroed", Some(v));
    let mut v = b.to_vec();
    v[siz + 40] = 0x7F; // component precision 128 bits
    push("j2k-precision-128", Some(v));
    let mut v = b.to_vec();
    v[siz + 22..siz + 30].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]); // 1x1 tiles
    push("j2k-one-pixel-tiles", Some(v));
}

/// Set both the SIZ image size and Rows/Columns to `side` x `side`.
fn j2k_claims(b: &[u8], frag: std::ops::Range<usize>, side: u32) -> Option<Vec<u8>> {
    let soc = b[frag.clone()]
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let siz = frag.start + soc + 2;
    let mut v = b.to_vec();
    for off in [6usize, 10, 22, 26] {
        // Xsiz, Ysiz, and one tile covering the image (XTsiz, YTsiz).
        v[siz + off..siz + off + 4].copy_from_slice(&side.to_be_bytes());
    }
    let v = set_us(&v, 0x0028, 0x0010, side as u16)?;
    set_us(&v, 0x0028, 0x0011, side as u16)
}

fn rle_damage(
    b: &[u8],
    frag: std::ops::Range<usize>,
    rng: &mut Rng,
    push: &mut impl FnMut(&str, Option<Vec<u8>>),
) {
    let s = frag.start;
    let mut v = b.to_vec();
    v[s..s + 4].copy_from_slice(&15u32.to_le_bytes());
    push("rle-15-segments", Some(v));
    let mut v = b.to_vec();
    v[s + 8..s + 12].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    push("rle-offset-past-end", Some(v));
    let mut v = b.to_vec();
    v[s..s + 64].fill(0);
    push("rle-header-zeroed", Some(v));
    push(
        "rle-data-flipped",
        Some(flip(b, s + 64..frag.end, 200, rng)),
    );
    let mut v = b.to_vec();
    // Literal runs that claim more bytes than the segment has.
    for i in (s + 64..frag.end).step_by(2) {
        v[i] = 0x7F;
    }
    push("rle-runs-overflow", Some(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_replacement_resizes_the_element() {
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'M', b'R']);
        file.extend_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        let out = set_text(&file, 0x0008, 0x0060, "CR").unwrap();
        assert_eq!(&out[140..142], b"CR");
        let out = set_text(&file, 0x0008, 0x0060, "XYZ").unwrap();
        assert_eq!(out.len(), file.len() + 2);
        assert_eq!(&out[138..144], &[4, 0, b'X', b'Y', b'Z', b' ']);
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
    }
}
