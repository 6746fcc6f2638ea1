//! `cxr-tests`: cross-crate scenarios (in `tests/`) and the fixtures they share:
//! where the real data lives, fetching `pydicom-data` from PyPI into an ignored
//! cache, the generator of hostile DICOM variants, signed test bundles, and
//! the DICOM network fixtures (the service, a PACS, a raw peer), and the web
//! destinations (Orthanc for STOW-RS, a FHIR server).
//!
//! Data rules: tests take the shared data from `CXR_DATA_DIR` (default
//! `../shared/data` from the workspace root). With `CI=true` missing data is a
//! failure; elsewhere a test prints that it skipped, and why.

pub mod bundles;
pub mod data;
pub mod deflate;
pub mod dicom_net;
pub mod hostile;
pub mod http;
pub mod web_peers;
pub mod webdriver;
pub mod wrap;
