//! A signed bundle of the random-weight ViT-B/16 that `dev-random-model`
//! writes (seed 1, the 14 NIH labels, neutral parameters, five TTA views),
//! with golden vectors from the f32 reference forward and a permissive
//! content gate, so that `classify --bundle` can run every engine a board
//! offers (each after its self-test) in `benches/compare_study.sh`. Locked
//! with a deterministic benchmark key, never a real one; its public key goes
//! to `OUT/trust`.
//!
//! Usage: cargo run --release -p cxr-benches --example bench_bundle -- OUT SIZES
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use cxr_board::KeyRole;
use cxr_bundle::{BundleDraft, Provenance};
use cxr_model::labels::NIH_FINDINGS;
use cxr_model::VitSpec;
use cxr_tests::bundles::{signer, vit_draft, write_trust_dir};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(&args[1]);
    let signer = signer("dev-bench", KeyRole::Development, 11);
    write_trust_dir(&out.join("trust"), &[&signer], &[]);
    for size in args[2].split(',').map(|s| s.parse::<usize>().unwrap()) {
        let path = out.join(format!("vit_b16_{size}.cxrb"));
        if path.is_file() {
            continue;
        }
        let spec = VitSpec::vit_b16(size, NIH_FINDINGS.len());
        let labels = NIH_FINDINGS.iter().map(|s| (*s).to_owned()).collect();
        let draft = vit_draft(spec, labels, 1, 1, 1);
        let bundle = BundleDraft {
            model_id: format!("bench-vit-b16-{size}"),
            provenance: Provenance {
                tool: "benches/examples/bench_bundle.rs".into(),
                intended_use: "benchmark only: random weights, never for patients".into(),
                ..draft.provenance.clone()
            },
            model_card: "# benchmark\n\nRandom weights: never for patients.\n".into(),
            ..draft
        }
        .lock(&signer)
        .unwrap();
        std::fs::write(&path, bundle).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
