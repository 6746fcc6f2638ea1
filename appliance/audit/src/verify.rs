//! Reading the whole log back: verification and export.

use std::path::Path;

use crate::frame::{self, Frame, HEADER_BYTES};
use crate::log::{read_segment, segments, MAX_SEGMENT_BYTES, RESERVE_BYTES};
use crate::{AuditError, Record};

/// What a clean verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: u64,
    pub records: u64,
    pub last_seq: Option<u64>,
    /// SHA-256 of the last record: write it down to detect later truncation.
    pub head: [u8; 32],
}

/// Walk every record in order, checking segment continuity, each record's
/// digest, its sequence number and its link to the previous record, and call
/// `visit` for each. The first problem stops the walk with its location.
pub fn walk(dir: &Path, mut visit: impl FnMut(&Record)) -> Result<VerifyReport, AuditError> {
    let present = segments(dir)?;
    let (first, last) = match (present.first(), present.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => {
            return Ok(VerifyReport {
                segments: 0,
                records: 0,
                last_seq: None,
                head: [0; 32],
            })
        }
    };
    if first != 1 {
        return Err(AuditError::MissingSegment {
            missing: 1,
            first,
            last,
        });
    }
    for (expected, found) in (1..).zip(&present) {
        if *found != expected {
            return Err(AuditError::MissingSegment {
                missing: expected,
                first,
                last,
            });
        }
    }
    let mut prev_hash = [0u8; 32];
    let mut prev_seq: Option<u64> = None;
    let mut records = 0u64;
    for index in &present {
        let path = dir.join(frame::segment_name(*index));
        let bytes = read_segment(&path, MAX_SEGMENT_BYTES - RESERVE_BYTES)?;
        if bytes.len() < HEADER_BYTES || bytes[..HEADER_BYTES] != frame::header(*index) {
            return Err(AuditError::Damaged {
                path,
                offset: 0,
                problem: "segment header is missing or does not match its file name".into(),
            });
        }
        let mut at = HEADER_BYTES;
        while at < bytes.len() {
            match frame::read(&bytes, at) {
                Frame::Incomplete => {
                    return Err(AuditError::Truncated {
                        path,
                        offset: at as u64,
                    })
                }
                Frame::Bad { .. } => {
                    return Err(AuditError::Damaged {
                        path,
                        offset: at as u64,
                        problem: "a record's bytes do not match its digest (altered)".into(),
                    })
                }
                Frame::Whole { payload, hash, end } => {
                    let record: Record =
                        postcard::from_bytes(payload).map_err(|e| AuditError::Damaged {
                            path: path.clone(),
                            offset: at as u64,
                            problem: format!("record does not decode: {e}"),
                        })?;
                    let expected = prev_seq.map_or(0, |s| s + 1);
                    if record.seq != expected {
                        return Err(AuditError::Sequence {
                            path,
                            offset: at as u64,
                            expected_prev: expected.wrapping_sub(1),
                            found: record.seq,
                        });
                    }
                    if record.prev != prev_hash {
                        return Err(AuditError::ChainBroken {
                            path,
                            offset: at as u64,
                            seq: record.seq,
                        });
                    }
                    visit(&record);
                    prev_hash = hash;
                    prev_seq = Some(record.seq);
                    records += 1;
                    at = end;
                }
            }
        }
    }
    Ok(VerifyReport {
        segments: present.len() as u64,
        records,
        last_seq: prev_seq,
        head: prev_hash,
    })
}

/// Verify the whole log.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    walk(dir, |_| {})
}
