//! Which transfer syntaxes we accept, and how their data set and pixels are encoded.

use crate::DicomError;

/// How the data set's elements are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
    /// Explicit little endian, the whole data set deflated (RFC 1951).
    DeflatedExplicitLittle,
}

/// How the pixel data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Native,
    EncapsulatedUncompressed,
    Rle,
    Jpeg,
    #[cfg_attr(not(feature = "jpeg-ls"), allow(dead_code))]
    JpegLs,
    Jpeg2000,
}

/// An accepted transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syntax {
    pub uid: &'static str,
    pub name: &'static str,
    pub encoding: Encoding,
    pub codec: Codec,
}

const fn ts(uid: &'static str, name: &'static str, encoding: Encoding, codec: Codec) -> Syntax {
    Syntax {
        uid,
        name,
        encoding,
        codec,
    }
}

use Codec as C;
use Encoding as E;

/// Every syntax the appliance decodes. JPEG-LS only with the `jpeg-ls` feature.
const ACCEPTED: &[Syntax] = &[
    ts(
        "1.2.840.10008.1.2",
        "Implicit VR Little Endian",
        E::ImplicitLittle,
        C::Native,
    ),
    ts(
        "1.2.840.10008.1.2.1",
        "Explicit VR Little Endian",
        E::ExplicitLittle,
        C::Native,
    ),
    ts(
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
        E::DeflatedExplicitLittle,
        C::Native,
    ),
    ts(
        "1.2.840.10008.1.2.2",
        "Explicit VR Big Endian",
        E::ExplicitBig,
        C::Native,
    ),
    ts(
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
        E::ExplicitLittle,
        C::EncapsulatedUncompressed,
    ),
    ts(
        "1.2.840.10008.1.2.5",
        "RLE Lossless",
        E::ExplicitLittle,
        C::Rle,
    ),
    ts(
        "1.2.840.10008.1.2.4.50",
        "JPEG Baseline (Process 1)",
        E::ExplicitLittle,
        C::Jpeg,
    ),
    ts(
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (Process 2 & 4)",
        E::ExplicitLittle,
        C::Jpeg,
    ),
    ts(
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
        E::ExplicitLittle,
        C::Jpeg,
    ),
    ts(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, First-Order Prediction (Process 14 SV1)",
        E::ExplicitLittle,
        C::Jpeg,
    ),
    #[cfg(feature = "jpeg-ls")]
    ts(
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless",
        E::ExplicitLittle,
        C::JpegLs,
    ),
    #[cfg(feature = "jpeg-ls")]
    ts(
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Near-Lossless",
        E::ExplicitLittle,
        C::JpegLs,
    ),
    ts(
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Lossless",
        E::ExplicitLittle,
        C::Jpeg2000,
    ),
    ts(
        "1.2.840.10008.1.2.4.91",
        "JPEG 2000",
        E::ExplicitLittle,
        C::Jpeg2000,
    ),
    ts(
        "1.2.840.10008.1.2.4.201",
        "HTJ2K Lossless",
        E::ExplicitLittle,
        C::Jpeg2000,
    ),
    ts(
        "1.2.840.10008.1.2.4.202",
        "HTJ2K Lossless RPCL",
        E::ExplicitLittle,
        C::Jpeg2000,
    ),
    ts(
        "1.2.840.10008.1.2.4.203",
        "HTJ2K",
        E::ExplicitLittle,
        C::Jpeg2000,
    ),
];

/// The UIDs of every transfer syntax the read path decodes, in the order a
/// receiver should prefer them (uncompressed first).
pub fn decodable_transfer_syntaxes() -> impl Iterator<Item = &'static str> {
    ACCEPTED.iter().map(|s| s.uid)
}

/// Names of well-known syntaxes we refuse, so the error can say what the file is.
const REFUSED_NAMES: &[(&str, &str)] = &[
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless (build with feature jpeg-ls)",
    ),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Near-Lossless (build with feature jpeg-ls)",
    ),
    (
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component Lossless",
    ),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component"),
    ("1.2.840.10008.1.2.4.94", "JPIP Referenced"),
    ("1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264"),
    ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    ("1.2.840.10008.1.2.4.112", "JPEG XL"),
    ("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression"),
];

/// Look up a transfer syntax UID (trailing NUL and spaces already trimmed).
pub(crate) fn classify(uid: &str) -> Result<Syntax, DicomError> {
    if let Some(s) = ACCEPTED.iter().find(|s| s.uid == uid) {
        return Ok(*s);
    }
    let name = REFUSED_NAMES
        .iter()
        .find(|(u, _)| *u == uid)
        .map(|(_, n)| (*n).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    Err(DicomError::UnsupportedTransferSyntax {
        uid: uid.to_owned(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_syntaxes_are_found_and_others_named() {
        assert_eq!(
            classify("1.2.840.10008.1.2.4.90").unwrap().codec,
            Codec::Jpeg2000
        );
        assert_eq!(
            classify("1.2.840.10008.1.2.2").unwrap().encoding,
            Encoding::ExplicitBig
        );
        match classify("1.2.840.10008.1.2.4.100") {
            Err(DicomError::UnsupportedTransferSyntax { uid, name }) => {
                assert_eq!(uid, "1.2.840.10008.1.2.4.100");
                assert!(name.contains("MPEG2"));
            }
            other => panic!("expected unsupported, got {other:?}"),
        }
        assert!(matches!(
            classify("9.9"),
            Err(DicomError::UnsupportedTransferSyntax { .. })
        ));
    }

    #[test]
    fn uids_are_unique() {
        for (i, a) in ACCEPTED.iter().enumerate() {
            assert!(
                ACCEPTED[i + 1..].iter().all(|b| b.uid != a.uid),
                "{}",
                a.uid
            );
        }
    }
}
