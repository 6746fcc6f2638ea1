//! Fuzz the dataset image loader (PNG/JPEG into a Radiograph): any bytes must
//! give Ok or a typed Err within the loader's size and allocation limits.
#![no_main]

use cxr_preprocess::load_image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match load_image(data) {
        Ok(r) => assert!(r.pixels().iter().all(|v| v.is_finite())),
        Err(e) => assert!(!e.code().is_empty()),
    }
});
