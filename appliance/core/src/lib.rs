//! `cxr-core`: the `no_std` decision core shared by the appliance and the trainer.
//!
//! It owns the decision logic: TTA merge, per-label temperature calibration,
//! thresholded calls with an uncertainty band in logit space, OOD scores (low
//! JointEnergy, low max-logit, Mahalanobis) combined into one gate, the input
//! gate (the tags and the content gate's verdict combined), the combination
//! of an ensemble's members, deadlines
//! (embassy-time), abstentions with stable codes and operator messages, and the
//! postcard-encoded decision record. The decision path allocates nothing
//! (heapless buffers, borrowed parameters). It must not know I/O, engines or
//! DICOM: clocks, parameters and logits are handed in.
#![no_std]

mod abstention;
pub mod calibration;
mod content;
mod decision;
pub mod ensemble;
mod error;
mod gate;
mod input_class;
pub mod limits;
mod math;
pub mod ood;
mod record;
pub mod tta;

pub use abstention::{Abstention, AbstentionReason};
pub use calibration::Call;
pub use content::{combine, Combined, ContentClass, ContentCuts, ContentVerdict};
pub use decision::{
    band_is_valid, decide, gate_input, Decision, DecisionParams, GateResults, LabelOutcome,
    StudyFacts, MAX_BAND_LOGIT, NO_OPERATING_POINT,
};
pub use error::CoreError;
pub use gate::InputGate;
pub use input_class::InputClass;
pub use record::{DecisionRecord, StageTimings, RECORD_FORMAT};
