//! Signed test bundles: a tiny random-weight ViT locked with deterministic
//! test keys (never real keys), and trust directories for them.

use std::path::Path;

use cxr_board::KeyRole;
use cxr_bundle::{
    compute_golden, BundleDraft, BundleSigner, ContentGateData, ContentGateDraft, GoldenTolerance,
    ModelParams, Provenance,
};
use cxr_model::{onnx, GateSpec, GateWeights, VitSpec, Weights};

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

/// A random content gate whose head gives frontal a lead of 20 logits on
/// every input, with cuts that accept every finite output as frontal: tests
/// of everything but the gate itself see tag-only behaviour plus "untagged
/// means frontal".
pub fn permissive_content_gate(seed: u64) -> (ContentGateData, ContentGateDraft) {
    let spec = GateSpec::default();
    let weights = GateWeights::accepting(&spec, seed, 20.0).unwrap_or_else(|e| panic!("gate: {e}"));
    let data = ContentGateData {
        spec,
        input: cxr_preprocess::InputSpec {
            size: spec.image_size as u32,
            ..cxr_preprocess::InputSpec::default()
        },
        cuts: cxr_core::ContentCuts {
            min_frontal_probability: 0.6,
            max_distance: 1e30,
        },
        acceptance: 1.0,
    };
    let draft = ContentGateDraft::of(&weights, 2, seed).unwrap_or_else(|e| panic!("gate: {e}"));
    (data, draft)
}

/// A random-weight ViT of `spec` (seed `weight_seed`) with neutral
/// parameters, a permissive content gate and `golden_cases` golden vectors
/// (seed `golden_seed`) from the f32 reference forward, ready to lock.
/// Model id, version, boards and provenance are placeholders for the caller.
pub fn vit_draft(
    spec: VitSpec,
    labels: Vec<String>,
    weight_seed: u64,
    golden_cases: usize,
    golden_seed: u64,
) -> BundleDraft {
    let weights = Weights::random(&spec, weight_seed).unwrap_or_else(|e| panic!("weights: {e}"));
    let onnx = onnx::write(&weights).unwrap_or_else(|e| panic!("onnx: {e}"));
    let golden = compute_golden(&weights, golden_cases, golden_seed)
        .unwrap_or_else(|e| panic!("golden: {e}"));
    let mut params = ModelParams::neutral(spec, labels);
    let (gate, content_gate) = permissive_content_gate(weight_seed);
    params.content_gate = Some(gate);
    BundleDraft {
        model_id: "test".to_owned(),
        version: 1,
        boards: vec!["dev-x86".to_owned()],
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
        model_card: "# test\n\ntests only\n".to_owned(),
        content_gate,
        ensemble: Vec::new(),
        more_models: Vec::new(),
    }
}

/// [`draft`] as an ensemble of `members` tiny models (weight seeds
/// `weight_seed`, `weight_seed + 1`, …), member `k` calibrated with
/// temperature `1 + k / 2` on every label.
pub fn ensemble_draft(
    model_id: &str,
    version: u64,
    boards: &[&str],
    weight_seed: u64,
    members: usize,
) -> BundleDraft {
    let mut d = draft(model_id, version, boards, weight_seed);
    let labels = d.params.labels.len();
    for k in 1..members {
        let other = draft(model_id, version, boards, weight_seed + k as u64);
        d.more_models.push(cxr_bundle::ModelDraft {
            onnx: other.onnx,
            golden: other.golden,
        });
    }
    d.ensemble = (0..members)
        .map(|k| cxr_bundle::EnsembleMember {
            temperatures: vec![1.0 + k as f32 / 2.0; labels],
            calibrated: vec![true; labels],
        })
        .collect();
    d
}

/// A tiny ViT (64 px, 5 labels) with neutral parameters and a permissive
/// content gate, ready to lock.
pub fn draft(model_id: &str, version: u64, boards: &[&str], weight_seed: u64) -> BundleDraft {
    let spec = VitSpec {
        image_size: 64,
        labels: 5,
        ..VitSpec::tiny()
    };
    let labels = (0..5).map(|i| format!("Finding{i}")).collect();
    BundleDraft {
        model_id: model_id.to_owned(),
        version,
        boards: boards.iter().map(|b| (*b).to_owned()).collect(),
        model_card: format!("# {model_id} v{version}\n\ntests only\n"),
        ..vit_draft(spec, labels, weight_seed, 2, version)
    }
}

/// `bundle` signed again by `signer` with an edited manifest over edited
/// members (a key holder's mistake or a compromised build machine: the
/// signature is valid, the content is not).
pub fn resigned(
    signer: &BundleSigner,
    bundle: &[u8],
    edit: impl FnOnce(&mut cxr_bundle::Manifest),
    members_edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
) -> Vec<u8> {
    let c = cxr_bundle::Container::parse(bundle).unwrap_or_else(|e| panic!("container: {e}"));
    let mut m =
        cxr_bundle::Manifest::decode(c.manifest).unwrap_or_else(|e| panic!("manifest: {e}"));
    edit(&mut m);
    let mut members: Vec<(String, Vec<u8>)> = c
        .members
        .iter()
        .map(|(n, d)| ((*n).to_owned(), d.to_vec()))
        .collect();
    members_edit(&mut members);
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    signer.sign_container(&m.encode(), &refs)
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
