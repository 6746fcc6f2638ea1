//! Who may use the HTTP side: local users (argon2id password hashes) and
//! machine tokens (stored as SHA-256 digests only), each with a role, in one
//! owner-only file `<state>/http/credentials.json`. The command line edits
//! it (`user add|passwd|remove`, `token create|revoke`); the service reads it
//! again whenever it changes, so a revoked token is refused at once.
//!
//! A file that cannot be read or parsed admits no one: the service answers
//! 401 and says why on stderr, never falling back to an open door.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cxr_fsio::{hex, write_atomically};
use cxr_store::files::create_dir;

/// What a principal may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads results, studies and the system's state.
    Viewer,
    /// Also stores studies (STOW-RS) and retries deliveries.
    Operator,
    /// Also installs and rolls back bundles, and manages users and tokens.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, CredentialError> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(CredentialError::BadRole(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "role {0:?} is not viewer, operator or admin (fix: pass --role viewer|operator|admin)"
    )]
    BadRole(String),
    #[error(
        "user name {0:?} is not 1 to 64 letters, digits, `.`, `_` or `-` (fix: choose such a name)"
    )]
    BadName(String),
    #[error(
        "the password has {0} characters; at least 12 are required (fix: choose a longer one)"
    )]
    WeakPassword(usize),
    #[error("user {0:?} already exists (fix: `user passwd` changes a password)")]
    UserExists(String),
    #[error("no user {0:?} (fix: `user add NAME --role ROLE` first)")]
    NoUser(String),
    #[error("no token {0:?} (fix: the id is the part after `cxr_` and before the second `_`)")]
    NoToken(String),
    #[error(
        "{action} {path}: {source} (fix: check the state directory's permissions and free space)"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a credentials file: {detail} (fix: restore it, or remove it and add the users again)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

impl CredentialError {
    pub fn code(&self) -> &'static str {
        match self {
            CredentialError::BadRole(_) => "AUTH_BAD_ROLE",
            CredentialError::BadName(_) => "AUTH_BAD_NAME",
            CredentialError::WeakPassword(_) => "AUTH_WEAK_PASSWORD",
            CredentialError::UserExists(_) => "AUTH_USER_EXISTS",
            CredentialError::NoUser(_) => "AUTH_NO_USER",
            CredentialError::NoToken(_) => "AUTH_NO_TOKEN",
            CredentialError::Io { .. } => "AUTH_IO",
            CredentialError::Corrupt { .. } => "AUTH_CORRUPT",
            CredentialError::Hash(_) => "AUTH_HASH",
            CredentialError::Random(_) => "AUTH_RANDOM",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The argon2id PHC string.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The public part of the token, used to find it.
    pub id: String,
    pub role: Role,
    /// SHA-256 of the whole token, in hex.
    pub sha256: String,
    pub label: String,
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub users: Vec<User>,
    pub tokens: Vec<Token>,
}

/// The file's place under a state directory.
pub fn credentials_path(state_dir: &Path) -> PathBuf {
    state_dir.join("http").join("credentials.json")
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CredentialError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CredentialError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A fresh random secret in hex (sessions and CSRF tokens use it too).
pub fn random_hex(bytes: usize) -> Result<String, CredentialError> {
    let raw = random_bytes::<32>()?;
    Ok(hex(&raw[..bytes.min(32)]))
}

fn check_name(name: &str) -> Result<(), CredentialError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CredentialError::BadName(name.to_owned()))
    }
}

/// An argon2id hash of `password` (the crate's defaults: 19 MiB, t = 2).
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let chars = password.chars().count();
    if chars < 12 {
        return Err(CredentialError::WeakPassword(chars));
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Only argon2id PHC strings are stored.
fn check_hash(hash: &str) -> Result<(), CredentialError> {
    match PasswordHash::new(hash) {
        Ok(h) if h.algorithm.as_str() == "argon2id" => Ok(()),
        _ => Err(CredentialError::Hash("not an argon2id PHC string".into())),
    }
}

/// Equality that takes the same time wherever the first difference is.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A burned hash checked when a user does not exist, so that the time taken
/// does not tell which names exist.
const ABSENT_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZQ0f9fPbDo5J1J4mOQbyxOhQ9oZCC3W9Pg9XMsN4sYk";

impl Credentials {
    /// The role of `name` if `password` is theirs.
    pub fn check_password(&self, name: &str, password: &str) -> Option<Role> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or(ABSENT_USER_HASH, |u| u.hash.as_str());
        let parsed = PasswordHash::new(hash).ok()?;
        let good = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        user.filter(|_| good).map(|u| u.role)
    }

    /// The token's id and role if `presented` is a token on file.
    pub fn check_token(&self, presented: &str) -> Option<(String, Role)> {
        let id = presented.strip_prefix("cxr_")?.split('_').next()?;
        let digest = hex(&Sha256::digest(presented.as_bytes()));
        self.tokens
            .iter()
            .find(|t| t.id == id && same_bytes(t.sha256.as_bytes(), digest.as_bytes()))
            .map(|t| (t.id.clone(), t.role))
    }

    /// Add a user with a hash made by [`hash_password`] (the command line
    /// hashes, so that a password never crosses the admin socket).
    pub fn add_user(
        &mut self,
        name: &str,
        role: Role,
        hash: String,
    ) -> Result<(), CredentialError> {
        check_name(name)?;
        check_hash(&hash)?;
        if self.users.iter().any(|u| u.name == name) {
            return Err(CredentialError::UserExists(name.to_owned()));
        }
        self.users.push(User {
            name: name.to_owned(),
            role,
            hash,
        });
        Ok(())
    }

    pub fn set_password_hash(&mut self, name: &str, hash: String) -> Result<(), CredentialError> {
        check_hash(&hash)?;
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| CredentialError::NoUser(name.to_owned()))?;
        user.hash = hash;
        Ok(())
    }

    pub fn remove_user(&mut self, name: &str) -> Result<(), CredentialError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(CredentialError::NoUser(name.to_owned()));
        }
        Ok(())
    }

    /// A new token for `role`: the whole token is returned once and only
    /// its digest is kept.
    pub fn create_token(
        &mut self,
        role: Role,
        label: &str,
        now_unix_ms: u64,
    ) -> Result<(String, String), CredentialError> {
        let id = random_hex(6)?;
        let token = format!("cxr_{id}_{}", random_hex(32)?);
        self.tokens.push(Token {
            id: id.clone(),
            role,
            sha256: hex(&Sha256::digest(token.as_bytes())),
            label: label.chars().take(120).collect(),
            created_unix_ms: now_unix_ms,
        });
        Ok((id, token))
    }

    pub fn revoke_token(&mut self, id: &str) -> Result<(), CredentialError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        if self.tokens.len() == before {
            return Err(CredentialError::NoToken(id.to_owned()));
        }
        Ok(())
    }
}

/// Read the file; a missing file is an empty set of credentials.
pub fn load(path: &Path) -> Result<Credentials, CredentialError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
        Err(source) => {
            return Err(CredentialError::Io {
                action: "reading",
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| CredentialError::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Write the file whole (owner-only temporary file, fsync, rename,
/// directory fsync): after a power loss it is the old or the new set.
pub fn save(path: &Path, credentials: &Credentials) -> Result<(), CredentialError> {
    let io = |action, source| CredentialError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir).map_err(|e| CredentialError::Corrupt {
        path: dir.to_owned(),
        detail: e.to_string(),
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("protecting", e))?;
    let text = serde_json::to_vec_pretty(credentials).map_err(|e| CredentialError::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    write_atomically(path, &text, 0o600).map_err(|f| io(f.action, f.error))
}

/// Change the file under an exclusive lock (`credentials.lock` beside it),
/// so that two commands never lose each other's change.
pub fn update<T>(
    state_dir: &Path,
    change: impl FnOnce(&mut Credentials) -> Result<T, CredentialError>,
) -> Result<T, CredentialError> {
    let path = credentials_path(state_dir);
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir).map_err(|e| CredentialError::Corrupt {
        path: dir.to_owned(),
        detail: e.to_string(),
    })?;
    let lock_path = dir.join("credentials.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| CredentialError::Io {
            action: "opening",
            path: lock_path.clone(),
            source,
        })?;
    lock.lock().map_err(|source| CredentialError::Io {
        action: "locking",
        path: lock_path,
        source,
    })?;
    let mut credentials = load(&path)?;
    let out = change(&mut credentials)?;
    save(&path, &credentials)?;
    Ok(out)
}

/// The file's identity when it was read (inode, change time, modification
/// time, length: a rename always changes the inode), and what it held.
type Cached = (
    (u64, i64, i64, Option<SystemTime>, u64),
    std::sync::Arc<Credentials>,
);

/// The service's view of the file, read again when it changes.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    cached: Mutex<Option<Cached>>,
}

impl CredentialStore {
    pub fn new(state_dir: &Path) -> Self {
        CredentialStore {
            path: credentials_path(state_dir),
            cached: Mutex::new(None),
        }
    }

    /// The current credentials; an unreadable file admits no one.
    pub fn current(&self) -> std::sync::Arc<Credentials> {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(&self.path)
            .map(|m| {
                (
                    m.ino(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.modified().ok(),
                    m.len(),
                )
            })
            .unwrap_or((0, 0, 0, None, 0));
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, creds)) = cached.as_ref() {
            if *seen == stamp && stamp.3.is_some() {
                return std::sync::Arc::clone(creds);
            }
        }
        let creds = std::sync::Arc::new(load(&self.path).unwrap_or_else(|e| {
            eprintln!(
                "{}",
                serde_json::json!({ "event": "credentials_unreadable", "code": e.code(), "message": e.to_string(), "detail": "no one is admitted" })
            );
            Credentials::default()
        }));
        *cached = Some((stamp, std::sync::Arc::clone(&creds)));
        creds
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_for_their_user_and_short_ones_are_refused() {
        let mut c = Credentials::default();
        let hash = hash_password("correct horse battery").unwrap();
        c.add_user("ada", Role::Admin, hash.clone()).unwrap();
        assert!(c.users[0].hash.starts_with("$argon2id$"));
        assert_eq!(
            c.check_password("ada", "correct horse battery"),
            Some(Role::Admin)
        );
        assert_eq!(c.check_password("ada", "correct horse batterY"), None);
        assert_eq!(c.check_password("bob", "correct horse battery"), None);
        assert!(matches!(
            hash_password("short"),
            Err(CredentialError::WeakPassword(5))
        ));
        assert!(matches!(
            c.add_user("ada", Role::Viewer, hash.clone()),
            Err(CredentialError::UserExists(_))
        ));
        assert!(matches!(
            c.add_user("../x", Role::Viewer, hash),
            Err(CredentialError::BadName(_))
        ));
        assert!(matches!(
            c.add_user("eve", Role::Viewer, "plain text".into()),
            Err(CredentialError::Hash(_))
        ));
    }

    #[test]
    fn the_hash_checked_for_an_absent_user_is_a_real_argon2id_hash() {
        let parsed = PasswordHash::new(ABSENT_USER_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }

    #[test]
    fn a_token_is_kept_as_a_digest_and_refused_once_revoked() {
        let mut c = Credentials::default();
        let (id, token) = c.create_token(Role::Operator, "modality", 1).unwrap();
        assert!(!serde_json::to_string(&c).unwrap().contains(&token[12..]));
        assert_eq!(c.check_token(&token), Some((id.clone(), Role::Operator)));
        let mut forged = token.clone();
        forged.pop();
        forged.push('x');
        assert_eq!(c.check_token(&forged), None);
        c.revoke_token(&id).unwrap();
        assert_eq!(c.check_token(&token), None);
    }

    #[test]
    fn the_store_reads_changes_and_a_corrupt_file_admits_no_one() {
        let dir = std::env::temp_dir().join(format!("cxr-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = credentials_path(&dir);
        let store = CredentialStore::new(&dir);
        assert!(store.current().tokens.is_empty());
        let mut c = Credentials::default();
        let (_, token) = c.create_token(Role::Viewer, "", 1).unwrap();
        save(&path, &c).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only");
        assert!(store.current().check_token(&token).is_some());
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(store.current().check_token(&token).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
