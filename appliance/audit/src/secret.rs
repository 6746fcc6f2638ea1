//! The device secret and the pseudonymous study key.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AuditError;

/// 32 random bytes created on first start, never leaving the device. It keys
/// the study pseudonym, so the same study maps to the same key on this device
/// and to nothing recoverable anywhere else.
pub struct DeviceSecret([u8; 32]);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

fn secret_error(path: &Path, problem: String, fix: &'static str) -> AuditError {
    AuditError::Secret {
        path: path.to_owned(),
        problem,
        fix,
    }
}

impl DeviceSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DeviceSecret(bytes)
    }

    /// Read the secret, or create it (mode 0600, write-temp, fsync, rename).
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    secret_error(path, format!("{} bytes, expected 32", bytes.len()), "restore the device secret from service backup; study keys will not match earlier ones if it is regenerated")
                })?;
                Ok(DeviceSecret(arr))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = [0u8; 32];
                getrandom::fill(&mut s).map_err(|e| {
                    secret_error(
                        path,
                        format!("no OS randomness: {e}"),
                        "check the board's random source",
                    )
                })?;
                let tmp = path.with_extension("tmp");
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .map_err(|e| AuditError::io("creating", &tmp, e))?;
                    f.write_all(&s)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| AuditError::io("writing", &tmp, e))?;
                }
                std::fs::rename(&tmp, path)
                    .map_err(|e| AuditError::io("renaming into", path, e))?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| AuditError::io("syncing directory", dir, e))?;
                }
                Ok(DeviceSecret(s))
            }
            Err(e) => Err(AuditError::io("reading", path, e)),
        }
    }

    /// A key for another purpose, derived from the secret. Its HMAC input
    /// starts with the byte 0xFF, which no UTF-8 text (so no study UID, even
    /// a hostile one) can contain: a study key can never equal a derived key,
    /// so `audit export` can never print one.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&[0xFF]);
        mac.update(b"cxr-derived-key:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// HMAC-SHA256 of the StudyInstanceUID under the device secret.
    pub fn study_key(&self, study_instance_uid: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(study_instance_uid.trim_end_matches(['\0', ' ']).as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_study_uid_yields_a_derived_key() {
        let secret = DeviceSecret::from_bytes([3; 32]);
        let key = secret.derive_key("kernel-cache");
        for uid in [
            "kernel-cache",
            "cxr-derived-key:kernel-cache",
            "\u{ff}cxr-derived-key:kernel-cache",
        ] {
            assert_ne!(secret.study_key(uid), key, "{uid:?}");
        }
        assert_ne!(key, secret.derive_key("another purpose"));
    }

    #[test]
    fn study_keys_are_stable_per_device_and_differ_across_devices() {
        let a = DeviceSecret::from_bytes([1; 32]);
        let b = DeviceSecret::from_bytes([2; 32]);
        let uid = "1.2.840.113619.2.1.1";
        assert_eq!(a.study_key(uid), a.study_key(uid));
        assert_eq!(a.study_key(uid), a.study_key("1.2.840.113619.2.1.1\0"));
        assert_ne!(a.study_key(uid), b.study_key(uid));
        assert_ne!(a.study_key(uid), a.study_key("1.2.3"));
    }
}
