//! Fuzz the DIMSE command layer (`cxr-net`): any peer bytes, split into
//! PDVs any way, must give a command, data, or a typed Err: never a panic or
//! an allocation the bytes merely claim.
#![no_main]

use cxr_net::dimse::{decode_command, Event, MessageReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_command(data) {
        Ok(set) => {
            if let Err(e) = set.request() {
                assert!(e.code().starts_with("DIMSE_"));
            }
        }
        Err(e) => assert!(e.code().starts_with("DIMSE_")),
    }
    // The same bytes as a PDV stream: each PDV is a control byte (bit 0
    // command, bit 1 last, bits 2-3 a presentation context), a length byte
    // and that many bytes.
    let mut reader = MessageReader::default();
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (pdv, next) = tail.split_at(len);
        let context = 1 + ((control >> 2) & 3);
        match reader.push(context, control & 1 == 1, control & 2 == 2, pdv) {
            Ok(Some(Event::Data { chunk, .. })) => assert!(chunk.len() <= pdv.len()),
            Ok(_) => {}
            Err(e) => {
                assert!(e.code().starts_with("DIMSE_"));
                // The association is aborted on any error; start afresh.
                reader = MessageReader::default();
            }
        }
        rest = next;
    }
});
