//! The service's side of the local admin socket (`<state>/admin.sock`,
//! owner-only): administrative commands reach the running `serve`, which
//! owns the outbox and the audit log, through it. One JSON request line,
//! one JSON reply line; the commands' side is `crate::admin_client`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cxr_audit::AuditLog;
use cxr_server::outbox::Outbox;
use cxr_server::results::Reason;

use super::Model;
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
}

impl Admin {
    fn handle(&self, request: &Value) -> Value {
        match request["op"].as_str() {
            Some("status") => {
                let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                json!({ "ok": true, "model": status })
            }
            Some(op) if op.starts_with("access_") => {
                let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
                crate::access_cmd::apply(request, &self.device.board.state_dir, &mut audit)
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

    /// Install or roll back (verified, self-tested and audited as the
    /// command does), then load the active bundle again and swap it in:
    /// the next study runs on it, without a restart.
    fn bundle(&self, request: &Value) -> anyhow::Result<Value> {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.ensure_room()?;
        let mut reply = match request["file"].as_str() {
            Some(file) if request["op"] == "bundle_install" => {
                crate::bundle_cmd::install(Path::new(file), &self.device, &mut audit)?
            }
            _ => crate::bundle_cmd::rollback(&self.device, &mut audit)?,
        };
        if reply["ok"] != true {
            return Ok(reply);
        }
        let model = super::load_model(None, self.engine, &self.device, &mut audit)?;
        drop(audit);
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
