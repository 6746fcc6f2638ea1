//! `cxr-delivery`: store-and-forward of each published result to every
//! destination, with retries and a dead-letter state. It owns:
//!
//! - [`destination`]: where results go (a DICOM peer, a DICOMweb or FHIR
//!   endpoint), parsed from the board's configuration.
//! - [`forward`]: the sender that drains the store's outbox.
//! - [`web_send`]: the STOW-RS and FHIR clients (HTTP/1, TLS by rustls).
//!
//! The C-STORE sender is `cxr-net`'s SCU; the outbox's journal is
//! `cxr-store`'s. It must not know how a decision is computed, nor the
//! service's HTTP routes.

pub mod destination;
pub mod forward;
pub mod web_send;
