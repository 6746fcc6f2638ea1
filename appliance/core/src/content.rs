//! What the image looks like, from the content gate's outputs, and how that
//! combines with what its tags say.

use serde::{Deserialize, Serialize};

use crate::math::{at_least, at_most};
use crate::InputClass;

/// The content gate's verdict on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentClass {
    /// Looks like the frontal chest films the gate was fitted on.
    FrontalChest,
    LateralChest,
    /// A projection radiograph of something else (extremity, abdomen, ...).
    OtherRadiograph,
    /// CT or MR slice, ultrasound, nuclear medicine, photo, document, screenshot.
    NotRadiograph,
    /// Most like a frontal chest film, but not enough like the ones the gate
    /// knows (below its probability cut or beyond its distance cut).
    Atypical,
}

impl ContentClass {
    /// In the gate's logit order (the last, `Atypical`, is not a logit).
    pub const ALL: [ContentClass; 5] = [
        ContentClass::FrontalChest,
        ContentClass::LateralChest,
        ContentClass::OtherRadiograph,
        ContentClass::NotRadiograph,
        ContentClass::Atypical,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            ContentClass::FrontalChest => "frontal_chest",
            ContentClass::LateralChest => "lateral_chest",
            ContentClass::OtherRadiograph => "other_radiograph",
            ContentClass::NotRadiograph => "not_radiograph",
            ContentClass::Atypical => "atypical",
        }
    }

    /// What the image looks like, for the operator.
    pub const fn description(self) -> &'static str {
        match self {
            ContentClass::FrontalChest => "a frontal chest radiograph",
            ContentClass::LateralChest => "a lateral chest radiograph",
            ContentClass::OtherRadiograph => "a radiograph of another body part",
            ContentClass::NotRadiograph => {
                "not a projection radiograph (a CT or MR slice, ultrasound, photo or document)"
            }
            ContentClass::Atypical => {
                "unlike the frontal chest radiographs this model knows (unusual positioning, exposure or content)"
            }
        }
    }

    /// The input class this content stands for when the tags say nothing.
    pub const fn as_input_class(self) -> InputClass {
        match self {
            ContentClass::FrontalChest => InputClass::FrontalChest,
            ContentClass::LateralChest => InputClass::LateralChest,
            ContentClass::OtherRadiograph => InputClass::NonChestRadiograph,
            ContentClass::NotRadiograph => InputClass::NotRadiograph,
            ContentClass::Atypical => InputClass::Unknown,
        }
    }
}

/// The gate's verdict with the numbers behind it (kept in the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContentVerdict {
    pub class: ContentClass,
    /// Softmax probability of the class's logit (of frontal for `Atypical`).
    pub score: f32,
    pub frontal_probability: f32,
    /// One-class distance to the frontal films (about 1 for a typical one).
    pub distance: f32,
}

/// The gate's cut-offs, fitted by the trainer for a target acceptance of
/// frontal films on held-out patients. Comes from the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContentCuts {
    /// A frontal film needs at least this softmax probability of frontal.
    pub min_frontal_probability: f32,
    /// ... and at most this distance.
    pub max_distance: f32,
}

impl ContentCuts {
    /// Finite, a probability cut in `(0.5, 1)` (so that a tie between
    /// frontal and another class never passes), a positive distance cut.
    pub fn check_parameters(&self) -> Result<(), &'static str> {
        if !(self.min_frontal_probability > 0.5 && self.min_frontal_probability < 1.0) {
            return Err("content_gate.min_frontal_probability");
        }
        if !(self.max_distance.is_finite() && self.max_distance > 0.0) {
            return Err("content_gate.max_distance");
        }
        Ok(())
    }

    /// The verdict from the gate's four logits and its distance. Any
    /// non-finite output makes the image `Atypical`: never frontal. Frontal
    /// must be the strict maximum: a tie goes to the other class.
    pub fn judge(&self, logits: &[f32; 4], distance: f32) -> ContentVerdict {
        let finite = logits.iter().all(|v| v.is_finite()) && distance.is_finite();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs = [0f32; 4];
        let mut sum = 0f32;
        for (p, l) in probs.iter_mut().zip(logits) {
            *p = libm::expf(l - max);
            sum += *p;
        }
        for p in &mut probs {
            *p /= sum;
        }
        let mut best = 0;
        for i in 1..4 {
            if probs[i] >= probs[best] {
                best = i;
            }
        }
        let frontal = probs[0];
        let class = match best {
            _ if !finite => ContentClass::Atypical,
            0 if at_least(frontal, self.min_frontal_probability)
                && at_most(distance, self.max_distance) =>
            {
                ContentClass::FrontalChest
            }
            0 => ContentClass::Atypical,
            i => ContentClass::ALL[i],
        };
        ContentVerdict {
            class,
            score: if finite { probs[best] } else { f32::NAN },
            frontal_probability: frontal,
            distance,
        }
    }
}

/// How the tags and the content combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combined {
    /// The class to gate on.
    Class(InputClass),
    /// The tags say frontal chest, the image does not look like one.
    Mismatch,
}

/// - tags frontal chest, content frontal: frontal;
/// - tags frontal chest, content anything else: a mismatch;
/// - tags unknown (missing, or chest without a view): the content decides;
/// - tags lateral, decubitus, non-chest or not a radiograph: the tags, whatever
///   the content says;
/// - no content verdict (developer mode without a gate): the tags alone.
pub fn combine(tags: InputClass, content: Option<&ContentVerdict>) -> Combined {
    match (tags, content) {
        (InputClass::FrontalChest, Some(v)) if v.class != ContentClass::FrontalChest => {
            Combined::Mismatch
        }
        (InputClass::Unknown, Some(v)) => Combined::Class(v.class.as_input_class()),
        (tags, _) => Combined::Class(tags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUTS: ContentCuts = ContentCuts {
        min_frontal_probability: 0.6,
        max_distance: 3.0,
    };

    #[test]
    fn frontal_needs_both_the_probability_and_the_distance() {
        assert_eq!(
            CUTS.judge(&[4.0, 0.0, 0.0, 0.0], 1.0).class,
            ContentClass::FrontalChest
        );
        assert_eq!(
            CUTS.judge(&[4.0, 0.0, 0.0, 0.0], 3.5).class,
            ContentClass::Atypical
        );
        assert_eq!(
            CUTS.judge(&[0.5, 0.0, 0.0, 0.0], 1.0).class,
            ContentClass::Atypical
        );
        assert_eq!(
            CUTS.judge(&[0.0, 3.0, 0.0, 0.0], 1.0).class,
            ContentClass::LateralChest
        );
        assert_eq!(
            CUTS.judge(&[0.0, 0.0, 0.0, 3.0], 9.0).class,
            ContentClass::NotRadiograph
        );
        let v = CUTS.judge(&[0.0, 0.0, 2.0, 0.0], 9.0);
        assert_eq!(v.class, ContentClass::OtherRadiograph);
        assert!(v.score > 0.7 && v.score < 0.8, "{}", v.score);
    }

    #[test]
    fn a_nan_anywhere_is_never_frontal() {
        for (logits, d) in [
            ([f32::NAN, 0.0, 0.0, 0.0], 1.0),
            ([9.0, 0.0, 0.0, f32::NAN], 1.0),
            ([9.0, 0.0, 0.0, 0.0], f32::NAN),
            ([f32::INFINITY, 0.0, 0.0, 0.0], 1.0),
        ] {
            assert_eq!(CUTS.judge(&logits, d).class, ContentClass::Atypical);
        }
        let nan_cut = ContentCuts {
            min_frontal_probability: f32::NAN,
            ..CUTS
        };
        assert_eq!(
            nan_cut.judge(&[9.0, 0.0, 0.0, 0.0], 1.0).class,
            ContentClass::Atypical
        );
        assert!(nan_cut.check_parameters().is_err());
    }

    #[test]
    fn tags_and_content_combine_as_specified() {
        let v = |class| ContentVerdict {
            class,
            score: 0.9,
            frontal_probability: 0.9,
            distance: 1.0,
        };
        let frontal = v(ContentClass::FrontalChest);
        let ct = v(ContentClass::NotRadiograph);
        use Combined::*;
        assert_eq!(
            combine(InputClass::FrontalChest, Some(&frontal)),
            Class(InputClass::FrontalChest)
        );
        assert_eq!(combine(InputClass::FrontalChest, Some(&ct)), Mismatch);
        assert_eq!(
            combine(InputClass::FrontalChest, Some(&v(ContentClass::Atypical))),
            Mismatch
        );
        assert_eq!(
            combine(InputClass::Unknown, Some(&frontal)),
            Class(InputClass::FrontalChest)
        );
        assert_eq!(
            combine(InputClass::Unknown, Some(&ct)),
            Class(InputClass::NotRadiograph)
        );
        assert_eq!(
            combine(InputClass::Unknown, Some(&v(ContentClass::LateralChest))),
            Class(InputClass::LateralChest)
        );
        assert_eq!(
            combine(InputClass::Unknown, Some(&v(ContentClass::Atypical))),
            Class(InputClass::Unknown)
        );
        assert_eq!(
            combine(InputClass::NonChestRadiograph, Some(&frontal)),
            Class(InputClass::NonChestRadiograph)
        );
        assert_eq!(
            combine(InputClass::LateralChest, Some(&frontal)),
            Class(InputClass::LateralChest)
        );
        assert_eq!(
            combine(InputClass::Unknown, None),
            Class(InputClass::Unknown)
        );
    }
}
