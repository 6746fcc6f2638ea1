//! `cxr-server`: the stages of the resident service (`serve`). So far:
//!
//! - [`spool`]: where every received instance lands before anything is
//!   acknowledged. Bytes are streamed to a `.part` file named by our own
//!   sequence number, fsynced, renamed, the directory fsynced, and a journal
//!   record appended and fsynced; only then does `commit` return a
//!   [`spool::Durable`], the one thing a protocol adapter may acknowledge on.
//!   Peer strings never become file names. Duplicates and conflicting copies
//!   of one SOP Instance UID are recognised; transfers in flight count
//!   against the quota; nothing undelivered is evicted; one process owns a
//!   spool at a time (an exclusive lock).
//! - [`dimse`]: the DIMSE command set (PS3.7) that `dicom-ul` does not
//!   provide: strict, bounded decoding of a command from its PDV fragments
//!   and encoding of C-ECHO and C-STORE responses.
//!
//! It must not know how a decision is computed, burn or CUDA: the worker
//! will call the same study path as `classify`.

pub mod dimse;
mod error;
pub mod spool;
pub mod uid;

pub use error::{DimseError, SpoolError};
