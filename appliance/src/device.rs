//! The device as the commands see it: the board profile, the state directory
//! (slots, floors, audit log, device secret), the trust store, the wall clock
//! and the failpoints. This is where the outside world is wired in.

use std::path::PathBuf;

use anyhow::Context;
use cxr_audit::{AuditConfig, AuditLog, DeviceSecret};
use cxr_board::{BoardProfile, DEFAULT_BOARD};
use cxr_bundle::{DeviceStore, Failpoints, TrustStore};

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Board profile id (built in: dev-x86, orin-release, x86-release;
    /// default: the build's). Refused by a firmware build.
    #[arg(long, env = "CXR_BOARD")]
    pub board: Option<String>,
    /// A board profile TOML to use instead of a built-in one (board
    /// bring-up). Refused by a firmware build.
    #[arg(long)]
    pub board_file: Option<PathBuf>,
    /// Override the profile's state directory. Refused by a firmware build.
    #[arg(long, env = "CXR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// A firmware build was asked to change its board or state directory.
#[derive(Debug)]
pub struct BoardFixed {
    what: &'static str,
}

impl std::fmt::Display for BoardFixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BOARD_FIXED: this firmware is built for board `{DEFAULT_BOARD}` with its state and trust store where that profile puts them; {} is refused (fix: unset it; a different board needs a different firmware image)",
            self.what
        )
    }
}

impl std::error::Error for BoardFixed {}

impl DeviceArgs {
    /// The first run-time override present, named as the operator gave it.
    fn first_override(&self) -> Option<&'static str> {
        let from_env = |name: &str| std::env::var_os(name).is_some();
        if self.board.is_some() {
            Some(if from_env("CXR_BOARD") {
                "CXR_BOARD"
            } else {
                "--board"
            })
        } else if self.board_file.is_some() {
            Some("--board-file")
        } else if self.state_dir.is_some() {
            Some(if from_env("CXR_STATE_DIR") {
                "CXR_STATE_DIR"
            } else {
                "--state-dir"
            })
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub struct Device {
    pub board: BoardProfile,
    pub store: DeviceStore,
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Device {
    pub fn open(args: &DeviceArgs) -> anyhow::Result<Self> {
        if cfg!(feature = "firmware") {
            if let Some(what) = args.first_override() {
                return Err(BoardFixed { what }.into());
            }
        }
        let mut board = match &args.board_file {
            Some(p) => BoardProfile::from_file(p)?,
            None => BoardProfile::builtin(args.board.as_deref().unwrap_or(DEFAULT_BOARD))?,
        };
        if let Some(dir) = &args.state_dir {
            board = board.with_state_dir(dir);
        }
        let store = DeviceStore::open(&board.state_dir)
            .with_context(|| format!("opening the state directory of board `{}`", board.id))?;
        store.clean_temporaries()?;
        Ok(Device { board, store })
    }

    /// The trust directory's keys plus the profile's built-in ones (the demo
    /// development key on development boards only). A development board may
    /// have no trust directory; a release board must.
    pub fn trust(&self) -> Result<TrustStore, cxr_bundle::BundleError> {
        let builtin = self.board.builtin_keys();
        let store = if !builtin.is_empty() && !self.board.trust_dir.exists() {
            TrustStore::default()
        } else {
            TrustStore::load(&self.board.trust_dir)?
        };
        store.with_builtin(builtin)
    }

    /// Open the audit log; a torn tail left by a power loss is cut, kept,
    /// reported on stderr and recorded in the log itself.
    pub fn open_audit(&self) -> anyhow::Result<AuditLog> {
        let a = self.board.audit;
        let config = AuditConfig {
            segment_bytes: a.segment_bytes,
            max_total_bytes: a.max_total_bytes,
            fsync_every_record: a.fsync_every_record,
            lock_wait_ms: cxr_audit::DEFAULT_LOCK_WAIT_MS,
        };
        let dir = self.board.state_dir.join("audit");
        let (log, torn) = AuditLog::open(&dir, config, now_unix_ms())?;
        #[cfg(feature = "testing")]
        let log = {
            let mut log = log;
            if std::env::var("CXR_FAILPOINT").as_deref() == Ok("audit:partial-record") {
                log.set_crash_hook(|name| EnvFailpoints::from_env().hit(name));
            }
            log
        };
        for t in torn {
            crate::serve::console::say(
                "audit_torn_record_cut",
                serde_json::json!({
                    "bytes": t.bytes, "offset": t.offset, "segment": t.segment,
                    "kept_as": t.kept_as.display().to_string(),
                    "detail": "a partial record (power loss) was cut from the audit log",
                }),
            );
        }
        Ok(log)
    }

    /// The key that authenticates this device's compiled-kernel cache.
    pub fn kernel_cache_key(&self) -> anyhow::Result<[u8; 32]> {
        Ok(self.secret()?.derive_key("kernel-cache"))
    }

    pub fn secret(&self) -> anyhow::Result<DeviceSecret> {
        Ok(DeviceSecret::load_or_create(
            &self.board.state_dir.join("device-secret"),
        )?)
    }
}

/// Failpoints from `CXR_FAILPOINT` (a name from `cxr_bundle::FAILPOINTS`, or
/// `audit:partial-record`):
/// on reaching it the process says so on stderr and waits to be killed
/// (at most a minute, then it aborts). Used by the crash-safety tests; unset,
/// it does nothing.
#[derive(Debug)]
pub struct EnvFailpoints(Option<String>);

impl EnvFailpoints {
    pub fn from_env() -> Self {
        // A firmware image (no `testing` feature) ignores the variable.
        EnvFailpoints(if cfg!(feature = "testing") {
            std::env::var("CXR_FAILPOINT").ok()
        } else {
            None
        })
    }
}

impl Failpoints for EnvFailpoints {
    fn hit(&self, name: &'static str) {
        if self.0.as_deref() == Some(name) {
            eprintln!("failpoint reached: {name}");
            std::thread::sleep(std::time::Duration::from_secs(60));
            std::process::abort();
        }
    }
}

/// Where a command appends its audit records: the log it owns (a command
/// run alone) or the service's shared log, locked for one record at a time,
/// so that a bundle's verification and self-tests never hold the worker,
/// the exports or the readiness probe off the log.
pub(crate) trait Recorder {
    fn record(
        &mut self,
        time_unix_ms: u64,
        event: cxr_audit::Event,
    ) -> Result<u64, cxr_audit::AuditError>;
}

impl Recorder for AuditLog {
    fn record(
        &mut self,
        time_unix_ms: u64,
        event: cxr_audit::Event,
    ) -> Result<u64, cxr_audit::AuditError> {
        self.append(time_unix_ms, event)
    }
}

/// The service's log, shared: locked per record.
pub(crate) struct SharedLog<'a>(pub &'a std::sync::Mutex<AuditLog>);

impl Recorder for SharedLog<'_> {
    fn record(
        &mut self,
        time_unix_ms: u64,
        event: cxr_audit::Event,
    ) -> Result<u64, cxr_audit::AuditError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(time_unix_ms, event)
    }
}
