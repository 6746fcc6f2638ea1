//! Labelled radiographs: the dataset model, readers for the public label
//! tables, splits by patient or institution, and uncertainty policies.

mod load;
mod policy;
mod readers;
mod split;

use std::path::PathBuf;

pub use load::load_input;
pub use policy::{Target, UncertaintyPolicy};
pub use readers::{
    read_chexpert, read_generic, read_kermany_subset, read_mimic, read_nih_data_entry,
    read_nih_subset, CHEXPERT_OBSERVATIONS, NIH_FINDINGS,
};
pub use split::{
    position as patient_position, split_by_institution, split_by_patient, Split, SplitFractions,
};

/// One label's value as the source table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelValue {
    Positive,
    Negative,
    /// CheXpert-style -1: the report was uncertain.
    Uncertain,
    /// Blank: the labeller said nothing.
    Missing,
}

impl LabelValue {
    /// `1`, `1.0` → positive; `0`, `0.0` → negative; `-1`, `-1.0` → uncertain;
    /// blank → missing. Anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "" => Some(LabelValue::Missing),
            t => match t.parse::<f32>().ok()? {
                1.0 => Some(LabelValue::Positive),
                0.0 => Some(LabelValue::Negative),
                -1.0 => Some(LabelValue::Uncertain),
                _ => None,
            },
        }
    }
}

/// One image with what is known of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: PathBuf,
    pub patient: String,
    pub institution: String,
    pub age_years: Option<f32>,
    /// `M`, `F` or `O`, when stated.
    pub sex: Option<char>,
    /// `PA`, `AP`, `LATERAL`, ... when stated.
    pub view: Option<String>,
    /// A split the source prescribes (MIMIC, a generic table), if any.
    pub given_split: Option<Split>,
    /// One per [`Dataset::labels`].
    pub labels: Vec<LabelValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub labels: Vec<String>,
    pub samples: Vec<Sample>,
}

/// Whether a stated view is a frontal (PA or AP) projection, by the
/// appliance's own vocabulary. Laterals (CheXpert and MIMIC carry them),
/// decubitus and anything else are not what the appliance classifies, so
/// they stay out of training and fitting.
pub use cxr_dicom::is_frontal_view;

impl Dataset {
    /// Drop every sample whose stated view is not frontal (samples without a
    /// stated view stay); returns how many were dropped.
    pub fn keep_frontal(&mut self) -> usize {
        let before = self.samples.len();
        self.samples
            .retain(|s| s.view.as_deref().is_none_or(is_frontal_view));
        before - self.samples.len()
    }

    /// Distinct patients, in first-seen order.
    pub fn patients(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.samples
            .iter()
            .map(|s| s.patient.as_str())
            .filter(|p| seen.insert(*p))
            .collect()
    }

    /// Keep the samples for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&Sample) -> bool) -> Dataset {
        Dataset {
            name: self.name.clone(),
            labels: self.labels.clone(),
            samples: self.samples.iter().filter(|s| keep(s)).cloned().collect(),
        }
    }

    /// Positive count per label.
    pub fn positives(&self) -> Vec<usize> {
        (0..self.labels.len())
            .map(|i| {
                self.samples
                    .iter()
                    .filter(|s| s.labels[i] == LabelValue::Positive)
                    .count()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frontal_views_are_kept() {
        for v in ["PA", "AP", "ap supine", "AP AXIAL", "Frontal"] {
            assert!(is_frontal_view(v), "{v}");
        }
        for v in [
            "LATERAL",
            "LL",
            "RL",
            "PA LLD",
            "AP RLD",
            "XTABLE LATERAL",
            "",
            "SWIMMERS",
        ] {
            assert!(!is_frontal_view(v), "{v}");
        }
    }
}
