//! Fuzz the whole guarded read path: any bytes must give Ok or a typed Err,
//! never a panic. Seed the corpus with the real files (see README in this folder).
#![no_main]

use cxr_dicom::{read_radiograph, ReadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ReadLimits { max_input_bytes: 16 * 1024 * 1024, ..ReadLimits::default() };
    if let Err(e) = read_radiograph(data, &limits) {
        // Every refusal must carry a stable code.
        assert!(e.code().starts_with("DICOM_"));
    }
});
