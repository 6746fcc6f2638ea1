//! Splits that never put one patient (or one institution) on both sides.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Dataset;
use crate::TrainerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub validation: f64,
    pub test: f64,
}

/// A patient's place in `[0, 1)`: SHA-256 of the seed and the patient id, so
/// the split is fixed by the seed, independent of row order, and stable when
/// rows are added.
/// Where a key (a patient id) falls in [0, 1) for this seed: the basis of
/// every patient-level split.
pub fn position(seed: u64, key: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Assign every sample by its patient: test below `test`, validation below
/// `test + validation`, the rest train.
pub fn split_by_patient(
    data: &Dataset,
    fractions: SplitFractions,
    seed: u64,
) -> Result<Vec<Split>, TrainerError> {
    let ok = |f: f64| (0.0..1.0).contains(&f);
    if !ok(fractions.validation)
        || !ok(fractions.test)
        || fractions.validation + fractions.test >= 1.0
    {
        return Err(TrainerError::invalid(
            "split fractions",
            format!(
                "validation {} and test {}",
                fractions.validation, fractions.test
            ),
            "use fractions in [0, 1) that leave room for training",
        ));
    }
    Ok(data
        .samples
        .iter()
        .map(|s| {
            let p = position(seed, &s.patient);
            if p < fractions.test {
                Split::Test
            } else if p < fractions.test + fractions.validation {
                Split::Validation
            } else {
                Split::Train
            }
        })
        .collect())
}

/// External validation: the named institutions are the test set; the rest is
/// split by patient into train and validation.
pub fn split_by_institution(
    data: &Dataset,
    test_institutions: &[&str],
    validation: f64,
    seed: u64,
) -> Result<Vec<Split>, TrainerError> {
    let inner = split_by_patient(
        data,
        SplitFractions {
            validation,
            test: 0.0,
        },
        seed,
    )?;
    Ok(data
        .samples
        .iter()
        .zip(inner)
        .map(|(s, split)| {
            if test_institutions.contains(&s.institution.as_str()) {
                Split::Test
            } else {
                split
            }
        })
        .collect())
}
