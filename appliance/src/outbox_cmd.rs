//! `outbox list|retry|drop`: the field engineer's view of result SRs
//! waiting for (or given up on by) their destinations. While `serve` runs
//! the request goes through its admin socket (it owns the outbox and the
//! audit log); otherwise the outbox is opened directly, under its lock.

use std::process::ExitCode;

use cxr_audit::{AuditLog, Event};
use cxr_store::outbox::{Entry, EntryState, Outbox};
use serde_json::{json, Value};

use crate::bundle_cmd::print;
use crate::device::{now_unix_ms, Device, DeviceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Every entry: destination, state, attempts, last error.
    List {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Send an entry again now (also a dead-lettered one).
    Retry {
        id: u64,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Never send an entry again.
    Drop {
        id: u64,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

/// One administrative request, as the admin socket carries it.
pub(crate) fn request_of(cmd: &OutboxCommand) -> (Value, &DeviceArgs) {
    match cmd {
        OutboxCommand::List { device } => (json!({ "op": "outbox_list" }), device),
        OutboxCommand::Retry { id, device } => (json!({ "op": "outbox_retry", "id": id }), device),
        OutboxCommand::Drop { id, device } => (json!({ "op": "outbox_drop", "id": id }), device),
    }
}

pub(crate) fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id, "study_key": e.study_key, "version": e.version, "destination": e.destination,
        "sop_instance_uid": e.sop_instance_uid, "state": e.state, "attempts": e.attempts,
        "next_attempt_unix_ms": (e.state == EntryState::Pending).then_some(e.next_attempt_unix_ms),
        "last_error": e.last_error,
    })
}

/// Apply one outbox request (list, retry, drop); a change is audited.
pub(crate) fn apply(request: &Value, outbox: &mut Outbox, audit: &mut AuditLog) -> Value {
    let now = now_unix_ms();
    let id = request["id"].as_u64().unwrap_or(0);
    let changed = match request["op"].as_str() {
        Some("outbox_list") => {
            return json!({ "ok": true, "entries": outbox.entries().map(entry_json).collect::<Vec<_>>() })
        }
        Some("outbox_retry") => outbox.retry(id, now).map(|()| "retry"),
        Some("outbox_drop") => outbox.drop_entry(id, now).map(|()| "dropped"),
        _ => {
            return json!({ "ok": false, "code": "ADMIN_UNKNOWN_REQUEST", "message": "unknown request" })
        }
    };
    match changed {
        Ok(state) => {
            let Some(e) = outbox.entry(id) else {
                return json!({ "ok": false, "code": "OUTBOX_UNKNOWN_ENTRY", "message": format!("no entry {id}") });
            };
            let event = Event::OutboxChanged {
                entry: id,
                destination: e.destination.clone(),
                sop_instance_uid: e.sop_instance_uid.clone(),
                state: state.into(),
                detail: "field engineer".into(),
            };
            let audited = audit.append(now, event);
            json!({ "ok": true, "entry": entry_json(e), "audit_seq": audited.ok() })
        }
        Err(e) => json!({ "ok": false, "code": e.code(), "message": e.to_string() }),
    }
}

pub fn run(cmd: &OutboxCommand) -> anyhow::Result<ExitCode> {
    let (request, device_args) = request_of(cmd);
    let device = Device::open(device_args)?;
    let reply = match crate::admin_client::ask(&device.board.state_dir, &request)? {
        Some(reply) => reply,
        None => {
            let mut outbox = Outbox::open(&device.board.state_dir)?;
            let mut audit = device.open_audit()?;
            apply(&request, &mut outbox, &mut audit)
        }
    };
    print(&reply);
    Ok(ExitCode::from(if reply["ok"] == true { 0 } else { 1 }))
}
