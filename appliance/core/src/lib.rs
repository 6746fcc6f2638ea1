//! `cxr-core`: the `no_std` decision core shared by the appliance and the trainer.
//!
//! It owns the decision logic (TTA merge, calibration, thresholds, OOD scores,
//! abstention policy, decision and audit record types). It must not know I/O,
//! engines or DICOM. For now it holds only the vocabulary that the ingest side
//! hands to the decision side: [`InputClass`], the class of a study derived
//! from its tags, on which the input gate will act.
#![no_std]

mod input_class;

pub use input_class::InputClass;
