use serde::{Deserialize, Serialize};

/// What kind of image a study is, as far as its tags tell.
///
/// Derived by `cxr-dicom` from Modality, Body Part Examined, View Position and
/// the descriptions. The decision core gates on it: only [`InputClass::FrontalChest`]
/// may be classified. The age gate is separate (its limits are configurable
/// and come from the bundle), so a frontal chest of any age, or of unknown
/// age, lands here; `AcquisitionInfo::age_years` carries the age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputClass {
    /// A frontal (PA or AP) chest radiograph.
    FrontalChest,
    /// A lateral chest radiograph.
    LateralChest,
    /// A projection radiograph of another body part.
    NonChestRadiograph,
    /// Not a projection radiograph at all (CT, MR, US, NM, PET, ...).
    NotRadiograph,
    /// The tags do not say enough to decide.
    Unknown,
    /// A decubitus chest film (horizontal beam, patient lying on one side):
    /// not the erect or supine frontal film the model reads.
    DecubitusChest,
}

impl InputClass {
    /// Every class, for exhaustive checks and reports.
    pub const ALL: [InputClass; 6] = [
        InputClass::FrontalChest,
        InputClass::LateralChest,
        InputClass::NonChestRadiograph,
        InputClass::NotRadiograph,
        InputClass::Unknown,
        InputClass::DecubitusChest,
    ];

    /// A stable, machine-readable code (the serde name).
    pub const fn code(self) -> &'static str {
        match self {
            InputClass::FrontalChest => "frontal_chest",
            InputClass::LateralChest => "lateral_chest",
            InputClass::NonChestRadiograph => "non_chest_radiograph",
            InputClass::NotRadiograph => "not_radiograph",
            InputClass::Unknown => "unknown",
            InputClass::DecubitusChest => "decubitus_chest",
        }
    }

    /// Whether a study of this class may reach the classifier at all.
    pub const fn may_be_classified(self) -> bool {
        matches!(self, InputClass::FrontalChest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frontal_chest_may_be_classified() {
        let all = InputClass::ALL;
        let allowed: usize = all.iter().filter(|c| c.may_be_classified()).count();
        assert_eq!(allowed, 1);
        assert!(InputClass::FrontalChest.may_be_classified());
    }

    #[test]
    fn codes_are_distinct() {
        let all = InputClass::ALL;
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
    }
}
