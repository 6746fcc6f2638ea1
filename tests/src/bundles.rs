//! Signed test bundles: a tiny random-weight ViT locked with deterministic
//! test keys (never real keys), and trust directories for them.

use std::path::Path;

use cxr_board::KeyRole;
use cxr_bundle::{
    compute_golden, BundleDraft, BundleSigner, GoldenTolerance, ModelParams, Provenance,
};
use cxr_model::{onnx, VitSpec, Weights};

/// A deterministic test key. `seed` picks the key.
pub fn signer(name: &str, role: KeyRole, seed: u8) -> BundleSigner {
    BundleSigner::from_seed(name, role, [seed; 32])
}

pub fn dev_signer() -> BundleSigner {
    signer("dev-test", KeyRole::Development, 7)
}

pub fn release_signer() -> BundleSigner {
    signer("release-test", KeyRole::Release, 9)
}

/// A tiny ViT (64 px, 5 labels) with neutral parameters, ready to lock.
pub fn draft(model_id: &str, version: u64, boards: &[&str], weight_seed: u64) -> BundleDraft {
    let spec = VitSpec {
        image_size: 64,
        labels: 5,
        ..VitSpec::tiny()
    };
    let weights = Weights::random(&spec, weight_seed).unwrap_or_else(|e| panic!("weights: {e}"));
    let onnx = onnx::write(&weights).unwrap_or_else(|e| panic!("onnx: {e}"));
    let golden = compute_golden(&weights, 2, version).unwrap_or_else(|e| panic!("golden: {e}"));
    let params = ModelParams::neutral(spec, (0..5).map(|i| format!("Finding{i}")).collect());
    BundleDraft {
        model_id: model_id.to_owned(),
        version,
        boards: boards.iter().map(|b| (*b).to_owned()).collect(),
        params,
        golden_tolerance: GoldenTolerance::default(),
        provenance: Provenance {
            created_unix_s: 1_790_000_000,
            tool: "cxr-tests".into(),
            source_revision: "test".into(),
            seed: Some(weight_seed),
            config: String::new(),
            data: vec![],
            intended_use: "tests only".into(),
        },
        onnx,
        golden,
        model_card: format!("# {model_id} v{version}\n\ntests only\n"),
    }
}

/// Lock a tiny bundle with `signer`.
pub fn locked(signer: &BundleSigner, model_id: &str, version: u64, boards: &[&str]) -> Vec<u8> {
    draft(model_id, version, boards, version)
        .lock(signer)
        .unwrap_or_else(|e| panic!("lock: {e}"))
}

/// Write `signers`' public keys (and a revocation list) into `dir`.
pub fn write_trust_dir(dir: &Path, signers: &[&BundleSigner], revoked: &[&BundleSigner]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    for s in signers {
        let text = toml::to_string(&s.public_file()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(format!("{}.pub.toml", s.name)), text)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    if !revoked.is_empty() {
        let ids: Vec<String> = revoked
            .iter()
            .map(|s| format!("\"{}\"", cxr_bundle::hex::encode(&s.key_id())))
            .collect();
        std::fs::write(
            dir.join("revoked.toml"),
            format!("revoked = [{}]\n", ids.join(", ")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
