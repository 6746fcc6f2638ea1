//! `cxr-server`: the stages of the resident service (`serve`), from the
//! network to a published study result. It owns:
//!
//! - [`spool`]: where every received instance lands before anything is
//!   acknowledged (stream to `.part`, fsync, rename, directory fsync,
//!   journal line fsync; only then [`spool::Durable`]). Peer strings never
//!   become file names.
//! - [`dimse`]: the DIMSE command set (PS3.7) that `dicom-ul` lacks.
//! - [`scp`]: the C-ECHO/C-STORE receiver over `dicom-ul`'s PDU codec, with
//!   the allow-list, caps, timeouts and transient rejections.
//! - [`intake`]: the one path from a received data set to the spool, shared
//!   by every protocol adapter.
//! - [`assembly`]: instances grouped into studies, and the completion rule.
//! - [`worker`] and [`results`]: the one inference worker, instance
//!   results and versioned study results with their SR.
//! - [`outbox`], [`forward`], [`destination`], [`scu`] and [`web_send`]:
//!   store-and-forward of each result to every destination (C-STORE,
//!   STOW-RS, FHIR), with retries and a dead-letter state.
//! - [`http`] and [`multipart`]: STOW-RS into the same intake, the results
//!   API, login and sessions, health; the bounded `multipart/related` reader.
//!
//! It must not know how a decision is computed, burn or CUDA: the worker
//! calls a [`worker::Processor`] that the binary implements with the same
//! study path as `classify`. Time comes from an injected [`clock::Clock`].

pub mod assembly;
pub mod clock;
pub mod destination;
pub mod dimse;
mod error;
pub mod forward;
pub mod http;
pub mod intake;
mod jsonl;
pub mod metrics;
pub mod multipart;
pub mod outbox;
pub mod part10;
pub mod pdu_io;
mod picture_facts;
pub mod results;
pub mod scp;
pub mod scu;
pub mod spool;
pub mod uid;
pub mod web_send;
pub mod worker;

pub use error::{DimseError, SpoolError};
