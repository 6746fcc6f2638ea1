//! The audit-ready record of one decision: no patient identifiers, postcard
//! encoded into a caller-provided buffer (no allocation).

use serde::{Deserialize, Serialize};

use crate::{ContentVerdict, CoreError, Decision, InputClass};

/// Microseconds spent in each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode_us: u64,
    pub preprocess_us: u64,
    pub inference_us: u64,
    pub decision_us: u64,
    /// The content gate (its preparation and its run).
    pub content_gate_us: u64,
}

/// The decision record format written now (3: the content gate's verdict
/// and its time). Format 2 (no content gate) is still read.
pub const RECORD_FORMAT: u8 = 0xD3;
const RECORD_FORMAT_2: u8 = 0xD2;

/// What the audit log keeps of one inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// What the tags say.
    pub input_class: InputClass,
    /// What the content gate says, with its scores (`None`: no gate ran).
    pub content: Option<ContentVerdict>,
    /// Whole years only: enough for subgroup review, less identifying.
    pub age_years: Option<u8>,
    pub views: u8,
    pub decision: Decision,
    pub timings: StageTimings,
}

impl DecisionRecord {
    /// Encode into `buf`; returns the used prefix.
    /// The first byte names the record format: a log outlives firmware
    /// versions, and postcard is not self-describing, so a reader must never
    /// decode one format's bytes as another's. Format 1 (no prefix; its
    /// first byte was the input class, 0 to 4) is not read any more.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], CoreError> {
        let (first, rest) = buf.split_first_mut().ok_or(CoreError::Encode)?;
        *first = RECORD_FORMAT;
        let used = postcard::to_slice(self, rest)
            .map_err(|_| CoreError::Encode)?
            .len();
        Ok(&mut buf[..=used])
    }

    /// Decode a record written by [`DecisionRecord::encode`] in this format
    /// or in format 2 (read with no content verdict and no gate time).
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|_| CoreError::Encode)
            }
            Some((&RECORD_FORMAT_2, rest)) => postcard::from_bytes::<RecordFormat2>(rest)
                .map(RecordFormat2::upgrade)
                .map_err(|_| CoreError::Encode),
            _ => Err(CoreError::Encode),
        }
    }
}

/// Format 2's layout, for logs written before the content gate.
#[derive(Deserialize)]
struct RecordFormat2 {
    input_class: InputClass,
    age_years: Option<u8>,
    views: u8,
    decision: Decision,
    timings: [u64; 4],
}

impl RecordFormat2 {
    fn upgrade(self) -> DecisionRecord {
        let [decode_us, preprocess_us, inference_us, decision_us] = self.timings;
        DecisionRecord {
            input_class: self.input_class,
            content: None,
            age_years: self.age_years,
            views: self.views,
            decision: self.decision,
            timings: StageTimings {
                decode_us,
                preprocess_us,
                inference_us,
                decision_us,
                content_gate_us: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use embassy_time::{Duration, Instant};

    use super::*;
    use crate::ood::{OodGate, OodScoreKind, OodTerm};
    use crate::{decide, DecisionParams, InputGate, StudyFacts};

    #[test]
    fn records_round_trip_through_postcard() {
        let params = DecisionParams {
            temperatures: &[1.0, 1.2, 0.8],
            thresholds: &[0.5, 0.3, 0.7],
            bands: &[0.5, 0.5, 0.5],
            ood: OodGate {
                terms: &[OodTerm {
                    kind: OodScoreKind::LowJointEnergy,
                    centre: -2.0,
                    scale: 1.0,
                }],
                max_combined: 3.0,
            },
            feature_stats: None,
            input_gate: InputGate::default(),
            budget: Duration::from_secs(5),
        };
        let facts = StudyFacts {
            input_class: InputClass::FrontalChest,
            content: None,
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
            content: Some(crate::ContentVerdict {
                class: crate::ContentClass::FrontalChest,
                score: 0.97,
                frontal_probability: 0.97,
                distance: 1.3,
            }),
            age_years: Some(61),
            views: 1,
            decision,
            timings: StageTimings {
                decode_us: 1,
                preprocess_us: 2,
                inference_us: 3,
                decision_us: 4,
                content_gate_us: 5,
            },
        };
        let mut buf = [0u8; 512];
        let bytes = record.encode(&mut buf).unwrap();
        assert!(bytes.len() < 200, "{}", bytes.len());
        assert_eq!(DecisionRecord::decode(bytes).unwrap(), record);
        let mut tiny = [0u8; 4];
        assert_eq!(record.encode(&mut tiny), Err(CoreError::Encode));
        assert!(DecisionRecord::decode(&[0xFF; 3]).is_err());
        // A format-1 record (no prefix) is refused, never misread.
        let mut legacy = [0u8; 512];
        let old = postcard::to_slice(&record, &mut legacy).unwrap();
        assert!(DecisionRecord::decode(old).is_err());
        // A format-2 record (before the content gate) still reads.
        let v2 = (
            record.input_class,
            record.age_years,
            record.views,
            &record.decision,
            [1u64, 2, 3, 4],
        );
        let mut two = [0u8; 512];
        two[0] = 0xD2;
        let n = postcard::to_slice(&v2, &mut two[1..]).unwrap().len();
        let read = DecisionRecord::decode(&two[..=n]).unwrap();
        assert_eq!(read.content, None);
        assert_eq!(read.timings.content_gate_us, 0);
        assert_eq!(read.decision, record.decision);
    }
}
