//! The tamper matrix: every way a bundle can be damaged, forged or misused,
//! each refused with its own error. Run with `--nocapture` to print the table.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cxr_board::{BoardProfile, KeyRole};
use cxr_bundle::{
    verify, BundleError, BundleSigner, Container, Manifest, TrustStore, VersionFloors,
    MAX_MANIFEST_BYTES, SCHEMA_VERSION,
};
use cxr_tests::bundles::{dev_signer, draft, locked, release_signer, signer};

fn trust(keys: &[&BundleSigner], revoked: &[&BundleSigner]) -> TrustStore {
    TrustStore::new(
        keys.iter()
            .map(|s| s.public_file().to_trusted(Path::new("test")).unwrap())
            .collect(),
        revoked.iter().map(|s| s.key_id()).collect(),
    )
}

fn dev_board() -> BoardProfile {
    BoardProfile::builtin("dev-x86").unwrap()
}

fn release_board() -> BoardProfile {
    BoardProfile::builtin("orin-release").unwrap()
}

const BOARDS: &[&str] = &["dev-x86", "orin-release"];

/// Rebuild a container with edited members, keeping manifest and signature.
fn with_members(bytes: &[u8], edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let c = Container::parse(bytes).unwrap();
    let mut members: Vec<(String, Vec<u8>)> = c
        .members
        .iter()
        .map(|(n, d)| ((*n).to_owned(), d.to_vec()))
        .collect();
    edit(&mut members);
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    Container {
        manifest: c.manifest,
        key_id: c.key_id,
        signature: c.signature,
        members: refs,
    }
    .encode()
}

/// Sign an edited manifest over the real members (a key holder's mistake or
/// a compromised build machine: the signature is valid, the content is not).
fn signed_with_manifest(
    s: &BundleSigner,
    edit: impl FnOnce(&mut Manifest),
    members_edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
) -> Vec<u8> {
    cxr_tests::bundles::resigned(s, &locked(s, "demo", 3, BOARDS), edit, members_edit)
}

fn flip_member(bytes: &[u8], name: &str) -> Vec<u8> {
    with_members(bytes, |m| {
        let d = &mut m.iter_mut().find(|(n, _)| n == name).unwrap().1;
        let i = d.len() / 2;
        d[i] ^= 0x10;
    })
}

fn flip_at(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

#[test]
fn tamper_matrix() {
    let dev = dev_signer();
    let rel = release_signer();
    let stranger = signer("release-stranger", KeyRole::Release, 33);
    let revoked_key = signer("release-old", KeyRole::Release, 44);
    let store = trust(&[&dev, &rel, &revoked_key], &[&revoked_key]);
    let none = VersionFloors::new();
    let floor5: VersionFloors = [("demo".to_owned(), 5u64)].into();

    let clean = locked(&dev, "demo", 3, BOARDS);
    let clean_rel = locked(&rel, "demo", 3, BOARDS);
    // The clean bundles verify, on the boards they should.
    verify(clean.clone(), &store, &dev_board(), &none).unwrap();
    verify(clean_rel.clone(), &store, &release_board(), &none).unwrap();
    verify(
        clean_rel.clone(),
        &store,
        &dev_board(),
        &[("demo".to_owned(), 3u64)].into(),
    )
    .unwrap();

    let c = Container::parse(&clean).unwrap();
    let manifest_at = 14usize;
    let key_id_at = manifest_at + c.manifest.len();
    let sig_at = key_id_at + 8;

    let mut oversized = clean.clone();
    oversized[10..14].copy_from_slice(&((MAX_MANIFEST_BYTES + 1) as u32).to_le_bytes());

    type Case = (
        &'static str,
        Vec<u8>,
        BoardProfile,
        VersionFloors,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "byte flipped in model.onnx",
            flip_member(&clean, "model.onnx"),
            dev_board(),
            none.clone(),
            "BUNDLE_DIGEST_MISMATCH",
        ),
        (
            "byte flipped in golden.bin",
            flip_member(&clean, "golden.bin"),
            dev_board(),
            none.clone(),
            "BUNDLE_DIGEST_MISMATCH",
        ),
        (
            "byte flipped in model-card.md",
            flip_member(&clean, "model-card.md"),
            dev_board(),
            none.clone(),
            "BUNDLE_DIGEST_MISMATCH",
        ),
        (
            "byte flipped in content-gate.onnx",
            flip_member(&clean, "content-gate.onnx"),
            dev_board(),
            none.clone(),
            "BUNDLE_DIGEST_MISMATCH",
        ),
        (
            "byte flipped in content-golden.bin",
            flip_member(&clean, "content-golden.bin"),
            dev_board(),
            none.clone(),
            "BUNDLE_DIGEST_MISMATCH",
        ),
        (
            "content gate missing",
            with_members(&clean, |m| m.retain(|(n, _)| n != "content-gate.onnx")),
            dev_board(),
            none.clone(),
            "BUNDLE_MISSING_MEMBER",
        ),
        (
            "signed manifest without content gate parameters",
            signed_with_manifest(&dev, |m| m.params.content_gate = None, |_| {}),
            dev_board(),
            none.clone(),
            "BUNDLE_INVALID_PARAMETERS",
        ),
        (
            "signed manifest with a NaN content cut",
            signed_with_manifest(
                &dev,
                |m| {
                    if let Some(g) = m.params.content_gate.as_mut() {
                        g.cuts.max_distance = f32::NAN;
                    }
                },
                |_| {},
            ),
            dev_board(),
            none.clone(),
            "BUNDLE_INVALID_PARAMETERS",
        ),
        (
            "signed manifest without the content gate members listed",
            signed_with_manifest(
                &dev,
                |m| m.members.retain(|e| !e.name.starts_with("content-")),
                |ms| ms.retain(|(n, _)| !n.starts_with("content-")),
            ),
            dev_board(),
            none.clone(),
            "BUNDLE_MISSING_MEMBER",
        ),
        (
            "byte flipped in the manifest",
            flip_at(&clean, manifest_at + c.manifest.len() / 2),
            dev_board(),
            none.clone(),
            "BUNDLE_BAD_SIGNATURE",
        ),
        (
            "byte flipped in the signature",
            flip_at(&clean, sig_at + 20),
            dev_board(),
            none.clone(),
            "BUNDLE_BAD_SIGNATURE",
        ),
        (
            "byte flipped in the key id",
            flip_at(&clean, key_id_at),
            dev_board(),
            none.clone(),
            "BUNDLE_UNKNOWN_KEY",
        ),
        (
            "signed by an untrusted key",
            locked(&stranger, "demo", 3, BOARDS),
            dev_board(),
            none.clone(),
            "BUNDLE_UNKNOWN_KEY",
        ),
        (
            "signed by a revoked key",
            locked(&revoked_key, "demo", 3, BOARDS),
            dev_board(),
            none.clone(),
            "BUNDLE_REVOKED_KEY",
        ),
        (
            "development key on a release board",
            clean.clone(),
            release_board(),
            none.clone(),
            "BUNDLE_DEVELOPMENT_KEY_REFUSED",
        ),
        (
            "downgrade below the floor",
            clean.clone(),
            dev_board(),
            floor5.clone(),
            "BUNDLE_DOWNGRADE",
        ),
        (
            "unknown schema version",
            signed_with_manifest(&dev, |m| m.schema = SCHEMA_VERSION + 1, |_| {}),
            dev_board(),
            none.clone(),
            "BUNDLE_UNKNOWN_SCHEMA",
        ),
        (
            "extra member not in the manifest",
            with_members(&clean, |m| m.push(("extra.bin".into(), vec![1, 2, 3]))),
            dev_board(),
            none.clone(),
            "BUNDLE_EXTRA_MEMBER",
        ),
        (
            "missing member",
            with_members(&clean, |m| m.retain(|(n, _)| n != "golden.bin")),
            dev_board(),
            none.clone(),
            "BUNDLE_MISSING_MEMBER",
        ),
        (
            "traversal name in the archive",
            with_members(&clean, |m| m.push(("../../etc/passwd".into(), vec![0]))),
            dev_board(),
            none.clone(),
            "BUNDLE_UNSAFE_MEMBER_NAME",
        ),
        (
            "absolute name in the archive",
            with_members(&clean, |m| m.push(("/etc/cron.d/x".into(), vec![0]))),
            dev_board(),
            none.clone(),
            "BUNDLE_UNSAFE_MEMBER_NAME",
        ),
        (
            "traversal name in the signed manifest",
            signed_with_manifest(
                &dev,
                |m| m.members[2].name = "../model-card.md".into(),
                |_| {},
            ),
            dev_board(),
            none.clone(),
            "BUNDLE_UNSAFE_MEMBER_NAME",
        ),
        (
            "oversized manifest",
            oversized,
            dev_board(),
            none.clone(),
            "BUNDLE_OVERSIZED_MANIFEST",
        ),
        (
            "truncated archive",
            clean[..clean.len() - 100].to_vec(),
            dev_board(),
            none.clone(),
            "BUNDLE_TRUNCATED",
        ),
        (
            "duplicate member in the archive",
            with_members(&clean, |m| {
                let d = m[2].clone();
                m.push(d);
            }),
            dev_board(),
            none.clone(),
            "BUNDLE_DUPLICATE_MEMBER",
        ),
        (
            "duplicate member in the signed manifest",
            signed_with_manifest(
                &dev,
                |m| {
                    let d = m.members[0].clone();
                    m.members.push(d);
                },
                |_| {},
            ),
            dev_board(),
            none.clone(),
            "BUNDLE_DUPLICATE_MEMBER",
        ),
        (
            "member size differs from the manifest",
            signed_with_manifest(&dev, |m| m.members[2].size += 1, |_| {}),
            dev_board(),
            none.clone(),
            "BUNDLE_SIZE_MISMATCH",
        ),
        (
            "bundle for another board",
            locked(&dev, "demo", 3, &["orin-release"]),
            dev_board(),
            none.clone(),
            "BUNDLE_INCOMPATIBLE_BOARD",
        ),
        (
            "not a bundle (bad magic)",
            b"PK\x03\x04 a zip file".to_vec(),
            dev_board(),
            none.clone(),
            "BUNDLE_BAD_MAGIC",
        ),
        (
            "bytes after the last member",
            {
                let mut b = clean.clone();
                b.extend_from_slice(b"junk");
                b
            },
            dev_board(),
            none.clone(),
            "BUNDLE_TRAILING_BYTES",
        ),
        (
            "signed manifest that does not decode",
            dev.sign_container(&[SCHEMA_VERSION as u8, 0xFF, 0xFF], &[]),
            dev_board(),
            none.clone(),
            "BUNDLE_MANIFEST_MALFORMED",
        ),
        (
            "signed but inconsistent parameters",
            signed_with_manifest(
                &dev,
                |m| m.params.thresholds.pop().map(|_| ()).unwrap_or(()),
                |_| {},
            ),
            dev_board(),
            none.clone(),
            "BUNDLE_INVALID_PARAMETERS",
        ),
        (
            "golden vectors for another model",
            {
                let other = draft("demo", 3, BOARDS, 3);
                let mut d = other.clone();
                d.golden.cases[0].logits.pop();
                // lock() refuses this draft itself; sign it by hand to reach verify.
                let golden = d.golden.encode();
                signed_with_manifest(
                    &dev,
                    |m| {
                        m.members[1].size = golden.len() as u64;
                        m.members[1].sha256 = sha(&golden);
                    },
                    |ms| ms[1].1 = golden.clone(),
                )
            },
            dev_board(),
            none.clone(),
            "BUNDLE_GOLDEN",
        ),
    ];
    assert!(cases.len() >= 15);
    println!("| case | error code |\n|---|---|");
    for (name, bytes, board, floors, want) in cases {
        let e: BundleError = verify(bytes, &store, &board, &floors)
            .err()
            .unwrap_or_else(|| panic!("`{name}` was accepted"));
        println!("| {name} | `{}` |", e.code());
        assert_eq!(e.code(), want, "{name}: {e}");
        assert!(
            e.to_string().contains("fix:"),
            "{name}: no fix hint in `{e}`"
        );
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

#[test]
fn every_truncation_and_single_byte_flip_of_the_header_region_is_refused() {
    let dev = dev_signer();
    let store = trust(&[&dev], &[]);
    let clean = locked(&dev, "demo", 1, BOARDS);
    let none = VersionFloors::new();
    for cut in (0..clean.len()).step_by(997) {
        assert!(
            verify(clean[..cut].to_vec(), &store, &dev_board(), &none).is_err(),
            "cut {cut}"
        );
    }
    // Every byte of magic, lengths, manifest, key id and signature.
    let c = Container::parse(&clean).unwrap();
    let end = 14 + c.manifest.len() + 8 + 64 + 2;
    for at in 0..end {
        let b = flip_at(&clean, at);
        assert!(
            verify(b, &store, &dev_board(), &none).is_err(),
            "flip at {at}"
        );
    }
}

#[test]
fn key_files_must_say_their_role_and_match_their_key() {
    let dir = cxr_tests::data::scratch_dir("trust-files");
    let rel = release_signer();
    let mut f = rel.public_file();
    f.name = "dev-pretender".into();
    std::fs::write(dir.join("a.pub.toml"), toml::to_string(&f).unwrap()).unwrap();
    let e = TrustStore::load(&dir).unwrap_err();
    assert_eq!(e.code(), "BUNDLE_TRUST_STORE");
    let mut f = rel.public_file();
    f.key_id = "0000000000000000".into();
    std::fs::write(dir.join("a.pub.toml"), toml::to_string(&f).unwrap()).unwrap();
    assert!(TrustStore::load(&dir).is_err());
    std::fs::write(
        dir.join("a.pub.toml"),
        toml::to_string(&rel.public_file()).unwrap(),
    )
    .unwrap();
    assert_eq!(TrustStore::load(&dir).unwrap().keys().len(), 1);
    assert!(TrustStore::load(&dir.join("absent")).is_err());
    assert!(BundleSigner::generate("release-x", KeyRole::Development).is_err());
    assert!(BundleSigner::generate("dev-x", KeyRole::Release).is_err());
}
