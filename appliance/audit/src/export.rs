//! JSON Lines export: one object per record, digests in hex, the decision
//! record decoded.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::{AuditError, Event, Record, VerifyReport};

use cxr_fsio::hex;

fn bundle_json(b: &crate::BundleRef) -> Value {
    json!({ "model_id": b.model_id, "version": b.version, "digest": hex(&b.digest) })
}

/// One record as JSON.
pub fn record_json(r: &Record) -> Value {
    let event = match &r.event {
        Event::Inference(i) => {
            let decision = i.decision.as_ref().map(|d| {
                cxr_core::DecisionRecord::decode(d)
                    .ok()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or_else(|| json!({ "undecodable_postcard_hex": hex(d) }))
            });
            json!({
                "type": "inference",
                "mode": i.mode,
                "bundle": bundle_json(&i.bundle),
                "engine": i.engine,
                "engine_reasons": i.engine_reasons,
                "input_sha256": hex(&i.input_sha256),
                "study_key": i.study_key.map(|k| hex(&k)),
                "decision": decision,
                "latency_us": i.latency_us,
                "outcome": i.outcome,
            })
        }
        Event::InstallBegun { bundle, slot } => {
            json!({ "type": "install_begun", "bundle": bundle_json(bundle), "slot": slot.to_string() })
        }
        Event::Installed {
            bundle,
            slot,
            key_id,
            self_test,
            previous,
        } => json!({
            "type": "installed", "bundle": bundle_json(bundle), "slot": slot.to_string(),
            "key_id": key_id, "self_test": self_test, "previous": previous.as_ref().map(bundle_json),
        }),
        Event::InstallRefused { code, message } => {
            json!({ "type": "install_refused", "code": code, "message": message })
        }
        Event::RolledBack { to, from, slot } => json!({
            "type": "rolled_back", "to": bundle_json(to), "from": from.as_ref().map(bundle_json), "slot": slot.to_string(),
        }),
        Event::StartRefused { code, message } => {
            json!({ "type": "start_refused", "code": code, "message": message })
        }
        Event::TornTailRecovered {
            segment,
            offset,
            bytes,
            kept_as,
        } => json!({
            "type": "torn_tail_recovered", "segment": segment, "offset": offset, "bytes": bytes, "kept_as": kept_as,
        }),
        Event::StudyResult {
            study_key,
            version,
            outcome,
            result_sha256,
            inputs_sha256,
        } => json!({
            "type": "study_result", "study_key": hex(study_key), "version": version, "outcome": outcome,
            "result_sha256": hex(result_sha256), "inputs_sha256": inputs_sha256.iter().map(|d| hex(d)).collect::<Vec<_>>(),
        }),
        Event::AssociationFault {
            peer,
            calling_ae,
            code,
            transient,
            repeats,
        } => json!({
            "type": "association_fault", "peer": peer, "calling_ae": calling_ae, "code": code,
            "transient": transient, "repeats": repeats,
        }),
        Event::OutboxChanged {
            entry,
            destination,
            sop_instance_uid,
            state,
            detail,
        } => json!({
            "type": "outbox_changed", "entry": entry, "destination": destination,
            "sop_instance_uid": sop_instance_uid, "state": state, "detail": detail,
        }),
        Event::Login {
            user,
            peer,
            granted,
            detail,
        } => json!({
            "type": "login", "user": user, "peer": peer, "granted": granted, "detail": detail,
        }),
        Event::AccessChanged {
            actor,
            action,
            subject,
            role,
        } => json!({
            "type": "access_changed", "actor": actor, "action": action, "subject": subject, "role": role,
        }),
        Event::OperatorAction {
            actor,
            action,
            detail,
        } => {
            json!({ "type": "operator_action", "actor": actor, "action": action, "detail": detail })
        }
        Event::InstanceRepeated {
            study_key,
            instance,
            same_as,
            sha256,
        } => json!({
            "type": "instance_repeated", "study_key": hex(study_key), "instance": instance,
            "same_as": same_as, "sha256": hex(sha256),
        }),
        Event::FileQuarantined { path, reason } => {
            json!({ "type": "file_quarantined", "path": path, "reason": reason })
        }
        Event::Exported {
            actor,
            peer,
            channel,
            study_key,
            what,
            repeats,
        } => json!({
            "type": "exported", "actor": actor, "peer": peer, "channel": channel,
            "study_key": study_key, "what": what, "repeats": repeats,
        }),
        Event::ConfigApplied {
            board,
            settings_sha256,
            changed,
        } => json!({
            "type": "config_applied", "board": board, "settings_sha256": hex(settings_sha256), "changed": changed,
        }),
    };
    json!({ "seq": r.seq, "time_unix_ms": r.time_unix_ms, "prev": hex(&r.prev), "event": event })
}

/// Write every record as a JSON line, verifying as it goes; on damage the
/// records before it are written and the error says where it stopped.
pub fn export_jsonl(dir: &Path, out: &mut dyn Write) -> Result<VerifyReport, AuditError> {
    let mut io_error = None;
    let report = crate::walk(dir, |r| {
        if io_error.is_none() {
            if let Err(e) = writeln!(out, "{}", record_json(r)) {
                io_error = Some(e);
            }
        }
    })?;
    if let Some(e) = io_error {
        return Err(AuditError::io("writing export to", Path::new("-"), e));
    }
    Ok(report)
}
