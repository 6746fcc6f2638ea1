//! Test machinery, compiled only with the `testing` feature (never into a
//! firmware image).

use std::path::Path;

/// `CXR_TEST_PANIC_STUDY=NAME` panics inside the study whose file name is
/// `NAME`, so that a test can prove that one faulty study fails alone.
pub fn maybe_panic(file: &Path) {
    let Ok(target) = std::env::var("CXR_TEST_PANIC_STUDY") else {
        return;
    };
    if file.file_name().and_then(|n| n.to_str()) == Some(target.as_str()) {
        panic!("injected by CXR_TEST_PANIC_STUDY for {}", file.display());
    }
}
