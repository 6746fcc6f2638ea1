//! The device store: A/B slots, the persisted anti-rollback floor, and the
//! atomic switch between slots.
//!
//! ```text
//! <state>/state.json            active and previous slot records, floors
//! <state>/slots/{a,b}/bundle.cxrb
//! ```
//!
//! The active slot is never written while it is active, and `state.json` is
//! only ever replaced atomically, so a power loss at any point leaves a
//! verified active bundle: the old one or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_board::BoardProfile;
use serde::{Deserialize, Serialize};

use crate::container::MAX_BUNDLE_BYTES;
use crate::fsutil::{commit_temp, fsync_dir, read_bounded, replace, write_temp};
use crate::{verify, BundleError, TrustStore, VerifiedBundle, VersionFloors};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }
}

/// What was installed in a slot, recorded at install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub slot: Slot,
    pub model_id: String,
    pub version: u64,
    pub digest: String,
    pub installed_unix_s: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// Bumped by every switch.
    pub generation: u64,
    pub active: Option<SlotRecord>,
    /// The rollback target, if it is intact.
    pub previous: Option<SlotRecord>,
    /// The anti-rollback floor per model id: installs below it are refused.
    pub floors: BTreeMap<String, u64>,
}

/// Points between the steps of install and rollback where tests inject a
/// crash. The binary wires an environment variable; the library default does
/// nothing.
pub trait Failpoints {
    fn hit(&self, name: &'static str);
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NoFailpoints;

impl Failpoints for NoFailpoints {
    fn hit(&self, _: &'static str) {}
}

/// Every failpoint, in the order install and rollback reach them.
pub const FAILPOINTS: [&str; 7] = [
    "install:previous-cleared",
    "install:slot-temp-written",
    "install:slot-renamed",
    "install:self-tested",
    "install:switched",
    "rollback:verified",
    "rollback:switched",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchReport {
    pub active: SlotRecord,
    pub previous: Option<SlotRecord>,
    pub self_test: String,
}

#[derive(Debug, Clone)]
pub struct DeviceStore {
    root: PathBuf,
}

impl DeviceStore {
    /// Open (and create) the store under the board's state directory.
    pub fn open(state_dir: &Path) -> Result<Self, BundleError> {
        for slot in [Slot::A, Slot::B] {
            let d = state_dir.join("slots").join(slot.letter().to_string());
            std::fs::create_dir_all(&d).map_err(|e| BundleError::io("creating", &d, e))?;
        }
        Ok(DeviceStore {
            root: state_dir.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        self.root
            .join("slots")
            .join(slot.letter().to_string())
            .join("bundle.cxrb")
    }

    fn lock_file(&self) -> Result<(std::fs::File, PathBuf), BundleError> {
        let path = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BundleError::io("opening", &path, e))?;
        Ok((f, path))
    }

    /// One install or rollback at a time: an exclusive lock on `<state>/lock`,
    /// released when the returned file is dropped (or the process dies).
    fn exclusive(&self) -> Result<std::fs::File, BundleError> {
        let (f, path) = self.lock_file()?;
        f.lock().map_err(|e| BundleError::io("locking", &path, e))?;
        Ok(f)
    }

    fn try_exclusive(&self) -> Result<std::fs::File, BundleError> {
        let (f, path) = self.lock_file()?;
        f.try_lock().map_err(|e| BundleError::State {
            path,
            problem: format!("busy: {e}"),
        })?;
        Ok(f)
    }

    /// The persisted state; a device never installed has the default.
    pub fn state(&self) -> Result<DeviceState, BundleError> {
        let path = self.state_path();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DeviceState::default()),
            _ => {}
        }
        let bytes = read_bounded(&path, 1 << 20).map_err(|e| BundleError::State {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| BundleError::State {
            path,
            problem: e.to_string(),
        })
    }

    fn write_state(&self, state: &DeviceState) -> Result<(), BundleError> {
        let text = serde_json::to_vec_pretty(state).map_err(|e| BundleError::State {
            path: self.state_path(),
            problem: e.to_string(),
        })?;
        replace(&self.state_path(), &text)
    }

    /// Read a slot and verify it: its digest must be the one recorded at
    /// install, and it must still verify (trust, revocation, board). Its own
    /// recorded version is its floor, so a rolled-back slot stays loadable.
    pub fn load_slot(
        &self,
        record: &SlotRecord,
        trust: &TrustStore,
        board: &BoardProfile,
    ) -> Result<VerifiedBundle, BundleError> {
        let bytes = read_bounded(&self.slot_path(record.slot), MAX_BUNDLE_BYTES)?;
        let floors: VersionFloors = [(record.model_id.clone(), record.version)].into();
        let slot = record.slot.letter();
        // Verification hashes the whole file anyway: its digest is compared
        // with the record afterwards instead of hashing twice. The slot was
        // verified at install, so a content failure now means it was altered;
        // trust and board failures mean the device's configuration changed
        // (a revoked key) and keep their own error.
        let bundle = verify(bytes, trust, board, &floors).map_err(|e| match e {
            BundleError::UnknownKey { .. }
            | BundleError::RevokedKey { .. }
            | BundleError::DevelopmentKeyRefused { .. }
            | BundleError::IncompatibleBoard { .. }
            | BundleError::Trust { .. }
            | BundleError::Io { .. }
            | BundleError::BundleTooLarge { .. } => e,
            other => BundleError::SlotAltered {
                slot,
                detail: other.to_string(),
            },
        })?;
        if bundle.digest_hex() != record.digest {
            return Err(BundleError::SlotAltered {
                slot,
                detail: "its SHA-256 differs from the one recorded at install".into(),
            });
        }
        Ok(bundle)
    }

    /// The active bundle, re-verified. Anything else is an error: there is
    /// no fallback to an unverified model.
    pub fn load_active(
        &self,
        trust: &TrustStore,
        board: &BoardProfile,
    ) -> Result<(SlotRecord, VerifiedBundle), BundleError> {
        let state = self.state()?;
        let record = state.active.ok_or(BundleError::NoActiveBundle)?;
        let bundle = self.load_slot(&record, trust, board)?;
        Ok((record, bundle))
    }

    /// Install a verified bundle into the inactive slot, self-test it from
    /// the slot, then switch atomically and raise the floor.
    ///
    /// `self_test` runs the golden vectors through this board's engine and
    /// returns a one-line summary. `now_unix_s` is injected.
    pub fn install(
        &self,
        bundle: &VerifiedBundle,
        trust: &TrustStore,
        board: &BoardProfile,
        self_test: &dyn Fn(&VerifiedBundle) -> Result<String, BundleError>,
        now_unix_s: u64,
        fp: &dyn Failpoints,
    ) -> Result<SwitchReport, BundleError> {
        let _lock = self.exclusive()?;
        let mut state = self.state()?;
        let m = bundle.manifest();
        let floor = state.floors.get(&m.model_id).copied().unwrap_or(0);
        if m.version < floor {
            return Err(BundleError::Downgrade {
                model_id: m.model_id.clone(),
                version: m.version,
                floor,
            });
        }
        let target = state.active.as_ref().map_or(Slot::A, |a| a.slot.other());
        // The target is about to be overwritten: it stops being a rollback
        // target first, so a crash mid-write never leaves a dangling record.
        if state.previous.as_ref().is_some_and(|p| p.slot == target) {
            state.previous = None;
            self.write_state(&state)?;
        }
        fp.hit("install:previous-cleared");
        let path = self.slot_path(target);
        let tmp = write_temp(&path, bundle.bytes())?;
        fp.hit("install:slot-temp-written");
        commit_temp(&tmp, &path)?;
        fp.hit("install:slot-renamed");
        let record = SlotRecord {
            slot: target,
            model_id: m.model_id.clone(),
            version: m.version,
            digest: bundle.digest_hex(),
            installed_unix_s: now_unix_s,
        };
        // Self-test what is on disk, not what is in memory.
        let from_disk = self.load_slot(&record, trust, board)?;
        let summary = self_test(&from_disk)?;
        fp.hit("install:self-tested");
        let previous = state.active.take();
        let floor = state.floors.entry(m.model_id.clone()).or_insert(0);
        *floor = (*floor).max(m.version);
        state.active = Some(record.clone());
        state.previous = previous.clone();
        state.generation += 1;
        self.write_state(&state)?;
        fp.hit("install:switched");
        Ok(SwitchReport {
            active: record,
            previous,
            self_test: summary,
        })
    }

    /// Switch back to the previous slot, only if it still verifies. The
    /// floor is left where it is: installs of older bundles stay refused.
    pub fn rollback(
        &self,
        trust: &TrustStore,
        board: &BoardProfile,
        fp: &dyn Failpoints,
    ) -> Result<SwitchReport, BundleError> {
        let _lock = self.exclusive()?;
        let mut state = self.state()?;
        let previous = state.previous.clone().ok_or(BundleError::NoPreviousSlot)?;
        self.load_slot(&previous, trust, board)?;
        fp.hit("rollback:verified");
        let old_active = state.active.take();
        state.active = Some(previous.clone());
        state.previous = old_active.clone();
        state.generation += 1;
        self.write_state(&state)?;
        fp.hit("rollback:switched");
        Ok(SwitchReport {
            active: previous,
            previous: old_active,
            self_test: "not rerun: the slot passed it at install and still verifies".into(),
        })
    }

    /// Remove leftover temporary files of an interrupted install (not while
    /// another process is installing).
    pub fn clean_temporaries(&self) -> Result<usize, BundleError> {
        let Ok(_lock) = self.try_exclusive() else {
            return Ok(0);
        };
        let mut n = 0;
        for slot in [Slot::A, Slot::B] {
            let tmp = self.slot_path(slot).with_extension("tmp");
            if tmp.exists() {
                std::fs::remove_file(&tmp).map_err(|e| BundleError::io("removing", &tmp, e))?;
                n += 1;
            }
        }
        if n > 0 {
            fsync_dir(&self.root)?;
        }
        Ok(n)
    }
}
