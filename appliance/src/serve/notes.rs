//! Audit records the network side asks for (refused and aborted
//! associations, outbox changes) go through a bounded queue to one thread
//! that appends them, so that no network task waits on the audit log's
//! lock or its fsync; a record that must be in the log before the answer
//! (an export) is appended at once instead, off the network task. Association faults are summarised per address and
//! code: the first in a minute is recorded, the rest counted into the next
//! record, so that a flood of connections cannot fill the log and stop
//! classification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxr_audit::{AuditLog, Event};

use crate::device::now_unix_ms;

/// Records waiting for the writer at most.
const QUEUE: usize = 1024;
/// One record per address and code per window.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a record that must be in the log waits for it.
const RECORD_NOW_WAIT: Duration = Duration::from_secs(2);
/// Addresses remembered at most (then the table starts afresh).
const MAX_KEYS: usize = 4096;

/// Per address and fault code: when its window opened, and faults since.
type Windows = HashMap<(IpAddr, String), (Instant, u32)>;

/// The sending side, shared by the receiver's and the outbox's observers.
#[derive(Clone)]
pub(super) struct Notes {
    tx: SyncSender<Event>,
    windows: Arc<Mutex<Windows>>,
    audit: Arc<Mutex<AuditLog>>,
    /// What the audit log last said of itself, for when it is busy.
    audit_health: Arc<Mutex<AuditHealth>>,
}

/// `Err((code, message))` while the audit log cannot take a record.
pub(super) type AuditHealth = Result<(), (String, String)>;

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notes").finish_non_exhaustive()
    }
}

impl Notes {
    /// Start the writer thread over `audit`.
    pub(super) fn start(audit: Arc<Mutex<AuditLog>>) -> std::io::Result<Notes> {
        let (tx, rx) = sync_channel::<Event>(QUEUE);
        let writer = Arc::clone(&audit);
        std::thread::Builder::new()
            .name("cxr-audit-notes".into())
            .spawn(move || {
                for event in rx {
                    let mut log = writer.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = log.append(now_unix_ms(), event) {
                        super::console::say(
                            "audit_fault",
                            serde_json::json!({ "code": e.code(), "message": e.to_string() }),
                        );
                    }
                }
            })?;
        // The first answer is read now, so a probe that finds the log busy
        // never reports a full log as ready.
        let health: AuditHealth = audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .takes_records()
            .map_err(|(code, message)| (code.to_owned(), message));
        Ok(Notes {
            tx,
            windows: Arc::new(Mutex::new(HashMap::new())),
            audit,
            audit_health: Arc::new(Mutex::new(health)),
        })
    }

    /// Append a record now, on the caller's thread (a blocking one): `true`
    /// only once it is in the log. For what must not happen unrecorded
    /// (data leaving the appliance).
    pub(super) fn record_now(&self, event: Event) -> bool {
        // The log is held for long by an install's self-test or a full
        // verification: wait a while, then refuse rather than stall.
        let deadline = Instant::now() + RECORD_NOW_WAIT;
        let mut log = loop {
            match self.audit.try_lock() {
                Ok(log) => break log,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    super::console::say(
                        "audit_not_recorded",
                        serde_json::json!({ "code": "AUDIT_BUSY", "record": format!("{event:?}") }),
                    );
                    return false;
                }
            }
        };
        match log.append(now_unix_ms(), event) {
            Ok(_) => true,
            Err(e) => {
                super::console::say(
                    "audit_fault",
                    serde_json::json!({ "code": e.code(), "message": e.to_string() }),
                );
                false
            }
        }
    }

    /// Whether the audit log can take the next record (full, or its last
    /// write failed: every study would be refused). Never waits: while an
    /// append holds the log, its previous answer stands.
    pub(super) fn audit_health(&self) -> AuditHealth {
        let mut last = self.audit_health.lock().unwrap_or_else(|p| p.into_inner());
        let now = match self.audit.try_lock() {
            Ok(log) => Some(log.takes_records()),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner().takes_records()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(now) = now {
            *last = now.map_err(|(code, message)| (code.to_owned(), message));
        }
        last.clone()
    }

    /// Queue a record; a full queue drops it, says so on stderr and
    /// answers `false`.
    pub(super) fn record(&self, event: Event) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(e)) => {
                super::console::say(
                    "audit_not_recorded",
                    serde_json::json!({ "code": "AUDIT_QUEUE_FULL", "record": format!("{e:?}") }),
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Record an association fault, summarised per address and code.
    pub(super) fn association_fault(
        &self,
        ip: IpAddr,
        peer: String,
        calling_ae: String,
        code: &str,
        transient: bool,
    ) {
        let repeats = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
            let now = Instant::now();
            let slot = windows
                .entry((ip, code.to_owned()))
                .or_insert((now - WINDOW, 0));
            if now.duration_since(slot.0) < WINDOW {
                slot.1 = slot.1.saturating_add(1);
                return;
            }
            let repeats = slot.1;
            *slot = (now, 0);
            repeats
        };
        self.record(Event::AssociationFault {
            peer,
            calling_ae,
            code: code.to_owned(),
            transient,
            repeats,
        });
    }
}
