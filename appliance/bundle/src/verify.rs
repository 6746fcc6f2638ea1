//! Verification: the only way to obtain a [`VerifiedBundle`].

use std::collections::BTreeMap;
use std::ops::Range;

use cxr_board::{BoardProfile, KeyRole};
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};

use crate::container::Container;
use crate::manifest::{
    golden_member_name, model_member_name, CARD_MEMBER, CONTENT_GATE_MEMBER, CONTENT_GOLDEN_MEMBER,
    MODEL_MEMBER,
};
use crate::{hex, BundleError, ContentGateData, EnsembleMember, GoldenSet, Manifest};

/// Ed25519 signs `SIGNING_DOMAIN || manifest bytes`, so a signature made for
/// anything else can never pass as a bundle signature.
pub const SIGNING_DOMAIN: &[u8] = b"cxr-bundle/manifest/v1\0";

/// The lowest version allowed per model id (anti-rollback).
pub type VersionFloors = BTreeMap<String, u64>;

/// A bundle whose signature, trust, digests, board and version all checked
/// out. Engines and the decision path accept nothing else.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    bytes: Vec<u8>,
    manifest: Manifest,
    /// One golden set per model, in member order.
    goldens: Vec<GoldenSet>,
    content_gate: ContentGateData,
    content_golden: GoldenSet,
    members: Vec<(String, Range<usize>)>,
    digest: [u8; 32],
    key_id: [u8; 8],
    key_name: String,
    key_role: KeyRole,
}

/// One model of a verified bundle: its graph, its golden vectors and, in
/// an ensemble, its own calibration.
#[derive(Debug, Clone, Copy)]
pub struct BundleModel<'a> {
    /// Position in the ensemble, from 0 (0 for a single model).
    pub index: usize,
    pub onnx: &'a [u8],
    pub golden: &'a GoldenSet,
    /// `None` for a single model.
    pub calibration: Option<&'a EnsembleMember>,
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle file exactly as verified (what a slot stores).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the whole bundle file: its identity in state and audit.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    pub fn member(&self, name: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| &self.bytes[r.clone()])
    }

    pub fn onnx(&self) -> &[u8] {
        self.member(MODEL_MEMBER).unwrap_or_default()
    }

    pub fn model_card(&self) -> &str {
        std::str::from_utf8(self.member(CARD_MEMBER).unwrap_or_default()).unwrap_or("")
    }

    /// The first (or only) model's golden vectors.
    pub fn golden(&self) -> &GoldenSet {
        &self.goldens[0]
    }

    /// Every model the bundle runs, in member order: one, or the ensemble.
    pub fn models(&self) -> Vec<BundleModel<'_>> {
        self.goldens
            .iter()
            .enumerate()
            .map(|(index, golden)| BundleModel {
                index,
                onnx: self.member(&model_member_name(index)).unwrap_or_default(),
                golden,
                calibration: self.manifest.ensemble.get(index),
            })
            .collect()
    }

    /// The content gate's parameters (every verified bundle has one).
    pub fn content_gate(&self) -> &ContentGateData {
        &self.content_gate
    }

    /// The content gate's ONNX graph.
    pub fn content_gate_onnx(&self) -> &[u8] {
        self.member(CONTENT_GATE_MEMBER).unwrap_or_default()
    }

    /// The content gate's golden vectors (logits, and the distance as the
    /// one feature).
    pub fn content_golden(&self) -> &GoldenSet {
        &self.content_golden
    }

    pub fn key_id_hex(&self) -> String {
        hex::encode(&self.key_id)
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn key_role(&self) -> KeyRole {
        self.key_role
    }
}

fn offset_in(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// Verify a bundle for this board. The checks, in order:
/// container structure and names; key trusted, not revoked, role accepted by
/// the board; signature; schema; manifest; members (none missing, unlisted or
/// duplicated, sizes and SHA-256); board compatibility; anti-rollback
/// (`version >= floors[model_id]`); parameters and golden vectors.
pub fn verify(
    bytes: Vec<u8>,
    trust: &crate::TrustStore,
    board: &BoardProfile,
    floors: &VersionFloors,
) -> Result<VerifiedBundle, BundleError> {
    let c = Container::parse(&bytes)?;
    let key_id = hex::encode(&c.key_id);
    let key = trust
        .find(&c.key_id)
        .ok_or_else(|| BundleError::UnknownKey {
            key_id: key_id.clone(),
        })?;
    if trust.is_revoked(&c.key_id) {
        return Err(BundleError::RevokedKey {
            key_id,
            name: key.name.clone(),
        });
    }
    if !board.accepts(key.role) {
        return Err(BundleError::DevelopmentKeyRefused {
            key_id,
            name: key.name.clone(),
            board: board.id.clone(),
            accepted: board
                .accept_roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + c.manifest.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(c.manifest);
    key.key
        .verify_strict(&message, &Signature::from_bytes(&c.signature))
        .map_err(|_| BundleError::BadSignature {
            key_id: key_id.clone(),
        })?;

    let manifest = Manifest::decode(c.manifest)?;
    manifest.check_ensemble()?;
    check_members(&manifest, &c)?;
    if !manifest.boards.contains(&board.id) {
        return Err(BundleError::IncompatibleBoard {
            board: board.id.clone(),
            supported: manifest.boards.join(", "),
        });
    }
    if manifest.model_count() > board.engine.max_ensemble_members {
        return Err(BundleError::EnsembleTooLarge {
            model_id: manifest.model_id.clone(),
            members: manifest.model_count(),
            max: board.engine.max_ensemble_members,
            board: board.id.clone(),
        });
    }
    let floor = floors.get(&manifest.model_id).copied().unwrap_or(0);
    if manifest.version < floor {
        return Err(BundleError::Downgrade {
            model_id: manifest.model_id.clone(),
            version: manifest.version,
            floor,
        });
    }
    manifest.params.validate()?;
    manifest.golden_tolerance.validate()?;
    let members: Vec<(String, Range<usize>)> = c
        .members
        .iter()
        .map(|(n, d)| ((*n).to_owned(), offset_in(&bytes, d)))
        .collect();
    let range_of = |name: &str| {
        members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    let (goldens, content_gate, content_golden) =
        decode_goldens(&manifest, |name| &bytes[range_of(name)])?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let (key_name, key_role) = (key.name.clone(), key.role);
    let key_id = c.key_id;
    Ok(VerifiedBundle {
        bytes,
        manifest,
        goldens,
        content_gate,
        content_golden,
        members,
        digest,
        key_id,
        key_name,
        key_role,
    })
}

/// Every model's golden vectors, the content gate's parameters and its
/// golden vectors; `member` gives a member's bytes (empty when absent,
/// which then fails to decode).
fn decode_goldens<'a>(
    manifest: &Manifest,
    member: impl Fn(&str) -> &'a [u8],
) -> Result<(Vec<GoldenSet>, ContentGateData, GoldenSet), BundleError> {
    let goldens = (0..manifest.model_count())
        .map(|i| GoldenSet::decode(member(&golden_member_name(i)), &manifest.params.model))
        .collect::<Result<Vec<_>, _>>()?;
    let content_gate = manifest.params.content_gate.clone().ok_or_else(|| {
        BundleError::InvalidParameters {
            problem: "the manifest has no content gate; every bundle must carry one (fix: lock the bundle with `cxr-trainer lock --content-gate DIR`)".into(),
        }
    })?;
    let content_golden = GoldenSet::decode_gate(member(CONTENT_GOLDEN_MEMBER), &content_gate.spec)?;
    Ok((goldens, content_gate, content_golden))
}

fn check_members(manifest: &Manifest, c: &Container<'_>) -> Result<(), BundleError> {
    for (i, m) in manifest.members.iter().enumerate() {
        if !crate::container::is_safe_name(&m.name) {
            return Err(BundleError::UnsafeMemberName {
                name: m.name.clone(),
            });
        }
        if manifest.members[..i].iter().any(|o| o.name == m.name) {
            return Err(BundleError::DuplicateMember {
                name: m.name.clone(),
            });
        }
    }
    let expected = manifest.expected_members();
    for required in &expected {
        if manifest.member(required).is_none() {
            return Err(BundleError::MissingMember {
                name: required.clone(),
            });
        }
    }
    if let Some(unused) = manifest
        .members
        .iter()
        .find(|m| !expected.contains(&m.name))
    {
        return Err(BundleError::InvalidParameters {
            problem: format!(
                "the manifest lists member `{}`, which no part of a bundle of {} model(s) uses",
                unused.name,
                manifest.model_count()
            ),
        });
    }
    for (name, _) in &c.members {
        if manifest.member(name).is_none() {
            return Err(BundleError::ExtraMember {
                name: (*name).to_owned(),
            });
        }
    }
    for m in &manifest.members {
        let data = c
            .members
            .iter()
            .find(|(n, _)| *n == m.name)
            .map(|(_, d)| *d)
            .ok_or_else(|| BundleError::MissingMember {
                name: m.name.clone(),
            })?;
        if data.len() as u64 != m.size {
            return Err(BundleError::SizeMismatch {
                name: m.name.clone(),
                listed: m.size,
                actual: data.len() as u64,
            });
        }
        let digest: [u8; 32] = Sha256::digest(data).into();
        if digest != m.sha256 {
            return Err(BundleError::DigestMismatch {
                name: m.name.clone(),
            });
        }
    }
    Ok(())
}
