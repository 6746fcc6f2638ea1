//! `cxr-audit`: the tamper-evident audit log. Append-only segment files of
//! length-prefixed postcard records, each carrying the SHA-256 of the record
//! before it; every record fsynced before the result it records is returned;
//! torn tails from power loss detected, kept and cut at start-up; whole-log
//! verification and JSON Lines export; one writer at a time (an exclusive
//! lock held for the log's whole life). No names, patient IDs or UIDs are
//! stored: studies are known by an HMAC under the device secret. It must not
//! know HTTP, engines or DICOM.

mod error;
mod export;
mod frame;
mod log;
mod record;
mod secret;
mod torn;
mod verify;
mod writer_lock;

pub use error::AuditError;
pub use export::{export_jsonl, record_json};
pub use frame::{segment_name, HEADER_BYTES, MAX_PAYLOAD};
pub use log::{
    segments, AuditConfig, AuditLog, DEFAULT_LOCK_WAIT_MS, MAX_SEGMENT_BYTES, RESERVE_BYTES,
};
pub use record::{BundleRef, Event, Inference, Mode, Outcome, Record};
pub use secret::DeviceSecret;
pub use torn::TornTail;
pub use verify::{verify, walk, VerifyReport};

#[cfg(test)]
mod tests;
