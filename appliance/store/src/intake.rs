//! Where a protocol adapter hands a received instance: it checks the whole
//! data set (that it parses, and that it is what its command said), commits
//! it to the spool, and tells study assembly. The adapter acknowledges on
//! the reply's status and nothing else.

use std::sync::{Arc, Mutex};

use cxr_dicom::{read_identity, InstanceIdentity, ReadLimits};

use crate::assembly::StudyBoard;
use crate::clock::Clock;
use crate::spool::{Durable, Incoming, InstanceMeta, Spool};
use crate::SpoolError;
use cxr_net::dimse::status;
pub use cxr_net::scp::{StoreReply, StoreRequest};
use cxr_net::uid::is_valid_uid;

/// Where a STOW-RS instance must belong: any study, or the one its URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyScope<'a> {
    Any,
    Only(&'a str),
}

/// The spool, behind its lock, with the checks every received instance passes.
pub struct Intake {
    spool: Mutex<Spool>,
    board: Arc<StudyBoard>,
    limits: ReadLimits,
    clock: Arc<dyn Clock>,
    /// One instance is read back and parsed at a time, so that concurrent
    /// associations cannot together hold many whole instances in memory.
    checking: Mutex<()>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    pub fn new(spool: Spool, board: Arc<StudyBoard>, clock: Arc<dyn Clock>) -> Self {
        Intake {
            spool: Mutex::new(spool),
            board,
            limits: ReadLimits::default(),
            clock,
            checking: Mutex::new(()),
        }
    }

    /// The spool, for readers (the worker, administrative commands).
    pub fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn board(&self) -> &Arc<StudyBoard> {
        &self.board
    }

    /// Start receiving an instance; its Part 10 meta group is written first.
    pub fn begin(&self, request: &StoreRequest) -> Result<Incoming, StoreReply> {
        for uid in [
            &request.sop_class_uid,
            &request.sop_instance_uid,
            &request.transfer_syntax,
        ] {
            if !is_valid_uid(uid) {
                return Err(StoreReply::refused(
                    status::CANNOT_UNDERSTAND,
                    "DIMSE_BAD_UID",
                    "the command carries an invalid UID",
                ));
            }
        }
        let mut incoming = self.spool().begin(None).map_err(spool_refusal)?;
        let meta = cxr_net::part10::file_meta(
            &request.sop_class_uid,
            &request.sop_instance_uid,
            &request.transfer_syntax,
        );
        incoming.write(&meta).map_err(spool_refusal)?;
        Ok(incoming)
    }

    /// Check and commit a completely received instance. Blocking: call it
    /// off the network task.
    pub fn finish(&self, incoming: Incoming, request: &StoreRequest) -> StoreReply {
        let said = (&request.sop_class_uid, &request.sop_instance_uid);
        let check = |identity: &InstanceIdentity| {
            (identity.sop_instance_uid != *said.1 || identity.sop_class_uid != *said.0).then(|| {
                StoreReply::refused(
                    status::CANNOT_UNDERSTAND,
                    "DIMSE_DATA_SET_MISMATCH",
                    "the data set's SOP Class or Instance UID differs from the command's",
                )
            })
        };
        self.check_and_commit(incoming, &request.source, Some(request.association), check)
    }

    /// Start receiving a whole Part 10 file (a STOW-RS part): nothing is
    /// written ahead of it.
    pub fn begin_file(&self) -> Result<Incoming, StoreReply> {
        self.spool().begin(None).map_err(spool_refusal)
    }

    /// Check and commit a Part 10 file received whole, from `source`, that
    /// must be a storage class we take and belong to `scope`. Blocking.
    pub fn finish_file(
        &self,
        incoming: Incoming,
        source: &str,
        scope: StudyScope<'_>,
    ) -> StoreReply {
        let check = |identity: &InstanceIdentity| {
            if !cxr_net::scp::STORAGE_CLASSES.contains(&identity.sop_class_uid.as_str()) {
                return Some(StoreReply::refused(
                    status::SOP_CLASS_NOT_SUPPORTED,
                    "STOW_SOP_CLASS_NOT_SUPPORTED",
                    "this appliance takes image storage classes only",
                ));
            }
            match scope {
                StudyScope::Only(study) if identity.study_instance_uid != study => {
                    Some(StoreReply::refused(
                        status::STUDY_MISMATCH,
                        "STOW_STUDY_MISMATCH",
                        "the instance's Study Instance UID differs from the one in the URL",
                    ))
                }
                _ => None,
            }
        };
        self.check_and_commit(incoming, source, None, check)
    }

    fn check_and_commit(
        &self,
        mut incoming: Incoming,
        source: &str,
        association: Option<u64>,
        refuse: impl Fn(&InstanceIdentity) -> Option<StoreReply>,
    ) -> StoreReply {
        // The expensive fsync happens here, outside the spool's lock.
        if let Err(e) = incoming.sync() {
            return spool_refusal(e);
        }
        let identity = {
            let _one_at_a_time = self.checking.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = match incoming.read_back() {
                Ok(b) => b,
                Err(e) => return spool_refusal(e),
            };
            read_identity(&bytes, &self.limits)
        };
        let identity = match identity {
            Ok(i) => i,
            Err(e) => return StoreReply::refused(status::CANNOT_UNDERSTAND, e.code(), e),
        };
        if identity.equipment.iter().any(|e| {
            cxr_report::sr::is_appliance(e.manufacturer.as_deref(), e.model_name.as_deref())
        }) {
            // A PACS that routes results back would otherwise start a loop:
            // each SC read as a film, each a new version and a new SC.
            return StoreReply::refused(
                status::SOP_CLASS_NOT_SUPPORTED,
                "STORE_APPLIANCE_RESULT",
                "this object is a result a CXR appliance wrote (its equipment says so); it is not classified again (fix: do not route the appliance's SR and Secondary Capture back to it)",
            )
            .about(&identity.sop_class_uid, &identity.sop_instance_uid);
        }
        if let Some(refusal) = refuse(&identity) {
            return refusal.about(&identity.sop_class_uid, &identity.sop_instance_uid);
        }
        let instance = (
            identity.sop_class_uid.clone(),
            identity.sop_instance_uid.clone(),
        );
        let meta = InstanceMeta {
            sop_class_uid: identity.sop_class_uid,
            sop_instance_uid: identity.sop_instance_uid,
            study_instance_uid: identity.study_instance_uid.clone(),
            source: source.to_owned(),
            series_instance_uid: identity.series_instance_uid,
            header: identity.study,
            modality: identity.modality,
        };
        let durable = self.spool().commit(incoming, &meta, self.clock.unix_ms());
        match durable {
            Ok(durable) => {
                if let Durable::Stored { id, .. } = durable {
                    self.board.arrived(
                        id,
                        &identity.study_instance_uid,
                        association,
                        self.clock.monotonic_ms(),
                    );
                }
                StoreReply {
                    status: status::SUCCESS,
                    comment: None,
                    durable: true,
                    instance: Some(instance),
                }
            }
            Err(e) => {
                let mut refusal = spool_refusal(e);
                refusal.instance = Some(instance);
                refusal
            }
        }
    }
}

impl cxr_net::scp::StoreSink for Intake {
    type Incoming = Incoming;

    fn begin(&self, request: &StoreRequest) -> Result<Incoming, StoreReply> {
        Intake::begin(self, request)
    }

    fn write(&self, incoming: &mut Incoming, chunk: &[u8]) -> Result<(), StoreReply> {
        incoming.write(chunk).map_err(spool_refusal)
    }

    fn finish(&self, incoming: Incoming, request: &StoreRequest) -> StoreReply {
        Intake::finish(self, incoming, request)
    }

    fn headroom(&self) -> (u64, Option<u64>) {
        let spool = self.spool();
        (spool.headroom(), spool.free_disk_bytes())
    }

    fn association_ended(&self, association: u64) {
        self.board.association_ended(association);
    }
}

/// The status for a spool that cannot take an instance: out of resources
/// when it is full, a processing failure otherwise.
pub fn spool_refusal(e: SpoolError) -> StoreReply {
    let status = match e {
        SpoolError::Full { .. }
        | SpoolError::DiskFull { .. }
        | SpoolError::InstanceTooLarge { .. } => status::OUT_OF_RESOURCES,
        SpoolError::BadUid { .. } => status::CANNOT_UNDERSTAND,
        _ => status::PROCESSING_FAILURE,
    };
    StoreReply::refused(status, e.code(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_spool_is_out_of_resources_and_other_faults_a_processing_failure() {
        let path = std::path::Path::new("/spool/1.part");
        let full_disk = SpoolError::write(path, std::io::ErrorKind::StorageFull.into());
        assert_eq!(full_disk.code(), "SPOOL_DISK_FULL");
        assert_eq!(spool_refusal(full_disk).status, status::OUT_OF_RESOURCES);
        let full_spool = SpoolError::Full {
            used: 1,
            quota: 1,
            incoming: 1,
        };
        assert_eq!(spool_refusal(full_spool).status, status::OUT_OF_RESOURCES);
        let other = SpoolError::write(path, std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(other.code(), "SPOOL_IO");
        let reply = spool_refusal(other);
        assert_eq!(reply.status, status::PROCESSING_FAILURE);
        assert!(!reply.durable && reply.comment.is_some_and(|c| c.starts_with("SPOOL_IO")));
    }
}
