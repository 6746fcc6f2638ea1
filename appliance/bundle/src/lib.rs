//! `cxr-bundle`: signed, locked model bundles. It owns the container format,
//! the postcard manifest, member digests (SHA-256), Ed25519 verification into
//! a [`VerifiedBundle`] (the only way to get one), the trust store with its
//! revocation list, and the device store (A/B slots, atomic switch,
//! anti-rollback floor). Signing is behind the feature `sign`, which the
//! appliance never enables. It must not know engines: the install self-test is
//! handed in as a function.

mod container;
mod error;
mod fsutil;
mod golden;
pub mod hex;
mod manifest;
mod params;
#[cfg(feature = "sign")]
mod sign;
mod slots;
mod trust;
mod verify;

pub use container::{
    is_safe_name, Container, CONTAINER_VERSION, MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES, MAX_MEMBERS,
    MAX_MEMBER_BYTES,
};
pub use error::BundleError;
pub use fsutil::read_bounded;
#[cfg(feature = "sign")]
pub use golden::{compute as compute_golden, compute_gate as compute_gate_golden};
pub use golden::{rel_l2, GoldenCase, GoldenSet, GoldenTolerance};
pub use manifest::{
    golden_member_name, model_member_name, DataDigest, EnsembleMember, Manifest, MemberEntry,
    Provenance, CARD_MEMBER, CONTENT_GATE_MEMBER, CONTENT_GOLDEN_MEMBER, GOLDEN_MEMBER,
    MODEL_MEMBER, OLDEST_SCHEMA_VERSION, REQUIRED_MEMBERS, SCHEMA_VERSION,
};
pub use params::{ContentGateData, FeatureStatsData, ModelParams, OodGateData};
#[cfg(feature = "sign")]
pub use sign::{BundleDraft, BundleSigner, ContentGateDraft, ModelDraft};
pub use slots::{
    DeviceState, DeviceStore, Failpoints, NoFailpoints, Slot, SlotRecord, SwitchReport, FAILPOINTS,
};
pub use trust::{key_id_of, name_fits_role, PublicKeyFile, TrustStore, TrustedKey};
pub use verify::{verify, BundleModel, VerifiedBundle, VersionFloors, SIGNING_DOMAIN};
