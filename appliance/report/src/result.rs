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
    /// The label's decision threshold; `None` for a label with no operating
    /// point (always Indeterminate), which never shows a threshold.
    #[serde(default)]
    pub threshold: Option<f32>,
}

/// How a study ended: one vocabulary for the page, the results API, the
/// SR and FHIR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyOutcome {
    /// Every gate passed and at least one label was called.
    Decision,
    /// Every gate passed, and no label was called present or absent.
    Undecided,
    /// A gate stopped the study (not a chest frontal film, out of
    /// distribution, a patient or instance conflict, ...).
    Abstention,
    /// Ingest refused every input.
    Refused,
    /// A fault past ingest (engine, audit log, no model).
    Failed,
}

impl StudyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyOutcome::Decision => "decision",
            StudyOutcome::Undecided => "undecided",
            StudyOutcome::Abstention => "abstention",
            StudyOutcome::Refused => "refused",
            StudyOutcome::Failed => "failed",
        }
    }

    /// Whether the study's labels carry calls and probabilities (every
    /// other outcome publishes none).
    pub fn carries_calls(self) -> bool {
        matches!(self, StudyOutcome::Decision | StudyOutcome::Undecided)
    }
}

impl std::fmt::Display for StudyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something about a study's inputs that a reader must know, whatever
/// its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Instances of the study name different patients.
    PatientConflict,
    /// One SOP Instance UID arrived with different content.
    InstanceConflict,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::PatientConflict => "patient_conflict",
            Flag::InstanceConflict => "instance_conflict",
        }
    }
}

/// The UIDs of a version's own SR, recorded with it, so that the next
/// version names exactly what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrUids {
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// The SR a new version replaces (its Predecessor Documents Sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub version: u32,
    #[serde(flatten)]
    pub sr: SrUids,
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
    /// The earlier spool instance this one repeats (same SOP Instance UID,
    /// same pixels and patient): listed, never counted as a second view.
    #[serde(default)]
    pub same_as: Option<u64>,
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
    pub outcome: StudyOutcome,
    /// What a reader must know whatever the outcome (sorted, no repeats).
    #[serde(default)]
    pub flags: Vec<Flag>,
    pub labels: Vec<LabelResult>,
    pub reason: Option<Reason>,
    /// The instances whose calls the decision came from.
    pub decided_by: Vec<u64>,
    pub instances: Vec<InstanceSummary>,
    pub model: Option<ModelRef>,
    /// The SR of the version this one replaces.
    #[serde(default)]
    pub supersedes: Option<Superseded>,
    /// This version's own SR (the SR encoder derives the same UIDs).
    #[serde(default)]
    pub sr: Option<SrUids>,
}

impl StudyResult {
    /// The instances that count: a repeat of an earlier instance is left out.
    pub fn counted_instances(&self) -> impl Iterator<Item = &InstanceSummary> {
        self.instances.iter().filter(|i| i.same_as.is_none())
    }

    /// One line that every channel shows: "No finding present" only when
    /// every label was decided absent; otherwise the counts of present,
    /// absent and indeterminate labels, or why no finding is reported.
    pub fn findings_summary(&self) -> String {
        if !self.outcome.carries_calls() {
            let why = self.reason.as_ref().map_or("", |r| r.code.as_str());
            return format!(
                "No finding reported ({}{}{})",
                self.outcome,
                if why.is_empty() { "" } else { ": " },
                why
            );
        }
        let count = |f: Finding| self.labels.iter().filter(|l| l.finding == f).count();
        let (present, absent, indeterminate) = (
            count(Finding::Present),
            count(Finding::Absent),
            count(Finding::Indeterminate),
        );
        if present == 0 && indeterminate == 0 && absent > 0 {
            return "No finding present".to_owned();
        }
        format!("{present} present, {absent} absent, {indeterminate} indeterminate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(outcome: StudyOutcome, findings: &[Finding]) -> StudyResult {
        StudyResult {
            schema: RESULT_SCHEMA.into(),
            study_instance_uid: "1.2".into(),
            header: StudyHeader::default(),
            version: 1,
            previous: None,
            completed_unix_ms: 0,
            outcome,
            flags: Vec::new(),
            labels: findings
                .iter()
                .enumerate()
                .map(|(i, f)| LabelResult {
                    label: format!("L{i}"),
                    finding: *f,
                    probability: None,
                    threshold: None,
                })
                .collect(),
            reason: None,
            decided_by: Vec::new(),
            instances: Vec::new(),
            model: None,
            supersedes: None,
            sr: None,
        }
    }

    #[test]
    fn no_finding_present_only_when_every_label_is_decided_absent() {
        use Finding::*;
        let d = StudyOutcome::Decision;
        assert_eq!(
            study(d, &[Absent, Absent]).findings_summary(),
            "No finding present"
        );
        assert_eq!(
            study(d, &[Absent, Indeterminate, Indeterminate]).findings_summary(),
            "0 present, 1 absent, 2 indeterminate"
        );
        assert_eq!(
            study(StudyOutcome::Undecided, &[Indeterminate]).findings_summary(),
            "0 present, 0 absent, 1 indeterminate"
        );
        assert_eq!(
            study(d, &[Present, Absent]).findings_summary(),
            "1 present, 1 absent, 0 indeterminate"
        );
        assert!(study(StudyOutcome::Abstention, &[Absent])
            .findings_summary()
            .starts_with("No finding reported"));
        let text = serde_json::to_string(&StudyOutcome::Undecided).unwrap_or_default();
        assert_eq!(text, "\"undecided\"");
    }
}
