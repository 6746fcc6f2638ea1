use std::path::PathBuf;

/// Why a bundle was refused, or a device-store operation failed. Every
/// variant has a stable code ([`BundleError::code`]) and a fix hint.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a model bundle: the file does not start with the bundle magic (fix: pass the .cxrb file written by `cxr-trainer lock`)")]
    BadMagic,
    #[error("bundle container version {found} is not supported (this firmware reads {supported}) (fix: lock the model with a matching cxr-trainer, or update the firmware)")]
    UnsupportedContainer { found: u16, supported: u16 },
    #[error("bundle is truncated: {what} runs past the end of the file at byte {offset} (fix: copy the bundle again; the USB copy is incomplete)")]
    Truncated { what: &'static str, offset: usize },
    #[error("bundle has {extra} unexpected bytes after its last member (fix: copy the bundle again from the signed original)")]
    TrailingBytes { extra: usize },
    #[error("bundle file is {size} bytes, over the {max}-byte limit (fix: this is not a model bundle for this device)")]
    BundleTooLarge { size: u64, max: u64 },
    #[error("manifest is {size} bytes, over the {max}-byte limit (fix: the bundle is corrupt or hostile; use the signed original)")]
    OversizedManifest { size: u64, max: u64 },
    #[error("bundle has {count} members, over the limit of {max} (fix: the bundle is corrupt or hostile; use the signed original)")]
    TooManyMembers { count: usize, max: usize },
    #[error("member `{name}` is {size} bytes, over the {max}-byte limit (fix: the bundle is corrupt or hostile; use the signed original)")]
    MemberTooLarge { name: String, size: u64, max: u64 },
    #[error("member name {name:?} is not a safe relative name (no absolute paths, no `..`, only A-Z a-z 0-9 . _ - /) (fix: the bundle is hostile; do not install it)")]
    UnsafeMemberName { name: String },
    #[error("member `{name}` appears more than once (fix: the bundle is corrupt or hostile; use the signed original)")]
    DuplicateMember { name: String },
    #[error("bundle is signed by key {key_id}, which this device does not trust (fix: lock the bundle with a key in this board's trust store, or add the public key to the firmware trust store)")]
    UnknownKey { key_id: String },
    #[error("bundle is signed by key {key_id} ({name}), which has been revoked (fix: obtain a bundle signed with a current release key)")]
    RevokedKey { key_id: String, name: String },
    #[error("bundle is signed by development key {key_id} ({name}); board `{board}` accepts only {accepted} keys (fix: lock the bundle with a release key)")]
    DevelopmentKeyRefused {
        key_id: String,
        name: String,
        board: String,
        accepted: String,
    },
    #[error("the signature by key {key_id} does not match the manifest (fix: the bundle was altered after signing; use the signed original)")]
    BadSignature { key_id: String },
    #[error("manifest schema version {found} is not supported (this firmware reads {supported}) (fix: lock the model with a matching cxr-trainer, or update the firmware)")]
    UnknownSchema { found: u64, supported: u16 },
    #[error("manifest is signed but cannot be decoded: {message} (fix: lock the model again with a matching cxr-trainer)")]
    ManifestMalformed { message: String },
    #[error("member `{name}` is listed in the manifest but missing from the bundle (fix: lock the bundle again; the file is incomplete)")]
    MissingMember { name: String },
    #[error("member `{name}` is in the bundle but not listed in the signed manifest (fix: the bundle was altered after signing; use the signed original)")]
    ExtraMember { name: String },
    #[error("member `{name}` is {actual} bytes but the manifest lists {listed} (fix: the bundle was altered after signing; use the signed original)")]
    SizeMismatch {
        name: String,
        listed: u64,
        actual: u64,
    },
    #[error("member `{name}` does not match its SHA-256 in the manifest (fix: the bundle was altered or damaged after signing; use the signed original)")]
    DigestMismatch { name: String },
    #[error("bundle is for boards [{supported}], not `{board}` (fix: lock the model for this board or flash the right bundle)")]
    IncompatibleBoard { board: String, supported: String },
    #[error("bundle `{model_id}` version {version} is older than the minimum {floor} installed on this device (fix: flash version {floor} or newer; downgrades are refused)")]
    Downgrade {
        model_id: String,
        version: u64,
        floor: u64,
    },
    #[error("bundle `{model_id}` is an ensemble of {members} models; board `{board}` runs at most {max} (fix: flash a bundle with at most {max} members, or raise `engine.max_ensemble_members` in the board profile if the board can afford {members} forward passes per view)")]
    EnsembleTooLarge {
        model_id: String,
        members: usize,
        max: usize,
        board: String,
    },
    #[error("bundle parameters are inconsistent: {problem} (fix: correct the parameters TOML and lock again)")]
    InvalidParameters { problem: String },
    #[error("golden vectors are unusable: {problem} (fix: lock the bundle again so the golden vectors match the model)")]
    Golden { problem: String },
    #[error("trust store {path}: {problem} (fix: {fix})")]
    Trust {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
    #[error("{action} {path}: {source} (fix: check the device's storage and permissions)")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device state {path} is damaged: {problem} (fix: have service restore or re-provision the device state; the appliance will not guess its active slot or anti-rollback floor)")]
    State { path: PathBuf, problem: String },
    #[error(
        "no active bundle is installed (fix: install one with `cxr-appliance bundle install FILE`)"
    )]
    NoActiveBundle,
    #[error("slot {slot} no longer holds the bundle installed there: {detail} (fix: install a signed bundle again, or roll back to the other slot; the slot was altered on disk)")]
    SlotAltered { slot: char, detail: String },
    #[error("there is no previous slot to roll back to (fix: install the wanted bundle instead)")]
    NoPreviousSlot,
    #[error("self-test failed on engine `{engine}`: {problem} (fix: the bundle does not run correctly on this board; keep the current model and report the bundle)")]
    SelfTestFailed { engine: String, problem: String },
    #[error("key file {path}: {problem} (fix: {fix})")]
    KeyFile {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
}

impl BundleError {
    /// A stable code for logs, the audit record and the HTTP API.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::BadMagic => "BUNDLE_BAD_MAGIC",
            BundleError::UnsupportedContainer { .. } => "BUNDLE_UNSUPPORTED_CONTAINER",
            BundleError::Truncated { .. } => "BUNDLE_TRUNCATED",
            BundleError::TrailingBytes { .. } => "BUNDLE_TRAILING_BYTES",
            BundleError::BundleTooLarge { .. } => "BUNDLE_TOO_LARGE",
            BundleError::OversizedManifest { .. } => "BUNDLE_OVERSIZED_MANIFEST",
            BundleError::TooManyMembers { .. } => "BUNDLE_TOO_MANY_MEMBERS",
            BundleError::MemberTooLarge { .. } => "BUNDLE_MEMBER_TOO_LARGE",
            BundleError::UnsafeMemberName { .. } => "BUNDLE_UNSAFE_MEMBER_NAME",
            BundleError::DuplicateMember { .. } => "BUNDLE_DUPLICATE_MEMBER",
            BundleError::UnknownKey { .. } => "BUNDLE_UNKNOWN_KEY",
            BundleError::RevokedKey { .. } => "BUNDLE_REVOKED_KEY",
            BundleError::DevelopmentKeyRefused { .. } => "BUNDLE_DEVELOPMENT_KEY_REFUSED",
            BundleError::BadSignature { .. } => "BUNDLE_BAD_SIGNATURE",
            BundleError::UnknownSchema { .. } => "BUNDLE_UNKNOWN_SCHEMA",
            BundleError::ManifestMalformed { .. } => "BUNDLE_MANIFEST_MALFORMED",
            BundleError::MissingMember { .. } => "BUNDLE_MISSING_MEMBER",
            BundleError::ExtraMember { .. } => "BUNDLE_EXTRA_MEMBER",
            BundleError::SizeMismatch { .. } => "BUNDLE_SIZE_MISMATCH",
            BundleError::DigestMismatch { .. } => "BUNDLE_DIGEST_MISMATCH",
            BundleError::IncompatibleBoard { .. } => "BUNDLE_INCOMPATIBLE_BOARD",
            BundleError::Downgrade { .. } => "BUNDLE_DOWNGRADE",
            BundleError::EnsembleTooLarge { .. } => "BUNDLE_ENSEMBLE_TOO_LARGE",
            BundleError::InvalidParameters { .. } => "BUNDLE_INVALID_PARAMETERS",
            BundleError::Golden { .. } => "BUNDLE_GOLDEN",
            BundleError::Trust { .. } => "BUNDLE_TRUST_STORE",
            BundleError::Io { .. } => "BUNDLE_IO",
            BundleError::State { .. } => "BUNDLE_STATE_DAMAGED",
            BundleError::NoActiveBundle => "BUNDLE_NO_ACTIVE",
            BundleError::SlotAltered { .. } => "BUNDLE_SLOT_ALTERED",
            BundleError::NoPreviousSlot => "BUNDLE_NO_PREVIOUS_SLOT",
            BundleError::SelfTestFailed { .. } => "BUNDLE_SELF_TEST_FAILED",
            BundleError::KeyFile { .. } => "BUNDLE_KEY_FILE",
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        BundleError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
