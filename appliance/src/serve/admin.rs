//! The service's side of the local admin socket (`<state>/admin.sock`,
//! owner-only): administrative commands reach the running `serve`, which
//! owns the outbox and the audit log, through it. One JSON request line,
//! one JSON reply line; the commands' side is `crate::admin_client`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxr_audit::AuditLog;
use cxr_store::outbox::Outbox;
use cxr_store::results::Reason;

use super::Model;
use crate::access_cmd::DEVICE_CONSOLE;
use crate::classify::EngineChoice;
use crate::device::Device;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{watch, Notify};

/// The largest request line read.
const MAX_REQUEST: usize = 4096;

/// What the admin socket can reach.
pub(super) struct Admin {
    pub outbox: Arc<Mutex<Outbox>>,
    pub audit: Arc<Mutex<AuditLog>>,
    pub wake: Arc<Notify>,
    /// The model now served, as the ready line showed it.
    pub status: Mutex<Value>,
    /// The worker's model, swapped after an install or a rollback.
    pub model: Arc<Mutex<Result<Model, Reason>>>,
    pub device: Device,
    pub engine: (Option<EngineChoice>, Option<usize>),
    /// The spool and study assembly, to run a study again.
    pub intake: Arc<cxr_store::intake::Intake>,
    /// How audit records name a study.
    pub study_pseudonym: cxr_http::StudyPseudonym,
    /// Held through an install or a rollback.
    pub installing: Mutex<()>,
}

impl Admin {
    pub(super) fn handle(&self, request: &Value) -> Value {
        match request["op"].as_str() {
            Some("status") => {
                let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                json!({ "ok": true, "model": status })
            }
            Some(op) if op.starts_with("access_") => {
                let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
                let state = &self.device.board.state_dir;
                crate::access_cmd::apply(request, state, &mut audit, DEVICE_CONSOLE)
            }
            Some("study_rerun") => {
                let uid = request["study_instance_uid"].as_str().unwrap_or_default();
                let actor = request["actor"].as_str().unwrap_or(DEVICE_CONSOLE);
                self.rerun(uid, actor)
            }
            Some("bundle_install" | "bundle_rollback") => self.bundle(request).unwrap_or_else(|e| {
                json!({ "ok": false, "error": { "code": "ADMIN_FAULT", "message": format!("{e:#}") } })
            }),
            _ => {
                let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
                let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
                let reply = crate::outbox_cmd::apply(request, &mut outbox, &mut audit);
                self.wake.notify_one();
                reply
            }
        }
    }

    /// Run every instance of a study again, audited first. A study whose
    /// inputs were retired (deleted after delivery) cannot run again.
    fn rerun(&self, study_instance_uid: &str, actor: &str) -> Value {
        let key = (self.study_pseudonym)(study_instance_uid);
        let board = self.intake.board();
        if !board.knows_study(study_instance_uid) {
            return json!({ "ok": false, "error": { "code": "STUDY_UNKNOWN", "message": format!("no study {key} is held here (fix: check the Study Instance UID)") } });
        }
        let spool = self.intake.spool();
        let retired = spool
            .records()
            .iter()
            .any(|r| r.study_instance_uid == study_instance_uid && spool.is_retired(r.id));
        drop(spool);
        if retired {
            return json!({ "ok": false, "error": { "code": "STUDY_RETIRED", "message": format!("study {key}'s inputs were deleted after delivery (retention), so it cannot run again (fix: ask the modality or PACS to send the study again)") } });
        }
        if let Err(refusal) = self.audit_action(actor, "study_rerun", format!("study {key}")) {
            return refusal;
        }
        board.rerun_study(study_instance_uid);
        json!({ "ok": true, "study_key": key, "queued": true })
    }

    /// Install or roll back (verified, self-tested and audited as the
    /// command does), then load the active bundle again and swap it in:
    /// the next study runs on it, without a restart.
    fn bundle(&self, request: &Value) -> anyhow::Result<Value> {
        self.bundle_with(request, &|| {})
    }

    /// `bundle`, telling `loading` when the slot is switched and the
    /// service's engine is being loaded and self-tested.
    fn bundle_with(&self, request: &Value, loading: &dyn Fn()) -> anyhow::Result<Value> {
        // One install or rollback at a time; the audit log is locked only
        // for each record, never across verification and self-tests.
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ensure_room()?;
        let mut audit = crate::device::SharedLog(&self.audit);
        let mut reply = match request["file"].as_str() {
            Some(file) if request["op"] == "bundle_install" => {
                crate::bundle_cmd::install(Path::new(file), &self.device, &mut audit)?
            }
            _ => crate::bundle_cmd::rollback(&self.device, &mut audit)?,
        };
        if reply["ok"] != true {
            return Ok(reply);
        }
        loading();
        let model = super::load_model(None, self.engine, &self.device, &mut audit)?;
        let status = super::model_json(&model);
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = model;
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.clone();
        reply["serving"] = status;
        Ok(reply)
    }
}

/// Bind the socket (the caller owns the state directory's locks, so a
/// socket file left there is stale), owner-only.
pub(super) fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = crate::admin_client::socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(super) async fn run(
    listener: UnixListener,
    admin: Arc<Admin>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let bounded = tokio::io::AsyncReadExt::take(read, MAX_REQUEST as u64);
            let mut reader = tokio::io::BufReader::new(bounded);
            let got =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let reply = match (got, serde_json::from_str::<Value>(&line)) {
                (Ok(Ok(_)), Ok(request)) => {
                    tokio::task::spawn_blocking(move || admin.handle(&request))
                        .await
                        .unwrap_or_else(|_| json!({ "ok": false, "code": "ADMIN_FAULT" }))
                }
                _ => {
                    json!({ "ok": false, "code": "ADMIN_BAD_REQUEST", "message": "one JSON line, at most 4 KiB" })
                }
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
}

impl Admin {
    /// Record what a person did through the page (before it is done: an
    /// action that cannot be audited is not taken).
    fn audit_action(&self, actor: &str, action: &str, detail: String) -> Result<(), Value> {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let event = cxr_audit::Event::OperatorAction {
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail,
        };
        audit
            .append(crate::device::now_unix_ms(), event)
            .map(|_| ())
            .map_err(|e| json!({ "ok": false, "error": { "code": e.code(), "message": format!("not done: the audit log cannot take the record: {e}") } }))
    }

    fn slots(&self) -> Value {
        match self.device.store.state() {
            Ok(s) => {
                json!({ "active": s.active, "previous": s.previous, "generation": s.generation })
            }
            Err(e) => json!({ "error": { "code": e.code(), "message": e.to_string() } }),
        }
    }
}

impl cxr_http::operator::Operations for Admin {
    fn system(&self) -> Value {
        let board = &self.device.board;
        let serving = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let slots = self.slots();
        let (next_seq, head) = {
            let audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
            (audit.next_seq(), cxr_bundle::hex::encode(&audit.head()))
        };
        let certificate = cxr_http::tls::certificate_info(&board.state_dir)
            .ok()
            .map(|c| json!({ "fingerprint_sha256": c.fingerprint_sha256, "not_after": c.not_after, "self_signed_here": c.self_signed_here }));
        json!({
            "board": { "id": board.id, "kind": board.kind },
            "serving": serving,
            "active": slots["active"], "previous": slots["previous"],
            "audit": { "records": next_seq, "head": head },
            "certificate": certificate,
        })
    }

    fn verify_audit(&self, actor: &str) -> Value {
        // Held across the walk, so that no record is half-written meanwhile.
        let audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.device.board.state_dir.join("audit");
        let reply = match cxr_audit::verify(&dir) {
            Ok(r) => {
                json!({ "ok": true, "segments": r.segments, "records": r.records, "last_seq": r.last_seq, "head": cxr_bundle::hex::encode(&r.head) })
            }
            Err(e) => {
                json!({ "ok": false, "error": { "code": e.code(), "message": e.to_string() } })
            }
        };
        drop(audit);
        let detail = if reply["ok"] == true {
            format!("intact, head {}", reply["head"])
        } else {
            format!("damaged: {}", reply["error"]["code"])
        };
        match self.audit_action(actor, "audit_verify", detail) {
            Ok(()) => reply,
            Err(refusal) => refusal,
        }
    }

    fn retry_delivery(&self, entry: u64, actor: &str) -> Value {
        if let Err(refusal) =
            self.audit_action(actor, "delivery_retry", format!("outbox entry {entry}"))
        {
            return refusal;
        }
        self.handle(&json!({ "op": "outbox_retry", "id": entry }))
    }

    fn install_bundle(&self, file: &Path, actor: &str, progress: &dyn Fn(&str)) -> Value {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(refusal) = self.audit_action(actor, "bundle_install", format!("uploaded {name}"))
        {
            return refusal;
        }
        progress("verifying, unpacking and self-testing");
        let request = json!({ "op": "bundle_install", "file": file.display().to_string() });
        let reply = self.bundle_with(&request, &|| {
            progress("loading into the service and self-testing again")
        });
        reply.unwrap_or_else(|e| json!({ "ok": false, "error": { "code": "ADMIN_FAULT", "message": format!("{e:#}") } }))
    }

    fn rerun_study(&self, study_instance_uid: &str, actor: &str) -> Value {
        self.rerun(study_instance_uid, actor)
    }

    fn rollback_bundle(&self, actor: &str) -> Value {
        if let Err(refusal) = self.audit_action(actor, "bundle_rollback", String::new()) {
            return refusal;
        }
        self.bundle_with(&json!({ "op": "bundle_rollback" }), &|| {})
            .unwrap_or_else(|e| json!({ "ok": false, "error": { "code": "ADMIN_FAULT", "message": format!("{e:#}") } }))
    }

    fn access(&self, request: &Value, actor: &str) -> Value {
        let op = request["op"].as_str().unwrap_or_default();
        if !op.starts_with("access_") {
            return json!({ "ok": false, "code": "ADMIN_UNKNOWN_REQUEST", "message": "unknown request" });
        }
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        crate::access_cmd::apply(request, &self.device.board.state_dir, &mut audit, actor)
    }
}
