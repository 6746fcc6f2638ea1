//! The signed manifest (postcard): what the model is, where it may run, every
//! parameter of `prepare` and `decide`, provenance, and the digest of every
//! other member.

use serde::{Deserialize, Serialize};

use crate::{BundleError, GoldenTolerance, ModelParams};

/// The manifest schema this firmware reads. Encoded first, so a newer schema
/// is recognised as such rather than as garbage. Schema 2: bands per label
/// in logit units, one combined OOD gate, calibration flags, no TTA-spread
/// gate and no ODIN temperature. Schema 3: the content gate (its parameters
/// here, its graph and golden vectors as members), required.
pub const SCHEMA_VERSION: u16 = 3;

/// Members every bundle carries.
pub const MODEL_MEMBER: &str = "model.onnx";
pub const GOLDEN_MEMBER: &str = "golden.bin";
pub const CARD_MEMBER: &str = "model-card.md";
pub const CONTENT_GATE_MEMBER: &str = "content-gate.onnx";
pub const CONTENT_GOLDEN_MEMBER: &str = "content-golden.bin";
pub const REQUIRED_MEMBERS: [&str; 5] = [
    MODEL_MEMBER,
    GOLDEN_MEMBER,
    CARD_MEMBER,
    CONTENT_GATE_MEMBER,
    CONTENT_GOLDEN_MEMBER,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// A named input of training (a dataset file, a label table) and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDigest {
    pub name: String,
    pub sha256_hex: String,
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub created_unix_s: u64,
    /// The tool and its version, e.g. `cxr-trainer 0.1.0`.
    pub tool: String,
    /// Source revision of the training code (git commit), or `unknown`.
    pub source_revision: String,
    pub seed: Option<u64>,
    /// The training configuration as written (TOML), or empty.
    pub config: String,
    pub data: Vec<DataDigest>,
    /// E.g. "research demonstration, not for clinical use".
    pub intended_use: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u16,
    pub model_id: String,
    /// Monotonic per model id; anti-rollback compares it.
    pub version: u64,
    /// Board profile ids this bundle may run on.
    pub boards: Vec<String>,
    pub params: ModelParams,
    pub golden_tolerance: GoldenTolerance,
    pub provenance: Provenance,
    pub members: Vec<MemberEntry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode signed manifest bytes: the schema version first, then the rest.
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let (schema, _) = postcard::take_from_bytes::<u64>(bytes).map_err(|e| {
            BundleError::ManifestMalformed {
                message: format!("no schema version: {e}"),
            }
        })?;
        if schema != u64::from(SCHEMA_VERSION) {
            return Err(BundleError::UnknownSchema {
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        let (m, rest) = postcard::take_from_bytes::<Manifest>(bytes).map_err(|e| {
            BundleError::ManifestMalformed {
                message: e.to_string(),
            }
        })?;
        if !rest.is_empty() {
            return Err(BundleError::ManifestMalformed {
                message: format!("{} bytes after the manifest", rest.len()),
            });
        }
        Ok(m)
    }

    pub fn member(&self, name: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.name == name)
    }
}
