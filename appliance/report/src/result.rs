//! The study result: what the service publishes for a study (one file per
//! version), and what every encoder in this crate reads.

use serde::{Deserialize, Serialize};

/// The version of the result formats.
pub const RESULT_SCHEMA: &str = "cxr-result/1";

pub use cxr_radiograph::StudyHeader;

/// How one instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceOutcome {
    /// Every gate passed: calls made.
    Decision,
    /// Every gate passed and every label was uncertain.
    Undecided,
    Abstention,
    /// Ingest refused the file.
    Refused,
    /// A fault past ingest.
    Failed,
    /// No verified model: nothing was classified.
    NoModel,
}

/// A label's call in a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    Present,
    Absent,
    Indeterminate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelResult {
    pub label: String,
    pub finding: Finding,
    /// The calibrated probability; `None` where it is withheld.
    pub probability: Option<f32>,
}

/// A stable code and the operator's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

/// The model a result came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub model_id: String,
    pub version: u64,
    pub digest: String,
}

/// One instance as a study result lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub instance: u64,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: Option<String>,
    pub sha256: String,
    pub outcome: InstanceOutcome,
    pub frontal: bool,
    pub reason_code: Option<String>,
    /// Other spool instances with the same SOP Instance UID and other bytes.
    pub conflicts_with: Vec<u64>,
}

/// A study's published result (one version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyResult {
    pub schema: String,
    pub study_instance_uid: String,
    /// The patient and study attributes of the study's first instance,
    /// repeated by derived objects (the SR).
    pub header: StudyHeader,
    pub version: u32,
    /// SHA-256 of the previous version's file, for a late instance's version.
    pub previous: Option<String>,
    pub completed_unix_ms: u64,
    /// `decision` or `abstention`.
    pub outcome: String,
    pub labels: Vec<LabelResult>,
    pub reason: Option<Reason>,
    /// The instances whose calls the decision came from.
    pub decided_by: Vec<u64>,
    pub instances: Vec<InstanceSummary>,
    pub model: Option<ModelRef>,
}
