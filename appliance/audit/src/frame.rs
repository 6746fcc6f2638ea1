//! Segment and frame layout.
//!
//! ```text
//! segment: "CXRAUDIT" | index u64 LE | frame*
//! frame:   length u32 LE | payload (postcard Record) | SHA-256(payload)
//! ```

use sha2::{Digest, Sha256};

pub const SEGMENT_MAGIC: &[u8; 8] = b"CXRAUDIT";
pub const HEADER_BYTES: usize = 16;
/// One record's payload; decisions are a few hundred bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
pub const FRAME_OVERHEAD: usize = 4 + 32;

pub fn header(index: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&index.to_le_bytes());
    h
}

pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(&Sha256::digest(payload));
    f
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Whole {
        payload: &'a [u8],
        hash: [u8; 32],
        end: usize,
    },
    /// The frame runs past the end of the bytes.
    Incomplete,
    /// Complete, but the digest does not match (or the length is absurd);
    /// `end` is where the frame would end.
    Bad { end: usize },
}

pub fn read(buf: &[u8], at: usize) -> Frame<'_> {
    let Some(len_bytes) = buf.get(at..at + 4) else {
        return Frame::Incomplete;
    };
    let mut l = [0u8; 4];
    l.copy_from_slice(len_bytes);
    let len = u32::from_le_bytes(l) as usize;
    let end = at + 4 + len + 32;
    if end > buf.len() {
        return Frame::Incomplete;
    }
    if len > MAX_PAYLOAD {
        return Frame::Bad { end };
    }
    let payload = &buf[at + 4..at + 4 + len];
    let hash: [u8; 32] = Sha256::digest(payload).into();
    if hash[..] != buf[at + 4 + len..end] {
        return Frame::Bad { end };
    }
    Frame::Whole { payload, hash, end }
}

pub fn segment_name(index: u64) -> String {
    format!("seg-{index:08}.log")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
