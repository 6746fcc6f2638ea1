//! `cxr-core` must build on its own with no default features: it is the
//! `no_std` decision core that the firmware and the trainer share.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cxr_tests::data::workspace_root;

#[test]
fn core_builds_with_no_default_features() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = workspace_root();
    let out = Command::new(cargo)
        .args([
            "check",
            "--quiet",
            "--offline",
            "-p",
            "cxr-core",
            "--lib",
            "--no-default-features",
        ])
        // A separate target folder: feature unification with the rest of the
        // workspace (serde/std and friends) must not hide a std dependency.
        .env("CARGO_TARGET_DIR", root.join("target/no-default-features"))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
