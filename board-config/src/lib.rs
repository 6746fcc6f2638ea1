//! `cxr-board`: board profiles. One TOML per board (`boards/*.toml`, embedded
//! in the binary), parsed raw then validated into a [`BoardProfile`]: which
//! key roles the board trusts, where the trust store and the state live, the
//! engine preference and the audit-log policy. It knows nothing of bundles,
//! engines or DICOM; those crates read the profile.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profiles built into the binary: `(id, TOML)`. The development
/// profile is there only with the `dev` feature, which a firmware image
/// leaves out.
#[cfg(feature = "dev")]
pub const BUILTIN: &[(&str, &str)] = &[
    ("dev-x86", include_str!("../boards/dev-x86.toml")),
    ("orin-release", include_str!("../boards/orin-release.toml")),
    ("x86-release", include_str!("../boards/x86-release.toml")),
];
#[cfg(not(feature = "dev"))]
pub const BUILTIN: &[(&str, &str)] = &[
    ("orin-release", include_str!("../boards/orin-release.toml")),
    ("x86-release", include_str!("../boards/x86-release.toml")),
];

/// Development public keys built into development profiles (never into
/// release ones): the demo bundle's key, so that a fresh checkout can run it.
/// `(name, *.pub.toml text)`. Empty without the `dev` feature: a firmware
/// image carries no development key at all.
#[cfg(feature = "dev")]
pub const DEVELOPMENT_KEYS: &[(&str, &str)] =
    &[("dev-demo", include_str!("../dev-keys/dev-demo.pub.toml"))];
#[cfg(not(feature = "dev"))]
pub const DEVELOPMENT_KEYS: &[(&str, &str)] = &[];

/// The profile used when none is named. A firmware build fixes it with the
/// build-time variable `CXR_DEFAULT_BOARD` (a release profile when unset); a
/// build with the `dev` feature defaults to the development bench.
pub const DEFAULT_BOARD: &str = match option_env!("CXR_DEFAULT_BOARD") {
    Some(b) => b,
    None if cfg!(feature = "dev") => "dev-x86",
    None => "x86-release",
};

/// The role of a signing key. Development keys are named as such (`dev-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    Release,
    Development,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Release => "release",
            KeyRole::Development => "development",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardKind {
    Development,
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The fastest engine present whose self-test passes.
    Auto,
    /// The tract CPU engine only.
    Tract,
}

/// What the audit log does when its size budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Refuse new studies with a clear status until the log is exported and
    /// archived: no record is ever dropped.
    RefuseNewStudies,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    id: String,
    kind: BoardKind,
    description: String,
    keys: RawKeys,
    state: RawState,
    engine: EngineSettings,
    audit: AuditSettings,
    #[serde(default)]
    gate: GateTightening,
    /// Optional on development boards (the development defaults); a release
    /// board must name its service's address and peers.
    #[serde(default)]
    serve: Option<ServeSettings>,
}

/// Who may send images to the DICOM receiver: a calling AE title (any
/// when absent) from `from`: `loopback`, `any`, or one IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedPeer {
    #[serde(default)]
    pub calling_ae: Option<String>,
    pub from: String,
}

/// The resident service (`serve`): where it listens, who may connect, its
/// limits. A release board binds to no address its profile does not name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// The DICOM receiver's address and port.
    pub dicom_listen: String,
    pub ae_title: String,
    pub allow: Vec<AllowedPeer>,
    /// The largest P-DATA PDU accepted (bytes).
    pub max_pdu: u32,
    pub max_associations: usize,
    pub max_per_calling_ae: usize,
    pub acse_timeout_s: u64,
    pub dimse_timeout_s: u64,
    pub idle_timeout_s: u64,
    /// A study is complete this long after its last instance, once every
    /// association that delivered to it has ended.
    pub stable_s: f64,
    /// Received instances kept at most (bytes); above it, new input is refused.
    pub spool_quota_bytes: u64,
    /// The largest single instance accepted (bytes).
    pub max_instance_bytes: u64,
    /// New associations are refused (transiently) when the spool has less
    /// room than this before its quota ...
    pub min_headroom_bytes: u64,
    /// ... or its file system fewer free bytes than this.
    pub min_free_disk_bytes: u64,
    /// Where results go: `AE@HOST:PORT` C-STORE SCPs (PACS),
    /// `dicomweb:URL` STOW-RS servers and `fhir:URL` FHIR R4 servers.
    pub forward: Vec<String>,
    /// The CA certificates (PEM) that an `https://` destination's
    /// certificate must chain to; required when one is https. A relative
    /// path is inside the state directory.
    #[serde(default)]
    pub forward_trust_pem: Option<PathBuf>,
    /// Outbox retries: the first wait, doubling up to the cap, for the
    /// retention period; then the entry is dead-lettered.
    pub retry_initial_s: f64,
    pub retry_max_s: f64,
    pub retention_days: f64,
    /// An input is deleted this long after its study's results reached
    /// every destination; undelivered input is never deleted.
    pub retain_hours: f64,
    /// The HTTP side (STOW-RS, results API, login, health, the operator's
    /// page) on this address; absent, there is none.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Serve HTTPS only (TLS 1.2 and 1.3; a self-signed certificate is made
    /// on first start). Required on release boards.
    pub http_tls: bool,
    /// The largest STOW-RS request body (bytes).
    pub http_max_body_bytes: u64,
    /// HTTP connections open at once at most.
    pub http_max_connections: usize,
    /// A request's headers must arrive within this (seconds): a client
    /// that trickles them is cut off.
    pub http_header_timeout_s: u64,
    /// A STOW-RS body may pause at most this long (seconds).
    pub http_body_timeout_s: u64,
    /// Send each result picture as a DICOM Secondary Capture to the
    /// destinations too, for PACS viewers that cannot display an SR.
    pub send_secondary_capture: bool,
    /// `/metrics` answers loopback peers without credentials (a local
    /// scraper); otherwise it needs a viewer's.
    pub http_metrics_open_to_loopback: bool,
}

impl Default for ServeSettings {
    /// The development defaults: 127.0.0.1:11112, `CXR_APPLIANCE`, any
    /// calling AE from loopback.
    fn default() -> Self {
        ServeSettings {
            dicom_listen: "127.0.0.1:11112".into(),
            ae_title: "CXR_APPLIANCE".into(),
            allow: vec![AllowedPeer {
                calling_ae: None,
                from: "loopback".into(),
            }],
            max_pdu: 256 * 1024,
            max_associations: 16,
            max_per_calling_ae: 4,
            acse_timeout_s: 10,
            dimse_timeout_s: 30,
            idle_timeout_s: 60,
            stable_s: 20.0,
            spool_quota_bytes: 8 << 30,
            max_instance_bytes: 128 << 20,
            min_headroom_bytes: 256 << 20,
            min_free_disk_bytes: 512 << 20,
            forward: Vec::new(),
            forward_trust_pem: None,
            retry_initial_s: 30.0,
            retry_max_s: 3600.0,
            retention_days: 14.0,
            retain_hours: 24.0,
            http_listen: None,
            http_tls: false,
            http_max_body_bytes: 1 << 30,
            http_max_connections: 64,
            http_header_timeout_s: 10,
            http_body_timeout_s: 30,
            send_secondary_capture: false,
            http_metrics_open_to_loopback: false,
        }
    }
}

/// What a board adds to the bundle's input gate. A board may only tighten
/// the gate, never loosen it: every decision parameter comes from the
/// bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateTightening {
    /// Refuse studies without a recorded age, even when the bundle lets
    /// them pass (`ABSTAIN_AGE_UNKNOWN`).
    #[serde(default)]
    pub require_age: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    accept_roles: Vec<KeyRole>,
    trust_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub preference: EngineChoice,
    /// Matrix-multiply threads for the CPU engine.
    pub threads: usize,
    /// The GPU engine's 16-bit type (builds with the `cuda` feature).
    #[serde(default)]
    pub gpu_precision: GpuPrecision,
    /// Largest batch the GPU engine runs at once (the TTA views of a study
    /// go as one batch when they fit).
    #[serde(default = "default_gpu_batch")]
    pub gpu_max_batch: usize,
    /// Most members of an ensemble bundle this board runs (each member is
    /// one more forward pass per view). A bundle with more is refused at
    /// verification: the board never runs a subset of an ensemble with
    /// parameters fitted for all of it. Absent means 1: single models only.
    #[serde(default = "default_ensemble_members")]
    pub max_ensemble_members: usize,
    /// The CPU engine's arithmetic: `f32` (the default) or a reduced
    /// precision, `bf16` (x86 with AVX512-BF16 or AMX) or `f16` (ARMv8.2).
    /// A reduced precision runs on OpenVINO; f32 runs on tract, or on
    /// OpenVINO when `openvino_library` is set.
    #[serde(default)]
    pub cpu_precision: CpuPrecision,
    /// The OpenVINO C library file (`libopenvino_c.so…`, its plugins beside
    /// it). Never searched for. When set, OpenVINO is tried under `auto`
    /// after any GPU engine, through the bundle's golden self-test (at the
    /// reduced-precision tolerance for bf16 and f16); tract is the fallback.
    #[serde(default)]
    pub openvino_library: Option<PathBuf>,
}

/// The CPU engine's arithmetic (see [`EngineSettings::cpu_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuPrecision {
    #[default]
    F32,
    Bf16,
    F16,
}

fn default_gpu_batch() -> usize {
    8
}

fn default_ensemble_members() -> usize {
    1
}

/// Activations and matrices on the GPU: bf16 (range of f32, golden
/// tolerance 1e-2) or f16 (more mantissa, 5e-3, overflow past 65504).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuPrecision {
    #[default]
    Bf16,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// The log never grows past this; see `on_full`.
    pub max_total_bytes: u64,
    /// fsync each record before the result is returned (the default; turning
    /// it off risks losing acknowledged records on power loss).
    pub fsync_every_record: bool,
    pub on_full: OnFull,
}

/// A validated board profile.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardProfile {
    pub id: String,
    pub kind: BoardKind,
    pub description: String,
    pub accept_roles: Vec<KeyRole>,
    /// Resolved: a relative trust directory lives inside the state directory.
    pub trust_dir: PathBuf,
    pub state_dir: PathBuf,
    pub engine: EngineSettings,
    pub audit: AuditSettings,
    pub gate: GateTightening,
    pub serve: ServeSettings,
    trust_dir_relative: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("no built-in board profile named `{0}` (fix: use one of {1})")]
    UnknownBoard(String, String),
    #[error("board profile {source_name} is not valid TOML for a profile: {message} (fix: compare with board-config/boards/dev-x86.toml)")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("board profile `{id}`: {problem} (fix: {fix})")]
    Invalid {
        id: String,
        problem: String,
        fix: &'static str,
    },
    #[error("reading board profile {path}: {source} (fix: check the path)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BoardError {
    pub fn code(&self) -> &'static str {
        match self {
            BoardError::UnknownBoard(..) => "BOARD_UNKNOWN",
            BoardError::Parse { .. } => "BOARD_PARSE",
            BoardError::Invalid { .. } => "BOARD_INVALID",
            BoardError::Read { .. } => "BOARD_READ",
        }
    }
}

impl BoardProfile {
    /// A profile built into the binary.
    pub fn builtin(id: &str) -> Result<Self, BoardError> {
        let names = BUILTIN
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == id)
            .ok_or_else(|| BoardError::UnknownBoard(id.to_owned(), names))?;
        Self::parse(text, id)
    }

    /// A profile from a TOML file (for bring-up of a new board).
    pub fn from_file(path: &Path) -> Result<Self, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate profile TOML; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, BoardError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| BoardError::Parse {
            source_name: source_name.to_owned(),
            message: e.message().to_owned(),
        })?;
        validate(raw)
    }

    /// Move the state (and a relative trust directory with it) elsewhere:
    /// `--state-dir`, tests.
    pub fn with_state_dir(mut self, dir: &Path) -> Self {
        if self.trust_dir_relative {
            if let Ok(rel) = self.trust_dir.strip_prefix(&self.state_dir) {
                self.trust_dir = dir.join(rel);
            }
        }
        self.state_dir = dir.to_owned();
        self
    }

    pub fn accepts(&self, role: KeyRole) -> bool {
        self.accept_roles.contains(&role)
    }

    /// Public keys this profile trusts without a trust directory: the
    /// built-in development keys on development boards, nothing on release
    /// boards.
    pub fn builtin_keys(&self) -> &'static [(&'static str, &'static str)] {
        match self.kind {
            BoardKind::Development => DEVELOPMENT_KEYS,
            BoardKind::Release => &[],
        }
    }
}

fn invalid(id: &str, problem: String, fix: &'static str) -> BoardError {
    BoardError::Invalid {
        id: id.to_owned(),
        problem,
        fix,
    }
}

fn validate(raw: RawProfile) -> Result<BoardProfile, BoardError> {
    let id = raw.id.as_str();
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(invalid(
            id,
            "the id must be 1-64 characters of a-z, 0-9 and -".into(),
            "rename the board",
        ));
    }
    if raw.keys.accept_roles.is_empty() {
        return Err(invalid(
            id,
            "accepts no key role, so no bundle could ever load".into(),
            "list `release` in keys.accept_roles",
        ));
    }
    if raw.kind == BoardKind::Release {
        if raw.keys.accept_roles.contains(&KeyRole::Development) {
            return Err(invalid(
                id,
                "a release board accepts development keys".into(),
                "remove `development` from keys.accept_roles, or make the board kind development",
            ));
        }
        if raw.keys.trust_dir.is_relative() || raw.state.dir.is_relative() {
            return Err(invalid(
                id,
                "a release board keeps its trust store or state at a relative path".into(),
                "use absolute paths on the firmware and data partitions",
            ));
        }
    }
    validate_engine(id, &raw.engine)?;
    let a = raw.audit;
    if !(64 * 1024..=256 * 1024 * 1024).contains(&a.segment_bytes) {
        return Err(invalid(
            id,
            format!("audit.segment_bytes = {}", a.segment_bytes),
            "use 64 KiB to 256 MiB",
        ));
    }
    if a.max_total_bytes < 2 * a.segment_bytes {
        return Err(invalid(
            id,
            "audit.max_total_bytes is under two segments".into(),
            "allow at least two segments",
        ));
    }
    let relative = raw.keys.trust_dir.is_relative();
    let id = raw.id.clone();
    let id = id.as_str();
    let trust_dir = if relative {
        raw.state.dir.join(&raw.keys.trust_dir)
    } else {
        raw.keys.trust_dir
    };
    Ok(BoardProfile {
        id: raw.id,
        kind: raw.kind,
        description: raw.description,
        accept_roles: raw.keys.accept_roles,
        trust_dir,
        state_dir: raw.state.dir,
        engine: raw.engine,
        audit: a,
        gate: raw.gate,
        serve: validate_serve(id, raw.kind, raw.serve)?,
        trust_dir_relative: relative,
    })
}

fn validate_engine(id: &str, e: &EngineSettings) -> Result<(), BoardError> {
    if !(1..=64).contains(&e.gpu_max_batch) {
        return Err(invalid(
            id,
            format!("engine.gpu_max_batch = {}", e.gpu_max_batch),
            "use 1 to 64",
        ));
    }
    // 5 is the bundle format's limit (`cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS`).
    if !(1..=5).contains(&e.max_ensemble_members) {
        return Err(invalid(
            id,
            format!("engine.max_ensemble_members = {}", e.max_ensemble_members),
            "use 1 (single models only) to 5",
        ));
    }
    if !(1..=64).contains(&e.threads) {
        return Err(invalid(
            id,
            format!("engine.threads = {}", e.threads),
            "use 1 to 64 threads",
        ));
    }
    match (e.cpu_precision, &e.openvino_library) {
        (CpuPrecision::Bf16 | CpuPrecision::F16, None) => Err(invalid(
            id,
            "a reduced engine.cpu_precision needs engine.openvino_library".into(),
            "name the libopenvino_c file, or set cpu_precision = \"f32\"",
        )),
        (_, Some(_)) if e.preference != EngineChoice::Auto => Err(invalid(
            id,
            "engine.openvino_library with preference = \"tract\" would never be tried".into(),
            "set preference = \"auto\", or remove openvino_library and use f32",
        )),
        // A relative name would be searched for by the dynamic loader.
        (_, Some(path)) if path.is_relative() => Err(invalid(
            id,
            "engine.openvino_library is a relative path".into(),
            "use the library's absolute path (on the firmware partition for a release board)",
        )),
        _ => Ok(()),
    }
}

fn validate_http(id: &str, kind: BoardKind, s: &ServeSettings) -> Result<(), BoardError> {
    if let Some(listen) = &s.http_listen {
        if kind == BoardKind::Release && !s.http_tls {
            return Err(invalid(
                id,
                format!("serve.http_listen = {listen:?} without http_tls on a release board"),
                "release boards serve HTTPS only: set http_tls = true",
            ));
        }
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                id,
                format!("serve.http_listen = {listen:?} is not an address:port"),
                "write it as 127.0.0.1:8080",
            ));
        }
    }
    if !(1 << 20..=1 << 40).contains(&s.http_max_body_bytes)
        || !(1..=4096).contains(&s.http_max_connections)
        || !(1..=600).contains(&s.http_header_timeout_s)
        || !(1..=600).contains(&s.http_body_timeout_s)
    {
        return Err(invalid(
            id,
            "serve.http_max_body_bytes, http_max_connections or an http timeout out of range"
                .into(),
            "use 1 MiB to 1 TiB, 1 to 4096 connections, and 1 to 600 seconds",
        ));
    }
    Ok(())
}

fn validate_serve(
    id: &str,
    kind: BoardKind,
    s: Option<ServeSettings>,
) -> Result<ServeSettings, BoardError> {
    let s = match (s, kind) {
        (Some(s), _) => s,
        (None, BoardKind::Development) => ServeSettings::default(),
        (None, BoardKind::Release) => {
            return Err(invalid(
                id,
                "a release board without a [serve] section".into(),
                "name the service's listen address, AE title and allowed peers in [serve]",
            ))
        }
    };
    let ae_ok = !s.ae_title.trim().is_empty()
        && s.ae_title.len() <= 16
        && s.ae_title
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\');
    let retry_ok = [s.retry_initial_s, s.retry_max_s, s.retention_days]
        .iter()
        .all(|t| t.is_finite() && *t > 0.0)
        && s.retry_initial_s <= s.retry_max_s
        && s.retention_days <= 3650.0
        && s.retain_hours.is_finite()
        && (0.0..=24.0 * 3650.0).contains(&s.retain_hours);
    let checks: [(bool, String, &'static str); 8] = [
        (
            retry_ok,
            "serve.retry_initial_s, retry_max_s, retention_days or retain_hours".into(),
            "use positive values, the first retry no later than the cap, at most 3650 days",
        ),
        (
            s.dicom_listen.parse::<std::net::SocketAddr>().is_ok(),
            format!(
                "serve.dicom_listen = {:?} is not an address:port",
                s.dicom_listen
            ),
            "write it as 127.0.0.1:11112",
        ),
        (
            ae_ok,
            format!("serve.ae_title = {:?}", s.ae_title),
            "use 1-16 printable ASCII characters, no backslash",
        ),
        (
            (4096..=16 << 20).contains(&s.max_pdu),
            format!("serve.max_pdu = {}", s.max_pdu),
            "use 4 KiB to 16 MiB",
        ),
        (
            (1..=256).contains(&s.max_associations)
                && (1..=s.max_associations).contains(&s.max_per_calling_ae),
            format!(
                "serve.max_associations = {}, max_per_calling_ae = {}",
                s.max_associations, s.max_per_calling_ae
            ),
            "use 1-256 associations, and a per-AE cap no larger",
        ),
        (
            [s.acse_timeout_s, s.dimse_timeout_s, s.idle_timeout_s]
                .iter()
                .all(|t| (1..=3600).contains(t)),
            "a serve timeout outside 1-3600 s".into(),
            "use 1 to 3600 seconds",
        ),
        (
            s.stable_s.is_finite() && (0.0..=3600.0).contains(&s.stable_s),
            format!("serve.stable_s = {}", s.stable_s),
            "use 0 to 3600 seconds",
        ),
        (
            s.max_instance_bytes >= 1 << 20 && s.max_instance_bytes <= s.spool_quota_bytes,
            "serve.max_instance_bytes outside 1 MiB to the spool quota".into(),
            "raise the spool quota or lower the instance limit",
        ),
    ];
    for (ok, problem, fix) in checks {
        if !ok {
            return Err(invalid(id, problem, fix));
        }
    }
    validate_http(id, kind, &s)?;
    for peer in &s.allow {
        let from_ok = matches!(peer.from.as_str(), "loopback" | "any")
            || peer.from.parse::<std::net::IpAddr>().is_ok();
        if !from_ok {
            return Err(invalid(
                id,
                format!("serve.allow from = {:?}", peer.from),
                "use loopback, any, or one IP address",
            ));
        }
    }
    Ok(s)
}

#[cfg(all(test, feature = "dev"))]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_validates_and_release_refuses_development_keys() {
        for (name, _) in BUILTIN {
            let p = BoardProfile::builtin(name).unwrap();
            assert_eq!(p.id, *name);
            if p.kind == BoardKind::Release {
                assert!(!p.accepts(KeyRole::Development), "{name}");
                assert!(p.trust_dir.is_absolute());
            }
            assert!(p.accepts(KeyRole::Release));
        }
        assert!(BoardProfile::builtin(DEFAULT_BOARD).is_ok());
        assert!(BoardProfile::builtin("orin-release")
            .unwrap()
            .builtin_keys()
            .is_empty());
        assert!(!BoardProfile::builtin("dev-x86")
            .unwrap()
            .builtin_keys()
            .is_empty());
        assert_eq!(
            BoardProfile::builtin("nope").unwrap_err().code(),
            "BOARD_UNKNOWN"
        );
    }

    #[test]
    fn a_release_profile_must_name_its_service_and_a_development_one_may_not() {
        let release = include_str!("../boards/x86-release.toml");
        let without = &release[..release.find("[serve]").unwrap()];
        let e = BoardProfile::parse(without, "t").unwrap_err();
        assert_eq!(e.code(), "BOARD_INVALID");
        assert!(e.to_string().contains("[serve]"), "{e}");
        let dev = include_str!("../boards/dev-x86.toml");
        let dev = BoardProfile::parse(&dev[..dev.find("[serve]").unwrap()], "t").unwrap();
        assert_eq!(dev.serve, ServeSettings::default());
    }

    #[test]
    fn plain_http_is_for_development_boards_only() {
        let dev = BoardProfile::builtin("dev-x86").unwrap();
        assert_eq!(dev.serve.http_listen.as_deref(), Some("127.0.0.1:8080"));
        for release in ["x86-release", "orin-release"] {
            assert_eq!(
                BoardProfile::builtin(release).unwrap().serve.http_listen,
                None
            );
        }
        let release = include_str!("../boards/x86-release.toml")
            .replace("[serve]\n", "[serve]\nhttp_listen = \"0.0.0.0:8080\"\n");
        let e = BoardProfile::parse(&release, "t").unwrap_err();
        assert!(e.to_string().contains("HTTPS"), "{e}");
        let tls = release.replace("[serve]\n", "[serve]\nhttp_tls = true\n");
        assert!(BoardProfile::parse(&tls, "t").is_ok());
        let bad = include_str!("../boards/dev-x86.toml").replace("127.0.0.1:8080", "localhost");
        assert_eq!(
            BoardProfile::parse(&bad, "t").unwrap_err().code(),
            "BOARD_INVALID"
        );
    }

    #[test]
    fn a_release_profile_that_trusts_development_keys_is_refused() {
        let text = include_str!("../boards/orin-release.toml").replace(
            "accept_roles = [\"release\"]",
            "accept_roles = [\"release\", \"development\"]",
        );
        let e = BoardProfile::parse(&text, "t").unwrap_err();
        assert_eq!(e.code(), "BOARD_INVALID");
        assert!(e.to_string().contains("development"), "{e}");
        let relative =
            include_str!("../boards/orin-release.toml").replace("/var/lib/cxr-appliance", "state");
        assert!(BoardProfile::parse(&relative, "t").is_err());
        let unknown_field = format!("{}\nsurprise = 1\n", include_str!("../boards/dev-x86.toml"));
        assert_eq!(
            BoardProfile::parse(&unknown_field, "t").unwrap_err().code(),
            "BOARD_PARSE"
        );
    }

    #[test]
    fn a_reduced_cpu_precision_needs_its_library_and_auto() {
        let dev = BoardProfile::builtin("dev-x86").unwrap();
        assert_eq!(dev.engine.cpu_precision, CpuPrecision::F32);
        assert_eq!(dev.engine.openvino_library, None);
        let base = include_str!("../boards/x86-release.toml");
        let with = |engine: &str| base.replace("preference = \"tract\"\n", engine);
        let ok = with("preference = \"auto\"\ncpu_precision = \"bf16\"\nopenvino_library = \"/opt/openvino/libopenvino_c.so\"\n");
        let p = BoardProfile::parse(&ok, "t").unwrap();
        assert_eq!(p.engine.cpu_precision, CpuPrecision::Bf16);
        let f32_on_openvino =
            with("preference = \"auto\"\nopenvino_library = \"/opt/libopenvino_c.so\"\n");
        let p = BoardProfile::parse(&f32_on_openvino, "t").unwrap();
        assert_eq!(p.engine.cpu_precision, CpuPrecision::F32);
        for (bad, says) in [
            (
                "preference = \"auto\"\ncpu_precision = \"bf16\"\n",
                "needs engine.openvino_library",
            ),
            (
                "preference = \"tract\"\ncpu_precision = \"f16\"\nopenvino_library = \"/l.so\"\n",
                "never be tried",
            ),
            (
                "preference = \"auto\"\ncpu_precision = \"bf16\"\nopenvino_library = \"l.so\"\n",
                "relative path",
            ),
        ] {
            let e = BoardProfile::parse(&with(bad), "t").unwrap_err();
            assert_eq!(e.code(), "BOARD_INVALID");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn gpu_settings_default_to_bf16_and_bounded_batches() {
        let dev = BoardProfile::builtin("dev-x86").unwrap();
        assert_eq!(dev.engine.gpu_precision, GpuPrecision::Bf16);
        assert_eq!(dev.engine.gpu_max_batch, 8);
        let orin = BoardProfile::builtin("orin-release").unwrap();
        assert_eq!(orin.engine.gpu_precision, GpuPrecision::F16);
        let huge = include_str!("../boards/orin-release.toml")
            .replace("gpu_max_batch = 8", "gpu_max_batch = 0");
        let e = BoardProfile::parse(&huge, "t").unwrap_err();
        assert!(e.to_string().contains("gpu_max_batch"), "{e}");
        let unknown = include_str!("../boards/orin-release.toml")
            .replace("gpu_precision = \"f16\"", "gpu_precision = \"fp8\"");
        assert_eq!(
            BoardProfile::parse(&unknown, "t").unwrap_err().code(),
            "BOARD_PARSE"
        );
    }

    #[test]
    fn ensemble_members_are_bounded_and_default_to_one() {
        let dev = BoardProfile::builtin("dev-x86").unwrap();
        assert_eq!(dev.engine.max_ensemble_members, 5);
        let orin = include_str!("../boards/orin-release.toml");
        let unset = orin.replace("max_ensemble_members = 1\n", "");
        assert_ne!(unset, orin);
        let p = BoardProfile::parse(&unset, "t").unwrap();
        assert_eq!(p.engine.max_ensemble_members, 1);
        for bad in ["0", "6"] {
            let text = orin.replace(
                "max_ensemble_members = 1",
                &format!("max_ensemble_members = {bad}"),
            );
            let e = BoardProfile::parse(&text, "t").unwrap_err();
            assert!(e.to_string().contains("max_ensemble_members"), "{e}");
        }
    }

    #[test]
    fn moving_the_state_moves_a_relative_trust_store_with_it() {
        let p = BoardProfile::builtin("dev-x86")
            .unwrap()
            .with_state_dir(Path::new("/tmp/s"));
        assert_eq!(p.state_dir, Path::new("/tmp/s"));
        assert_eq!(p.trust_dir, Path::new("/tmp/s/trust"));
        let r = BoardProfile::builtin("orin-release")
            .unwrap()
            .with_state_dir(Path::new("/tmp/s"));
        assert_eq!(r.trust_dir, Path::new("/etc/cxr-appliance/trust"));
    }
}
