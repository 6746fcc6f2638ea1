//! Engine selection with accelerators: an accelerator is used only when it
//! loads on this machine and passes the bundle's golden self-test; anything
//! else falls back to tract with the reason recorded. (The real CUDA engine
//! on a machine without a GPU is checked in `appliance/tests/engine_fallback.rs`.)
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use cxr_board::BoardProfile;
use cxr_bundle::{verify, TrustStore, VerifiedBundle, VersionFloors};
use cxr_engine::{
    select_for_bundle, Accelerator, Engine, EngineError, EngineOutput, EnginePreference,
    EngineShape, TractVit,
};
use cxr_model::VitSpec;
use cxr_tests::bundles::{dev_signer, locked};

fn bundle() -> VerifiedBundle {
    let dev = dev_signer();
    let store = TrustStore::new(
        vec![dev.public_file().to_trusted(Path::new("test")).unwrap()],
        vec![],
    );
    let bytes = locked(&dev, "demo", 1, &["dev-x86"]);
    verify(
        bytes,
        &store,
        &BoardProfile::builtin("dev-x86").unwrap(),
        &VersionFloors::new(),
    )
    .unwrap()
}

/// tract under another name, optionally with its logits pushed off.
struct Wrapped {
    inner: TractVit,
    offset: f32,
}

impl Engine for Wrapped {
    fn name(&self) -> &'static str {
        "fake-gpu"
    }
    fn shape(&self) -> EngineShape {
        self.inner.shape()
    }
    fn reduced_precision(&self) -> bool {
        true
    }
    fn precision(&self) -> &'static str {
        "bf16"
    }
    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let mut out = self.inner.infer(images, batch)?;
        out.logits.iter_mut().for_each(|l| *l += self.offset);
        Ok(out)
    }
}

enum Behaviour {
    NoDevice,
    WrongOutputs,
    Correct,
}

struct Fake {
    behaviour: Behaviour,
    loads: AtomicUsize,
}

impl Fake {
    fn new(behaviour: Behaviour) -> Self {
        Fake {
            behaviour,
            loads: AtomicUsize::new(0),
        }
    }
}

impl Accelerator for Fake {
    fn name(&self) -> &'static str {
        "fake-gpu"
    }
    fn load(&self, onnx: &[u8], spec: VitSpec) -> Result<Box<dyn Engine>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let offset = match self.behaviour {
            Behaviour::NoDevice => return Err("no CUDA driver on this machine".into()),
            Behaviour::WrongOutputs => 0.5,
            Behaviour::Correct => 0.0,
        };
        let inner = TractVit::load(onnx, spec, 1).map_err(|e| e.to_string())?;
        Ok(Box::new(Wrapped { inner, offset }))
    }
}

#[test]
fn a_missing_device_falls_back_to_tract_with_the_reason() {
    let b = bundle();
    let fake = Fake::new(Behaviour::NoDevice);
    let (s, report) = select_for_bundle(&b, EnginePreference::Auto, 1, &[&fake]).unwrap();
    assert_eq!(s.engine.name(), "tract");
    assert_eq!(report.engine, "tract");
    assert!(
        s.reasons[0].contains("fake-gpu: not used: no CUDA driver"),
        "{:?}",
        s.reasons
    );
    assert!(s
        .reasons
        .iter()
        .any(|r| r.contains("falling back to tract")));
}

#[test]
fn an_accelerator_failing_its_self_test_is_never_used() {
    let b = bundle();
    let fake = Fake::new(Behaviour::WrongOutputs);
    let (s, _) = select_for_bundle(&b, EnginePreference::Auto, 1, &[&fake]).unwrap();
    assert_eq!(s.engine.name(), "tract");
    assert!(
        s.reasons[0].contains("golden self-test failed"),
        "{:?}",
        s.reasons
    );
}

#[test]
fn a_passing_accelerator_is_chosen_and_tract_is_not_loaded() {
    let b = bundle();
    let fake = Fake::new(Behaviour::Correct);
    let (s, report) = select_for_bundle(&b, EnginePreference::Auto, 1, &[&fake]).unwrap();
    assert_eq!(s.engine.name(), "fake-gpu");
    assert_eq!(report.engine, "fake-gpu");
    assert!(s.reasons.iter().any(|r| r == "auto: fake-gpu selected"));
    // The content gate always runs on tract (CPU); the classifier does not.
    assert!(
        !s.reasons
            .iter()
            .any(|r| r.contains("tract") && !r.starts_with("content gate: ")),
        "{:?}",
        s.reasons
    );
    assert!(s.content_gate.is_some());
}

#[test]
fn tract_preference_never_tries_an_accelerator() {
    let b = bundle();
    let fake = Fake::new(Behaviour::Correct);
    let (s, _) = select_for_bundle(&b, EnginePreference::Tract, 1, &[&fake]).unwrap();
    assert_eq!(s.engine.name(), "tract");
    assert_eq!(fake.loads.load(Ordering::SeqCst), 0);
    // And a build without accelerators says so.
    let (s, _) = select_for_bundle(&b, EnginePreference::Auto, 1, &[]).unwrap();
    assert!(s.reasons[0].contains("no GPU engine"), "{:?}", s.reasons);
}

/// A content gate that does not reproduce its own golden vectors refuses the
/// whole bundle: nothing is classified without a working gate.
#[test]
fn a_content_gate_failing_its_self_test_refuses_the_bundle() {
    let dev = dev_signer();
    let store = TrustStore::new(
        vec![dev.public_file().to_trusted(Path::new("test")).unwrap()],
        vec![],
    );
    let mut d = cxr_tests::bundles::draft("demo", 1, &["dev-x86"], 1);
    // Golden vectors of another gate: a graph and goldens that disagree.
    d.content_gate.golden = cxr_tests::bundles::permissive_content_gate(99).1.golden;
    let bytes = d.lock(&dev).unwrap();
    let b = verify(
        bytes,
        &store,
        &BoardProfile::builtin("dev-x86").unwrap(),
        &VersionFloors::new(),
    )
    .unwrap();
    let e = select_for_bundle(&b, EnginePreference::Tract, 1, &[]).unwrap_err();
    assert_eq!(e.code(), "ENGINE_SELF_TEST", "{e}");
    assert!(e.to_string().contains("tract-gate"), "{e}");
}
