//! The bundle file: one flat container a field engineer carries on a USB stick.
//!
//! ```text
//! "CXRBUNDL"            8 bytes magic
//! container version     u16 LE (1)
//! manifest length       u32 LE, then the postcard manifest (the signed bytes)
//! key id                8 bytes (first 8 bytes of SHA-256 of the public key)
//! signature             64 bytes, Ed25519 over DOMAIN || manifest
//! member count          u16 LE, then per member:
//!   name length u8, name (UTF-8), size u64 LE, the bytes
//! ```
//!
//! Every length is checked against the bytes present before anything is
//! sliced or allocated, so a hostile file costs at most its own size.

use crate::BundleError;

pub const MAGIC: &[u8; 8] = b"CXRBUNDL";
pub const CONTAINER_VERSION: u16 = 1;
/// The whole file: ViT-B/16 in f32 is about 343 MB, so an ensemble of the
/// most members (5) is about 1.7 GB.
pub const MAX_BUNDLE_BYTES: u64 = 2 << 30;
/// Mahalanobis statistics for width 768 are about 2.4 MB.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
pub const MAX_MEMBERS: usize = 16;
pub const MAX_MEMBER_BYTES: u64 = 768 << 20;
pub const MAX_NAME_BYTES: usize = 64;

/// A parsed container: borrowed slices of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container<'a> {
    pub manifest: &'a [u8],
    pub key_id: [u8; 8],
    pub signature: [u8; 64],
    pub members: Vec<(&'a str, &'a [u8])>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BundleError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(BundleError::Truncated {
                what,
                offset: self.at,
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BundleError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

/// Whether a member name is a safe relative name: 1..=64 bytes of
/// `A-Z a-z 0-9 . _ - /`, no leading `/`, no empty, `.` or `..` component.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl<'a> Container<'a> {
    /// Parse the structure; names are checked for safety and uniqueness.
    /// Nothing here is trusted yet: the signature is checked by `verify`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() as u64 > MAX_BUNDLE_BYTES {
            return Err(BundleError::BundleTooLarge {
                size: bytes.len() as u64,
                max: MAX_BUNDLE_BYTES,
            });
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(8, "magic").ok() != Some(&MAGIC[..]) {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_le_bytes(r.array("container version")?);
        if version != CONTAINER_VERSION {
            return Err(BundleError::UnsupportedContainer {
                found: version,
                supported: CONTAINER_VERSION,
            });
        }
        let manifest_len = u64::from(u32::from_le_bytes(r.array("manifest length")?));
        if manifest_len > MAX_MANIFEST_BYTES {
            return Err(BundleError::OversizedManifest {
                size: manifest_len,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let manifest = r.take(manifest_len as usize, "manifest")?;
        let key_id = r.array("key id")?;
        let signature = r.array("signature")?;
        let count = usize::from(u16::from_le_bytes(r.array("member count")?));
        if count > MAX_MEMBERS {
            return Err(BundleError::TooManyMembers {
                count,
                max: MAX_MEMBERS,
            });
        }
        let mut members: Vec<(&'a str, &'a [u8])> = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::from(r.take(1, "member name length")?[0]);
            let raw_name = r.take(name_len, "member name")?;
            let name =
                std::str::from_utf8(raw_name).map_err(|_| BundleError::UnsafeMemberName {
                    name: String::from_utf8_lossy(raw_name).into_owned(),
                })?;
            if !is_safe_name(name) {
                return Err(BundleError::UnsafeMemberName {
                    name: name.to_owned(),
                });
            }
            if members.iter().any(|(n, _)| *n == name) {
                return Err(BundleError::DuplicateMember {
                    name: name.to_owned(),
                });
            }
            let size = u64::from_le_bytes(r.array("member size")?);
            if size > MAX_MEMBER_BYTES {
                return Err(BundleError::MemberTooLarge {
                    name: name.to_owned(),
                    size,
                    max: MAX_MEMBER_BYTES,
                });
            }
            let data = r.take(size as usize, "member data")?;
            members.push((name, data));
        }
        if r.at != bytes.len() {
            return Err(BundleError::TrailingBytes {
                extra: bytes.len() - r.at,
            });
        }
        Ok(Container {
            manifest,
            key_id,
            signature,
            members,
        })
    }

    /// Serialise. Pure layout, no signing: tests use it to build hostile files.
    pub fn encode(&self) -> Vec<u8> {
        let total: usize = self
            .members
            .iter()
            .map(|(n, d)| n.len() + d.len() + 9)
            .sum();
        let mut out = Vec::with_capacity(100 + self.manifest.len() + total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(self.manifest);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.members.len() as u16).to_le_bytes());
        for (name, data) in &self.members {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        Container {
            manifest: b"manifest",
            key_id: [1; 8],
            signature: [2; 64],
            members: vec![("model.onnx", b"abc"), ("model-card.md", b"# card")],
        }
        .encode()
    }

    #[test]
    fn round_trips_and_refuses_every_truncation() {
        let bytes = sample();
        let c = Container::parse(&bytes).unwrap();
        assert_eq!(c.manifest, b"manifest");
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.encode(), bytes);
        for cut in 0..bytes.len() {
            let e = Container::parse(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(e, BundleError::Truncated { .. } | BundleError::BadMagic),
                "cut {cut}: {e}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Container::parse(&longer),
            Err(BundleError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn names_that_escape_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "a//b",
            ".",
            "a\\b",
            "",
            "ü",
        ] {
            assert!(!is_safe_name(bad), "{bad}");
        }
        for good in ["model.onnx", "golden.bin", "docs/model-card.md"] {
            assert!(is_safe_name(good), "{good}");
        }
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_any_allocation() {
        let mut bytes = sample();
        // manifest length field at offset 10
        bytes[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Container::parse(&bytes),
            Err(BundleError::OversizedManifest { .. })
        ));
    }
}
