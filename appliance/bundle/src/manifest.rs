//! The signed manifest (postcard): what the model is, where it may run, every
//! parameter of `prepare` and `decide`, provenance, and the digest of every
//! other member.

use serde::{Deserialize, Serialize};

use crate::{BundleError, GoldenTolerance, ModelParams};

/// The manifest schema this firmware reads. Encoded first, so a newer schema
/// is recognised as such rather than as garbage. Schema 2: bands per label
/// in logit units, one combined OOD gate, calibration flags, no TTA-spread
/// gate and no ODIN temperature. Schema 3: the content gate (its parameters
/// here, its graph and golden vectors as members), required. Schema 4: an
/// optional ensemble (each member's calibration here, its graph and golden
/// vectors as members), the manifest's last field. Schema 3 manifests are
/// still read, as schema 4 with no ensemble.
pub const SCHEMA_VERSION: u16 = 4;
/// The oldest schema this firmware reads.
pub const OLDEST_SCHEMA_VERSION: u16 = 3;

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

/// The graph member of ensemble member `index` (from 0): the first is
/// [`MODEL_MEMBER`], the others `model-2.onnx`, `model-3.onnx`, ….
pub fn model_member_name(index: usize) -> String {
    match index {
        0 => MODEL_MEMBER.to_owned(),
        i => format!("model-{}.onnx", i + 1),
    }
}

/// The golden-vector member of ensemble member `index` (from 0).
pub fn golden_member_name(index: usize) -> String {
    match index {
        0 => GOLDEN_MEMBER.to_owned(),
        i => format!("golden-{}.bin", i + 1),
    }
}

/// One model of an ensemble: its own calibration, fitted on validation
/// for that model alone. The appliance calibrates each member's logits
/// with it before averaging probabilities; the bundle's `params` then hold
/// the ensemble's own calibration, thresholds and OOD statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    pub temperatures: Vec<f32>,
    pub calibrated: Vec<bool>,
}

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
    /// Empty for one model; otherwise every model of the ensemble, in
    /// member order (at least 2, at most
    /// [`cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS`]). Must stay last: a
    /// schema 3 manifest is this one without it.
    pub ensemble: Vec<EnsembleMember>,
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
        if !(u64::from(OLDEST_SCHEMA_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&schema) {
            return Err(BundleError::UnknownSchema {
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        // Schema 3 is schema 4 without the trailing ensemble list: postcard
        // writes an empty list as the single length byte 0.
        let upgraded;
        let bytes = if schema == 3 {
            upgraded = [bytes, &[0u8]].concat();
            &upgraded[..]
        } else {
            bytes
        };
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
        if schema == 3 && !m.ensemble.is_empty() {
            return Err(BundleError::ManifestMalformed {
                message: "a schema 3 manifest carries no ensemble".into(),
            });
        }
        Ok(m)
    }

    pub fn member(&self, name: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.name == name)
    }

    /// How many models the bundle runs per view: 1, or the ensemble's size.
    pub fn model_count(&self) -> usize {
        self.ensemble.len().max(1)
    }

    /// Every member name this manifest's bundle must hold, no more: the
    /// required ones and each further ensemble model's graph and golden
    /// vectors.
    pub fn expected_members(&self) -> Vec<String> {
        let mut names: Vec<String> = REQUIRED_MEMBERS.iter().map(|n| (*n).to_owned()).collect();
        for i in 1..self.model_count() {
            names.push(model_member_name(i));
            names.push(golden_member_name(i));
        }
        names
    }

    /// The ensemble's shape: none, or 2 up to the most members, each
    /// calibration one finite positive temperature and one flag per label.
    pub fn check_ensemble(&self) -> Result<(), BundleError> {
        let invalid = |problem: String| Err(BundleError::InvalidParameters { problem });
        let k = self.ensemble.len();
        if k == 1 || k > cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS {
            return invalid(format!(
                "an ensemble of {k} model(s): an ensemble has 2 to {} (one model carries no ensemble list)",
                cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS
            ));
        }
        let labels = self.params.labels.len();
        for (i, m) in self.ensemble.iter().enumerate() {
            if m.temperatures.len() != labels || m.calibrated.len() != labels {
                return invalid(format!(
                    "ensemble member {} has {} temperatures and {} calibration flags for {labels} labels",
                    i + 1,
                    m.temperatures.len(),
                    m.calibrated.len()
                ));
            }
            if let Some(l) = m
                .temperatures
                .iter()
                .position(|t| !(t.is_finite() && *t > 0.0))
            {
                return invalid(format!(
                    "ensemble member {}'s temperature for label {l} is not a positive finite number",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}
