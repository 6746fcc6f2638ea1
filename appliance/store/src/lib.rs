//! `cxr-store`: the service's durable stages, each one folder under the
//! state directory and one journal, handing work on only after an fsync. It
//! owns:
//!
//! - [`spool`]: where every received instance lands before anything is
//!   acknowledged (stream to `.part`, fsync, rename, directory fsync,
//!   journal line fsync; only then [`spool::Durable`]). Peer strings never
//!   become file names.
//! - [`intake`]: the one path from a received data set to the spool, shared
//!   by every protocol adapter (it is the C-STORE receiver's
//!   [`cxr_net::scp::StoreSink`], and STOW-RS calls it directly).
//! - [`assembly`]: instances grouped into studies, and the completion rule.
//! - [`results`]: instance results and versioned study results.
//! - [`publications`]: the order versions were published in: the change
//!   feed's cursor and the lists' index.
//! - [`outbox`]: the journal of what each destination still has to receive.
//! - [`files`]: the durable file primitives (atomic writes, journals,
//!   folder locks) every stage uses.
//!
//! It must not know sockets, HTTP or how a decision is computed. Time comes
//! from an injected [`clock::Clock`].

pub mod assembly;
pub mod clock;
mod error;
pub mod files;
pub mod intake;
pub mod outbox;
pub mod picture_facts;
pub mod publications;
pub mod results;
pub mod spool;

pub use error::SpoolError;
