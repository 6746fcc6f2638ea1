//! Why a study gets no calls, in words an operator can act on.

use serde::{Deserialize, Serialize};

/// The reason for an abstention. Codes are stable: they go to the audit log
/// and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbstentionReason {
    LateralView,
    NotChest,
    NotRadiograph,
    UnknownInput,
    Paediatric,
    AgeUnknown,
    AgeOutOfRange,
    OutOfDistribution,
    Timeout,
    DecubitusView,
    ContentMismatch,
}

impl AbstentionReason {
    pub const ALL: [AbstentionReason; 11] = [
        AbstentionReason::LateralView,
        AbstentionReason::NotChest,
        AbstentionReason::NotRadiograph,
        AbstentionReason::UnknownInput,
        AbstentionReason::Paediatric,
        AbstentionReason::AgeUnknown,
        AbstentionReason::AgeOutOfRange,
        AbstentionReason::OutOfDistribution,
        AbstentionReason::Timeout,
        AbstentionReason::DecubitusView,
        AbstentionReason::ContentMismatch,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            AbstentionReason::LateralView => "ABSTAIN_LATERAL_VIEW",
            AbstentionReason::NotChest => "ABSTAIN_NOT_CHEST",
            AbstentionReason::NotRadiograph => "ABSTAIN_NOT_RADIOGRAPH",
            AbstentionReason::UnknownInput => "ABSTAIN_UNKNOWN_INPUT",
            AbstentionReason::Paediatric => "ABSTAIN_PAEDIATRIC",
            AbstentionReason::AgeUnknown => "ABSTAIN_AGE_UNKNOWN",
            AbstentionReason::AgeOutOfRange => "ABSTAIN_AGE_OUT_OF_RANGE",
            AbstentionReason::OutOfDistribution => "ABSTAIN_OUT_OF_DISTRIBUTION",
            AbstentionReason::Timeout => "ABSTAIN_TIMEOUT",
            AbstentionReason::DecubitusView => "ABSTAIN_DECUBITUS_VIEW",
            AbstentionReason::ContentMismatch => "ABSTAIN_CONTENT_MISMATCH",
        }
    }

    /// Whether this abstention is about what the image is (its class), as
    /// opposed to age, OOD, deadline or a content mismatch.
    pub const fn is_input_class(self) -> bool {
        matches!(
            self,
            AbstentionReason::LateralView
                | AbstentionReason::NotChest
                | AbstentionReason::NotRadiograph
                | AbstentionReason::UnknownInput
                | AbstentionReason::DecubitusView
        )
    }

    /// What the radiographer reads on the console.
    pub const fn operator_message(self) -> &'static str {
        match self {
            AbstentionReason::LateralView => "Lateral view: this model reads frontal (PA/AP) chest films only — refer to a radiologist",
            AbstentionReason::NotChest => "Not a chest radiograph — refer to a radiologist",
            AbstentionReason::NotRadiograph => "Not a radiograph (CT, MR, ultrasound or other) — refer to a radiologist",
            AbstentionReason::UnknownInput => "Cannot confirm this is an adult frontal chest radiograph — refer to a radiologist",
            AbstentionReason::Paediatric => "Patient under the model's minimum age — refer to a radiologist",
            AbstentionReason::AgeUnknown => "Patient age not recorded and required by this model — enter the age or refer to a radiologist",
            AbstentionReason::AgeOutOfRange => "Patient age outside the model's intended range — refer to a radiologist",
            AbstentionReason::OutOfDistribution => "Image unlike the model's training data (unusual acquisition or content) — refer to a radiologist",
            AbstentionReason::Timeout => "Analysis did not finish in time — retry, or refer to a radiologist",
            AbstentionReason::DecubitusView => "Decubitus view (patient lying on one side): this model reads erect or supine frontal chest films only — refer to a radiologist",
            AbstentionReason::ContentMismatch => "The tags say frontal chest film, but the image does not look like one — check the image and its tags, or refer to a radiologist",
        }
    }
}

/// An abstention: no calls are made for the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abstention {
    pub reason: AbstentionReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_messages_refer_on() {
        for (i, a) in AbstentionReason::ALL.iter().enumerate() {
            assert!(a.code().starts_with("ABSTAIN_"));
            assert!(a.operator_message().contains("refer to a radiologist"));
            for b in &AbstentionReason::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
    }
}
