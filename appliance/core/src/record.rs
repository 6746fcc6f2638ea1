//! The audit-ready record of one decision: no patient identifiers, postcard
//! encoded into a caller-provided buffer (no allocation).

use serde::{Deserialize, Serialize};

use crate::{CoreError, Decision, InputClass};

/// Microseconds spent in each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode_us: u64,
    pub preprocess_us: u64,
    pub inference_us: u64,
    pub decision_us: u64,
}

/// What the audit log keeps of one inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub input_class: InputClass,
    /// Whole years only: enough for subgroup review, less identifying.
    pub age_years: Option<u8>,
    pub views: u8,
    pub decision: Decision,
    pub timings: StageTimings,
}

impl DecisionRecord {
    /// Encode into `buf`; returns the used prefix.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], CoreError> {
        postcard::to_slice(self, buf).map_err(|_| CoreError::Encode)
    }

    /// Decode a record written by [`DecisionRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        postcard::from_bytes(bytes).map_err(|_| CoreError::Encode)
    }
}

#[cfg(test)]
mod tests {
    use embassy_time::{Duration, Instant};

    use super::*;
    use crate::ood::OodCutoffs;
    use crate::{decide, DecisionParams, InputGate, StudyFacts};

    #[test]
    fn records_round_trip_through_postcard() {
        let params = DecisionParams {
            temperatures: &[1.0, 1.2, 0.8],
            thresholds: &[0.5, 0.3, 0.7],
            uncertainty_band: 0.05,
            max_tta_spread: None,
            odin_temperature: 1000.0,
            ood_cutoffs: OodCutoffs {
                min_joint_energy: Some(0.0),
                min_max_logit: None,
                min_odin_t: None,
                max_mahalanobis: None,
            },
            feature_stats: None,
            input_gate: InputGate::default(),
            budget: Duration::from_secs(5),
        };
        let facts = StudyFacts {
            input_class: InputClass::FrontalChest,
            age_years: Some(61.5),
            received: Instant::from_secs(0),
        };
        let decision = decide(
            &[0.3, -1.0, 2.0],
            1,
            &[],
            &facts,
            &params,
            Instant::from_millis(900),
        )
        .unwrap();
        let record = DecisionRecord {
            input_class: facts.input_class,
            age_years: Some(61),
            views: 1,
            decision,
            timings: StageTimings {
                decode_us: 1,
                preprocess_us: 2,
                inference_us: 3,
                decision_us: 4,
            },
        };
        let mut buf = [0u8; 512];
        let bytes = record.encode(&mut buf).unwrap();
        assert!(bytes.len() < 200, "{}", bytes.len());
        assert_eq!(DecisionRecord::decode(bytes).unwrap(), record);
        let mut tiny = [0u8; 4];
        assert_eq!(record.encode(&mut tiny), Err(CoreError::Encode));
        assert!(DecisionRecord::decode(&[0xFF; 3]).is_err());
    }
}
