//! What one audit record holds. No names, patient IDs or UIDs: the study is
//! known only by an HMAC of its StudyInstanceUID under the device secret.

use serde::{Deserialize, Serialize};

/// The bundle an inference used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub model_id: String,
    pub version: u64,
    /// SHA-256 of the bundle file (developer mode: of the loose model file).
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A verified, signed bundle.
    Verified,
    /// Loose `--model`/`--params` files: never for patients.
    Developer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Decision,
    Abstention {
        code: String,
    },
    Refused {
        code: String,
    },
    // New variants go last: records already on disk keep their meaning.
    /// Every gate passed and every label was Uncertain.
    Undecided,
    /// The study failed past ingest (engine, decision core, a caught
    /// panic); `code` is the stable code of the fault.
    Failed {
        code: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inference {
    pub mode: Mode,
    pub bundle: BundleRef,
    pub engine: String,
    pub engine_reasons: Vec<String>,
    /// SHA-256 of the input file's bytes.
    pub input_sha256: [u8; 32],
    /// HMAC-SHA256(device secret, StudyInstanceUID), when the study had one.
    pub study_key: Option<[u8; 32]>,
    /// `cxr_core::DecisionRecord`, postcard, when the study got that far.
    pub decision: Option<Vec<u8>>,
    pub latency_us: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Inference(Inference),
    /// Written before the switch: an install that crashed shows as begun
    /// without being completed.
    InstallBegun {
        bundle: BundleRef,
        slot: char,
    },
    Installed {
        bundle: BundleRef,
        slot: char,
        key_id: String,
        self_test: String,
        previous: Option<BundleRef>,
    },
    InstallRefused {
        code: String,
        message: String,
    },
    RolledBack {
        to: BundleRef,
        from: Option<BundleRef>,
        slot: char,
    },
    /// The appliance refused to classify at start (no verified active bundle).
    StartRefused {
        code: String,
        message: String,
    },
    /// A partial record left by a power loss was cut off at start-up; its
    /// bytes are kept in `kept_as`.
    TornTailRecovered {
        segment: u64,
        offset: u64,
        bytes: u64,
        kept_as: String,
    },
    /// The service published a study result (a new version on a late
    /// instance): the result file's digest and every input's digest.
    StudyResult {
        study_key: [u8; 32],
        version: u32,
        outcome: String,
        result_sha256: [u8; 32],
        inputs_sha256: Vec<[u8; 32]>,
    },
    /// The DICOM receiver refused an association, or one ended by an abort or
    /// a dropped connection: who, and why (`transient`: the peer may retry).
    AssociationFault {
        peer: String,
        calling_ae: String,
        code: String,
        transient: bool,
        /// Faults of the same code from the same address since the previous
        /// record of it, not recorded one by one (a flood is summarised).
        repeats: u32,
    },
    /// An outbox entry (a result SR for one destination) was delivered,
    /// dead-lettered, retried or dropped.
    OutboxChanged {
        entry: u64,
        destination: String,
        sop_instance_uid: String,
        state: String,
        detail: String,
    },
    /// A password login to the HTTP side, granted or refused.
    Login {
        user: String,
        peer: String,
        granted: bool,
        detail: String,
    },
    /// A local user or an API token was added, changed or removed.
    AccessChanged {
        /// Who made the change (`device console`, or the admin's name).
        actor: String,
        /// `user_add`, `user_passwd`, `user_remove`, `token_create`, `token_revoke`.
        action: String,
        /// The user name or token id.
        subject: String,
        /// The role given, for an addition.
        role: Option<String>,
    },
    /// Something a person did through the operator's page: retry a
    /// delivery, verify the audit log, install or roll back a bundle.
    OperatorAction {
        actor: String,
        action: String,
        detail: String,
    },
    /// Study data left the appliance over HTTP: read by `actor` from `peer`
    /// through `channel` (`api`, `page`, `dicomweb`, `fhir`). `study_key` is
    /// the study's digest (empty for a list); `what` the request path's
    /// kind, never a patient's data. Reads of the same study by the same
    /// actor and address within a window are one record, with `repeats`.
    Exported {
        actor: String,
        peer: String,
        channel: String,
        study_key: String,
        what: String,
        repeats: u32,
    },
    /// The service started with these settings (the board profile and any
    /// command-line overrides): their digest, and the names of the settings
    /// that differ from the previous start's (all of them the first time).
    ConfigApplied {
        board: String,
        settings_sha256: [u8; 32],
        changed: Vec<String>,
    },
    /// An instance arrived again under its SOP Instance UID with other
    /// bytes but the same decoded pixels and patient: recorded as a repeat
    /// of `same_as`, not run again, never a second view.
    InstanceRepeated {
        study_key: [u8; 32],
        instance: u64,
        same_as: u64,
        sha256: [u8; 32],
    },
    /// A result file that did not parse was moved aside at start (its
    /// path under the state directory, and why).
    FileQuarantined {
        path: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time_unix_ms: u64,
    /// SHA-256 of the previous record's payload (zeros for the first).
    pub prev: [u8; 32],
    pub event: Event,
}
