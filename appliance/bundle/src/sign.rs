//! Signing (feature `sign`, the trainer only): key pairs and locking a bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use cxr_board::KeyRole;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::container::Container;
use crate::manifest::{
    golden_member_name, model_member_name, EnsembleMember, MemberEntry, CARD_MEMBER,
    CONTENT_GATE_MEMBER, CONTENT_GOLDEN_MEMBER, GOLDEN_MEMBER, MODEL_MEMBER, SCHEMA_VERSION,
};
use crate::trust::{key_id_of, name_fits_role, PublicKeyFile};
use crate::verify::SIGNING_DOMAIN;
use crate::{hex, BundleError, GoldenSet, GoldenTolerance, Manifest, ModelParams, Provenance};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    name: String,
    role: KeyRole,
    key_id: String,
    secret_key: String,
}

/// A signing key with its name and role.
#[derive(Debug)]
pub struct BundleSigner {
    pub name: String,
    pub role: KeyRole,
    key: SigningKey,
}

fn key_error(path: &Path, problem: String, fix: &'static str) -> BundleError {
    BundleError::KeyFile {
        path: path.to_owned(),
        problem,
        fix,
    }
}

impl BundleSigner {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str, role: KeyRole) -> Result<Self, BundleError> {
        if !name_fits_role(name, role) {
            return Err(key_error(
                Path::new(name),
                format!("a {} key may not be named `{name}`", role.as_str()),
                "name development keys dev-… and release keys anything else (A-Z a-z 0-9 - _)",
            ));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            key_error(
                Path::new(name),
                format!("no OS randomness: {e}"),
                "run keygen on a machine with a working random source",
            )
        })?;
        Ok(Self::from_seed(name, role, seed))
    }

    /// A deterministic key (tests only: never for a real key).
    pub fn from_seed(name: &str, role: KeyRole, seed: [u8; 32]) -> Self {
        BundleSigner {
            name: name.to_owned(),
            role,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn key_id(&self) -> [u8; 8] {
        key_id_of(self.key.verifying_key().as_bytes())
    }

    pub fn public_file(&self) -> PublicKeyFile {
        PublicKeyFile {
            name: self.name.clone(),
            role: self.role,
            key_id: hex::encode(&self.key_id()),
            public_key: hex::encode(self.key.verifying_key().as_bytes()),
        }
    }

    /// Write `<name>.key` (secret, mode 0600) and `<name>.pub.toml` into
    /// `dir`. Refuses to overwrite an existing key.
    pub fn write_files(&self, dir: &Path) -> Result<(PathBuf, PathBuf), BundleError> {
        let secret_path = dir.join(format!("{}.key", self.name));
        let public_path = dir.join(format!("{}.pub.toml", self.name));
        let secret = SecretKeyFile {
            name: self.name.clone(),
            role: self.role,
            key_id: hex::encode(&self.key_id()),
            secret_key: hex::encode(self.key.as_bytes()),
        };
        write_new(&secret_path, to_toml(&secret).as_bytes(), 0o600)?;
        write_new(&public_path, to_toml(&self.public_file()).as_bytes(), 0o644)?;
        Ok((secret_path, public_path))
    }

    pub fn from_file(path: &Path) -> Result<Self, BundleError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BundleError::io("reading", path, e))?;
        let f: SecretKeyFile = toml::from_str(&text).map_err(|e| {
            key_error(
                path,
                e.message().to_owned(),
                "pass the .key file written by `cxr-trainer keygen`",
            )
        })?;
        let seed = hex::decode::<32>(&f.secret_key).ok_or_else(|| {
            key_error(
                path,
                "secret_key is not 64 hex digits".into(),
                "pass the .key file written by `cxr-trainer keygen`",
            )
        })?;
        let signer = Self::from_seed(&f.name, f.role, seed);
        if hex::encode(&signer.key_id()) != f.key_id || !name_fits_role(&f.name, f.role) {
            return Err(key_error(
                path,
                "key id or name does not match the key".into(),
                "regenerate the key with `cxr-trainer keygen`",
            ));
        }
        Ok(signer)
    }

    /// Sign raw manifest bytes and lay out a container. Low level: tests use
    /// it to sign deliberately inconsistent bundles.
    pub fn sign_container(&self, manifest: &[u8], members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut message = SIGNING_DOMAIN.to_vec();
        message.extend_from_slice(manifest);
        Container {
            manifest,
            key_id: self.key_id(),
            signature: self.key.sign(&message).to_bytes(),
            members: members.to_vec(),
        }
        .encode()
    }
}

fn to_toml<T: Serialize>(value: &T) -> String {
    toml::to_string(value).unwrap_or_default()
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| BundleError::io("creating", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BundleError::io("writing", path, e))
}

/// Everything that goes into a bundle before it is signed.
#[derive(Debug, Clone)]
pub struct BundleDraft {
    pub model_id: String,
    pub version: u64,
    pub boards: Vec<String>,
    pub params: ModelParams,
    pub golden_tolerance: GoldenTolerance,
    pub provenance: Provenance,
    pub onnx: Vec<u8>,
    pub golden: GoldenSet,
    pub model_card: String,
    /// The content gate's graph and golden vectors (its parameters are
    /// `params.content_gate`).
    pub content_gate: ContentGateDraft,
    /// Empty for one model; for an ensemble, every model's own calibration
    /// (the first model is `onnx` and `golden`, the others `more_models`).
    pub ensemble: Vec<EnsembleMember>,
    /// The ensemble's second and later models.
    pub more_models: Vec<ModelDraft>,
}

/// One further model of an ensemble before locking.
#[derive(Debug, Clone)]
pub struct ModelDraft {
    pub onnx: Vec<u8>,
    pub golden: GoldenSet,
}

/// The content gate's members before locking.
#[derive(Debug, Clone)]
pub struct ContentGateDraft {
    pub onnx: Vec<u8>,
    pub golden: GoldenSet,
}

impl ContentGateDraft {
    /// The graph and golden vectors of a gate.
    pub fn of(
        weights: &cxr_model::GateWeights,
        golden: usize,
        seed: u64,
    ) -> Result<Self, BundleError> {
        Ok(ContentGateDraft {
            onnx: cxr_model::onnx::write_gate(weights).map_err(|e| {
                BundleError::InvalidParameters {
                    problem: format!("content gate: {e}"),
                }
            })?,
            golden: crate::golden::compute_gate(weights, golden, seed)?,
        })
    }
}

impl BundleDraft {
    /// The manifest this draft locks to.
    pub fn manifest(&self) -> Manifest {
        let encoded = self.encoded_goldens();
        let members = self
            .parts(&encoded)
            .iter()
            .map(|(name, data)| MemberEntry {
                name: name.clone(),
                size: data.len() as u64,
                sha256: Sha256::digest(data).into(),
            })
            .collect();
        Manifest {
            schema: SCHEMA_VERSION,
            model_id: self.model_id.clone(),
            version: self.version,
            boards: self.boards.clone(),
            params: self.params.clone(),
            golden_tolerance: self.golden_tolerance,
            provenance: self.provenance.clone(),
            members,
            ensemble: self.ensemble.clone(),
        }
    }

    /// Every golden set encoded: the models' in member order, then the
    /// content gate's.
    fn encoded_goldens(&self) -> Vec<Vec<u8>> {
        std::iter::once(&self.golden)
            .chain(self.more_models.iter().map(|m| &m.golden))
            .chain(std::iter::once(&self.content_gate.golden))
            .map(GoldenSet::encode)
            .collect()
    }

    /// The bundle's members in file order, the goldens from `encoded`.
    fn parts<'a>(&'a self, encoded: &'a [Vec<u8>]) -> Vec<(String, &'a [u8])> {
        let gate_golden = &encoded[encoded.len() - 1];
        let mut parts = vec![
            (MODEL_MEMBER.to_owned(), &self.onnx[..]),
            (GOLDEN_MEMBER.to_owned(), &encoded[0][..]),
            (CARD_MEMBER.to_owned(), self.model_card.as_bytes()),
            (CONTENT_GATE_MEMBER.to_owned(), &self.content_gate.onnx[..]),
            (CONTENT_GOLDEN_MEMBER.to_owned(), &gate_golden[..]),
        ];
        for (i, m) in self.more_models.iter().enumerate() {
            parts.push((model_member_name(i + 1), &m.onnx[..]));
            parts.push((golden_member_name(i + 1), &encoded[i + 1][..]));
        }
        parts
    }

    /// Check, sign and lay out the bundle file.
    pub fn lock(&self, signer: &BundleSigner) -> Result<Vec<u8>, BundleError> {
        self.params.validate()?;
        self.golden_tolerance.validate()?;
        if self.boards.is_empty() {
            return Err(BundleError::InvalidParameters {
                problem: "the bundle names no compatible board".into(),
            });
        }
        let encoded = self.encoded_goldens();
        for golden in &encoded[..encoded.len() - 1] {
            GoldenSet::decode(golden, &self.params.model)?;
        }
        let models = self.more_models.len() + 1;
        if !(self.ensemble.is_empty() && models == 1) && self.ensemble.len() != models {
            return Err(BundleError::InvalidParameters {
                problem: format!(
                    "{models} model(s) but {} ensemble calibration(s): an ensemble names one per model, a single model none",
                    self.ensemble.len()
                ),
            });
        }
        let gate =
            self.params
                .content_gate
                .as_ref()
                .ok_or_else(|| BundleError::InvalidParameters {
                    problem: "no content gate in the parameters: every bundle must carry one"
                        .into(),
                })?;
        GoldenSet::decode_gate(&encoded[encoded.len() - 1], &gate.spec)?;
        let manifest = self.manifest();
        manifest.check_ensemble()?;
        let parts = self.parts(&encoded);
        let members: Vec<(&str, &[u8])> = parts.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        Ok(signer.sign_container(&manifest.encode(), &members))
    }
}
