//! Fuzz the STOW-RS `multipart/related` reader (`cxr-net`): a request's
//! Content-Type and body, pushed in chunks of any size, must give parts and
//! the end, or a typed Err: never a panic, a hang, or a buffer that grows
//! with the body rather than with one chunk.
#![no_main]

use cxr_net::multipart::{dicom_boundary, Event, Limits, RelatedReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the chunk size; up to the first newline: the Content-Type.
    let [chunk, rest @ ..] = data else {
        return;
    };
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (content_type, body) = rest.split_at(split);
    let content_type = String::from_utf8_lossy(content_type);
    let boundary = match dicom_boundary(&content_type) {
        Ok(b) => b,
        Err(e) => {
            assert!(e.code().starts_with("STOW_"));
            "fuzz-boundary".to_owned()
        }
    };
    let limits = Limits {
        max_header_bytes: 512,
        max_parts: 64,
    };
    let mut reader = RelatedReader::new(&boundary, limits);
    let chunk = usize::from(*chunk).max(1);
    let mut content: u64 = 0;
    for piece in body.get(1..).unwrap_or_default().chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_event() {
                Ok(Some(Event::Data(d))) => content += d.len() as u64,
                Ok(Some(Event::PartEnd { bytes })) => {
                    assert!(bytes <= content);
                    content = 0;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(e.code().starts_with("STOW_"));
                    return;
                }
            }
        }
        assert!(reader.buffered() <= chunk + limits.max_header_bytes + 80);
    }
    if let Err(e) = reader.finish() {
        assert_eq!(e.code(), "STOW_TRUNCATED_BODY");
    }
});
