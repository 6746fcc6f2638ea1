//! DICOM UIDs from a peer are data, never paths: they are checked against
//! PS3.5 §9.1 (digits and dots, at most 64 characters, no empty component,
//! no leading zero in a component of more than one digit) before use.

/// The longest UID PS3.5 allows.
pub const MAX_UID_LEN: usize = 64;

/// Whether `uid` is a well-formed DICOM UID (trailing NUL padding removed
/// by the caller).
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c.len() == 1 || !c.starts_with('0'))
        })
}

/// A UI value as it arrives: trailing NUL (and, leniently, space) padding
/// removed.
pub fn trim_uid(raw: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(raw).ok()?;
    Some(text.trim_end_matches(['\0', ' ']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_digits_and_dots_without_leading_zeros() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.1"));
        assert!(is_valid_uid("1.2.0.3"));
        for bad in [
            "",
            "1..2",
            ".1.2",
            "1.2.",
            "1.02",
            "1.2a",
            "../../etc/passwd",
            "1/2",
            "1.2 ",
        ] {
            assert!(!is_valid_uid(bad), "{bad:?}");
        }
        assert!(!is_valid_uid(&"1".repeat(65)));
        assert!(is_valid_uid(&"1".repeat(64)));
        assert_eq!(trim_uid(b"1.2.3\0"), Some("1.2.3"));
        assert_eq!(trim_uid(&[0xff, 0xfe]), None);
    }
}
