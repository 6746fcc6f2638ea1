//! HTTPS for the HTTP side: rustls (ring), TLS 1.2 and 1.3 only. The
//! certificate and key live in `<state>/http/tls/` as PEM; on first start
//! a self-signed ECDSA P-256 certificate (five years) is made there, and a
//! hospital may replace both files with its own. Its SHA-256 fingerprint
//! and expiry are what `cxr-appliance tls fingerprint` prints, so that a
//! browser's warning can be checked against the device.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{action} {path}: {source} (fix: check the state directory's permissions and free space)"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail} (fix: put a PEM certificate chain in cert.pem and its PEM private key in key.pem, or remove both to have a self-signed pair made)")]
    BadFiles { path: PathBuf, detail: String },
    #[error("making the self-signed certificate failed: {0}")]
    Generate(String),
}

impl TlsError {
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::Io { .. } => "TLS_IO",
            TlsError::BadFiles { .. } => "TLS_BAD_FILES",
            TlsError::Generate(_) => "TLS_GENERATE",
        }
    }
}

/// The certificate's and the key's files under a state directory.
pub fn tls_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("http").join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// What an engineer checks a browser's warning against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// SHA-256 of the leaf certificate's DER, as `AA:BB:…`.
    pub fingerprint_sha256: String,
    /// The leaf's notAfter as written in the certificate (UTCTime or
    /// GeneralizedTime text, e.g. `311130041000Z`).
    pub not_after: String,
    /// Whether this appliance made it (true) or it was put there.
    pub self_signed_here: bool,
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    cxr_fsio::write_atomically(path, bytes, mode).map_err(|f| TlsError::Io {
        action: f.action,
        path: path.to_owned(),
        source: f.error,
    })
}

/// Make a self-signed pair for `names` (DNS names or IP addresses), valid
/// from today (`today`: year, month, day) for five years.
fn generate(names: &[String], today: (i32, u8, u8)) -> Result<(String, String), TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let (y, m, d) = today;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    // Five years on; 29 February becomes the 28th.
    params.not_after = rcgen::date_time_ymd(y + 5, m, if (m, d) == (2, 29) { 28 } else { d });
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "CXR classifier appliance (self-signed)",
    );
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate and key, made (self-signed, for `names`) when neither
/// file exists. One file without the other is refused, never overwritten.
pub fn ensure_certificate(
    state_dir: &Path,
    names: &[String],
    today: (i32, u8, u8),
) -> Result<(), TlsError> {
    let (cert, key) = tls_paths(state_dir);
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(()),
        (false, false) => {}
        _ => {
            return Err(TlsError::BadFiles {
                path: cert.parent().unwrap_or(state_dir).to_owned(),
                detail: "only one of cert.pem and key.pem is there".into(),
            })
        }
    }
    let dir = cert.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })?;
    let (cert_pem, key_pem) = generate(names, today)?;
    write_private(&key, key_pem.as_bytes(), 0o600)?;
    write_private(&cert, cert_pem.as_bytes(), 0o644)?;
    let marker = dir.join("self-signed");
    write_private(&marker, b"made by cxr-appliance on first start\n", 0o644)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| TlsError::BadFiles {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::BadFiles {
            path: path.to_owned(),
            detail: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The server configuration: TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
pub fn server_config(state_dir: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_path, key_path) = tls_paths(state_dir);
    let certs = certificates(&cert_path)?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_path)
            .map_err(|source| TlsError::Io {
                action: "reading",
                path: key_path.clone(),
                source,
            })?
            .permissions(),
    );
    if mode & 0o077 != 0 {
        return Err(TlsError::BadFiles {
            path: key_path,
            detail: format!(
                "the private key is readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            ),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| TlsError::BadFiles {
        path: key_path.clone(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::BadFiles {
            path: key_path,
            detail: format!("the key does not fit the certificate, or is unusable: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The fingerprint and expiry of the certificate in use.
pub fn certificate_info(state_dir: &Path) -> Result<CertificateInfo, TlsError> {
    let (cert_path, _) = tls_paths(state_dir);
    let certs = certificates(&cert_path)?;
    let leaf = certs[0].as_ref();
    let digest = Sha256::digest(leaf);
    let fingerprint_sha256 = digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let not_after = not_after(leaf).ok_or_else(|| TlsError::BadFiles {
        path: cert_path.clone(),
        detail: "its validity could not be read".into(),
    })?;
    let self_signed_here = cert_path.with_file_name("self-signed").exists();
    Ok(CertificateInfo {
        fingerprint_sha256,
        not_after,
        self_signed_here,
    })
}

/// One DER element at the start of `der`: (tag, content, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The notAfter text of an X.509 certificate (bounds-checked DER walk:
/// Certificate → tbsCertificate → [version], serial, signature, issuer,
/// validity → notAfter).
fn not_after(der: &[u8]) -> Option<String> {
    let (_, certificate, _) = element(der)?;
    let (_, mut tbs, _) = element(certificate)?;
    let (tag, _, rest) = element(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        let (_, _, rest) = element(tbs)?;
        tbs = rest;
    }
    let (_, validity, _) = element(tbs)?;
    let (_, _, after) = element(validity)?;
    let (tag, text, _) = element(after)?;
    matches!(tag, 0x17 | 0x18).then(|| String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_self_signed_pair_is_made_once_read_back_and_dated() {
        let dir = std::env::temp_dir().join(format!("cxr-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        ensure_certificate(&dir, &names, (2026, 11, 30)).unwrap();
        let first = certificate_info(&dir).unwrap();
        assert_eq!(first.fingerprint_sha256.len(), 32 * 3 - 1);
        assert!(first.not_after.starts_with("311130"), "{}", first.not_after);
        assert!(first.self_signed_here);
        ensure_certificate(&dir, &names, (2026, 11, 30)).unwrap();
        assert_eq!(
            certificate_info(&dir).unwrap(),
            first,
            "kept, not made again"
        );
        assert!(server_config(&dir).is_ok());
        let (cert, key) = tls_paths(&dir);
        let open = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&key, open).unwrap();
        assert_eq!(
            server_config(&dir).unwrap_err().code(),
            "TLS_BAD_FILES",
            "a world-readable key is refused"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the key is owner-only");
        std::fs::remove_file(&key).unwrap();
        assert_eq!(
            ensure_certificate(&dir, &names, (2026, 11, 30))
                .unwrap_err()
                .code(),
            "TLS_BAD_FILES",
            "a lone certificate is not replaced behind the owner's back"
        );
        std::fs::write(&cert, "not pem").unwrap();
        assert!(certificate_info(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_der_walk_refuses_truncated_input() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
