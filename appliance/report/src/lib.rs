//! `cxr-report`: pure encoders from a study result to what leaves the
//! appliance: the DICOM SR (Comprehensive 3D SR, TID 1500) that the outbox
//! sends to PACS, the result picture ([`picture`]) and its Secondary
//! Capture ([`sc`]), and the FHIR R4 resources ([`fhir`]). It owns the result types every encoder reads
//! ([`result`]), the coded concepts ([`codes`]) and our deterministic UIDs
//! ([`uid`]). It must not know sockets, the spool or how a decision is
//! computed: no I/O, each encoder testable alone against validators.

pub mod codes;
mod error;
pub mod fhir;
pub mod identity;
pub mod picture;
pub mod result;
pub mod sc;
pub mod sr;
pub mod uid;

pub use error::ReportError;
pub use picture::{PictureFacts, WIDTH as PICTURE_WIDTH};
pub use sc::{encode_sc, ScDocument};
pub use sr::{encode_sr, SrDevice, SrDocument};
