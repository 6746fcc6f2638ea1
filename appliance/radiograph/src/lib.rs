//! `cxr-radiograph`: the [`Radiograph`], the one image type that ingest
//! (`cxr-dicom`, PNG/JPEG loaders) produces and preprocessing consumes.
//!
//! A `Radiograph` holds linear f32 pixels in MONOCHROME2 sense (higher value =
//! brighter on a standard display = more attenuation), already oriented for
//! standard radiographic display, plus the [`AcquisitionInfo`] read from the
//! tags and the list of [`Step`]s that produced it. This crate must not know
//! DICOM parsing, codecs, models or engines; it exists so that `cxr-dicom` and
//! `cxr-preprocess` can share the type without depending on each other.

mod acquisition;
mod image;
mod step;

pub use acquisition::{AcquisitionInfo, Portable, Sex, StudyHeader, StudyUids};
pub use cxr_core::InputClass;
pub use image::{Radiograph, RadiographError, VoiWindow};
pub use step::Step;
