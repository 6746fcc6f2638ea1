//! Fuzz bundle parsing: bundles arrive on USB sticks, so any bytes must give
//! a typed refusal (or, for well-formed input, a verified bundle), never a
//! panic or a runaway allocation. The trust store holds one fixed key, so
//! inputs that carry its key id reach the signature check.
#![no_main]

use std::path::Path;

use cxr_board::{BoardProfile, KeyRole};
use cxr_bundle::{verify, Container, GoldenSet, Manifest, PublicKeyFile, TrustStore, VersionFloors};
use cxr_model::{GateSpec, VitSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The raw layers, unsigned: container, manifest, golden vectors.
    if let Ok(c) = Container::parse(data) {
        let _ = Manifest::decode(c.manifest);
        for (_, member) in &c.members {
            let _ = GoldenSet::decode(member, &VitSpec::tiny());
            let _ = GoldenSet::decode_gate(member, &GateSpec::default());
        }
    }
    let key = PublicKeyFile {
        name: "dev-fuzz".into(),
        role: KeyRole::Development,
        key_id: "21fe31dfa154a261".into(),
        public_key: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into(),
    };
    let trust = TrustStore::new(key.to_trusted(Path::new("fuzz")).into_iter().collect(), vec![]);
    let Ok(board) = BoardProfile::builtin("dev-x86") else { return };
    if let Err(e) = verify(data.to_vec(), &trust, &board, &VersionFloors::new()) {
        assert!(e.code().starts_with("BUNDLE_"));
    }
});
