//! The Part 10 file a received data set is stored as: the 128-byte preamble,
//! `DICM` and the File Meta Information group (PS3.10 §7.1), written before
//! the data set's bytes so that every spool file reads back through the
//! same guarded path as a file from disk.

/// The appliance's Implementation Class UID (a UUID-derived `2.25` UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.23825599606412286954148418493307239221";
/// Its Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "CXR_APPLIANCE_01";

/// One explicit-VR little-endian element of the meta group.
fn element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// A UI value padded to even length with NUL.
fn ui(value: &str) -> Vec<u8> {
    let mut v = value.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// The preamble, prefix and meta group for a data set of SOP class
/// `sop_class_uid`, instance `sop_instance_uid`, encoded in
/// `transfer_syntax`. The callers pass validated UIDs only.
pub fn file_meta(sop_class_uid: &str, sop_instance_uid: &str, transfer_syntax: &str) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    element(&mut group, 0x0001, b"OB", &[0, 1]);
    element(&mut group, 0x0002, b"UI", &ui(sop_class_uid));
    element(&mut group, 0x0003, b"UI", &ui(sop_instance_uid));
    element(&mut group, 0x0010, b"UI", &ui(transfer_syntax));
    element(&mut group, 0x0012, b"UI", &ui(IMPLEMENTATION_CLASS_UID));
    element(
        &mut group,
        0x0013,
        b"SH",
        IMPLEMENTATION_VERSION_NAME.as_bytes(),
    );
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(&mut out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_group_has_its_length_and_even_values() {
        let meta = file_meta("1.2.840.10008.5.1.4.1.1.1", "1.2.3", "1.2.840.10008.1.2.1");
        assert_eq!(&meta[128..132], b"DICM");
        // (0002,0000) UL 4 = the bytes after it.
        assert_eq!(&meta[132..138], &[2, 0, 0, 0, b'U', b'L']);
        let length = u32::from_le_bytes([meta[140], meta[141], meta[142], meta[143]]) as usize;
        assert_eq!(length, meta.len() - 144);
        assert_eq!(meta.len() % 2, 0);
        // The odd-length instance UID "1.2.3" is NUL-padded.
        let at = meta
            .windows(6)
            .position(|w| w == b"1.2.3\0")
            .unwrap_or_else(|| panic!("instance UID not found"));
        assert_eq!(u16::from_le_bytes([meta[at - 2], meta[at - 1]]), 6);
    }
}
