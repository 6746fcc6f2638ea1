//! `cxr-net`: the DICOM network layer of the resident service, in the
//! spirit of dicom-rs's `ul` crate. It owns:
//!
//! - [`pdu_io`]: bounded PDU reading and writing over `dicom-ul`'s codec
//!   (every length checked before a byte of the body is read).
//! - [`dimse`]: the DIMSE command set (PS3.7) that `dicom-ul` lacks, and the
//!   status codes every acknowledgement speaks.
//! - [`scp`]: the C-ECHO/C-STORE receiver with the allow-list, caps,
//!   timeouts and transient rejections. It streams each instance into an
//!   injected [`scp::StoreSink`] and acknowledges on the sink's reply only.
//! - [`scu`]: the C-ECHO/C-STORE sender.
//! - [`part10`]: the Part 10 file meta group of a received instance.
//! - [`uid`]: DICOM UID syntax.
//! - [`multipart`]: DICOMweb's bounded `multipart/related` reader (STOW-RS
//!   bodies), which axum's `Multipart` does not parse.
//!
//! It must not know spools, files, models or HTTP routes: what happens to a
//! received instance is the sink's business.

pub mod dimse;
mod error;
pub mod multipart;
pub mod part10;
pub mod pdu_io;
pub mod scp;
pub mod scu;
pub mod uid;

pub use error::DimseError;
