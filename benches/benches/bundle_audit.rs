//! Bundle verification and audit appends, each against a baseline measured in
//! the same run:
//! - `verify` of a ViT-B/16 (224, 14 labels) bundle vs plain SHA-256 of the
//!   same bytes (verification is hashing plus a signature and decoding);
//! - an audit append with fsync (the default) vs without.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use cxr_audit::{AuditConfig, AuditLog, BundleRef, Event, Inference, Mode, Outcome};
use cxr_board::{BoardProfile, KeyRole};
use cxr_bundle::{verify, BundleDraft, BundleSigner, TrustStore, VersionFloors};
use cxr_model::VitSpec;
use sha2::{Digest, Sha256};

fn vit_b16_bundle(signer: &BundleSigner) -> Vec<u8> {
    let spec = VitSpec::vit_b16(224, 14);
    let labels = (0..14).map(|i| format!("L{i}")).collect();
    BundleDraft {
        model_id: "bench".into(),
        ..cxr_tests::bundles::vit_draft(spec, labels, 1, 1, 1)
    }
    .lock(signer)
    .unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let signer = BundleSigner::from_seed("dev-bench", KeyRole::Development, [1; 32]);
    let bytes = vit_b16_bundle(&signer);
    let trust = TrustStore::new(
        vec![signer.public_file().to_trusted(Path::new("bench")).unwrap()],
        vec![],
    );
    let board = BoardProfile::builtin("dev-x86").unwrap();
    let floors = VersionFloors::new();
    let mut g = c.benchmark_group(format!("bundle_{}MB", bytes.len() >> 20));
    g.sample_size(10);
    g.bench_function("sha256_baseline", |b| b.iter(|| Sha256::digest(&bytes)));
    g.bench_function("verify", |b| {
        b.iter(|| verify(bytes.clone(), &trust, &board, &floors).unwrap())
    });
    g.finish();
}

fn bench_audit(c: &mut Criterion) {
    let event = Event::Inference(Inference {
        mode: Mode::Verified,
        bundle: BundleRef {
            model_id: "bench".into(),
            version: 1,
            digest: [7; 32],
        },
        engine: "tract".into(),
        engine_reasons: vec!["auto: no CUDA engine in this build; using tract (CPU)".into()],
        input_sha256: [1; 32],
        study_key: Some([2; 32]),
        decision: Some(vec![0x55; 180]),
        latency_us: 1_500_000,
        outcome: Outcome::Decision,
    });
    let mut g = c.benchmark_group("audit_append");
    g.sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(2));
    for fsync in [false, true] {
        let config = AuditConfig {
            segment_bytes: 64 << 20,
            max_total_bytes: 16 << 30,
            fsync_every_record: fsync,
            lock_wait_ms: 0,
        };
        let name = if fsync {
            "fsync_every_record"
        } else {
            "no_fsync_baseline"
        };
        // A fresh log per sample, so the size budget never fills.
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir =
                    std::env::temp_dir().join(format!("cxr-bench-audit-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let (mut log, _) = AuditLog::open(&dir, config, 0).unwrap();
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    log.append(0, event.clone()).unwrap();
                }
                let elapsed = t.elapsed();
                let _ = std::fs::remove_dir_all(&dir);
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_verify, bench_audit);
criterion_main!(benches);
