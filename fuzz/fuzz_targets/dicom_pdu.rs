//! Fuzz the receiver's PDU parsing (`cxr-net`): any bytes a peer sends
//! as one PDU give a PDU or a typed fault, never a panic, and a length
//! over the limit is refused from the header alone.
#![no_main]

use cxr_net::pdu_io::{parse_pdu, ReadFault};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [1024u32, 64 * 1024] {
        match parse_pdu(data, max) {
            Ok(_) => assert!(data.len() <= 6 + max as usize),
            Err(ReadFault::TooLarge(n)) => assert!(n > max),
            Err(f) => assert!(f.code().starts_with("PDU_") || f.code().starts_with("ASSOCIATION_")),
        }
    }
});
