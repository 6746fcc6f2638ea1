//! The input gate: only adult frontal chest radiographs reach a decision.

use serde::{Deserialize, Serialize};

use crate::content::{combine, Combined, ContentVerdict};
use crate::math::{at_least, at_most};
use crate::{AbstentionReason, InputClass};

/// Who may be classified. Comes from the bundle (its intended use).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputGate {
    /// Youngest age (years) the model is intended for; 18 by default.
    pub min_age_years: f32,
    /// Oldest age (years); `None` for no upper limit.
    pub max_age_years: Option<f32>,
    /// Whether a study without a recorded age may be classified. True by
    /// default: many de-identified studies drop the age.
    pub allow_unknown_age: bool,
}

impl Default for InputGate {
    fn default() -> Self {
        InputGate {
            min_age_years: 18.0,
            max_age_years: None,
            allow_unknown_age: true,
        }
    }
}

impl InputGate {
    /// `Ok` if the study may be classified, else why not: the tags and the
    /// content gate's verdict combined (see [`combine`]), then the age.
    pub fn check(
        &self,
        tags: InputClass,
        content: Option<&ContentVerdict>,
        age_years: Option<f32>,
    ) -> Result<(), AbstentionReason> {
        let class = match combine(tags, content) {
            Combined::Class(c) => c,
            Combined::Mismatch => return Err(AbstentionReason::ContentMismatch),
        };
        match class {
            InputClass::FrontalChest => {}
            InputClass::LateralChest => return Err(AbstentionReason::LateralView),
            InputClass::DecubitusChest => return Err(AbstentionReason::DecubitusView),
            InputClass::NonChestRadiograph => return Err(AbstentionReason::NotChest),
            InputClass::NotRadiograph => return Err(AbstentionReason::NotRadiograph),
            InputClass::Unknown => return Err(AbstentionReason::UnknownInput),
        }
        // Written so that a NaN age or limit fails the comparison.
        match age_years {
            None if self.allow_unknown_age => Ok(()),
            None => Err(AbstentionReason::AgeUnknown),
            Some(age) if !at_least(age, self.min_age_years) => Err(AbstentionReason::Paediatric),
            Some(age) if self.max_age_years.is_some_and(|max| !at_most(age, max)) => {
                Err(AbstentionReason::AgeOutOfRange)
            }
            Some(_) => Ok(()),
        }
    }

    /// The gate's own limits are finite and ordered; `Err` names the bad one.
    pub fn check_parameters(&self) -> Result<(), &'static str> {
        if !(self.min_age_years.is_finite() && self.min_age_years >= 0.0) {
            return Err("gate.min_age_years");
        }
        if self
            .max_age_years
            .is_some_and(|max| !(max.is_finite() && max >= self.min_age_years))
        {
            return Err("gate.max_age_years");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_adult_frontal_chest_passes_by_default() {
        let gate = InputGate::default();
        assert_eq!(
            gate.check(InputClass::FrontalChest, None, Some(40.0)),
            Ok(())
        );
        assert_eq!(gate.check(InputClass::FrontalChest, None, None), Ok(()));
        assert_eq!(
            gate.check(InputClass::FrontalChest, None, Some(9.0)),
            Err(AbstentionReason::Paediatric)
        );
        assert_eq!(
            gate.check(InputClass::LateralChest, None, Some(40.0)),
            Err(AbstentionReason::LateralView)
        );
        assert_eq!(
            gate.check(InputClass::DecubitusChest, None, Some(40.0)),
            Err(AbstentionReason::DecubitusView)
        );
        assert_eq!(
            gate.check(InputClass::NonChestRadiograph, None, Some(40.0)),
            Err(AbstentionReason::NotChest)
        );
        assert_eq!(
            gate.check(InputClass::NotRadiograph, None, None),
            Err(AbstentionReason::NotRadiograph)
        );
        assert_eq!(
            gate.check(InputClass::Unknown, None, None),
            Err(AbstentionReason::UnknownInput)
        );
        let strict = InputGate {
            max_age_years: Some(90.0),
            allow_unknown_age: false,
            ..InputGate::default()
        };
        assert_eq!(
            strict.check(InputClass::FrontalChest, None, None),
            Err(AbstentionReason::AgeUnknown)
        );
        assert_eq!(
            strict.check(InputClass::FrontalChest, None, Some(95.0)),
            Err(AbstentionReason::AgeOutOfRange)
        );
    }
}
