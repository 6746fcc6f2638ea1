//! Ensemble bundles: K models locked together, each with its own golden
//! vectors and calibration; the appliance runs every model, averages their
//! calibrated probabilities, and a board that runs fewer models refuses the
//! bundle. Also: a schema 3 (single-model) manifest still verifies.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cxr_board::BoardProfile;
use cxr_bundle::{
    verify, BundleError, BundleSigner, Container, EnsembleMember, Manifest, TrustStore,
    VerifiedBundle, VersionFloors,
};
use cxr_engine::{select_for_bundle, Engine, EnginePreference, TractVit};
use cxr_tests::bundles::{dev_signer, ensemble_draft, locked, release_signer};

fn trust(keys: &[&BundleSigner]) -> TrustStore {
    TrustStore::new(
        keys.iter()
            .map(|s| s.public_file().to_trusted(Path::new("test")).unwrap())
            .collect(),
        vec![],
    )
}

fn dev_board() -> BoardProfile {
    BoardProfile::builtin("dev-x86").unwrap()
}

fn verify_dev(bytes: Vec<u8>) -> Result<VerifiedBundle, BundleError> {
    let dev = dev_signer();
    verify(bytes, &trust(&[&dev]), &dev_board(), &VersionFloors::new())
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn an_ensemble_runs_every_model_and_averages_their_calibrated_probabilities() {
    let dev = dev_signer();
    let bytes = ensemble_draft("ens", 1, &["dev-x86"], 11, 3)
        .lock(&dev)
        .unwrap();
    let b = verify_dev(bytes).unwrap();
    assert_eq!(b.manifest().model_count(), 3);
    let models = b.models();
    assert_eq!(models.len(), 3);
    assert!(models.iter().all(|m| m.calibration.is_some()));
    assert_ne!(
        models[0].onnx, models[1].onnx,
        "members have their own weights"
    );

    let (selection, report) = select_for_bundle(&b, EnginePreference::Tract, 1, &[]).unwrap();
    assert_eq!(selection.engine.name(), "ensemble");
    let reasons = selection.reasons.join("\n");
    for k in 1..=3 {
        assert!(
            reasons.contains(&format!("model {k}/3: self-test passed")),
            "{reasons}"
        );
    }
    assert!(reasons.contains("3 forward passes per view"), "{reasons}");
    assert_eq!(report.engine, "tract");

    let spec = b.manifest().params.model;
    let n = spec.in_channels * spec.image_size * spec.image_size;
    let image: Vec<f32> = (0..2 * n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let out = selection.engine.infer(&image, 2).unwrap();
    let labels = spec.labels;
    let mut probability = vec![0.0f32; 2 * labels];
    let mut features = vec![0.0f32; 2 * spec.width];
    for m in &models {
        let alone = TractVit::load(m.onnx, spec, 1)
            .unwrap()
            .infer(&image, 2)
            .unwrap();
        let t = &m.calibration.unwrap().temperatures;
        for (i, p) in probability.iter_mut().enumerate() {
            *p += sigmoid(alone.logits[i] / t[i % labels]) / 3.0;
        }
        for (f, v) in features.iter_mut().zip(&alone.features) {
            *f += v / 3.0;
        }
    }
    for (i, p) in probability.iter().enumerate() {
        assert!(
            (sigmoid(out.logits[i]) - p).abs() < 1e-5,
            "{i}: {} vs {p}",
            sigmoid(out.logits[i])
        );
    }
    assert!(cxr_bundle::rel_l2(&out.features, &features) < 1e-5);
}

#[test]
fn a_board_that_runs_fewer_models_refuses_the_ensemble() {
    let release = release_signer();
    let bytes = ensemble_draft("ens", 1, &["x86-release"], 3, 4)
        .lock(&release)
        .unwrap();
    let board = BoardProfile::builtin("x86-release").unwrap();
    assert_eq!(board.engine.max_ensemble_members, 3);
    let e = verify(bytes, &trust(&[&release]), &board, &VersionFloors::new()).unwrap_err();
    assert_eq!(e.code(), "BUNDLE_ENSEMBLE_TOO_LARGE", "{e}");
    assert!(
        e.to_string().contains("4 models") && e.to_string().contains("at most 3"),
        "{e}"
    );
    // Three fit.
    let three = ensemble_draft("ens", 1, &["x86-release"], 3, 3)
        .lock(&release)
        .unwrap();
    verify(three, &trust(&[&release]), &board, &VersionFloors::new()).unwrap();
}

/// A 2-model ensemble signed again with an edited manifest.
fn forged(edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let dev = dev_signer();
    let clean = ensemble_draft("ens", 1, &["dev-x86"], 5, 2)
        .lock(&dev)
        .unwrap();
    cxr_tests::bundles::resigned(&dev, &clean, edit, |_| {})
}

#[test]
fn inconsistent_ensembles_are_refused_even_when_signed() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an ensemble of one",
            forged(|m| m.ensemble.truncate(1)),
            "an ensemble of 1",
        ),
        (
            "a NaN member temperature",
            forged(|m| m.ensemble[1].temperatures[2] = f32::NAN),
            "temperature for label 2",
        ),
        (
            "a calibration for the wrong labels",
            forged(|m| {
                m.ensemble[0].temperatures.pop();
            }),
            "temperatures and",
        ),
        (
            "a third calibration without its model",
            forged(|m| {
                m.ensemble.push(EnsembleMember {
                    temperatures: vec![1.0; 5],
                    calibrated: vec![true; 5],
                })
            }),
            "model-3.onnx",
        ),
        (
            "a model the ensemble does not use",
            forged(|m| m.ensemble.clear()),
            "no part of a bundle of 1 model(s) uses",
        ),
    ];
    for (what, bytes, says) in cases {
        let e = verify_dev(bytes).unwrap_err();
        assert!(e.to_string().contains(says), "{what}: {e}");
    }
}

#[test]
fn a_member_swapped_for_another_model_fails_its_own_self_test() {
    // The signer locked member 2's golden vectors with member 1's: the
    // digests match, so only the self-test can tell.
    let dev = dev_signer();
    let mut draft = ensemble_draft("ens", 1, &["dev-x86"], 21, 2);
    draft.more_models[0].golden = draft.golden.clone();
    let b = verify_dev(draft.lock(&dev).unwrap()).unwrap();
    let e = select_for_bundle(&b, EnginePreference::Tract, 1, &[]).unwrap_err();
    assert_eq!(e.code(), "ENGINE_SELF_TEST", "{e}");
}

#[test]
fn a_schema_3_manifest_still_verifies_as_one_model() {
    let dev = dev_signer();
    let clean = locked(&dev, "demo", 1, &["dev-x86"]);
    let c = Container::parse(&clean).unwrap();
    let mut m = Manifest::decode(c.manifest).unwrap();
    m.schema = 3;
    let mut v3 = m.encode();
    assert_eq!(
        v3.pop(),
        Some(0),
        "an empty ensemble list is one zero byte, last"
    );
    let refs: Vec<(&str, &[u8])> = c.members.clone();
    let b = verify_dev(dev.sign_container(&v3, &refs)).unwrap();
    assert_eq!(b.manifest().schema, 3);
    assert!(b.manifest().ensemble.is_empty());
    assert_eq!(b.models().len(), 1);
    // A schema 3 manifest whose appended zero byte would complete an
    // ensemble list is refused: schema 3 carries none.
    let mut forged = m.clone();
    forged.ensemble = vec![EnsembleMember {
        temperatures: vec![],
        calibrated: vec![],
    }];
    let mut tail = forged.encode();
    assert_eq!(tail.pop(), Some(0));
    let e = verify_dev(dev.sign_container(&tail, &refs)).unwrap_err();
    assert_eq!(e.code(), "BUNDLE_MANIFEST_MALFORMED", "{e}");
    // Schema 2 is not read.
    m.schema = 2;
    let mut v2 = m.encode();
    v2.pop();
    let e = verify_dev(dev.sign_container(&v2, &refs)).unwrap_err();
    assert_eq!(e.code(), "BUNDLE_UNKNOWN_SCHEMA", "{e}");
}
