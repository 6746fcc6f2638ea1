//! Fuzz the whole guarded read path: any bytes must give Ok or a typed Err,
//! never an escaping panic, an abort or a runaway allocation. Seed the corpus
//! with the real files (see README in this folder).
#![no_main]

use std::sync::Once;

use cxr_dicom::{read_radiograph, read_radiograph_for, DecodeTarget, ReadLimits};
use libfuzzer_sys::fuzz_target;

static QUIET_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on every panic, even one that `read_radiograph`
    // catches around a decoder (known dicom-rs panics, e.g. in the RLE
    // adapter). Those are handled by design; only a panic that escapes the
    // call (and so unwinds out of this closure) must stop the fuzzer, and it
    // still does: unwinding out of the fuzz target aborts.
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let limits = ReadLimits { max_input_bytes: 16 * 1024 * 1024, ..ReadLimits::default() };
    let full = read_radiograph(data, &limits);
    if let Err(e) = &full {
        // Every refusal must carry a stable code.
        assert!(e.code().starts_with("DICOM_"));
    }
    // The reduced-resolution decoders see the same bytes: what a full read
    // accepts, a reduced read accepts (it falls back to the full decode).
    // The converse has one exception: a JPEG 2000 codestream damaged only in
    // the resolution levels a reduced read never decodes.
    let reduced = read_radiograph_for(data, &limits, DecodeTarget::ShortSideAtLeast(8));
    if full.is_ok() {
        assert!(reduced.is_ok());
    }
    if let Err(e) = &reduced {
        assert!(e.code().starts_with("DICOM_"));
    }
});
