//! `cxr-trainer keygen` and `lock` through the real binary: the keys, the
//! bundle, and that the appliance's verification accepts what `lock` wrote.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_board::BoardProfile;
use cxr_bundle::{verify, ModelParams, TrustStore, VersionFloors};
use cxr_model::{onnx, VitSpec, Weights};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cxr-trainer"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_then_lock_gives_a_bundle_the_appliance_verifies() {
    let dir = scratch("lock");
    let keys = dir.join("keys");
    let out = trainer()
        .args([
            "keygen",
            "--name",
            "dev-bench",
            "--role",
            "development",
            "--out",
            s(&keys),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = keys.join("dev-bench.key");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwrite a key; never a misleading name.
    let again = trainer()
        .args([
            "keygen",
            "--name",
            "dev-bench",
            "--role",
            "development",
            "--out",
            s(&keys),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let misnamed = trainer()
        .args([
            "keygen",
            "--name",
            "bench",
            "--role",
            "development",
            "--out",
            s(&keys),
        ])
        .output()
        .unwrap();
    assert!(!misnamed.status.success());
    assert!(String::from_utf8_lossy(&misnamed.stderr).contains("dev-"));

    let spec = VitSpec {
        image_size: 32,
        labels: 3,
        ..VitSpec::tiny()
    };
    let model = dir.join("m.onnx");
    std::fs::write(
        &model,
        onnx::write(&Weights::random(&spec, 5).unwrap()).unwrap(),
    )
    .unwrap();
    let params = dir.join("p.toml");
    let p = ModelParams::neutral(spec, vec!["A".into(), "B".into(), "C".into()]);
    std::fs::write(&params, toml::to_string(&p).unwrap()).unwrap();
    // A content gate as `fit-gate` writes it (random weights, test cuts).
    let gate_dir = dir.join("gate");
    std::fs::create_dir_all(&gate_dir).unwrap();
    let (gate, gate_members) = cxr_tests::bundles::permissive_content_gate(3);
    std::fs::write(gate_dir.join("content-gate.onnx"), &gate_members.onnx).unwrap();
    std::fs::write(
        gate_dir.join("content-gate.toml"),
        toml::to_string(&gate).unwrap(),
    )
    .unwrap();
    let bundle = dir.join("b.cxrb");
    // The same lock command, written to `out`.
    let lock = |out: &Path| {
        trainer()
            .args([
                "lock",
                "--onnx",
                s(&model),
                "--params",
                s(&params),
                "--key",
                s(&secret),
                "--content-gate",
                s(&gate_dir),
            ])
            .args([
                "--model-id",
                "bench",
                "--version",
                "7",
                "--board",
                "dev-x86",
            ])
            .args([
                "--data",
                s(&params),
                "--seed",
                "11",
                "--created-unix-s",
                "1800000000",
            ])
            .args(["--out", s(out)])
            .output()
            .unwrap()
    };
    let out = lock(&bundle);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let trust = TrustStore::load(&keys).unwrap();
    let board = BoardProfile::builtin("dev-x86").unwrap();
    let b = verify(
        std::fs::read(&bundle).unwrap(),
        &trust,
        &board,
        &VersionFloors::new(),
    )
    .unwrap();
    let m = b.manifest();
    assert_eq!((m.model_id.as_str(), m.version), ("bench", 7));
    assert_eq!(m.params.content_gate.as_ref(), Some(&gate));
    assert_eq!(
        ModelParams {
            content_gate: None,
            ..m.params.clone()
        },
        p
    );
    assert_eq!(b.content_gate_onnx(), gate_members.onnx.as_slice());
    assert_eq!(b.content_golden().cases.len(), 2);
    assert_eq!(m.provenance.seed, Some(11));
    assert_eq!(m.provenance.data.len(), 1);
    assert_eq!(b.golden().cases.len(), 2);
    assert!(b.model_card().contains("not for clinical use"));
    assert!(b.model_card().contains("bench v7"));
    // The golden vectors are the reference forward's outputs for their inputs.
    let w = onnx::read_weights(&std::fs::read(&model).unwrap(), &spec).unwrap();
    let case = &b.golden().cases[1];
    let r = cxr_model::reference::forward(&w, &case.image).unwrap();
    assert_eq!(r.logits, case.logits);

    // Locking is deterministic for a fixed key, inputs and creation time.
    let bundle2 = dir.join("b2.cxrb");
    let out = lock(&bundle2);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&bundle2).unwrap()
    );

    // A release board refuses it.
    let release = BoardProfile::builtin("orin-release").unwrap();
    let e = verify(
        std::fs::read(&bundle).unwrap(),
        &trust,
        &release,
        &VersionFloors::new(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "BUNDLE_DEVELOPMENT_KEY_REFUSED");
    std::fs::remove_dir_all(&dir).unwrap();
}
