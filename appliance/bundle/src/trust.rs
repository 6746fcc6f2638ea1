//! The device's trust store: public keys with their role, and a revocation
//! list. On a release board it is part of the read-only firmware image.
//!
//! Files in the trust directory: `*.pub.toml` (written by `cxr-trainer keygen`)
//! and an optional `revoked.toml` (`revoked = ["<key id hex>", ...]`).

use std::path::Path;

use cxr_board::KeyRole;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{hex, BundleError};

/// The first 8 bytes of SHA-256 of the public key.
pub fn key_id_of(public_key: &[u8; 32]) -> [u8; 8] {
    let d = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// Whether a key name fits its role: development keys are named `dev-…`,
/// release keys never are.
pub fn name_fits_role(name: &str, role: KeyRole) -> bool {
    let named_dev = name.starts_with("dev-");
    let safe = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    safe && (named_dev == (role == KeyRole::Development))
}

/// The public half of a key pair as a text file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    pub name: String,
    pub role: KeyRole,
    pub key_id: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedFile {
    revoked: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    pub role: KeyRole,
    pub key_id: [u8; 8],
    pub key: VerifyingKey,
}

#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: Vec<TrustedKey>,
    revoked: Vec<[u8; 8]>,
}

fn trust_error(path: &Path, problem: String, fix: &'static str) -> BundleError {
    BundleError::Trust {
        path: path.to_owned(),
        problem,
        fix,
    }
}

impl PublicKeyFile {
    /// Check the file's internal consistency and make a trusted key of it.
    pub fn to_trusted(&self, path: &Path) -> Result<TrustedKey, BundleError> {
        let bytes = hex::decode::<32>(&self.public_key).ok_or_else(|| {
            trust_error(
                path,
                "public_key is not 64 hex digits".into(),
                "regenerate the key file with `cxr-trainer keygen`",
            )
        })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
            trust_error(
                path,
                "public_key is not a valid Ed25519 point".into(),
                "regenerate the key file with `cxr-trainer keygen`",
            )
        })?;
        let key_id = key_id_of(&bytes);
        if hex::encode(&key_id) != self.key_id.trim() {
            return Err(trust_error(
                path,
                "key_id does not match the public key".into(),
                "regenerate the key file with `cxr-trainer keygen`",
            ));
        }
        if !name_fits_role(&self.name, self.role) {
            return Err(trust_error(
                path,
                format!("key `{}` has role {} but development keys must be named dev-… and release keys must not", self.name, self.role.as_str()),
                "rename the key to match its role",
            ));
        }
        Ok(TrustedKey {
            name: self.name.clone(),
            role: self.role,
            key_id,
            key,
        })
    }
}

impl TrustStore {
    pub fn new(keys: Vec<TrustedKey>, revoked: Vec<[u8; 8]>) -> Self {
        TrustStore { keys, revoked }
    }

    /// Load every `*.pub.toml` and `revoked.toml` in `dir`. A missing
    /// directory is an error: a device without a trust store can run nothing.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            trust_error(
                dir,
                format!("cannot be read: {e}"),
                "install the public keys (*.pub.toml) into the board's trust directory",
            )
        })?;
        let mut store = TrustStore::default();
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".pub.toml") {
                let text = read_small(&path)?;
                let file: PublicKeyFile = toml::from_str(&text).map_err(|e| {
                    trust_error(
                        &path,
                        e.message().to_owned(),
                        "regenerate the key file with `cxr-trainer keygen`",
                    )
                })?;
                let key = file.to_trusted(&path)?;
                if store.keys.iter().any(|k| k.key_id == key.key_id) {
                    return Err(trust_error(
                        &path,
                        "the same key is installed twice".into(),
                        "remove one copy",
                    ));
                }
                store.keys.push(key);
            } else if name == "revoked.toml" {
                let text = read_small(&path)?;
                let file: RevokedFile = toml::from_str(&text).map_err(|e| {
                    trust_error(
                        &path,
                        e.message().to_owned(),
                        "write revoked = [\"<key id hex>\", ...]",
                    )
                })?;
                for id in &file.revoked {
                    let id = hex::decode::<8>(id).ok_or_else(|| {
                        trust_error(
                            &path,
                            format!("`{id}` is not a 16-hex-digit key id"),
                            "write revoked = [\"<key id hex>\", ...]",
                        )
                    })?;
                    store.revoked.push(id);
                }
            }
        }
        Ok(store)
    }

    /// Add built-in public keys (`(name, *.pub.toml text)`), checked like
    /// files; a key already present is not added twice.
    pub fn with_builtin(mut self, keys: &[(&str, &str)]) -> Result<Self, BundleError> {
        for (name, text) in keys {
            let path = Path::new(name);
            let file: PublicKeyFile = toml::from_str(text).map_err(|e| {
                trust_error(
                    path,
                    e.message().to_owned(),
                    "rebuild the firmware with a valid key file",
                )
            })?;
            let key = file.to_trusted(path)?;
            if self.find(&key.key_id).is_none() {
                self.keys.push(key);
            }
        }
        Ok(self)
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    pub fn find(&self, key_id: &[u8; 8]) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| &k.key_id == key_id)
    }

    pub fn is_revoked(&self, key_id: &[u8; 8]) -> bool {
        self.revoked.contains(key_id)
    }
}

fn read_small(path: &Path) -> Result<String, BundleError> {
    let meta = std::fs::metadata(path).map_err(|e| BundleError::io("reading", path, e))?;
    if meta.len() > 64 * 1024 {
        return Err(trust_error(
            path,
            "over 64 KiB".into(),
            "this is not a key or revocation file",
        ));
    }
    std::fs::read_to_string(path).map_err(|e| BundleError::io("reading", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_must_say_their_role() {
        assert!(name_fits_role("dev-alice", KeyRole::Development));
        assert!(!name_fits_role("alice", KeyRole::Development));
        assert!(name_fits_role("release-2026", KeyRole::Release));
        assert!(!name_fits_role("dev-release", KeyRole::Release));
        assert!(!name_fits_role("../x", KeyRole::Release));
    }
}
