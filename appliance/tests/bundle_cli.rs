//! The field engineer's flow through the real binary: verify, install,
//! status, rollback, classify with the active bundle, refusals, and the audit
//! records each step leaves.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cxr_tests::bundles::{dev_signer, draft, locked, release_signer, write_trust_dir};
use cxr_tests::data::{pydicom_file, scratch_dir};
use serde_json::Value;

const BOARDS: &[&str] = &["dev-x86", "orin-release"];

fn appliance(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"));
    c.env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .env_remove("CXR_FAILPOINT");
    c
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn run(state: &Path, args: &[&str]) -> (i32, Value) {
    let out = appliance(state).args(args).output().unwrap();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("killed: {out:?}"));
    let lines = json_lines(&out);
    (code, lines.into_iter().next().unwrap_or(Value::Null))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn export(state: &Path) -> Vec<Value> {
    let out = appliance(state)
        .args(["audit", "export", "--jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)
}

#[test]
fn install_status_rollback_and_classify_with_the_active_bundle() {
    let dir = scratch_dir("bundle-flow");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev, &release_signer()], &[]);
    let v1 = write(&dir, "v1.cxrb", &locked(&dev, "demo", 1, BOARDS));
    let v2 = write(&dir, "v2.cxrb", &locked(&dev, "demo", 2, BOARDS));

    let (code, v) = run(&state, &["bundle", "verify", s(&v1)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["bundle"]["model_id"], "demo");
    assert_eq!(v["bundle"]["signed_by"]["role"], "development");
    assert_eq!(v["bundle"]["members"].as_array().unwrap().len(), 5);

    let rg1 = pydicom_file("RG1_UNCR.dcm");
    if let Some(rg1) = &rg1 {
        // Nothing installed: nothing is classified, and the refusal is audited.
        let (code, v) = run(&state, &["classify", s(rg1)]);
        assert_eq!(code, 4, "{v}");
        assert_eq!(v["error"]["code"], "BUNDLE_NO_ACTIVE");
    }

    let (code, v) = run(&state, &["bundle", "install", s(&v1)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["active"]["slot"], "a");
    assert!(v["self_test"].as_str().unwrap().contains("passed on tract"));
    let (code, v) = run(&state, &["bundle", "install", s(&v2)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["active"]["slot"], "b");
    assert_eq!(v["previous"]["version"], 1);
    let (code, v) = run(&state, &["bundle", "install", s(&v1)]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_DOWNGRADE");

    let (code, v) = run(&state, &["bundle", "status"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["active"]["verified"], true);
    assert_eq!(v["active"]["record"]["version"], 2);
    assert_eq!(v["previous"]["record"]["version"], 1);
    assert_eq!(v["floors"]["demo"], 2);

    if let Some(rg1) = &rg1 {
        let (code, v) = run(&state, &["classify", s(rg1)]);
        // The tiny random model's probabilities sit near 0.5, inside every
        // label's band (neutral parameters): it passes the gates but decides
        // nothing, which is its own outcome and exit code.
        assert_eq!(code, 5, "{v}");
        assert_eq!(v["outcome"], "undecided");
        assert_eq!(v["mode"], "verified");
        assert_eq!(v["bundle"]["version"], 2);
        assert_eq!(v["decision"]["labels"].as_array().unwrap().len(), 5);
        assert!(v["audit_seq"].as_u64().is_some());
        // --bundle is verified on the fly, and the floor applies to it too.
        let (code, v) = run(&state, &["classify", "--bundle", s(&v1), s(rg1)]);
        assert_eq!(code, 4);
        assert_eq!(v["error"]["code"], "BUNDLE_DOWNGRADE");
    }

    // Rollback to v1: allowed (it was installed and still verifies), and the
    // floor stays, so v1 from a USB stick is still refused.
    let (code, v) = run(&state, &["bundle", "rollback"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["active"]["version"], 1);
    let (_, v) = run(&state, &["bundle", "status"]);
    assert_eq!(v["active"]["record"]["version"], 1);
    assert_eq!(v["floors"]["demo"], 2);
    let (code, _) = run(&state, &["bundle", "install", s(&v1)]);
    assert_eq!(code, 2);

    // The active slot altered on disk: no classification, and status says why.
    let slot = state.join("slots/a/bundle.cxrb");
    let mut bytes = std::fs::read(&slot).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&slot, &bytes).unwrap();
    let (code, v) = run(&state, &["bundle", "status"]);
    assert_eq!(code, 4);
    assert_eq!(v["active"]["error"]["code"], "BUNDLE_SLOT_ALTERED");
    if let Some(rg1) = &rg1 {
        let (code, v) = run(&state, &["classify", s(rg1)]);
        assert_eq!(code, 4);
        assert_eq!(v["error"]["code"], "BUNDLE_SLOT_ALTERED");
    }
    // Rolling forward to v2 (still intact) restores service.
    let (code, v) = run(&state, &["bundle", "rollback"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["active"]["version"], 2);
    // ... and rolling back onto the altered slot is refused.
    let (code, v) = run(&state, &["bundle", "rollback"]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_SLOT_ALTERED");

    let (code, v) = run(&state, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}");
    let kinds: Vec<String> = export(&state)
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    for k in [
        "install_begun",
        "installed",
        "install_refused",
        "rolled_back",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    if rg1.is_some() {
        assert!(kinds.iter().any(|x| x == "start_refused"));
        assert!(kinds.iter().any(|x| x == "inference"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_release_board_refuses_development_keys_and_a_failed_self_test_keeps_the_old_model() {
    let dir = scratch_dir("bundle-release");
    let state = dir.join("state");
    let trust = dir.join("firmware-trust");
    let (dev, rel) = (dev_signer(), release_signer());
    write_trust_dir(&trust, &[&dev, &rel], &[]);
    let profile = include_str!("../../board-config/boards/orin-release.toml")
        .replace("/etc/cxr-appliance/trust", s(&trust))
        .replace("/var/lib/cxr-appliance", s(&state));
    let board = write(&dir, "board.toml", profile.as_bytes());
    let b = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--board-file", s(&board)]);
        run(&state, &a)
    };
    // Developer mode does not exist on a release board.
    let (code, v) = b(&[
        "classify", "--model", "m.onnx", "--params", "p.toml", "x.dcm",
    ]);
    assert_eq!(code, 4);
    assert_eq!(v["error"]["code"], "DEVELOPER_MODE_REFUSED");
    let dev_bundle = write(&dir, "dev.cxrb", &locked(&dev, "demo", 1, BOARDS));
    let (code, v) = b(&["bundle", "install", s(&dev_bundle)]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_DEVELOPMENT_KEY_REFUSED");
    let rel_bundle = write(&dir, "rel.cxrb", &locked(&rel, "demo", 1, BOARDS));
    let (code, v) = b(&["bundle", "install", s(&rel_bundle)]);
    assert_eq!(code, 0, "{v}");

    // Golden vectors from other weights: signed and well-formed, but this
    // model does not reproduce them, so the self-test refuses the install.
    let mut bad = draft("demo", 2, BOARDS, 2);
    bad.golden = draft("demo", 2, BOARDS, 99).golden;
    let bad = write(&dir, "bad.cxrb", &bad.lock(&rel).unwrap());
    let (code, v) = b(&["bundle", "install", s(&bad)]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_SELF_TEST_FAILED", "{v}");
    let (code, v) = b(&["bundle", "status"]);
    assert_eq!(code, 0);
    assert_eq!(v["active"]["record"]["version"], 1);
    assert_eq!(
        v["floors"]["demo"], 1,
        "a failed install does not raise the floor"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_state_file_stops_everything_with_a_clear_error() {
    let dir = scratch_dir("bundle-state");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev], &[]);
    let v1 = write(&dir, "v1.cxrb", &locked(&dev, "demo", 1, BOARDS));
    assert_eq!(run(&state, &["bundle", "install", s(&v1)]).0, 0);
    std::fs::write(state.join("state.json"), b"{\"generation\": 1, \"act").unwrap();
    let (code, v) = run(&state, &["bundle", "status"]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_STATE_DAMAGED");
    let (code, v) = run(&state, &["bundle", "install", s(&v1)]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["code"], "BUNDLE_STATE_DAMAGED");
    let (code, v) = run(&state, &["classify", "--", "/nonexistent.dcm"]);
    assert_eq!(code, 4);
    assert_eq!(v["error"]["code"], "BUNDLE_STATE_DAMAGED");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn revoking_the_key_of_the_active_bundle_stops_classification_at_the_next_start() {
    let dir = scratch_dir("bundle-revoke");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev], &[]);
    let v1 = write(&dir, "v1.cxrb", &locked(&dev, "demo", 1, BOARDS));
    assert_eq!(run(&state, &["bundle", "install", s(&v1)]).0, 0);
    write_trust_dir(&state.join("trust"), &[&dev], &[&dev]);
    let (code, v) = run(&state, &["bundle", "status"]);
    assert_eq!(code, 4);
    assert_eq!(v["active"]["error"]["code"], "BUNDLE_REVOKED_KEY");
    let (code, v) = run(&state, &["classify", "--", "/nonexistent.dcm"]);
    assert_eq!(code, 4);
    assert_eq!(v["error"]["code"], "BUNDLE_REVOKED_KEY");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An ensemble bundle through the real binary: verify shows its models,
/// install self-tests each, classify runs them as one `ensemble` engine
/// (named in the output and the audit record), and a board profile that
/// runs fewer models refuses it.
#[test]
fn an_ensemble_bundle_installs_and_classifies_as_one_engine() {
    let dir = scratch_dir("bundle-ensemble");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev], &[]);
    let bundle = cxr_tests::bundles::ensemble_draft("ens", 1, &["dev-x86"], 31, 3)
        .lock(&dev)
        .unwrap();
    let path = write(&dir, "ens.cxrb", &bundle);
    let (code, v) = run(&state, &["bundle", "verify", s(&path)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["bundle"]["models"], 3);
    assert_eq!(v["bundle"]["members"].as_array().unwrap().len(), 9);
    assert_eq!(v["bundle"]["schema"], 4);
    let (code, v) = run(&state, &["bundle", "install", s(&path)]);
    assert_eq!(code, 0, "{v}");
    if let Some(rg1) = pydicom_file("RG1_UNCR.dcm") {
        let (code, v) = run(&state, &["classify", s(&rg1)]);
        assert!(code == 0 || code == 5, "{v}");
        assert_eq!(v["engine"]["name"], "ensemble", "{v}");
        let reasons = v["engine"]["reasons"].to_string();
        assert!(reasons.contains("model 3/3: self-test passed"), "{reasons}");
        assert!(reasons.contains("3 forward passes per view"), "{reasons}");
        let inference = export(&state)
            .into_iter()
            .find(|r| r["event"]["type"] == "inference")
            .unwrap();
        assert_eq!(inference["event"]["engine"], "ensemble", "{inference}");
    }
    // The same bundle on a board profile that runs at most 2 models.
    let profile = include_str!("../../board-config/boards/dev-x86.toml")
        .replace("max_ensemble_members = 5", "max_ensemble_members = 2");
    let board = write(&dir, "two.toml", profile.as_bytes());
    let (code, v) = run(
        &state,
        &["bundle", "verify", s(&path), "--board-file", s(&board)],
    );
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"]["code"], "BUNDLE_ENSEMBLE_TOO_LARGE", "{v}");
    std::fs::remove_dir_all(&dir).unwrap();
}
