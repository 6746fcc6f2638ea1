//! The data as a run loads it: the label table, the patient split and the
//! held-out set.

use crate::config::DataConfig;
use crate::data::{split_by_patient, Dataset, Split, SplitFractions};
use crate::loader::Example;
use crate::rng::Rng;
use crate::TrainerError;

/// The dataset, its split and the held-out (pediatric) set.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dataset: Dataset,
    /// Per sample; `None` for held-out samples.
    pub split: Vec<Option<Split>>,
    /// Samples dropped because their stated view is not frontal.
    pub dropped_non_frontal: usize,
}

impl Prepared {
    pub fn load(c: &DataConfig, seed: u64) -> Result<Self, TrainerError> {
        let mut dataset = c.source.read()?;
        let dropped_non_frontal = dataset.keep_frontal();
        if dropped_non_frontal > 0 {
            eprintln!(
                "cxr-trainer: dropped {dropped_non_frontal} lateral, decubitus or other non-frontal views (the appliance classifies frontal films only)"
            );
        }
        let by_patient = split_by_patient(
            &dataset,
            SplitFractions {
                validation: c.validation,
                test: c.test,
            },
            c.split_seed.unwrap_or(seed),
        )?;
        let split = dataset
            .samples
            .iter()
            .zip(by_patient)
            .map(|(s, p)| {
                let child = s.age_years.is_some_and(|a| a < 18.0);
                if c.hold_out_pediatric && child {
                    None
                } else {
                    Some(s.given_split.unwrap_or(p))
                }
            })
            .collect();
        Ok(Prepared {
            dataset,
            split,
            dropped_non_frontal,
        })
    }

    pub fn indices(&self, which: Split) -> Vec<usize> {
        (0..self.split.len())
            .filter(|i| self.split[*i] == Some(which))
            .collect()
    }

    pub fn held_out(&self) -> Vec<usize> {
        (0..self.split.len())
            .filter(|i| self.split[*i].is_none())
            .collect()
    }

    /// Examples with targets and masks by each label's uncertainty policy
    /// and the source's convention for blanks.
    pub fn examples(
        &self,
        indices: &[usize],
        c: &DataConfig,
        seed: u64,
    ) -> Result<Vec<Example>, TrainerError> {
        let policies = c.policies(&self.dataset.labels)?;
        let blanks_negative = c.source.blanks_are_negative();
        let mut rng = Rng::new(seed);
        Ok(indices
            .iter()
            .map(|&i| {
                let s = &self.dataset.samples[i];
                let (targets, mask) = s
                    .labels
                    .iter()
                    .zip(&policies)
                    .map(|(v, policy)| {
                        let t = policy.target(*v, rng.uniform() as f32, blanks_negative);
                        (t.value, t.mask)
                    })
                    .unzip();
                Example {
                    image: s.image.clone(),
                    targets,
                    mask,
                }
            })
            .collect())
    }
}
