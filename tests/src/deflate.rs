//! A deflated-transfer-syntax copy of an explicit-VR-little-endian file, made
//! here because pydicom-data ships no deflate sample.

use std::io::Write;

const DEFLATED_UID: &[u8] = b"1.2.840.10008.1.2.1.99";

/// Rewrite the meta group with the deflate transfer syntax (fixing the group
/// length) and deflate (RFC 1951, raw) the data set after it.
pub fn deflated_copy(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 132;
    let mut elements: Vec<Vec<u8>> = Vec::new();
    while bytes.get(pos..pos + 2)? == [0x02, 0x00] {
        let vr = bytes.get(pos + 4..pos + 6)?;
        let long = matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT");
        let (len, header) = if long {
            (
                u32::from_le_bytes(bytes.get(pos + 8..pos + 12)?.try_into().ok()?) as usize,
                12,
            )
        } else {
            (
                usize::from(u16::from_le_bytes(
                    bytes.get(pos + 6..pos + 8)?.try_into().ok()?,
                )),
                8,
            )
        };
        let elem = u16::from_le_bytes(bytes.get(pos + 2..pos + 4)?.try_into().ok()?);
        let whole = bytes.get(pos..pos + header + len)?;
        match elem {
            0x0000 => {}
            0x0010 => {
                let mut e = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
                e.extend_from_slice(&(DEFLATED_UID.len() as u16).to_le_bytes());
                e.extend_from_slice(DEFLATED_UID);
                elements.push(e);
            }
            _ => elements.push(whole.to_vec()),
        }
        pos += header + len;
    }
    let group_len: usize = elements.iter().map(Vec::len).sum();
    let mut out = bytes[..132].to_vec();
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group_len as u32).to_le_bytes());
    for e in elements {
        out.extend_from_slice(&e);
    }
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&bytes[pos..]).ok()?;
    out.extend_from_slice(&encoder.finish().ok()?);
    Some(out)
}
